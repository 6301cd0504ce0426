"""Run a worker in several real processes started together (fork), collect their results."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from typing import Any

CTX = multiprocessing.get_context("fork")


def run_processes(
    target: Callable[..., None], argsets: Sequence[tuple], *, timeout: float = 30.0
) -> list[Any]:
    """Start ``target(barrier, results, *args)`` once per ``args`` in ``argsets``; return
    what the processes put on ``results`` (one item each, in arrival order).  Every
    process must exit 0."""
    results = CTX.Queue()
    barrier = CTX.Barrier(len(argsets))
    procs = [CTX.Process(target=target, args=(barrier, results, *a)) for a in argsets]
    for p in procs:
        p.start()
    out = [results.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    return out
