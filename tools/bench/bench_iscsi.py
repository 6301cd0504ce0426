#!/usr/bin/env python3
"""Benchmark iSCSI attach/detach of ISCSIConnector against a bare-script floor (lab VM only).

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/bench_iscsi.py [-n 5] [--multipath]

Floor (what a minimal shell script would do, no checks):
  attach: ``iscsiadm -m node --op new`` + ``--login`` (automatic LUN scan) + wait for the
          /dev/disk/by-path link (multipath: both logins + wait for the dm-uuid link);
  detach: ``iscsiadm --logout`` + ``--op delete`` (multipath: ``multipath -f`` and
          ``multipath -w`` first, so both sides leave the same clean host) + wait until
          udev has removed the link the attach waited for (a detach is done when nothing
          is left in /dev/disk, as an attach is done when the link is there).
Each detach (floor and ours) starts once udev has settled (untimed ``udevadm settle``).
Ours: ISCSIConnector.connect_volume / disconnect_volume with in-process privsep.
Prints medians, the ratio ours/floor, and a JSON line.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time

from brick_agent import config
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_lab import LioIscsiTarget
from brick_lab.rawhost import read, sessions_of
from host import udev_settle  # tools/bench/host.py, beside this script


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


def wait_path(path: str, present: bool, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while os.path.exists(path) != present:
        if time.monotonic() > end:
            raise RuntimeError(f"{path} {'never appeared' if present else 'never went away'}")
        time.sleep(0.005)


def floor_attach(t: LioIscsiTarget, portals: list[str]) -> None:
    for p in portals:
        sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", p, "--op", "new")
        sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", p, "--login")
    if len(portals) == 1:
        wait_path(f"/dev/disk/by-path/ip-{portals[0]}-iscsi-{t.iqn}-lun-0", True)
    else:
        wait_path(f"/dev/disk/by-id/dm-uuid-mpath-{t.luns[0].scsi_id}", True)


def floor_detach(t: LioIscsiTarget, portals: list[str]) -> None:
    if len(portals) > 1:
        sh("multipath", "-f", t.luns[0].scsi_id)
        sh("multipath", "-w", t.luns[0].scsi_id)  # leave no wwids entry (ours does the same)
    for p in portals:
        sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", p, "--logout")
        sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", p, "--op", "delete")
    if len(portals) == 1:
        wait_path(f"/dev/disk/by-path/ip-{portals[0]}-iscsi-{t.iqn}-lun-0", False)
    else:
        wait_path(f"/dev/disk/by-id/dm-uuid-mpath-{t.luns[0].scsi_id}", False)


def _lun_disks(iqns: set[str]) -> set[str]:
    """Disk names of the LUNs the sessions to ``iqns`` have (sysfs only, no udev)."""
    out = set()
    for sess in glob.glob("/sys/class/iscsi_session/session*"):
        try:
            with open(os.path.join(sess, "targetname")) as f:
                if f.read().strip() not in iqns:
                    continue
        except OSError:
            continue
        for block in glob.glob(os.path.join(sess, "device", "target*", "*:*", "block", "*")):
            name = os.path.basename(block)
            if os.path.exists(f"/dev/{name}"):
                out.add(name)
    return out


def floor_attach_many(
    targets: list[LioIscsiTarget], luns: int, timeout: float = 120.0, targeted: bool = False
) -> None:
    """The kernel's share of attaching every LUN of ``targets``: all logins at once (the
    login's own scan of the target), until ``luns`` disks exist with their /dev node.

    ``targeted``: what ours must do instead (manual-scan sessions, never a whole-target
    scan): the records get ``node.session.scan = manual``, then every LUN is scanned on
    its own (``c t l`` written to the session's SCSI host, all at once, as bare shell
    writes would).

    The node records are made one at a time before (and deleted one at a time after the
    logouts): iscsiadm changing a record while another iscsiadm walks the node database
    fails (exit 6, ISCSI_ERR_IDBM; seen in the lab), which is why brick_agent holds its
    node-database lock around record changes."""

    def login(t: LioIscsiTarget) -> None:
        sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", t.portals[0], "--login")

    for t in targets:  # the records first, one at a time (see _node_records)
        sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", t.portals[0], "--op", "new")
        if targeted:
            sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", t.portals[0], "--op", "update",
               "-n", "node.session.scan", "-v", "manual")  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        list(pool.map(login, targets))
    if targeted:
        scans = [
            (host, f"0 {tid} {lun}")
            for t in targets
            for host, tid in [_session_host_and_target(t.iqn)]
            for lun in sorted(t.luns)
        ]
        with concurrent.futures.ThreadPoolExecutor(len(scans)) as pool:
            list(
                pool.map(lambda hs: _write(f"/sys/class/scsi_host/host{hs[0]}/scan", hs[1]), scans)
            )
    iqns = {t.iqn for t in targets}
    end = time.monotonic() + timeout
    while len(_lun_disks(iqns)) < luns:
        if time.monotonic() > end:
            raise RuntimeError(f"only {len(_lun_disks(iqns))} of {luns} LUNs appeared")
        time.sleep(0.005)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _session_host_and_target(iqn: str) -> tuple[int, int]:
    """(SCSI host number, target id) of the session to ``iqn`` (sysfs)."""
    sessions = sessions_of(iqn)
    if not sessions:
        raise RuntimeError(f"no session to {iqn}")
    path = f"/sys/class/iscsi_session/{sessions[0]}"
    # /sys/devices/platform/host<N>/session<M>/iscsi_session/session<M>
    host = re.search(r"/host(\d+)/session\d+/", os.path.realpath(path))
    assert host is not None, f"no SCSI host in {os.path.realpath(path)}"
    return int(host.group(1)), int(read(f"{path}/target_id") or "")


def floor_detach_many(targets: list[LioIscsiTarget], flush: bool = False) -> None:
    """The matching detach: delete every LUN's device, then all logouts at once.
    ``flush``: first flush every disk (``blockdev --flushbufs``, all at once), the
    guarantee a detach of ours keeps."""
    iqns = {t.iqn for t in targets}
    disks = sorted(_lun_disks(iqns))
    if flush:
        procs = [subprocess.Popen(["blockdev", "--flushbufs", f"/dev/{d}"]) for d in disks]
        if any(p.wait(timeout=120) for p in procs):
            raise RuntimeError("a floor flush failed")
    for name in disks:
        _write(f"/sys/block/{name}/device/delete", "1")

    def logout(t: LioIscsiTarget) -> None:
        sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", t.portals[0], "--logout")

    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        list(pool.map(logout, targets))
    for t in targets:  # then the records, one at a time
        sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", t.portals[0], "--op", "delete")


def timed(fn, *args) -> float:
    start = time.monotonic()
    fn(*args)
    return time.monotonic() - start


def bench(n: int, multipath: bool, settle: bool = True) -> dict:
    conf = config.new_conf(
        overrides={
            "lock_path": "/tmp/bench-iscsi-locks",
            "privsep_in_process": True,
            "use_multipath": multipath,
        }
    )
    connector = ISCSIConnector(conf=conf)
    portals = ["127.0.0.1:3260", "127.0.0.2:3260"] if multipath else ["127.0.0.1:3260"]
    out: dict[str, list[float]] = {
        "floor_attach": [],
        "floor_detach": [],
        "ours_attach": [],
        "ours_detach": [],
    }
    with LioIscsiTarget(luns=1, portals=portals, initiators=["local"]) as t:
        props = (
            {
                "target_portals": portals,
                "target_iqns": [t.iqn] * len(portals),
                "target_luns": [0] * len(portals),
            }
            if multipath
            else {"target_portal": portals[0], "target_iqn": t.iqn, "target_lun": 0}
        )
        # warm-up (first login loads modules, first python call imports): not measured
        connector.disconnect_volume(props, connector.connect_volume(props))
        for i in range(n):
            # alternate the order so neither side always runs on a warmer system
            order = ("floor", "ours") if i % 2 == 0 else ("ours", "floor")
            for who in order:
                if who == "floor":
                    out["floor_attach"].append(timed(floor_attach, t, portals))
                    if settle:
                        udev_settle()
                    out["floor_detach"].append(timed(floor_detach, t, portals))
                else:
                    start = time.monotonic()
                    info = connector.connect_volume(props)
                    out["ours_attach"].append(time.monotonic() - start)
                    if settle:
                        udev_settle()
                    out["ours_detach"].append(timed(connector.disconnect_volume, props, info))
    med = {k: statistics.median(v) for k, v in out.items()}
    return {
        "mode": "multipath" if multipath else "single",
        "n": n,
        "median": {k: round(v, 3) for k, v in med.items()},
        "ratio_attach": round(med["ours_attach"] / med["floor_attach"], 2),
        "ratio_detach": round(med["ours_detach"] / med["floor_detach"], 2),
        "samples": {k: [round(x, 3) for x in v] for k, v in out.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--multipath", action="store_true", help="also run the multipath case")
    ap.add_argument(
        "--back-to-back",
        action="store_true",
        help="time each detach right after its attach (no udev settle between)",
    )
    args = ap.parse_args()
    modes = [False, True] if args.multipath else [False]
    if args.multipath:
        tool = os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "kernel-lab", "guest-multipathd"
        )
        subprocess.run([tool, "start"], check=True, capture_output=True, timeout=60)
    for mp in modes:
        r = bench(args.n, mp, settle=not args.back_to_back)
        m = r["median"]
        print(
            f"{r['mode']:9s} attach: ours {m['ours_attach']:.3f}s floor {m['floor_attach']:.3f}s "
            f"ratio {r['ratio_attach']}  |  detach: ours {m['ours_detach']:.3f}s "
            f"floor {m['floor_detach']:.3f}s ratio {r['ratio_detach']}"
        )
        print("BENCH_JSON " + json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
