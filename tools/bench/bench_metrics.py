#!/usr/bin/env python3
"""What brick_agent's metrics cost per attach (micro-benchmark, no kernel needed).

    .venv/bin/python tools/bench/bench_metrics.py [-n 20000] [--flushes 500]

Prints microseconds per call of: one phase span (``with metrics.phase``), the
``@metrics.timed`` wrapper with its flush request (what an attach waits for), and the
background flush (merge into the state file under the host lock, atomic replace), alone
and with the node-exporter textfile rendered; then an attach's share on its own thread:
1 timed wrapper + 6 phase spans.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types

from brick_agent import metrics


def per_call_us(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def span() -> None:
    with metrics.phase("ISCSI", "scan"):
        pass


class _Connector:
    protocol = "ISCSI"

    def __init__(self, tmp: str) -> None:
        from brick_agent import config

        self.ledger = types.SimpleNamespace(path=os.path.join(tmp, "state", "attachments.json"))
        self.conf = config.new_conf(overrides={"lock_path": os.path.join(tmp, "locks")})

    @metrics.timed("attach")
    def connect_volume(self) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="in-memory calls per measurement")
    parser.add_argument("--flushes", type=int, default=500, help="flushes per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "state", metrics.STATE_FILE)
        locks = os.path.join(tmp, "locks")
        textfile = os.path.join(tmp, "brick_agent.prom")

        def flush(textfile_path: str | None) -> None:
            # what one attach leaves to flush: its phases and its latency
            for phase in ("login", "scan", "wait", "verify", "map"):
                metrics.observe(metrics.PHASE_SECONDS, ("ISCSI", phase), 0.01)
            metrics.observe(metrics.OPERATION_SECONDS, ("ISCSI", "attach"), 0.3)
            metrics.flush(state, lock_path=locks, textfile=textfile_path)

        results = {
            "phase span": per_call_us(span, args.n),
            "timed wrapper + flush request": per_call_us(_Connector(tmp).connect_volume, args.n),
            "flush (state file)": per_call_us(lambda: flush(None), args.flushes),
            "flush (state file + textfile)": per_call_us(lambda: flush(textfile), args.flushes),
        }
        metrics.drain()
    results["per attach, on its thread (1 timed + 6 spans)"] = (
        results["timed wrapper + flush request"] + 6 * results["phase span"]
    )
    for name, us in results.items():
        print(f"{name:55s} {us:9.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
