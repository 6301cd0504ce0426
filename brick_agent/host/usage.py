"""Read-only view of what the host uses: mounted and swap devices, iSCSI boot targets, and
everything that uses one block device (:func:`device_users`).

Layout read::

    /proc/self/mountinfo   'ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPER'
    /proc/swaps            'Filename Type Size Used Priority' header, then one line per swap area
    /sys/firmware/ibft/targetN/{target-name, ip-addr, port}     (iscsi_ibft)
    /sys/firmware/iscsi_bootN/targetN/...                       (offload HBAs' boot tables)
    /sys/class/block/<name>/{holders/, <partition>/partition}

``MAJ:MIN`` in mountinfo names the block device even when the source reads
``/dev/root``; a ``0:N`` device (btrfs, overlay, tmpfs) falls back to the source path.
A tree without a mount table or a swap table (a fake host) has nothing mounted;
any other read error is raised, so callers deciding about destruction fail closed.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import re
import time
from collections.abc import Callable, Sequence

from brick_agent.host import sysfs
from brick_agent.host.block import block_device_for_path, name_for_devnum
from brick_agent.host.iscsi import normalize_address
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

_FIRMWARE_RE = re.compile(r"ibft|iscsi_boot\d+")
_TARGET_RE = re.compile(r"target\d+")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclasses.dataclass(frozen=True)
class BootTarget:
    """An iSCSI target the firmware booted from (iBFT or an HBA's boot table)."""

    iqn: str
    address: str | None
    port: int | None


def _read_table(path: str) -> list[str]:
    """Lines of a /proc table; ``[]`` when the tree has none (ENOENT), else raise."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return []
        raise


def _unescape(field: str) -> str:
    """mountinfo/swaps escape space, tab, newline and backslash as ``\\ooo``."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _device_name(roots: HostRoots, devnum: str | None, source: str | None) -> str | None:
    """Kernel name of a mounted device from its ``MAJ:MIN`` or its /dev source path."""
    if devnum:
        major, _, minor = devnum.partition(":")
        if major.isdigit() and minor.isdigit() and int(major) != 0:
            name = name_for_devnum(roots, int(major), int(minor))
            if name:
                return name
    if source and source.startswith("/dev/"):
        dev = block_device_for_path(roots, source)
        return dev.name if dev else None
    return None


def mount_entries(mountinfo: str) -> list[tuple[str, str, str | None]]:
    """``(MAJ:MIN, mount point, source)`` of every mount in a ``mountinfo`` table, in
    its order (unescaped); ``[]`` when the table does not exist, other errors raised."""
    out = []
    for line in _read_table(mountinfo):
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        tail = fields[fields.index("-", 6) + 1 :]
        out.append((fields[2], _unescape(fields[4]), _unescape(tail[1]) if len(tail) > 1 else None))
    return out


def mounted_devices(roots: HostRoots = DEFAULT_ROOTS) -> dict[str, str]:
    """Kernel name -> mount point of every block device with a mounted filesystem
    (the first mount point listed; ``/`` wins)."""
    out: dict[str, str] = {}
    names: dict[tuple[str, str | None], str | None] = {}  # bind mounts repeat a device
    for devnum, point, source in mount_entries(roots.procfs("self", "mountinfo")):
        key = (devnum, source)
        if key not in names:
            names[key] = _device_name(roots, *key)
        name = names[key]
        if name and (name not in out or point == "/"):
            out[name] = point
    return out


def swap_devices(roots: HostRoots = DEFAULT_ROOTS) -> set[str]:
    """Kernel names of the block devices used as swap (swap files are on mounted filesystems)."""
    out = set()
    for line in _read_table(roots.procfs("swaps"))[1:]:
        fields = line.split()
        if fields:
            name = _device_name(roots, None, _unescape(fields[0]))
            if name:
                out.add(name)
    return out


def host_uses(roots: HostRoots = DEFAULT_ROOTS) -> dict[str, str]:
    """Kernel name -> what the host uses it for (``root filesystem``, ``swap``,
    ``filesystem mounted at /x``)."""
    uses = {
        name: "root filesystem" if point == "/" else f"filesystem mounted at {point}"
        for name, point in mounted_devices(roots).items()
    }
    for name in swap_devices(roots):
        uses.setdefault(name, "swap")
    return uses


def _partitions(roots: HostRoots, name: str) -> list[str]:
    """The partitions of disk ``name``: its subdirectories named after it (``sdb1``,
    ``nvme0n1p1``) that have a ``partition`` attribute; the disk's other entries (a score
    of attributes and directories) are not looked at."""
    real = sysfs.resolve(roots.sysfs("class", "block", name))
    if real is None:
        return []
    return [
        e
        for e in sysfs.list_dir(real)
        if e.startswith(name) and os.path.exists(os.path.join(real, e, "partition"))
    ]


def stacked_on(roots: HostRoots, name: str) -> list[str]:
    """``name``, its partitions and every device stacked on any of them (dm, md, ...)."""
    seen: list[str] = []
    queue = [name]
    while queue:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.append(current)
        queue += _partitions(roots, current)
        queue += sysfs.list_dir(roots.sysfs("class", "block", current, "holders"))
    return seen


def uses_of(
    roots: HostRoots, names: list[str] | tuple[str, ...], uses: dict[str, str] | None = None
) -> list[str]:
    """What the host uses ``names`` (or anything on them) for: ``['sdc1: root filesystem']``;
    empty when nothing.  ``uses``: :func:`host_uses` when the caller read it already."""
    if uses is None:
        uses = host_uses(roots)
    found: list[str] = []
    for name in names:
        for dev in stacked_on(roots, name):
            note = f"{dev}: {uses[dev]}" if dev in uses else None
            if note and note not in found:
                found.append(note)
    return found


def boot_targets(roots: HostRoots = DEFAULT_ROOTS) -> list[BootTarget]:
    """iSCSI targets in the firmware boot tables (``/sys/firmware/ibft``, ``iscsi_bootN``)."""
    out = []
    base = roots.sysfs("firmware")
    for table in sysfs.list_dir(base, _FIRMWARE_RE):
        for entry in sysfs.list_dir(os.path.join(base, table), _TARGET_RE):
            tdir = os.path.join(base, table, entry)
            iqn = sysfs.read_attr(os.path.join(tdir, "target-name"))
            if not iqn:
                continue
            out.append(
                BootTarget(
                    iqn=iqn,
                    address=sysfs.read_attr(os.path.join(tdir, "ip-addr")) or None,
                    port=sysfs.read_int(os.path.join(tdir, "port")),
                )
            )
    return out


def is_ip(address: str | None) -> bool:
    try:
        ipaddress.ip_address((address or "").strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def is_boot_target(
    roots: HostRoots, iqn: str, address: str | None = None, port: int | None = None
) -> bool:
    """True if the firmware booted from target ``iqn`` (at that address/port when both
    sides know it: a host name or a missing field matches any)."""
    want = normalize_address(address) if is_ip(address) else None
    for target in boot_targets(roots):
        if target.iqn.lower() != iqn.lower():
            continue
        have = normalize_address(target.address)
        if want and have and want != have:
            continue
        if port is not None and target.port is not None and target.port != port:
            continue
        return True
    return False


def device_users(roots: HostRoots, name: str) -> list[str]:
    """Why block device ``name`` is in use, one reason per user; ``[]`` when nothing
    holds (dm, md), mounts, swaps on or opens it or one of its partitions.

    Fail closed: a table or a process's descriptors that cannot be read count as a
    user (``unknown (...)``).  Usage::

        users = device_users(roots, "nvme0n2")
        if users:   # ['nvme0n2 held by dm-3', 'nvme0n2 open by pid 812 (dd)', ...]
            keep()
    """
    return devices_users(roots, [name])


#: Command names of udev's workers (``/proc/PID/comm``), which open a block device for a
#: moment to probe it after its "add" or "change" event.
UDEV_WORKERS = frozenset({"(udev-worker)", "systemd-udevd", "udevd"})


def devices_users(
    roots: HostRoots,
    devices: Sequence[str],
    *,
    udev_grace: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """:func:`device_users` of several block devices together: the processes' open
    descriptors are read once for all of them (one pass over ``/proc/*/fd``, which
    costs the same for one device as for many).

    ``udev_grace``: when udev's workers are the only users (probing a device added or
    changed a moment ago, as right after an attach), read again for up to that many
    seconds until they are done; any other user answers at once.
    """
    deadline = time.monotonic() + udev_grace
    while True:
        users, udev_only = _users(roots, devices)
        if not (users and udev_only) or time.monotonic() >= deadline:
            return users
        sleep(0.05)


def _users(roots: HostRoots, devices: Sequence[str]) -> tuple[list[str], bool]:
    """(the users of ``devices``, whether udev's workers are all of them)."""
    from brick_agent.host.holders import open_holders

    if not devices:
        return [], False
    names = [n for d in devices for n in [d, *_partitions(roots, d)]]
    users = [
        f"{n} held by {h}"
        for n in names
        for h in sysfs.list_dir(roots.sysfs("class", "block", n, "holders"))
    ]
    try:
        users += uses_of(roots, names)
    except OSError as exc:
        users.append(f"unknown (mount or swap table unreadable: {exc.strerror})")
    unreadable: list[str] = []
    opened = open_holders(roots, names, unreadable=unreadable)
    udev_only = bool(opened) and not users and not unreadable
    udev_only = udev_only and all(command in UDEV_WORKERS for _, command in opened)
    what = devices[0] if len(devices) == 1 else f"one of {', '.join(devices)}"
    users += [f"{what} open by pid {pid} ({command})" for pid, command in opened]
    users += [f"unknown (/proc/{pid}/fd unreadable)" for pid in unreadable]
    return users, udev_only
