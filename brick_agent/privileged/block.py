"""Privileged block-device operations: flush buffers of one device."""

from __future__ import annotations

import os
from collections.abc import Callable

from brick_agent import commands
from brick_agent.errors import DeviceNotFound
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


@entrypoint
def flush_block_device(name: str, timeout: float = 60.0) -> float:
    return do_flush_block_device(DEFAULT_ROOTS, name, timeout=timeout)
