"""Lock files are private (0700 dir, 0600 files, no symlinks), every wait is bounded, and
neither the lock directory nor the in-process cache grows with the volumes ever seen."""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import stat
import tempfile
import threading
import time

import pytest

from brick_agent import config, locking
from brick_agent.connectors.iscsi import actions as iscsi_privileged
from brick_agent.errors import InvalidArgument, LockTimeout
from tests.unit.multiproc import CTX, run_processes
from tests.unit.test_locking_processes import _max_overlap

NOBODY = 65534


@pytest.fixture
def shared_base():
    """A world-traversable base directory (pytest's tmp_path is 0700: other users could
    not reach a lock directory there whatever its mode)."""
    base = tempfile.mkdtemp(prefix="brick-locks-", dir="/var/tmp")
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _modes(directory: str) -> dict[str, int]:
    return {
        name: stat.S_IMODE(os.lstat(os.path.join(directory, name)).st_mode)
        for name in os.listdir(directory)
    }


def _node_db(lock_path: str, timeout: float | None = None):
    conf = config.new_conf(overrides={"lock_path": lock_path, "privsep_in_process": True})
    actions = iscsi_privileged.PrivilegedIscsiActions(conf)
    return (
        actions._node_db(exclusive=True, timeout=timeout)
        if timeout is not None
        else actions._node_db(exclusive=True)
    )


def _every_lock_kind(lock_path: str) -> None:
    with locking.external_lock("brick_agent-ledger", lock_path=lock_path):
        with locking.target_lock("iscsi", "192.0.2.1:3260|iqn.x", lock_path=lock_path):
            with locking.HostConcurrencyLimit(2, lock_path).slot(timeout=5):
                with locking.target_rw_lock("nvme", "nqn.a", lock_path=lock_path).shared():
                    with _node_db(lock_path):
                        assert _modes(lock_path)  # files exist while held
                        for name, mode in _modes(lock_path).items():
                            assert mode == 0o600, (name, oct(mode))


def test_lock_dir_is_0700_and_lock_files_0600(tmp_path):
    lock_path = str(tmp_path / "locks")
    _every_lock_kind(lock_path)
    assert stat.S_IMODE(os.stat(lock_path).st_mode) == 0o700


def test_an_existing_open_lock_dir_and_files_are_tightened(tmp_path):
    lock_path = tmp_path / "locks"
    lock_path.mkdir(mode=0o755)
    os.chmod(lock_path, 0o755)
    slot = lock_path / "brick_agent-slot-0"
    slot.write_text("")
    os.chmod(slot, 0o644)
    with locking.HostConcurrencyLimit(1, str(lock_path)).slot(timeout=5):
        assert stat.S_IMODE(os.stat(slot).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(lock_path).st_mode) == 0o700


def test_a_planted_symlink_is_never_followed(tmp_path):
    lock_path = tmp_path / "locks"
    lock_path.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.chmod(victim, 0o644)
    name = locking.target_lock_name("iscsi", "k")
    os.symlink(victim, lock_path / name)
    with pytest.raises(InvalidArgument, match="symlink"):
        with locking.target_lock("iscsi", "k", lock_path=str(lock_path), timeout=1):
            pass
    assert victim.read_text() == "keep" and stat.S_IMODE(victim.stat().st_mode) == 0o644


def _nobody_takes(path: str, ready, outcome) -> None:
    """As user nobody: open ``path`` read-only and hold a shared flock + lockf on it."""
    try:
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        fcntl.lockf(fd, fcntl.LOCK_SH)
        outcome.put("held")
    except OSError as exc:
        outcome.put(type(exc).__name__)
    ready.set()
    time.sleep(3)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_another_user_cannot_block_attaches(shared_base):
    lock_path = os.path.join(shared_base, "locks")
    _every_lock_kind(lock_path)  # creates the directory as an agent would
    name = locking.target_lock_name("iscsi", "victim")
    with locking.target_lock("iscsi", "victim", lock_path=lock_path):
        pass
    # the file an attacker would aim at (created here as it would be during an attach)
    path = os.path.join(lock_path, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    ready, outcome = CTX.Event(), CTX.Queue()
    child = CTX.Process(target=_nobody_takes, args=(path, ready, outcome))
    child.start()
    try:
        assert ready.wait(10)
        assert outcome.get(timeout=5) == "PermissionError"
        start = time.monotonic()
        with locking.target_lock("iscsi", "victim", lock_path=lock_path, timeout=1):
            pass
        assert time.monotonic() - start < 0.5
    finally:
        child.kill()
        child.join(5)


def _hold_node_db(barrier, results, lock_path):
    with _node_db(lock_path):
        barrier.wait(10)
        time.sleep(3)
    results.put("done")


def test_node_db_lock_wait_is_bounded(tmp_path):
    lock_path = str(tmp_path / "locks")
    holder = threading.Thread(
        target=run_processes, args=(_hold_node_db, [(lock_path,)]), daemon=True
    )
    holder.start()
    deadline = time.monotonic() + 10
    while not os.path.exists(lock_path) or not os.listdir(lock_path):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    outcome: list[object] = []

    def waiter() -> None:
        start = time.monotonic()
        try:
            with _node_db(lock_path, timeout=0.5):
                outcome.append("acquired")
        except LockTimeout:
            outcome.append(time.monotonic() - start)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    t.join(2.5)
    assert not t.is_alive(), "node-db lock wait is unbounded"
    assert isinstance(outcome[0], float) and 0.4 <= outcome[0] < 1.5
    holder.join(10)


def test_lock_files_and_cache_are_bounded_by_what_is_live(tmp_path):
    lock_path = str(tmp_path / "locks")
    for i in range(300):
        with locking.external_lock(
            locking.safe_lock_name("volume", f"vol-{i}"), lock_path=lock_path
        ):
            pass
        with locking.target_lock("iscsi", f"192.0.2.1:3260|iqn.t{i}", lock_path=lock_path):
            with locking.device_lock(f"sd{chr(97 + i % 26)}", lock_path=lock_path):
                pass
        with locking.target_rw_lock("nvme", f"nqn.t{i}", lock_path=lock_path).exclusive():
            pass
        with locking.target_rw_lock("nvme", f"nqn.t{i}", lock_path=lock_path).shared():
            pass
    gc.collect()
    assert os.listdir(lock_path) == []
    assert len(locking._rw_locks) == 0 and len(locking._name_slots) == 0


def test_a_held_lock_keeps_its_file_and_object(tmp_path):
    lock_path = str(tmp_path / "locks")
    rw = locking.target_rw_lock("nvme", "nqn.held", lock_path=lock_path)
    with rw.shared():
        gc.collect()
        assert locking.target_rw_lock("nvme", "nqn.held", lock_path=lock_path) is rw
        assert any(n.endswith("-rw") for n in os.listdir(lock_path))


def _count_worker(barrier, results, lock_path, counter, rounds):
    barrier.wait(10)
    for _ in range(rounds):
        with locking.external_lock("brick_agent-volume-race", lock_path=lock_path, timeout=30):
            with open(counter) as f:
                value = int(f.read() or 0)
            with open(counter, "w") as f:
                f.write(str(value + 1))
    results.put(os.getpid())


def test_removing_lock_files_keeps_mutual_exclusion_across_processes_and_threads(tmp_path):
    """The unlink race: a waiter holding a descriptor of a removed file must not think it
    holds the lock.  Lost increments would show it."""
    lock_path = str(tmp_path / "locks")
    counter = tmp_path / "counter"
    counter.write_text("0")
    threads = [
        threading.Thread(
            target=run_processes, args=(_count_worker, [(lock_path, str(counter), 60)] * 3)
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert int(counter.read_text()) == 2 * 3 * 60
    assert os.listdir(lock_path) == []


def test_threads_exclude_each_other_with_removal(tmp_path):
    lock_path = str(tmp_path / "locks")
    held: list[tuple[float, float]] = []

    def worker() -> None:
        for _ in range(100):
            with locking.external_lock("brick_agent-device-sdq", lock_path=lock_path):
                start = time.monotonic()
                time.sleep(0)
                held.append((start, time.monotonic()))

    workers = [threading.Thread(target=worker) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert len(held) == 800 and _max_overlap(held) == 1
    assert os.listdir(lock_path) == [] and len(locking._name_slots) == 0


def _service_user_locks(lock_path: str, outcome) -> None:
    """As the service user (nobody): take the host-wide ledger lock a root CLI created."""
    try:
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        with locking.external_lock("brick_agent-ledger", lock_path=lock_path, timeout=5):
            outcome.put("locked")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        outcome.put(type(exc).__name__)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_root_cli_in_a_service_users_lock_dir_leaves_files_that_user_can_lock(shared_base):
    lock_path = os.path.join(shared_base, "locks")
    os.makedirs(lock_path, mode=0o700)
    os.chown(lock_path, NOBODY, NOBODY)  # the service's own lock directory
    with locking.external_lock("brick_agent-ledger", lock_path=lock_path):  # an operator, root
        owner = os.stat(os.path.join(lock_path, "brick_agent-ledger")).st_uid
    assert owner == NOBODY
    outcome = CTX.Queue()
    child = CTX.Process(target=_service_user_locks, args=(lock_path, outcome))
    child.start()
    child.join(10)
    assert outcome.get(timeout=1) == "locked"
