"""The compat connectors beside os-brick: its host-wide ``os-brick-connect_volume`` /
``os-brick-extend_volume`` locks are held shared around each operation.

os-brick itself takes them through its own decorator (``connectors.base.synchronized``,
oslo.concurrency external lock = fasteners' POSIX record lock) in another process or in
this one; brick_agent's operations wait for it, not for each other.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import types

import pytest

pytest.importorskip("os_brick")

from oslo_concurrency import lockutils  # noqa: E402
from oslo_config import cfg  # noqa: E402
from os_brick import opts as ob_opts  # noqa: E402
from os_brick.initiator.connectors import base as ob_base  # noqa: E402

from brick_agent.errors import LockTimeout  # noqa: E402
from brick_agent.os_brick_compat import coexist  # noqa: E402
from brick_agent.os_brick_compat import connectors as compat  # noqa: E402


@pytest.fixture
def lock_dir(tmp_path):
    """os-brick's lock directory, set the way os_brick.setup(CONF) leaves it."""
    locks = tmp_path / "locks"
    locks.mkdir()
    try:
        cfg.CONF.register_opts(ob_opts._opts, group="os_brick")
    except cfg.DuplicateOptError:
        pass
    lockutils.set_defaults(str(locks))
    cfg.CONF.set_override("lock_path", str(locks), group="os_brick")
    yield locks
    cfg.CONF.clear_override("lock_path", group="os_brick")
    lockutils.set_defaults(None)


def os_brick_holds(lock_dir, name: str, seconds: float) -> subprocess.Popen:
    """Another process in an os-brick operation: its own decorator holds ``name``."""
    child = textwrap.dedent(f"""
        import time
        from oslo_config import cfg
        from os_brick import opts
        from os_brick.initiator.connectors import base
        cfg.CONF.register_opts(opts._opts, group="os_brick")
        cfg.CONF.set_override("lock_path", {str(lock_dir)!r}, group="os_brick")

        @base.synchronized({name!r}, external=True)
        def operation():
            print("held", flush=True)
            time.sleep({seconds})

        operation()
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


class FakeAgent:
    """A brick_agent connector that records when each call ran."""

    def __init__(self) -> None:
        self.opts = types.SimpleNamespace(device_wait_timeout=0.5)
        self.calls: list[tuple[str, float]] = []

    def connect_volume(self, props):
        self.calls.append(("connect", time.monotonic()))
        return {"type": "block", "path": "/dev/sdz"}

    def disconnect_volume(self, props, info, force=False, ignore_errors=False):
        self.calls.append(("disconnect", time.monotonic()))

    def extend_volume(self, props):
        self.calls.append(("extend", time.monotonic()))
        return 1 << 30


def connector() -> tuple[compat.ISCSIConnector, FakeAgent]:
    conn = compat.ISCSIConnector(None)
    agent = FakeAgent()
    conn._agent = agent  # type: ignore[assignment]
    return conn, agent


PROPS = {
    "target_portal": "192.0.2.1:3260",
    "target_iqn": "iqn.2010-10.org.openstack:v",
    "target_lun": 1,
}


@pytest.mark.parametrize(
    "lock,op",
    [("connect_volume", "connect"), ("connect_volume", "disconnect"), ("extend_volume", "extend")],
)
def test_an_os_brick_operation_in_another_process_is_waited_for(lock_dir, lock, op):
    conn, agent = connector()
    proc = os_brick_holds(lock_dir, lock, 1.0)
    try:
        start = time.monotonic()
        if op == "connect":
            conn.connect_volume(dict(PROPS))
        elif op == "disconnect":
            conn.disconnect_volume(dict(PROPS), None)
        else:
            conn.extend_volume(dict(PROPS))
        assert agent.calls[0][0] == op
        assert agent.calls[0][1] - start > 0.5  # ran only once os-brick let go
    finally:
        proc.wait(timeout=30)


def test_brick_agent_operations_do_not_wait_for_each_other(lock_dir):
    """Shared among themselves: two connects hold the lock at once."""
    inside = threading.Barrier(2, timeout=5)

    def one():
        with coexist.shared_with_os_brick(coexist.CONNECT, timeout=5):
            inside.wait()  # both inside together, or BrokenBarrierError

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not inside.broken
    assert (lock_dir / "os-brick-connect_volume").exists()


def test_os_brick_in_this_process_is_excluded_too(lock_dir):
    """Nova's ISER connector (os-brick's own code) in the same process: its fasteners lock
    excludes our shared lock, and releasing its descriptor does not drop ours."""
    held = threading.Event()
    release = threading.Event()

    @ob_base.synchronized("connect_volume", external=True)
    def os_brick_operation():
        held.set()
        release.wait(5)

    t = threading.Thread(target=os_brick_operation)
    t.start()
    assert held.wait(5)
    with pytest.raises(LockTimeout, match="os-brick-connect_volume"):
        with coexist.shared_with_os_brick(coexist.CONNECT, timeout=0.3):
            pass
    release.set()
    t.join(5)
    path = lock_dir / "os-brick-connect_volume"
    with coexist.shared_with_os_brick(coexist.CONNECT, timeout=2):
        os.close(os.open(path, os.O_RDWR))  # closing a descriptor drops POSIX locks, not ours
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
            import fcntl, os, sys
            fd = os.open({str(lock_dir / "os-brick-connect_volume")!r}, os.O_RDWR)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                sys.exit(3)                       # excluded: ours is still held
            sys.exit(0)
        """),
            ]
        )
        assert proc.wait(30) == 3


def test_a_lock_directory_not_made_yet_is_created(lock_dir):
    """oslo.concurrency creates its lock_path on first use; a fresh host has none yet."""
    fresh = lock_dir / "not-yet"
    cfg.CONF.set_override("lock_path", str(fresh), group="os_brick")
    conn, agent = connector()
    conn.connect_volume(dict(PROPS))
    assert agent.calls[0][0] == "connect"
    assert (fresh / "os-brick-connect_volume").is_file()
