"""Locks between real processes: guard_connection, per-target locks, the host limit.

Each child process waits on a barrier, then takes the lock and records the
wall-clock interval it held it; the parent checks overlaps.
"""

from __future__ import annotations

import time

from brick_agent import locking
from tests.unit.multiproc import run_processes

SERVICE = "2b1f7d1c-5a5e-4d43-8a7e-1d9a2e0f6c33"
HOLD = 0.25


def _guard_worker(barrier, results, volume, lock_path, manual_scan):
    barrier.wait(10)
    asked = time.time()
    with locking.guard_connection(
        volume, lock_path=lock_path, manual_scan_supported=manual_scan
    ) as held:
        start = time.time()
        time.sleep(HOLD)
        end = time.time()
    results.put((asked, start, end, held))


def _target_worker(barrier, results, kind, key, lock_path, delay):
    barrier.wait(10)
    time.sleep(delay)
    asked = time.time()
    with locking.target_lock(kind, key, lock_path=lock_path):
        start = time.time()
        time.sleep(0.5 if key == "A" else 0.05)
        end = time.time()
    results.put((key, asked, start, end))


def _limit_worker(barrier, results, n, lock_path):
    barrier.wait(10)
    limit = locking.HostConcurrencyLimit(n, lock_path)
    with limit.slot(timeout=10):
        start = time.time()
        time.sleep(0.15)
        end = time.time()
    results.put((start, end))


def _run(target, argsets):
    return run_processes(target, argsets, timeout=20)


def _max_overlap(intervals):
    events = sorted(
        [(s, 1) for s, e in intervals] + [(e, -1) for s, e in intervals], key=lambda x: (x[0], x[1])
    )
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def _guard(volume, lock_path, manual_scan, n=2):
    out = _run(_guard_worker, [(volume, lock_path, manual_scan)] * n)
    return [(s, e) for _, s, e, _ in out], [h for *_, h in out]


def test_none_holders_on_one_service_serialise(tmp_path):
    vol = {"shared_targets": None, "service_uuid": SERVICE}
    intervals, held = _guard(vol, str(tmp_path), manual_scan=True, n=3)
    assert held == [True] * 3
    assert _max_overlap(intervals) == 1
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    assert span >= 3 * HOLD * 0.95


def test_none_holders_on_different_services_run_together(tmp_path):
    out = _run(
        _guard_worker,
        [
            ({"shared_targets": None, "service_uuid": "svc-a"}, str(tmp_path), True),
            ({"shared_targets": None, "service_uuid": "svc-b"}, str(tmp_path), True),
        ],
    )
    assert _max_overlap([(s, e) for _, s, e, _ in out]) == 2


def test_false_never_blocks(tmp_path):
    # a holder of the service lock (None) does not delay shared_targets=False users
    vol_lock = {"shared_targets": None, "service_uuid": SERVICE}
    vol_free = {"shared_targets": False, "service_uuid": SERVICE}
    out = _run(
        _guard_worker,
        [
            (vol_lock, str(tmp_path), False),
            (vol_free, str(tmp_path), False),
            (vol_free, str(tmp_path), False),
        ],
    )
    assert _max_overlap([(s, e) for _, s, e, _ in out]) == 3
    for asked, start, _, held in out:
        if not held:
            assert start - asked < 0.15  # far below the holder's HOLD


def test_true_blocks_only_without_manual_scan(tmp_path):
    vol = {"shared_targets": True, "service_uuid": SERVICE}
    intervals, held = _guard(vol, str(tmp_path / "supported"), manual_scan=True)
    assert held == [False, False]
    assert _max_overlap(intervals) == 2
    intervals, held = _guard(vol, str(tmp_path / "unsupported"), manual_scan=False)
    assert held == [True, True]
    assert _max_overlap(intervals) == 1


def test_slow_attach_on_target_a_does_not_delay_target_b(tmp_path):
    out = _run(
        _target_worker,
        [
            ("iscsi", "A", str(tmp_path), 0.0),
            ("iscsi", "B", str(tmp_path), 0.1),
            ("iscsi", "A", str(tmp_path), 0.1),
        ],
    )
    by = {}
    for key, asked, start, end in out:
        by.setdefault(key, []).append((asked, start, end))
    ((b_asked, b_start, b_end),) = by["B"]
    first_a, second_a = sorted(by["A"], key=lambda x: x[1])
    # B started while the slow A attach was still running, without waiting
    assert b_start - b_asked < 0.15  # A is held for 0.5 s
    assert first_a[1] < b_start < first_a[2]
    # the second attach on A did wait for the first
    assert second_a[1] >= first_a[2]
    assert second_a[1] - second_a[0] > 0.25


def test_host_limit_bounds_processes(tmp_path):
    out = _run(_limit_worker, [(2, str(tmp_path))] * 5)
    assert _max_overlap(out) == 2
    span = max(e for _, e in out) - min(s for s, _ in out)
    assert span >= 3 * 0.15 * 0.95
