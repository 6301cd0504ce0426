#!/usr/bin/env python3
"""Profile brick_agent's concurrent NVMe/TCP attach/detach in the lab VM (where the time goes).

    tools/kernel-lab/lab run -- .venv/bin/python
        tools/bench/profile_nvme_concurrency.py [--no-ledger]

Two nvmet subsystems of 8 namespaces, 16 threads attach then detach (as bench_compare's
concurrency section).  Wraps the library's inner steps with timers (summed over threads)
and prints, per step, calls / total / max seconds.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import logging
import sys
import tempfile
import threading
import time

# tools/bench/host.py, beside this script
from host import (
    concurrency_items,
    concurrency_targets,
    cpu_times,
    release_nvme_targets,
    udev_settle,
)

STATS: dict[str, list[float]] = collections.defaultdict(list)
SPANS: list[tuple[float, float, str, str]] = []  # (start, end, thread, step)
_LOCK = threading.Lock()


def _note(name: str, dt: float) -> None:
    end = time.monotonic()
    with _LOCK:
        STATS[name].append(dt)
        SPANS.append((end - dt, end, threading.current_thread().name, name))


def timed(owner: object, attr: str, name: str | None = None) -> None:
    fn = getattr(owner, attr)
    label = name or f"{getattr(owner, '__name__', owner)}.{attr}"

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        t0 = time.monotonic()
        try:
            return fn(*a, **kw)
        finally:
            _note(label, time.monotonic() - t0)

    setattr(owner, attr, wrapper)


def timed_cm(owner: object, attr: str, name: str) -> None:
    """Time a context manager factory: 'wait' (enter) and 'hold' (body)."""
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    @contextlib.contextmanager
    def wrapper(*a, **kw):
        t0 = time.monotonic()
        with fn(*a, **kw) as v:
            t1 = time.monotonic()
            _note(f"{name} wait", t1 - t0)
            try:
                yield v
            finally:
                _note(f"{name} hold", time.monotonic() - t1)

    setattr(owner, attr, wrapper)


def instrument() -> None:
    from brick_agent.connectors.nvmeof import actions as nvmeof_actions
    from brick_agent.connectors.nvmeof import connector as nvmeof
    from brick_agent.ledger import reconcile
    from brick_agent.ledger import store as ledger
    from brick_agent.host import nvme as hostnvme
    from brick_agent.host import udev

    C = nvmeof.NVMeOFConnector
    for attr in (
        "_topology",
        "_safe_rescan",
        "_wait_namespace",
        "_verify",
        "_attach_target",
        "_detach_target",
        "_connect_portals",
        "_flush",
        "_preflush",
        "_kept_for_attached_others",
        "_disconnect_controllers",
        "_users_of_others",
    ):
        timed(C, attr, f"nvmeof.{attr}")
    timed_cm(C, "_lock", "nvmeof target lock")
    timed_cm(reconcile, "_volume_lock", "ledger volume lock")
    timed_cm(ledger.AttachmentLedger, "transaction", "ledger transaction")
    timed(ledger, "device_identity", "ledger.device_identity")
    timed(nvmeof, "volume_devices_users", "volume_devices_users")
    reconcile.ledgermod = ledger
    timed(ledger.AttachmentLedger, "_write_locked", "ledger write")
    timed(hostnvme, "nvme_namespaces", "host.nvme_namespaces")
    timed(hostnvme, "nvme_controllers", "host.nvme_controllers")
    for attr in ("connect", "disconnect", "rescan", "flush"):
        timed(nvmeof_actions.PrivilegedNvmeActions, attr, f"actions.{attr}")
    timed(udev.DeviceWatch, "open", "DeviceWatch.open")
    timed(udev.DeviceWatch, "wait_for", "DeviceWatch.wait_for")
    timed(udev.DeviceWatch, "_wait_event", "DeviceWatch._wait_event")
    timed(udev.DeviceWatch, "_note", "DeviceWatch._note")


class IdleSampler:
    """The VM's idle share of each 50 ms slice (/proc/stat), while running."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = cpu_times()
        while not self._stop.wait(0.05):
            now = cpu_times()
            d = [b - a for a, b in zip(last, now, strict=True)]
            total = sum(d)
            self.samples.append((time.monotonic(), d[3] / total if total else 0.0))
            last = now

    def __enter__(self) -> IdleSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timeline(t0: float, idle: IdleSampler) -> None:
    """Each step's spans (ms from t0) by thread, then the idle share per 50 ms."""
    keep = (
        "nvmeof.",
        "iscsi.",
        "sessions.",
        "ops.",
        "actions.",
        "ledger.",
        "ledger transaction",
        "ledger volume lock",
        "nvmeof target lock",
        "target/session lock",
        "DeviceWatch.wait",
    )
    by_thread: dict[str, list[str]] = collections.defaultdict(list)
    for start, end, thread, name in sorted(SPANS):
        if start >= t0 and name.startswith(keep):
            by_thread[thread].append(
                f"{name.split('.')[-1]}@{(start - t0) * 1000:.0f}+{(end - start) * 1000:.0f}"
            )
    for thread in sorted(by_thread):
        print(f"  {thread[-6:]:>6s}: " + "  ".join(by_thread[thread]))
    print(
        "  idle%: "
        + " ".join(
            f"{(t - t0) * 1000:.0f}:{share * 100:.0f}" for t, share in idle.samples if t >= t0
        )
    )
    SPANS.clear()


def report(title: str) -> None:
    print(f"--- {title}: step, calls, total s, max s")
    for name, xs in sorted(STATS.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {name:32s} {len(xs):4d} {sum(xs):8.3f} {max(xs):7.3f}")
    STATS.clear()


def run_timed(tool: object, op: str, protocol: str, items: list[dict], show: bool) -> dict:
    """The worker's ``<op>_many`` of ``items`` with the steps' spans and the VM's idle share
    sampled (printed as each thread's timeline when ``show``); the worker's answer."""
    import worker as w

    SPANS.clear()
    t_start = time.monotonic()
    with IdleSampler() as idle:
        res = w.handle(tool, {"op": f"{op}_many", "protocol": protocol, "items": items})
    if show:
        timeline(t_start, idle)
    return res


def common_args(ap: argparse.ArgumentParser) -> None:
    """The options every concurrency profiler takes."""
    ap.add_argument("--no-ledger", action="store_true")
    ap.add_argument("--debug", action="store_true", help="library DEBUG log to stderr")
    ap.add_argument("--rounds", type=int, default=1)


def ours(args: argparse.Namespace):  # -> worker.Tool
    """Logging as ``--debug`` says and brick_agent's worker tool (in-process privsep, a
    fresh lock directory, no ledger with ``--no-ledger``)."""
    import worker as w

    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(relativeCreated)7d %(threadName)s %(name)s %(message)s",
    )
    tool = w.Tool("ours", tempfile.mkdtemp(prefix="brick-prof-"), False, None)
    if args.no_ledger:
        tool.conf.set_override("ledger_path", "", group="brick_agent")
    return tool


def main() -> int:
    ap = argparse.ArgumentParser()
    common_args(ap)
    ap.add_argument("--timeline", action="store_true", help="print each thread's steps")
    ap.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval (seconds) for a GIL-convoy experiment",
    )
    args = ap.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    tool = ours(args)
    instrument()
    for rnd in range(args.rounds):
        targets = concurrency_targets("NVME")
        try:
            for t in targets:
                t.create()
            items = concurrency_items("NVME", targets)
            tool._conns.clear()
            udev_settle()
            cpu = time.process_time()
            host0 = cpu_times()
            ra = run_timed(tool, "attach", "NVME", items, args.timeline)
            cpu = time.process_time() - cpu
            host = [b - a for a, b in zip(host0, cpu_times(), strict=True)]
            print(
                f"host cpu during attach (s): user {host[0]:.2f} system {host[1]:.2f} "
                f"softirq {host[2]:.2f} idle {host[3]:.2f}"
            )
            ts = sorted(r["t"] for r in ra["results"])
            print(
                f"round {rnd} attach wall {ra['t']:.3f} cpu {cpu:.3f} p50 {ts[len(ts) // 2]:.3f} "
                f"max {ts[-1]:.3f} ok={ra['ok']} "
                f"{[r.get('error') for r in ra['results'] if not r['ok']][:2]}"
            )
            report("attach")
            infos = [
                dict(it, info=r.get("info")) for it, r in zip(items, ra["results"], strict=True)
            ]
            udev_settle()
            rd = run_timed(tool, "detach", "NVME", infos, args.timeline)
            ts = sorted(r["t"] for r in rd["results"])
            print(
                f"round {rnd} detach wall {rd['t']:.3f} p50 {ts[len(ts) // 2]:.3f} "
                f"max {ts[-1]:.3f} ok={rd['ok']} "
                f"{[r.get('error') for r in rd['results'] if not r['ok']][:2]}"
            )
            report("detach")
        finally:
            release_nvme_targets(targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
