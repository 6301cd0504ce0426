#!/usr/bin/env python3
"""Our process's CPU per attach and per detach, one call at a time (lab VM, as root).

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/cpu_per_call.py \
        [--code CHECKOUT] [-n 8]

One iSCSI target and one NVMe/TCP subsystem of two volumes each; the second volume stays
attached throughout (so a detach keeps the session or controller, as most detaches of a
shared target do), the first is attached and detached ``n`` times after one warm-up
cycle, an untimed ``udevadm settle`` before each call.  Prints the median
``time.process_time()`` of the calls (our Python and the kernel work of our system calls;
privileged work in-process, no profiler).  ``--code``: import brick_agent from another
checkout (e.g. a ``git worktree`` of an older commit) to compare two versions in the same
VM conditions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def _cycles(conn: Any, props: dict, keep: dict, n: int, settle: Callable[[], None]) -> tuple:
    """Median CPU seconds of ``n`` attaches and detaches of ``props`` (``keep`` attached)."""
    attaches, detaches = [], []
    kept = conn.connect_volume(keep)
    try:
        for i in range(n + 1):  # cycle 0: warm-up
            settle()
            c0 = time.process_time()
            info = conn.connect_volume(props)
            attach = time.process_time() - c0
            settle()
            c0 = time.process_time()
            conn.disconnect_volume(props, info)
            if i:
                attaches.append(attach)
                detaches.append(time.process_time() - c0)
    finally:
        conn.disconnect_volume(keep, kept)
    return statistics.median(attaches), statistics.median(detaches)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", default=os.path.dirname(os.path.dirname(HERE)))
    ap.add_argument("-n", type=int, default=8)
    args = ap.parse_args()
    code = os.path.abspath(args.code)
    sys.path[:0] = [HERE, code]
    from host import in_process_connectors, udev_settle

    from brick_lab import LioIscsiTarget, NvmetSubsystem

    iscsi, nvme = in_process_connectors(tempfile.mkdtemp(prefix="cpu-per-call-", dir="/var/tmp"))
    rows = []
    with LioIscsiTarget(luns=2, lun_size=1 << 20, initiators=["local"]) as t:
        props = {"target_portal": "127.0.0.1:3260", "target_iqn": t.iqn, "target_lun": 0}
        rows.append(
            ("iSCSI", *_cycles(iscsi, props, {**props, "target_lun": 1}, args.n, udev_settle))
        )
    with NvmetSubsystem(namespaces=2, ns_size=1 << 20) as sub:

        def ns(nsid: int) -> dict:
            return {
                "target_nqn": sub.nqn,
                "vol_uuid": sub.namespaces[nsid].uuid,
                "portals": [["127.0.0.1", 4420, "tcp"]],
            }

        rows.append(("NVMe/TCP", *_cycles(nvme, ns(1), ns(2), args.n, udev_settle)))
    for name, attach, detach in rows:
        print(
            f"{name} ({code}): CPU per attach {attach * 1000:.1f} ms, "
            f"per detach {detach * 1000:.1f} ms (median of {args.n})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
