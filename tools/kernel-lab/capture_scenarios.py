#!/usr/bin/env python3
"""Build each lab scenario, attach it, capture sysfs/dev/etc, tear it down.

Run in the lab VM:
    tools/kernel-lab/lab run -- .venv/bin/python tools/kernel-lab/capture_scenarios.py [NAME...]
Writes tests/unit/data/<name>.tar.gz for: iscsi-single, iscsi-shared-multipath,
nvme-tcp, fcoe (all by default).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import capture_sysfs  # noqa: E402

from tests.functional.lab import (FcoeTarget, LioIscsiTarget, NvmetSubsystem,  # noqa: E402
                                  wait_for)

DATA = os.path.join(REPO, "tests", "unit", "data")


def sh(*argv: str, check: bool = True) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr}")
    return p.stdout


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def disks_with_wwid(wwid: str) -> list[str]:
    out = []
    for w in glob.glob("/sys/block/sd*/device/wwid"):
        try:
            if read(w) == wwid:
                out.append(w.split("/")[3])
        except OSError:
            pass
    return out


def dm_with_uuid(uuid: str) -> str | None:
    for u in glob.glob("/sys/block/dm-*/dm/uuid"):
        try:
            if read(u) == uuid:
                return u.split("/")[3]
        except OSError:
            pass
    return None


def settle() -> None:
    sh("udevadm", "settle", "--timeout=20", check=False)


def save(name: str, note: str) -> None:
    settle()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, name)
        capture_sysfs.capture(out, name, note)
        os.makedirs(DATA, exist_ok=True)
        tar = os.path.join(DATA, f"{name}.tar.gz")
        capture_sysfs.make_tar(out, tar)
        print(f"captured {name}: {os.path.getsize(tar)} bytes", flush=True)


def iscsi_login(t: LioIscsiTarget, portal: str) -> None:
    sh("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", portal)
    sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", portal, "--login")


def iscsi_logout_all(t: LioIscsiTarget) -> None:
    sh("iscsiadm", "-m", "node", "-T", t.iqn, "--logout", check=False)
    sh("iscsiadm", "-m", "node", "-T", t.iqn, "-o", "delete", check=False)


def scenario_iscsi_single() -> None:
    with LioIscsiTarget(iqn="iqn.2003-01.org.brick-lab:single", luns=1) as t:
        iscsi_login(t, t.portals[0])
        try:
            wait_for(lambda: disks_with_wwid(t.luns[0].wwid), 30, "disk")
            link = f"/dev/disk/by-path/ip-{t.portals[0]}-iscsi-{t.iqn}-lun-0"
            wait_for(lambda: os.path.exists(link), 20, link)
            save("iscsi-single", f"one iSCSI session to {t.iqn} at {t.portals[0]}, LUN 0 "
                 f"wwid {t.luns[0].wwid} ({t.luns[0].size} bytes)")
        finally:
            iscsi_logout_all(t)


def scenario_iscsi_multipath() -> None:
    portals = ("127.0.0.1:3260", "127.0.0.2:3260")
    sh(os.path.join(HERE, "guest-multipathd"), "start")
    try:
        with LioIscsiTarget(iqn="iqn.2003-01.org.brick-lab:shared", luns=2, portals=portals,
                            initiators=["local"]) as t:
            for p in portals:
                iscsi_login(t, p)
            try:
                for lun in t.luns.values():
                    wait_for(lambda: len(disks_with_wwid(lun.wwid)) == 2, 30, "2 paths")
                    wait_for(lambda: dm_with_uuid("mpath-" + lun.scsi_id), 30, "dm map")
                for lun in t.luns.values():
                    dm = dm_with_uuid("mpath-" + lun.scsi_id)
                    wait_for(lambda: len(os.listdir(f"/sys/block/{dm}/slaves")) == 2, 30, "2 slaves")
                    wait_for(lambda: os.path.exists(f"/dev/disk/by-id/dm-uuid-mpath-{lun.scsi_id}"),
                             20, "dm by-id link")
                save("iscsi-shared-multipath",
                     f"target {t.iqn} with 2 LUNs over {', '.join(portals)} (2 sessions), "
                     "ACL for this initiator, multipathd running (find_multipaths yes): "
                     + "; ".join(f"LUN {lun.lun_id} wwid {lun.wwid} -> "
                                 f"{dm_with_uuid('mpath-' + lun.scsi_id)}" for lun in t.luns.values()))
            finally:
                for lun in t.luns.values():
                    sh("multipath", "-f", lun.scsi_id, check=False)
                iscsi_logout_all(t)
    finally:
        sh(os.path.join(HERE, "guest-multipathd"), "stop", check=False)


def scenario_nvme_tcp() -> None:
    ports = ("127.0.0.1:4420", "127.0.0.2:4420")
    with NvmetSubsystem(nqn="nqn.2014-08.org.brick-lab:subsys-mp", namespaces=2, ports=ports) as s:
        for p in s.ports:
            sh("nvme", "connect", "-t", "tcp", "-a", p.traddr, "-s", p.trsvcid, "-n", s.nqn)
        try:
            def ready() -> bool:
                ctrls = [c for c in glob.glob("/sys/class/nvme/nvme*")
                         if read(f"{c}/subsysnqn") == s.nqn and read(f"{c}/state") == "live"]
                heads = [u for u in glob.glob("/sys/block/nvme*/uuid")
                         if re.fullmatch(r"nvme\d+n\d+", u.split("/")[3])
                         and read(u) in {ns.uuid for ns in s.namespaces.values()}]
                return len(ctrls) == 2 and len(heads) == 2
            wait_for(ready, 30, "2 controllers, 2 namespaces")
            for ns in s.namespaces.values():
                wait_for(lambda: os.path.exists(f"/dev/disk/by-id/nvme-uuid.{ns.uuid}"), 20, "by-id")
            save("nvme-tcp", f"subsystem {s.nqn}, 2 namespaces (" + ", ".join(
                f"nsid {ns.nsid} uuid {ns.uuid} nguid {ns.nguid}" for ns in s.namespaces.values())
                + f"), 2 TCP ports {', '.join(ports)}: native multipath (2 controllers)")
        finally:
            sh("nvme", "disconnect", "-n", s.nqn, check=False)
            wait_for(lambda: not [c for c in glob.glob("/sys/class/nvme/nvme*")], 20, "disconnect")


def scenario_fcoe() -> None:
    with FcoeTarget(luns=2) as t:
        wait_for(lambda: disks_with_wwid(t.luns[0].wwid), 30, "LUN 0")
        if not disks_with_wwid(t.luns[1].wwid):
            t.scan_lun(1)
        wait_for(lambda: disks_with_wwid(t.luns[1].wwid), 30, "LUN 1")
        f = t.fabrics[0]
        save("fcoe", f"FCoE VN2VN over veth {f.initiator_if}/{f.target_if}: initiator "
             f"{f.initiator_host} wwpn {f.initiator_wwpn}, target wwpn {f.target_wwpn} (its own "
             "fc_host is present too), LUNs " + ", ".join(
                 f"{lun.lun_id} wwid {lun.wwid}" for lun in t.luns.values()))


SCENARIOS: dict[str, Callable[[], None]] = {
    "iscsi-single": scenario_iscsi_single,
    "iscsi-shared-multipath": scenario_iscsi_multipath,
    "nvme-tcp": scenario_nvme_tcp,
    "fcoe": scenario_fcoe,
}


def main(names: list[str]) -> int:
    rc = 0
    for name in names or list(SCENARIOS):
        t0 = time.monotonic()
        try:
            SCENARIOS[name]()
        except Exception as exc:  # noqa: BLE001 - report and go on with the next one
            print(f"scenario {name} failed: {exc}", flush=True)
            rc = 1
        print(f"scenario {name}: {time.monotonic() - t0:.1f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
