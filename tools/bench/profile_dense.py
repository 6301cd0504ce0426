#!/usr/bin/env python3
"""Where one attach+detach of ours spends the time a dense host adds (lab VM, as root).

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/profile_dense.py \
        [--sizes 0,1024] [-n 3]

For each size the host grows (tools/bench/dense.py), then ``n`` iSCSI and ``n`` NVMe/TCP
attach+detach cycles of brick_agent run in this process (privileged work in-process)
under cProfile.  Per size and protocol it prints the median wall time, this process's
CPU time (our Python and the kernel work of our syscalls), and the time spent in what
we wait on: the iSCSI tools (``iscsiadm`` children), udev (the uevent waits), the
kernel's writes (scan, delete, the fabrics connect) and sysfs reads; then the
functions whose cumulative time grew the most.  What grows in the waits and not in our
CPU is the kernel's, iscsid's or udev's share.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from host import in_process_connectors, udev_settle  # noqa: E402

#: what we wait on: (label, predicate on (file, function), cumulative?) - the first two are
#: cumulative times of our calls, the others the builtins' own time
_READS = ("open", "read", "readlink", "scandir", "listdir", "stat", "lstat")
BUCKETS = (
    (
        "tools run (iscsiadm...: subprocess.run)",
        lambda f, n: f.endswith("subprocess.py") and n == "run",
    ),
    (
        "uevent waits (DeviceWatch.wait_for)",
        lambda f, n: f.endswith("host/udev.py") and n == "wait_for",
    ),
    (
        "writes (sysfs scan/delete, fabrics connect)",
        lambda f, n: n == "<built-in method posix.write>",
    ),
    (
        "sysfs and file reads",
        lambda f, n: (
            n in {f"<built-in method posix.{r}>" for r in _READS} | {"<built-in method io.open>"}
        ),
    ),
    ("fsync (ledger, flush)", lambda f, n: n == "<built-in method posix.fsync>"),
)


def _profile(conn: Any, props: dict[str, Any], n: int) -> dict[str, Any]:
    """``n`` profiled attach+detach cycles; an untimed ``udevadm settle`` before each
    attach and each detach (as in the benchmark: a detach comes long after its attach)."""
    walls, cpus = [], []
    prof = cProfile.Profile()
    for i in range(n + 1):  # cycle 0: warm-up
        udev_settle()
        t0, c0 = time.monotonic(), time.process_time()
        if i:
            prof.enable()
        info = conn.connect_volume(props)
        prof.disable()
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        udev_settle()
        t0, c0 = time.monotonic(), time.process_time()
        if i:
            prof.enable()
        conn.disconnect_volume(props, info)
        prof.disable()
        if i:
            walls.append(wall + time.monotonic() - t0)
            cpus.append(cpu + time.process_time() - c0)
    stats = pstats.Stats(prof)
    buckets = dict.fromkeys((label for label, _ in BUCKETS), 0.0)
    funcs: dict[str, float] = {}
    for (f, _line, name), (_cc, _nc, tt, ct, _callers) in stats.stats.items():
        for label, pred in BUCKETS:
            if pred(f, name):
                buckets[label] += (tt if name.startswith("<") else ct) / n
        if "brick_agent" in f:
            funcs[f"{f.split('brick_agent/')[-1]}:{name}"] = ct / n
    return {
        "wall": statistics.median(walls),
        "cpu": statistics.median(cpus),
        "buckets": buckets,
        "funcs": funcs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,1024")
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    from brick_lab import LioIscsiTarget, NvmetSubsystem
    from dense import DenseHost

    lock_dir = tempfile.mkdtemp(prefix="profile-dense-", dir="/var/tmp")
    iscsi, nvme = in_process_connectors(lock_dir)
    host = DenseHost()
    results: dict[tuple[int, str], dict[str, Any]] = {}
    with (
        LioIscsiTarget(luns=1, lun_size=1 << 20, initiators=["local"]) as t,
        NvmetSubsystem(namespaces=1, ns_size=1 << 20) as sub,
    ):
        iprops = {"target_portal": "127.0.0.1:3260", "target_iqn": t.iqn, "target_lun": 0}
        ns = sub.namespaces[1]
        nprops = {
            "target_nqn": sub.nqn,
            "vol_uuid": ns.uuid,
            "portals": [["127.0.0.1", 4420, "tcp"]],
        }
        for size in [int(x) for x in args.sizes.split(",")]:
            print(f"== {size} unrelated devices: {host.grow(size)}", flush=True)
            for name, conn, props in (("iSCSI", iscsi, iprops), ("NVMe/TCP", nvme, nprops)):
                r = results[(size, name)] = _profile(conn, props, args.n)
                print(f"  {name}: wall {r['wall']:.3f} s, our CPU {r['cpu']:.3f} s", flush=True)
                for label, secs in r["buckets"].items():
                    print(f"    {label}: {secs:.3f} s", flush=True)
    _growth(results, args.top)
    return 0


def _growth(results: dict[tuple[int, str], dict[str, Any]], top: int) -> None:
    sizes = sorted({s for s, _ in results})
    if len(sizes) < 2:
        return
    lo, hi = sizes[0], sizes[-1]
    for name in ("iSCSI", "NVMe/TCP"):
        a, b = results[(lo, name)], results[(hi, name)]
        print(f"\n## {name}: {lo} -> {hi} unrelated devices")
        print(f"| | at {lo} (s) | at {hi} (s) | grew (s) |")
        print("|---|---|---|---|")
        rows = [("wall", a["wall"], b["wall"]), ("our CPU", a["cpu"], b["cpu"])]
        rows += [(k, a["buckets"][k], b["buckets"][k]) for k in a["buckets"]]
        for label, x, y in rows:
            print(f"| {label} | {x:.3f} | {y:.3f} | {y - x:+.3f} |")
        grew = sorted(
            ((b["funcs"].get(k, 0) - a["funcs"].get(k, 0), k) for k in b["funcs"]), reverse=True
        )
        print(f"\nfunctions whose cumulative time grew most ({name}):")
        for d, k in grew[:top]:
            print(f"  {d:+.3f} s  {k}")


if __name__ == "__main__":
    raise SystemExit(main())
