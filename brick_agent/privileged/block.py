"""Privileged block-device operations: flush buffers of one device, set it ro/rw."""

from __future__ import annotations

import os
from collections.abc import Callable

from brick_agent import commands
from brick_agent.errors import DeviceNotFound, InvalidArgument
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint

Runner = Callable[..., commands.CommandResult]


def do_flush_block_device(roots: HostRoots, name: str, *, timeout: float = 60.0,
                          run: Runner = commands.run) -> float:
    """``blockdev --flushbufs /dev/NAME`` for an sd/nvme/dm device; returns duration."""
    name = v.device_name(name)
    timeout = v.timeout_arg(timeout)
    if not os.path.isdir(roots.sysfs("block", name)):
        raise DeviceNotFound(f"block device {name} does not exist")
    dev = roots.devfs(name)
    v.path_under(roots.dev, dev)
    return run(["blockdev", "--flushbufs", dev], timeout=timeout).duration


def do_set_block_device_read_only(roots: HostRoots, name: str, read_only: bool, *,
                                  timeout: float = 30.0, run: Runner = commands.run) -> bool:
    """``blockdev --setro|--setrw /dev/NAME`` for an sd/nvme/dm device; returns the mode set."""
    name = v.device_name(name)
    if not isinstance(read_only, bool):
        raise InvalidArgument("read_only must be a boolean")
    timeout = v.timeout_arg(timeout)
    if not os.path.isdir(roots.sysfs("block", name)):
        raise DeviceNotFound(f"block device {name} does not exist")
    dev = roots.devfs(name)
    v.path_under(roots.dev, dev)
    run(["blockdev", "--setro" if read_only else "--setrw", dev], timeout=timeout)
    return read_only


@entrypoint
def set_block_device_read_only(name: str, read_only: bool) -> bool:
    return do_set_block_device_read_only(DEFAULT_ROOTS, name, read_only)


@entrypoint
def flush_block_device(name: str, timeout: float = 60.0) -> float:
    return do_flush_block_device(DEFAULT_ROOTS, name, timeout=timeout)
