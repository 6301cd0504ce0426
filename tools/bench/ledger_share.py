#!/usr/bin/env python3
"""The attachment ledger's share of the 16-volume concurrency (lab VM, as root).

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/ledger_share.py \
        [--protocol iscsi|nvme] [--rounds 6]

Section 2's workload (16 volumes over 2 targets or subsystems, 16 threads, fresh targets
for each run, each attach and detach started on a settled udev), run in turn by three
doers in one VM run: brick_agent with its ledger (as deployed), brick_agent without it
(``ledger_path`` empty), and the floor the issue defines (iSCSI: manual-scan logins and
one ``c t l`` scan per LUN, the detach flushing every disk; NVMe/TCP: both ``nvme
connect`` at once, the detach flushing every namespace).  The order rotates every round;
round 0 is a warm-up.  Prints each run, then the median wall and our process's CPU per
doer and operation, and the ratios to the floor.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_compare  # noqa: E402
import worker  # noqa: E402
from host import (  # noqa: E402
    concurrency_items,
    concurrency_targets,
    release_nvme_targets,
    udev_settle,
)

DOERS = ("ledger", "no-ledger", "floor")
OPS = ("attach", "detach")


def _ours(ledger: bool) -> worker.Tool:
    tool = worker.Tool("ours", tempfile.mkdtemp(prefix="brick-ledger-share-"), False, None)
    if not ledger:
        tool.conf.set_override("ledger_path", "", group="brick_agent")
    return tool


def _iscsi_floor(targets: list[Any]) -> dict[str, float]:
    got = bench_compare._iscsi_floor_many(targets, targeted=True)
    return {"attach": got["attach"]["wall"], "detach": got["detach"]["wall"]}


def _nvme_floor(targets: list[Any]) -> dict[str, float]:
    got = bench_compare._nvme_floor_many(targets, flush=True)
    return {"attach": got["attach"]["wall"], "detach": got["detach"]["wall"]}


def _destroy(targets: list[Any]) -> None:
    for t in targets:
        t.destroy()


#: --protocol: (the worker's protocol, the floor's run, the targets' teardown)
PROTOCOLS: dict[str, tuple[str, Callable, Callable]] = {
    "iscsi": ("ISCSI", _iscsi_floor, _destroy),
    "nvme": ("NVME", _nvme_floor, release_nvme_targets),
}


def _ours_run(tool: worker.Tool, protocol: str, items: list[dict]) -> dict[str, tuple]:
    """(wall, our CPU) of the 16 attaches, then of the 16 detaches."""
    tool._conns.clear()
    out = {}
    for op in OPS:
        c0, t0 = time.process_time(), time.monotonic()
        got = worker.handle(tool, {"op": f"{op}_many", "protocol": protocol, "items": items})
        out[op] = (time.monotonic() - t0, time.process_time() - c0)
        if not got["ok"]:
            raise SystemExit(f"{op} failed: {[r for r in got['results'] if not r['ok']][:2]}")
        if op == "attach":
            items = [
                dict(it, info=r.get("info")) for it, r in zip(items, got["results"], strict=True)
            ]
        udev_settle()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="iscsi")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    protocol, floor, cleanup = PROTOCOLS[args.protocol]
    tools = {"ledger": _ours(True), "no-ledger": _ours(False)}
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for rnd in range(args.rounds + 1):
        order = DOERS[rnd % 3 :] + DOERS[: rnd % 3]
        for doer in order:
            targets = concurrency_targets(protocol)
            try:
                for t in targets:
                    t.create()
                udev_settle()
                if doer == "floor":
                    run = {op: (wall, 0.0) for op, wall in floor(targets).items()}
                else:
                    run = _ours_run(tools[doer], protocol, concurrency_items(protocol, targets))
            finally:
                cleanup(targets)
            for op, (wall, cpu) in run.items():
                print(f"round {rnd} {doer:9s} {op} wall {wall:.3f} cpu {cpu:.3f}", flush=True)
                if rnd:  # round 0: warm-up
                    got.setdefault((doer, op), []).append((wall, cpu))
    medians = {k: statistics.median(w for w, _ in v) for k, v in got.items()}
    print(f"{args.protocol}, {args.rounds} rounds: median wall (our CPU), ratio to the floor")
    for op in OPS:
        for doer in DOERS:
            runs = got[(doer, op)]
            cpu = statistics.median(c for _, c in runs)
            ratio = medians[(doer, op)] / medians[("floor", op)]
            print(
                f"  {op} {doer:9s} {medians[(doer, op)]:.3f} s ({cpu:.3f} s)  {ratio:.2f}x  "
                + " ".join(f"{w:.3f}" for w, _ in runs)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
