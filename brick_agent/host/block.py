"""Read-only view of block devices (/sys/class/block) and their /dev names and links.

Layout read::

    /sys/class/block/sdb      -> ../../devices/.../targetH:C:T/H:C:T:L/block/sdb
    /sys/class/block/nvme0n1  -> ../../devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1
    /sys/class/block/dm-0     -> ../../devices/virtual/block/dm-0
    <dir>/{size (512-byte sectors), ro, dev ('M:m'), wwid (NVMe only)}
    <dir>/holders/*, <dir>/slaves/*, <dir>/device -> LUN dir (SCSI), <dir>/dm/{name,uuid}

``wwid`` is the disk's own ``wwid`` attribute (NVMe namespaces) or, for SCSI
disks, ``device/wwid`` (see :mod:`brick_agent.host.scsi` for formats).
"""

from __future__ import annotations

import dataclasses
import os
import stat

from brick_agent.host import sysfs
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.host.scsi import Hctl

SECTOR = 512
DEFAULT_LINK_KINDS = ("by-id", "by-path")


@dataclasses.dataclass(frozen=True)
class BlockDevice:
    name: str  # kernel name: 'sdb', 'dm-0', 'nvme0n1'
    devpath: str  # '/dev/sdb' (under roots.dev)
    size_bytes: int | None
    ro: bool | None
    holders: tuple[str, ...]
    slaves: tuple[str, ...]
    hctl: Hctl | None  # SCSI disks only
    wwid: str | None
    dm_uuid: str | None  # dm devices only
    dm_name: str | None
    dev: str | None = None  # 'M:m'
    sysfs_path: str | None = None  # resolved device directory
    partition: bool = False

    @property
    def major_minor(self) -> tuple[int, int] | None:
        if not self.dev or ":" not in self.dev:
            return None
        major, _, minor = self.dev.partition(":")
        try:
            return int(major), int(minor)
        except ValueError:
            return None

    @property
    def is_dm(self) -> bool:
        return self.name.startswith("dm-")


def _tuple_dir(path: str) -> tuple[str, ...]:
    return tuple(sysfs.list_dir(path))


def read_block_device(roots: HostRoots, name: str) -> BlockDevice | None:
    """Read /sys/class/block/<name>; ``None`` if it does not exist (or vanished)."""
    link = roots.sysfs("class", "block", name)
    real = sysfs.resolve(link)
    if real is None:
        return None

    def attr(*parts: str) -> str | None:
        return sysfs.read_attr(os.path.join(real, *parts))

    sectors = sysfs.read_int(os.path.join(real, "size"))
    ro = sysfs.read_int(os.path.join(real, "ro"))
    device = sysfs.resolve(os.path.join(real, "device"))
    hctl = Hctl.try_parse(os.path.basename(device)) if device else None
    wwid = attr("wwid")
    if not wwid and hctl is not None and device is not None:
        wwid = sysfs.read_attr(os.path.join(device, "wwid"))
    return BlockDevice(
        name=name,
        devpath=roots.devfs(name),
        size_bytes=None if sectors is None else sectors * SECTOR,
        ro=None if ro is None else bool(ro),
        holders=_tuple_dir(os.path.join(real, "holders")),
        slaves=_tuple_dir(os.path.join(real, "slaves")),
        hctl=hctl,
        wwid=wwid or None,
        dm_uuid=attr("dm", "uuid") or None,
        dm_name=attr("dm", "name") or None,
        dev=attr("dev"),
        sysfs_path=real,
        partition=os.path.exists(os.path.join(real, "partition")),
    )


def block_devices(roots: HostRoots = DEFAULT_ROOTS) -> list[BlockDevice]:
    """Every block device the kernel lists (disks, partitions, dm, nvme), vanished ones skipped."""
    out = []
    for name in sysfs.list_dir(roots.sysfs("class", "block")):
        dev = read_block_device(roots, name)
        if dev is not None:
            out.append(dev)
    return out


def block_device(roots: HostRoots, name: str) -> BlockDevice | None:
    """Block device by kernel name ('sdb' or '/dev/sdb')."""
    return read_block_device(roots, os.path.basename(name.rstrip("/")))


def name_for_devnum(roots: HostRoots, major: int, minor: int) -> str | None:
    """Kernel name of block device M:m via /sys/dev/block/M:m."""
    real = sysfs.resolve(roots.sysfs("dev", "block", f"{major}:{minor}"))
    if real is not None:
        return os.path.basename(real)
    for name in sysfs.list_dir(roots.sysfs("class", "block")):
        if sysfs.read_attr(roots.sysfs("class", "block", name, "dev")) == f"{major}:{minor}":
            return name
    return None


def resolve_dev_path(roots: HostRoots, path: str) -> str | None:
    """Resolve a /dev path (links such as /dev/disk/by-id/x, /dev/mapper/x) inside roots.dev.

    ``path`` may be written for the real host ('/dev/...') or already under
    roots.dev.  Absolute link targets are re-rooted under roots.dev.
    """
    return sysfs.resolve_within(path, "/dev", roots.dev)


def block_device_for_path(roots: HostRoots, path: str) -> BlockDevice | None:
    """The block device a /dev path (node or symlink) refers to, or ``None``
    (found as :func:`block_device_name` finds it)."""
    name = block_device_name(roots, path)
    return read_block_device(roots, name) if name else None


def block_device_name(roots: HostRoots, path: str) -> str | None:
    """Kernel name of the block device a /dev path (node or symlink) refers to, or
    ``None``; nothing of the device is read.

    Follows symlinks under roots.dev; if the final name is not a kernel block
    device name (e.g. /dev/mapper/x is a device node made by dmsetup without
    udev), falls back to the node's major:minor.
    """
    final = resolve_dev_path(roots, path)
    if final is None:
        return None
    name = os.path.basename(final)
    if os.path.isdir(roots.sysfs("class", "block", name)):
        return name
    try:
        st = os.stat(final)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return name_for_devnum(roots, os.major(st.st_rdev), os.minor(st.st_rdev))


def disk_links(
    roots: HostRoots = DEFAULT_ROOTS, kinds: tuple[str, ...] = DEFAULT_LINK_KINDS
) -> dict[str, tuple[str, ...]]:
    """Kernel name -> the /dev/disk/<kind>/ links pointing at it (paths under roots.dev)."""
    result: dict[str, list[str]] = {}
    for kind in kinds:
        base = roots.devfs("disk", kind)
        for entry in sysfs.list_dir(base):
            link = os.path.join(base, entry)
            final = resolve_dev_path(roots, link)
            if final is None:
                continue  # dangling: its device is gone
            result.setdefault(os.path.basename(final), []).append(link)
    return {name: tuple(links) for name, links in sorted(result.items())}


def links_for(
    roots: HostRoots, name: str, kinds: tuple[str, ...] = DEFAULT_LINK_KINDS
) -> tuple[str, ...]:
    """The /dev/disk links of one kernel device name."""
    return disk_links(roots, kinds).get(os.path.basename(name), ())


def holders_recursive(roots: HostRoots, name: str) -> tuple[str, ...]:
    """All devices stacked on ``name`` (dm maps, partitions of maps, ...), nearest first."""
    seen: list[str] = []
    queue = [name]
    while queue:
        current = queue.pop(0)
        for holder in sysfs.list_dir(roots.sysfs("class", "block", current, "holders")):
            if holder not in seen:
                seen.append(holder)
                queue.append(holder)
    return tuple(seen)
