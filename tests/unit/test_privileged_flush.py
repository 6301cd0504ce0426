"""The privileged block flush: BLKFLSBUF (the dirty pages written, the clean ones dropped),
in the daemon itself and bounded by the caller's timeout.  A real block device
is flushed in every lab detach; here the system calls are observed."""

from __future__ import annotations

import errno
import os
import stat
import time

import pytest

from brick_agent.errors import CommandFailed, DeviceNotFound, InvalidArgument, KernelActionTimeout
from brick_agent.privileged import block


@pytest.fixture
def device(tmp_path, monkeypatch):
    """A file the flush takes for a block device; its calls recorded in order."""
    path = tmp_path / "nvme1n1"
    path.write_bytes(b"")
    calls: list[tuple[str, int]] = []
    real_fstat = os.fstat

    def fstat(fd):
        st = real_fstat(fd)
        return os.stat_result((stat.S_IFBLK | 0o660,) + tuple(st)[1:])

    monkeypatch.setattr(block.os, "fstat", fstat)
    monkeypatch.setattr(block.os, "fsync", lambda fd: calls.append(("fsync", fd)))
    monkeypatch.setattr(block, "_flushbufs", lambda fd: calls.append(("BLKFLSBUF", fd)))
    return str(path), calls


def test_fsync_then_blkflsbuf_on_one_descriptor_then_closed(device):
    path, calls = device
    block.flush_device(path, 5.0)
    assert [c[0] for c in calls] == ["BLKFLSBUF"]  # no fsync
    with pytest.raises(OSError):
        os.fstat(calls[0][1])  # the descriptor was closed


def test_a_flush_the_kernel_keeps_blocked_is_abandoned_at_the_timeout(device, monkeypatch):
    path, _ = device
    monkeypatch.setattr(block, "_flushbufs", lambda fd: time.sleep(3))
    start = time.monotonic()
    with pytest.raises(KernelActionTimeout):
        block.flush_device(path, 0.2)
    assert time.monotonic() - start < 2


def test_a_failed_fsync_is_a_command_failure_naming_it(device, monkeypatch):
    path, calls = device

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(block, "_flushbufs", eio)
    with pytest.raises(CommandFailed, match="BLKFLSBUF") as err:
        block.flush_device(path, 5.0)
    assert err.value.returncode == errno.EIO


def test_missing_device_and_not_a_block_device(tmp_path):
    with pytest.raises(DeviceNotFound):
        block.flush_device(str(tmp_path / "gone"), 5.0)
    (tmp_path / "regular").write_bytes(b"")
    with pytest.raises(InvalidArgument):
        block.flush_device(str(tmp_path / "regular"), 5.0)


def test_a_device_the_kernel_refuses_to_open_is_a_typed_error(tmp_path):
    """A transport-offline disk answers open(2) with ENXIO (seen on the real kernel after
    replacement_timeout); a unix socket does the same, so it stands in for /dev/sdX."""
    import socket

    node = tmp_path / "sdy"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(node))
        with pytest.raises(CommandFailed) as err:
            block.flush_device(str(node), 5.0)
    assert err.value.returncode == errno.ENXIO and str(node) in str(err.value)


def test_the_daemon_side_body_uses_it_by_default():
    import inspect

    assert inspect.signature(block.do_flush_block_device).parameters["flush"].default is (
        block.flush_device
    )
