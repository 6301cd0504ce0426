"""Privileged block-device operations: flush buffers of one device, set it ro/rw.

Only fabric volumes' devices (see :mod:`._owned`); the access mode of a device the
host uses (root, swap, a mounted filesystem) is never changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from brick_agent import commands
from brick_agent.errors import DeviceNotFound, InvalidArgument
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _owned
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint

Runner = Callable[..., commands.CommandResult]


def do_flush_block_device(
    roots: HostRoots, name: str, *, timeout: float = 60.0, run: Runner = commands.run
) -> float:
    """``blockdev --flushbufs /dev/NAME`` for an sd/nvme/dm device; returns duration."""
    name = v.device_name(name)
    timeout = v.timeout_arg(timeout)
    dev = _fabric_device(roots, name)
    return run(["blockdev", "--flushbufs", dev], timeout=timeout).duration


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
