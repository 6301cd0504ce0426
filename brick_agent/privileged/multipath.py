"""Privileged dm-multipath operations: flush a map, add/remove paths and wwids, resize.

Maps and paths must be fabric volumes' (see :mod:`._owned`): a map whose paths are
all iSCSI/FC LUNs or fabric NVMe namespaces, a path that is one.  A map or path the
host uses (root, swap, a mounted filesystem) is never flushed or removed.  A map or
path that does not exist is left to the command (it fails by itself).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from brick_agent import commands
from brick_agent.errors import DeviceNotFound, NotOwned
from brick_agent.host import multipath as hmultipath
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _owned
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint

Runner = Callable[..., commands.CommandResult]


def _res(res: commands.CommandResult) -> dict:
    return {
        "returncode": res.returncode,
        "stdout": res.stdout,
        "stderr": res.stderr,
        "duration": res.duration,
    }


def _fabric_map(roots: HostRoots, name: str, *, unused: bool) -> str:
    name = v.map_name(name)
    mp = _owned.find_map(roots, name)
    if mp is not None:
        _owned.require_fabric_map(roots, mp)
        if unused:
            _owned.require_unused(roots, f"multipath map {name}", [mp.dm_name])
    return name


def _fabric_path(roots: HostRoots, device: str, *, unused: bool) -> str:
    dev = v.device_name(device, v.MULTIPATH_PATH_DEVICE, "path device")
    if os.path.isdir(roots.sysfs("class", "block", dev)):
        _owned.require_fabric_block(roots, dev)
        if unused:
            _owned.require_unused(roots, f"path device {dev}", [dev])
    return dev


def do_flush_map(
    roots: HostRoots, name: str, *, timeout: float = 60.0, run: Runner = commands.run
) -> dict:
    """``multipath -f NAME`` (flush and remove one map)."""
    timeout = v.timeout_arg(timeout)
    name = _fabric_map(roots, name, unused=True)
    return _res(run(["multipath", "-f", name], timeout=timeout))


def do_add_path(
    roots: HostRoots, device: str, *, timeout: float = 30.0, run: Runner = commands.run
) -> dict:
    """``multipathd add path DEV`` (sdX, or nvmeXnY without native NVMe multipath)."""
    timeout = v.timeout_arg(timeout)
    dev = _fabric_path(roots, device, unused=False)
    return _res(run(["multipathd", "add", "path", dev], timeout=timeout))


def do_del_path(
    roots: HostRoots, device: str, *, timeout: float = 30.0, run: Runner = commands.run
) -> dict:
    """``multipathd del path DEV``."""
    timeout = v.timeout_arg(timeout)
    dev = _fabric_path(roots, device, unused=True)
    return _res(run(["multipathd", "del", "path", dev], timeout=timeout))


def do_add_wwid(wwid: str, *, timeout: float = 30.0, run: Runner = commands.run) -> dict:
    """``multipath -a WWID`` (add to the wwids file)."""
    return _res(run(["multipath", "-a", v.wwid(wwid)], timeout=v.timeout_arg(timeout)))


def do_remove_wwid(wwid: str, *, timeout: float = 30.0, run: Runner = commands.run) -> dict:
    """``multipath -w WWID`` (remove from the wwids file)."""
    return _res(run(["multipath", "-w", v.wwid(wwid)], timeout=v.timeout_arg(timeout)))


def do_forget_stale_wwid(
    roots: HostRoots, wwid: str, *, timeout: float = 30.0, run: Runner = commands.run
) -> dict:
    """``multipath -w WWID`` for an entry of the wwids file that no device explains: refused
    (NotOwned) while a multipath map, a SCSI device or an NVMe namespace with that WWID
    exists (a present device's entry is how ``find_multipaths`` keeps claiming it)."""
    wwid = v.wwid(wwid)
    timeout = v.timeout_arg(timeout)
    if wwid not in hmultipath.wwids_file_entries(roots):
        raise DeviceNotFound(f"/etc/multipath/wwids has no entry {wwid}")
    holder = _owned.wwid_holder(roots, wwid)
    if holder:
        raise NotOwned(f"wwids entry {wwid}", f"{holder} has that WWID")
    return _res(run(["multipath", "-w", wwid], timeout=timeout))


def do_resize_map(
    roots: HostRoots, name: str, *, timeout: float = 60.0, run: Runner = commands.run
) -> dict:
    """``multipathd resize map NAME``."""
    timeout = v.timeout_arg(timeout)
    name = _fabric_map(roots, name, unused=False)
    return _res(run(["multipathd", "resize", "map", name], timeout=timeout))


@entrypoint
def flush_map(name: str, timeout: float = 60.0) -> dict:
    return do_flush_map(DEFAULT_ROOTS, name, timeout=timeout)


@entrypoint
def add_path(device: str, timeout: float = 30.0) -> dict:
    return do_add_path(DEFAULT_ROOTS, device, timeout=timeout)


@entrypoint
def del_path(device: str, timeout: float = 30.0) -> dict:
    return do_del_path(DEFAULT_ROOTS, device, timeout=timeout)


@entrypoint
def add_wwid(wwid: str, timeout: float = 30.0) -> dict:
    return do_add_wwid(wwid, timeout=timeout)


@entrypoint
def remove_wwid(wwid: str, timeout: float = 30.0) -> dict:
    return do_remove_wwid(wwid, timeout=timeout)


@entrypoint
def forget_stale_wwid(wwid: str, timeout: float = 30.0) -> dict:
    return do_forget_stale_wwid(DEFAULT_ROOTS, wwid, timeout=timeout)


@entrypoint
def resize_map(name: str, timeout: float = 60.0) -> dict:
    return do_resize_map(DEFAULT_ROOTS, name, timeout=timeout)
