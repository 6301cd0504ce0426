"""The per-target reader/writer lock: across threads and across real processes."""

from __future__ import annotations

import threading
import time

import pytest

from brick_agent import locking
from tests.unit.multiproc import CTX, run_processes
from brick_agent.errors import InvalidArgument, LockTimeout


def _overlaps(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# --------------------------------------------------------------------------- threads
def test_one_object_per_file_and_per_target(tmp_path):
    a = locking.target_rw_lock("nvme", "nqn.a", lock_path=str(tmp_path))
    assert a is locking.target_rw_lock("nvme", "nqn.a", lock_path=str(tmp_path))
    assert a is not locking.target_rw_lock("nvme", "nqn.b", lock_path=str(tmp_path))
    assert a.path.startswith(str(tmp_path)) and a.path.endswith("-rw")
    with pytest.raises(InvalidArgument):
        locking.rw_lock("a/b", lock_path=str(tmp_path))


def test_readers_overlap_across_threads(tmp_path):
    lock = locking.rw_lock("t1", lock_path=str(tmp_path))
    inside, peak, guard = [0], [0], threading.Lock()
    barrier = threading.Barrier(6)

    def reader():
        barrier.wait(5)
        with lock.shared(timeout=5):
            with guard:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.1)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] > 1


def test_writer_excludes_readers_and_writers_across_threads(tmp_path):
    lock = locking.rw_lock("t2", lock_path=str(tmp_path))
    spans: list[tuple[str, float, float]] = []
    guard = threading.Lock()

    def work(kind):
        ctx = lock.exclusive if kind == "w" else lock.shared
        with ctx(timeout=10):
            start = time.monotonic()
            time.sleep(0.05)
            end = time.monotonic()
        with guard:
            spans.append((kind, start, end))

    threads = [threading.Thread(target=work, args=("w" if i % 3 == 0 else "r",)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    writers = [s for s in spans if s[0] == "w"]
    assert len(spans) == 9 and len(writers) == 3
    for w in writers:
        for other in spans:
            if other is not w:
                assert not _overlaps(w[1:], other[1:]), (w, other)


def test_waiting_writer_is_not_starved_by_a_stream_of_readers(tmp_path):
    lock = locking.rw_lock("t3", lock_path=str(tmp_path))
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            with lock.shared(timeout=5):
                time.sleep(0.02)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    time.sleep(0.05)
    try:
        start = time.monotonic()
        with lock.exclusive(timeout=2):
            waited = time.monotonic() - start
    finally:
        stop.set()
        for t in readers:
            t.join(5)
    assert waited < 1.0


def test_timeouts_raise_lock_timeout_and_leave_the_lock_usable(tmp_path):
    lock = locking.rw_lock("t4", lock_path=str(tmp_path))
    got: list[str] = []
    with lock.exclusive():

        def other():
            for ctx in (lock.shared, lock.exclusive):
                try:
                    with ctx(timeout=0.1):
                        got.append("acquired")
                except LockTimeout:
                    got.append("timeout")

        t = threading.Thread(target=other)
        t.start()
        t.join(5)
    assert got == ["timeout", "timeout"]
    with lock.shared(timeout=1), lock.shared(timeout=1):
        pass
    with lock.exclusive(timeout=1):
        pass


def test_wait_for_writers(tmp_path):
    lock = locking.rw_lock("t5", lock_path=str(tmp_path))
    assert lock.wait_for_writers(0.1) is False
    released = []

    def writer(ready):
        with lock.exclusive():
            ready.set()
            time.sleep(0.15)
            released.append(time.monotonic())

    ready = threading.Event()
    t = threading.Thread(target=writer, args=(ready,))
    t.start()
    ready.wait(5)
    assert lock.wait_for_writers(5) is True
    assert released and lock.writes >= 1
    t.join(5)


def test_shared_lock_times_out_while_another_process_writes(tmp_path):
    # the file lock is taken for real: a child holding it exclusive blocks this process
    lock_path = str(tmp_path)
    ready, done = CTX.Event(), CTX.Event()
    child = CTX.Process(target=_hold, args=(lock_path, "t6", True, ready, done))
    child.start()
    try:
        assert ready.wait(10)
        lock = locking.rw_lock("t6", lock_path=lock_path)
        with pytest.raises(LockTimeout):
            lock.acquire_shared(timeout=0.2)
        with pytest.raises(LockTimeout):
            lock.acquire_exclusive(timeout=0.2)
    finally:
        done.set()
        child.join(10)
    with lock.shared(timeout=5):
        pass


def _hold(lock_path, name, exclusive, ready, done):
    lock = locking.rw_lock(name, lock_path=lock_path)
    with (lock.exclusive if exclusive else lock.shared)(timeout=10):
        ready.set()
        done.wait(10)


# --------------------------------------------------------------------------- processes
def _worker(barrier, results, lock_path, name, kind, delay, hold):
    barrier.wait(10)
    time.sleep(delay)
    lock = locking.rw_lock(name, lock_path=lock_path)
    asked = time.time()
    with (lock.exclusive if kind == "w" else lock.shared)(timeout=15):
        start = time.time()
        time.sleep(hold)
        end = time.time()
    results.put((kind, asked, start, end))


def _run(argsets):
    return run_processes(_worker, argsets)


def test_readers_of_two_processes_overlap(tmp_path):
    out = _run([(str(tmp_path), "p1", "r", 0.0, 0.4) for _ in range(2)])
    (_, _, s1, e1), (_, _, s2, e2) = out
    assert _overlaps((s1, e1), (s2, e2))


def test_writer_process_excludes_reader_processes(tmp_path):
    out = _run(
        [
            (str(tmp_path), "p2", "r", 0.0, 0.3),
            (str(tmp_path), "p2", "w", 0.05, 0.3),
            (str(tmp_path), "p2", "r", 0.1, 0.3),
        ]
    )
    writer = [o for o in out if o[0] == "w"][0]
    for other in out:
        if other is not writer:
            assert not _overlaps(writer[2:], other[2:]), (writer, other)


def test_waiting_writer_process_is_not_starved_by_overlapping_reader_processes(tmp_path):
    # four readers in a staggered relay would keep the file shared for ~2.4 s without
    # the gate; the writer asking at 0.1 s gets in once the readers already in leave
    readers = [(str(tmp_path), "p3", "r", 0.15 * i, 0.6) for i in range(4)]
    out = _run(readers + [(str(tmp_path), "p3", "w", 0.1, 0.05)])
    writer = [o for o in out if o[0] == "w"][0]
    last_reader_end = max(o[3] for o in out if o[0] == "r")
    assert writer[2] - writer[1] < 1.2
    assert writer[3] < last_reader_end
