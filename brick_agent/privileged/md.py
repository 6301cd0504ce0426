"""Privileged md RAID1 operations for replicated NVMe-oF volumes (``/dev/md/<alias>``).

Data safety: members that already carry an md superblock are *assembled*, never
re-created; a create never answers mdadm's "appears to contain data, continue?"
question (stdin is closed, so mdadm refuses), so a member holding a filesystem
or another array is never overwritten.  Members, and the members of an array to
stop, must be fabric NVMe namespaces of this host (never PCIe, never another host
NQN's), and nothing the host uses (root, swap, a mounted filesystem) is touched
(see :mod:`._owned`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence

from brick_agent import commands
from brick_agent.errors import CommandFailed, DeviceNotFound, InvalidArgument, NotOwned
from brick_agent.host import sysfs
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _owned
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint

Runner = Callable[..., commands.CommandResult]

#: md array names (the volume's alias): what /dev/md/<name> may be called.
MD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Replica members: NVMe namespace heads only.
MD_MEMBER = re.compile(r"^nvme\d{1,4}n\d{1,5}$")
MAX_MEMBERS = 8
#: Seconds a refused ``mdadm --run`` of an array udev is assembling is retried.
ADOPT_SETTLE = 5.0
#: mdadm --examine exit status for a device it cannot read as a member (mdadm 4.2
#: exits 0 with no output for a blank block device, so the output decides).
NO_SUPERBLOCK = 1


def _members(roots: HostRoots, devices: Sequence[str | None]) -> list[str | None]:
    if not isinstance(devices, (list, tuple)) or not 2 <= len(devices) <= MAX_MEMBERS:
        raise InvalidArgument(f"a RAID1 needs 2..{MAX_MEMBERS} member slots")
    members: list[str | None] = []
    for device in devices:
        if device is None:
            members.append(None)
            continue
        name = v.device_name(device, MD_MEMBER, "RAID member")
        if not os.path.isdir(roots.sysfs("block", name)):
            raise DeviceNotFound(f"RAID member {name} does not exist")
        _owned.require_fabric_namespace(roots, name)
        _owned.require_unused(roots, f"RAID member {name}", [name])
        members.append(v.path_under(roots.dev, roots.devfs(name)))
    if not any(members):
        raise InvalidArgument("a RAID1 needs at least one present member")
    present = [m for m in members if m]
    if len(set(present)) != len(present):
        raise InvalidArgument("a RAID member is listed twice")
    return members


def _has_superblock(device: str, run: Runner) -> bool:
    result = run(
        ["mdadm", "--examine", "--brief", device],
        timeout=30,
        ok_codes=(0, NO_SUPERBLOCK),
        check=True,
    )
    return result.returncode == 0 and result.stdout.lstrip().startswith("ARRAY ")


def _holding_array(roots: HostRoots, members: Sequence[str]) -> str | None:
    """The md device (``mdN``) that already holds one of ``members``, if any.

    udev's incremental assembly rule (``mdadm --incremental``) grabs members that
    carry a superblock as soon as they appear, so a re-attach may find its array
    assembled (possibly still inactive, waiting for the other members).
    """
    for member in members:
        holders = roots.sysfs("block", os.path.basename(member), "holders")
        for holder in sorted(os.listdir(holders)) if os.path.isdir(holders) else ():
            if re.fullmatch(r"md\d{1,6}", holder):
                return holder
    return None


def _array_state(roots: HostRoots, md_name: str) -> str:
    try:
        with open(roots.sysfs("block", md_name, "md", "array_state")) as f:
            return f.read().strip()
    except OSError:
        return ""


def _adopt(roots: HostRoots, md_name: str, run: Runner) -> str:
    """Start an array udev assembled (inactive until ``--run``); returns 'adopted'.

    udev may still be adding the members (``mdadm --incremental``) while we look: a
    ``--run`` refused meanwhile (EINVAL) is retried until the array is running or
    ``ADOPT_SETTLE`` seconds have passed.
    """
    end = time.monotonic() + ADOPT_SETTLE
    while _array_state(roots, md_name) in ("inactive", ""):
        try:
            run(["mdadm", "--run", v.path_under(roots.dev, roots.devfs(md_name))], timeout=60)
        except CommandFailed:
            if time.monotonic() >= end:
                raise
            time.sleep(0.2)
            continue
        break
    return "adopted"


def do_create_or_assemble_raid1(
    roots: HostRoots, name: str, devices: Sequence[str | None], *, run: Runner = commands.run
) -> str:
    """Assemble ``/dev/md/NAME`` from members that already have a superblock, else create
    it (``None`` slots become ``missing``: a degraded array).  An array udev already
    assembled from these members is started and kept.  Returns what was done."""
    name = v.matching(name, MD_NAME, "md name", max_len=64)
    members = _members(roots, devices)
    present = [m for m in members if m]
    target = v.path_under(roots.dev, roots.devfs("md", name))
    held = _holding_array(roots, present)
    if held:
        return _adopt(roots, held, run)
    if any(_has_superblock(m, run) for m in present):
        try:
            run(["mdadm", "--assemble", "--run", target, *present], timeout=60)
        except CommandFailed:
            held = _holding_array(roots, present)  # udev won the race ("busy")
            if not held:
                raise
            return _adopt(roots, held, run)
        return "assembled"
    run(
        [
            "mdadm",
            "--create",
            target,
            "--level=1",
            f"--raid-devices={len(members)}",
            "--metadata=1.2",
            "--bitmap=internal",
            "--homehost=any",
            f"--name={name}",
            "--assume-clean",
            *[m or "missing" for m in members],
        ],
        timeout=60,
        input="",
    )
    return "created"


def _require_fabric_array(roots: HostRoots, name: str, md_dev: str) -> None:
    """Refuse to stop array ``md_dev`` unless every member is a fabric NVMe namespace
    of this host and the host does not use the array."""
    what = f"md array {name} ({md_dev})"
    if not re.fullmatch(r"md\d{1,6}", md_dev):
        raise NotOwned(what, "not an md device")
    for member in sysfs.list_dir(roots.sysfs("block", md_dev, "slaves")):
        if not MD_MEMBER.fullmatch(member):
            raise NotOwned(what, f"member {member} is not an NVMe namespace")
        try:
            _owned.require_fabric_namespace(roots, member)
        except NotOwned as exc:
            raise NotOwned(what, f"member {exc.obj}: {exc.reason}") from None
    _owned.require_unused(roots, what, [md_dev])


def do_stop_raid(roots: HostRoots, name: str, *, run: Runner = commands.run) -> None:
    """``mdadm --stop /dev/md/NAME`` (flushes the array); a missing array is a no-op."""
    name = v.matching(name, MD_NAME, "md name", max_len=64)
    target = v.path_under(roots.dev, roots.devfs("md", name))
    if not os.path.lexists(target):
        return
    _require_fabric_array(roots, name, os.path.basename(target))
    try:
        run(["mdadm", "--stop", target], timeout=60)
    except CommandFailed:
        if os.path.lexists(target):
            raise


@entrypoint
def create_or_assemble_raid1(name: str, devices: list[str | None]) -> str:
    return do_create_or_assemble_raid1(DEFAULT_ROOTS, name, devices)


@entrypoint
def stop_raid(name: str) -> None:
    do_stop_raid(DEFAULT_ROOTS, name)
