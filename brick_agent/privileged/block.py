"""Privileged block-device operations: flush one device, set it ro/rw.

Only fabric volumes' devices (see :mod:`._owned`); the access mode of a device the
host uses (root, swap, a mounted filesystem) is never changed.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Callable

from brick_agent import commands
from brick_agent.errors import CommandFailed, DeviceNotFound, InvalidArgument
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _files, _owned
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint

Runner = Callable[..., commands.CommandResult]


#: ``BLKFLSBUF`` (``_IO(0x12, 97)``): write the dirty pages and drop the clean ones.
BLKFLSBUF = 0x1261

Flusher = Callable[[str, float], None]


def flush_device(dev: str, timeout: float) -> None:
    """``BLKFLSBUF`` on block device ``dev`` (what ``blockdev --flushbufs`` does: write the
    dirty pages, drop the cached ones) within ``timeout`` seconds, here in the daemon rather
    than by starting ``blockdev`` (a whole process per detach).  No cache FLUSH is sent: an
    ``fsync`` would, and fails with ENOLINK on a multipath path whose port is gone.  A flush
    the kernel keeps blocked (a target gone) is abandoned after ``timeout``
    (:class:`KernelActionTimeout`); an open the device refuses (ENXIO: a transport-offline
    disk) is :class:`CommandFailed`.
    """

    def flush() -> None:
        try:
            fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except FileNotFoundError:
            raise DeviceNotFound(f"{dev} does not exist") from None
        except OSError as exc:
            raise CommandFailed(["open", dev], exc.errno, exc.strerror or str(exc)) from None
        try:
            if not stat.S_ISBLK(os.fstat(fd).st_mode):
                raise InvalidArgument(f"{dev} is not a block device")
            try:  # no fsync: its cache FLUSH fails (ENOLINK) on a path whose port is gone
                _flushbufs(fd)
            except OSError as exc:
                raise CommandFailed(
                    ["BLKFLSBUF", dev], exc.errno, exc.strerror or str(exc)
                ) from None
        finally:
            os.close(fd)

    _files.bounded(flush, timeout, f"flush of {dev}")


def _flushbufs(fd: int) -> None:
    fcntl.ioctl(fd, BLKFLSBUF)


def do_flush_block_device(
    roots: HostRoots, name: str, *, timeout: float = 60.0, flush: Flusher = flush_device
) -> float:
    """Flush an sd/nvme/dm device of a fabric volume (:func:`flush_device`); the duration."""
    name = v.device_name(name)
    timeout = v.timeout_arg(timeout)
    dev = _fabric_device(roots, name)
    start = time.monotonic()
    flush(dev, timeout)
    return time.monotonic() - start


def _fabric_device(roots: HostRoots, name: str, *, unused: bool = False) -> str:
    """/dev path of existing fabric volume device ``name`` (see :mod:`._owned`)."""
    if not any(
        os.path.isdir(p) for p in (roots.sysfs("block", name), roots.sysfs("class", "block", name))
    ):
        raise DeviceNotFound(f"block device {name} does not exist")
    _owned.require_fabric_block(roots, name)
    if unused:
        _owned.require_unused(roots, f"block device {name}", [name])
    dev = roots.devfs(name)
    v.path_under(roots.dev, dev)
    return dev


def do_set_block_device_read_only(
    roots: HostRoots,
    name: str,
    read_only: bool,
    *,
    timeout: float = 30.0,
    run: Runner = commands.run,
) -> bool:
    """``blockdev --setro|--setrw /dev/NAME`` for an sd/nvme/dm device; returns the mode set."""
    name = v.device_name(name)
    if not isinstance(read_only, bool):
        raise InvalidArgument("read_only must be a boolean")
    timeout = v.timeout_arg(timeout)
    dev = _fabric_device(roots, name, unused=True)
    run(["blockdev", "--setro" if read_only else "--setrw", dev], timeout=timeout)
    return read_only


@entrypoint
def set_block_device_read_only(name: str, read_only: bool) -> bool:
    return do_set_block_device_read_only(DEFAULT_ROOTS, name, read_only)


@entrypoint
def flush_block_device(name: str, timeout: float = 60.0) -> float:
    return do_flush_block_device(DEFAULT_ROOTS, name, timeout=timeout)
