#!/usr/bin/env python3
"""Build each lab scenario, attach it, capture sysfs/dev/etc, tear it down.

Run in the lab VM:
    tools/kernel-lab/lab run -- .venv/bin/python tools/kernel-lab/capture_scenarios.py [NAME...]
Writes tests/unit/data/<name>.tar.gz for: iscsi-single, iscsi-shared-multipath,
nvme-tcp, fcoe (all by default).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import capture_sysfs  # beside this script (sys.path[0])

from brick_lab import FcoeTarget, LioIscsiTarget, NvmetSubsystem, scenarios
from brick_lab.rawhost import maps_with

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "tests", "unit", "data")


def save(name: str, note: str) -> None:
    subprocess.run(["udevadm", "settle", "--timeout=20"], capture_output=True, timeout=120)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, name)
        capture_sysfs.capture(out, name, note)
        os.makedirs(DATA, exist_ok=True)
        tar = os.path.join(DATA, f"{name}.tar.gz")
        capture_sysfs.make_tar(out, tar)
        print(f"captured {name}: {os.path.getsize(tar)} bytes", flush=True)


def iscsi_single_note(t: LioIscsiTarget) -> str:
    return (
        f"one iSCSI session to {t.iqn} at {t.portals[0]}, LUN 0 "
        f"wwid {t.luns[0].wwid} ({t.luns[0].size} bytes)"
    )


def iscsi_multipath_note(t: LioIscsiTarget) -> str:
    return (
        f"target {t.iqn} with 2 LUNs over {', '.join(t.portals)} (2 sessions), "
        "ACL for this initiator, multipathd running (find_multipaths yes): "
        + "; ".join(
            f"LUN {lun.lun_id} wwid {lun.wwid} -> {maps_with(lun.scsi_id)[0]}"
            for lun in t.luns.values()
        )
    )


def nvme_tcp_note(s: NvmetSubsystem) -> str:
    return (
        f"subsystem {s.nqn}, 2 namespaces ("
        + ", ".join(
            f"nsid {ns.nsid} uuid {ns.uuid} nguid {ns.nguid}" for ns in s.namespaces.values()
        )
        + f"), 2 TCP ports {', '.join(p.portal for p in s.ports)}: "
        "native multipath (2 controllers)"
    )


def fcoe_note(t: FcoeTarget) -> str:
    f = t.fabrics[0]
    return (
        f"FCoE VN2VN over veth {f.initiator_if}/{f.target_if}: initiator "
        f"{f.initiator_host} wwpn {f.initiator_wwpn}, target wwpn {f.target_wwpn} (its own "
        "fc_host is present too), LUNs "
        + ", ".join(f"{lun.lun_id} wwid {lun.wwid}" for lun in t.luns.values())
    )


#: name -> (builder of the scenario, description saved with the capture)
SCENARIOS: dict[str, tuple[Callable[[], AbstractContextManager[Any]], Callable[[Any], str]]] = {
    "iscsi-single": (
        lambda: scenarios.iscsi_single(iqn="iqn.2003-01.org.brick-lab:single"),
        iscsi_single_note,
    ),
    "iscsi-shared-multipath": (
        lambda: scenarios.iscsi_dm_multipath(
            iqn="iqn.2003-01.org.brick-lab:shared", luns=2, initiators=["local"]
        ),
        iscsi_multipath_note,
    ),
    "nvme-tcp": (
        lambda: scenarios.nvme_tcp_multipath(
            nqn="nqn.2014-08.org.brick-lab:subsys-mp", namespaces=2
        ),
        nvme_tcp_note,
    ),
    "fcoe": (lambda: scenarios.fcoe_luns(luns=2), fcoe_note),
}


def capture(name: str) -> None:
    """Build scenario ``name``, capture the host while it is up, tear it down."""
    build, note = SCENARIOS[name]
    with build() as target:
        save(name, note(target))


def main(names: list[str]) -> int:
    rc = 0
    for name in names or list(SCENARIOS):
        t0 = time.monotonic()
        try:
            capture(name)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next one
            print(f"scenario {name} failed: {exc}", flush=True)
            rc = 1
        print(f"scenario {name}: {time.monotonic() - t0:.1f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
