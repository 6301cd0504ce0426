"""Privileged dm-multipath operations: flush a map, add/remove paths and wwids, resize."""

from __future__ import annotations

from collections.abc import Callable

from brick_agent import commands
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint

Runner = Callable[..., commands.CommandResult]


def _res(res: commands.CommandResult) -> dict:
    return {"returncode": res.returncode, "stdout": res.stdout, "stderr": res.stderr,
            "duration": res.duration}


def do_flush_map(name: str, *, timeout: float = 60.0, run: Runner = commands.run) -> dict:
    """``multipath -f NAME`` (flush and remove one map)."""
    return _res(run(["multipath", "-f", v.map_name(name)], timeout=v.timeout_arg(timeout)))


def do_add_path(device: str, *, timeout: float = 30.0, run: Runner = commands.run) -> dict:
    """``multipathd add path DEV`` (sdX, or nvmeXnY without native NVMe multipath)."""
    dev = v.device_name(device, v.MULTIPATH_PATH_DEVICE, "path device")
    return _res(run(["multipathd", "add", "path", dev], timeout=v.timeout_arg(timeout)))


def do_del_path(device: str, *, timeout: float = 30.0, run: Runner = commands.run) -> dict:
    """``multipathd del path DEV``."""
    dev = v.device_name(device, v.MULTIPATH_PATH_DEVICE, "path device")
    return _res(run(["multipathd", "del", "path", dev], timeout=v.timeout_arg(timeout)))


def do_add_wwid(wwid: str, *, timeout: float = 30.0, run: Runner = commands.run) -> dict:
    """``multipath -a WWID`` (add to the wwids file)."""
    return _res(run(["multipath", "-a", v.wwid(wwid)], timeout=v.timeout_arg(timeout)))


def do_remove_wwid(wwid: str, *, timeout: float = 30.0, run: Runner = commands.run) -> dict:
    """``multipath -w WWID`` (remove from the wwids file)."""
    return _res(run(["multipath", "-w", v.wwid(wwid)], timeout=v.timeout_arg(timeout)))


def do_resize_map(name: str, *, timeout: float = 60.0, run: Runner = commands.run) -> dict:
    """``multipathd resize map NAME``."""
    return _res(run(["multipathd", "resize", "map", v.map_name(name)],
                    timeout=v.timeout_arg(timeout)))


@entrypoint
def flush_map(name: str, timeout: float = 60.0) -> dict:
    return do_flush_map(name, timeout=timeout)


@entrypoint
def add_path(device: str, timeout: float = 30.0) -> dict:
    return do_add_path(device, timeout=timeout)


@entrypoint
def del_path(device: str, timeout: float = 30.0) -> dict:
    return do_del_path(device, timeout=timeout)


@entrypoint
def add_wwid(wwid: str, timeout: float = 30.0) -> dict:
    return do_add_wwid(wwid, timeout=timeout)


@entrypoint
def remove_wwid(wwid: str, timeout: float = 30.0) -> dict:
    return do_remove_wwid(wwid, timeout=timeout)


@entrypoint
def resize_map(name: str, timeout: float = 60.0) -> dict:
    return do_resize_map(name, timeout=timeout)
