"""Read-only view of dm-multipath maps from sysfs and the wwids file (no multipath/multipathd
calls).

Layout read::

    /sys/class/block/dm-N/dm/{name, uuid ('mpath-<wwid>'), suspended ('0'/'1')}
    /sys/class/block/dm-N/{slaves/sdX, holders/, size}
    /etc/multipath/wwids: lines '/<wwid>/', '#' comments

The map's wwid is the udev ID_SERIAL form (``36001405...`` for NAA LUNs, see
:mod:`brick_agent.host.scsi`); kpartx partition maps (``part1-mpath-...``) are
not multipath maps and are skipped.
"""

from __future__ import annotations

import dataclasses
import os
import re

from brick_agent.host import sysfs
from brick_agent.host.block import SECTOR
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.host.scsi import same_wwid

MPATH_PREFIX = "mpath-"
_DM_RE = re.compile(r"dm-(\d+)")


@dataclasses.dataclass(frozen=True)
class MultipathMap:
    dm_name: str  # 'dm-0'
    name: str | None  # map name: 'mpatha' or the wwid (user_friendly_names no)
    uuid: str  # 'mpath-36001405...'
    wwid: str  # '36001405...'
    slaves: tuple[str, ...]  # path devices: ('sdb', 'sdc')
    size_bytes: int | None
    suspended: bool | None
    holders: tuple[str, ...] = ()
    devpath: str | None = None  # /dev/dm-0 under roots.dev
    mapper_path: str | None = None  # /dev/mapper/<name> under roots.dev


def read_map(roots: HostRoots, dm_name: str) -> MultipathMap | None:
    """dm device ``dm_name`` if it is a multipath map (uuid ``mpath-...``), else ``None``."""
    real = sysfs.resolve(roots.sysfs("class", "block", dm_name))
    if real is None:
        return None
    uuid = sysfs.read_attr(os.path.join(real, "dm", "uuid"))
    if not uuid or not uuid.startswith(MPATH_PREFIX):
        return None
    name = sysfs.read_attr(os.path.join(real, "dm", "name")) or None
    sectors = sysfs.read_int(os.path.join(real, "size"))
    suspended = sysfs.read_int(os.path.join(real, "dm", "suspended"))
    return MultipathMap(
        dm_name=dm_name,
        name=name,
        uuid=uuid,
        wwid=uuid[len(MPATH_PREFIX) :],
        slaves=tuple(sysfs.list_dir(os.path.join(real, "slaves"))),
        size_bytes=None if sectors is None else sectors * SECTOR,
        suspended=None if suspended is None else bool(suspended),
        holders=tuple(sysfs.list_dir(os.path.join(real, "holders"))),
        devpath=roots.devfs(dm_name),
        mapper_path=roots.devfs("mapper", name) if name else None,
    )


def multipath_maps(roots: HostRoots = DEFAULT_ROOTS) -> list[MultipathMap]:
    """All multipath maps, by dm number; other dm devices (LVM, crypt, kpartx) skipped."""
    out = []
    for entry in sysfs.list_dir(roots.sysfs("class", "block"), _DM_RE):
        m = read_map(roots, entry)
        if m is not None:
            out.append(m)
    return out


def dm_names(roots: HostRoots) -> list[str]:
    """Names of the dm devices (``dm-N``), by number.

    Listed from ``/sys/devices/virtual/block``, where the kernel puts every dm device,
    rather than ``/sys/class/block``, which lists every block device of the host; the
    class directory when the other is missing (a partial tree).
    """
    virtual = roots.sysfs("devices", "virtual", "block")
    if os.path.isdir(virtual):
        return sysfs.list_dir(virtual, _DM_RE)
    return sysfs.list_dir(roots.sysfs("class", "block"), _DM_RE)


def map_for_wwid(roots: HostRoots, wwid: str) -> MultipathMap | None:
    """The map of a LUN given its WWID in any spelling ('naa.6001405...' or '36001405...').

    Reads one attribute (``dm/uuid``) per dm device; only the match is read in full.
    """
    base = roots.sysfs("class", "block")
    for entry in dm_names(roots):
        uuid = sysfs.read_attr(os.path.join(base, entry, "dm", "uuid"))
        if uuid and uuid.startswith(MPATH_PREFIX) and same_wwid(uuid[len(MPATH_PREFIX) :], wwid):
            m = read_map(roots, entry)
            if m is not None:
                return m
    return None


def map_for_slave(roots: HostRoots, name: str) -> MultipathMap | None:
    """The map using path device ``name`` ('sdb' or '/dev/sdb')."""
    base = os.path.basename(name.rstrip("/"))
    holders = roots.sysfs("class", "block", base, "holders")
    for holder in sysfs.list_dir(holders, _DM_RE):
        m = read_map(roots, holder)
        if m is not None:
            return m
    if os.path.isdir(holders):  # the kernel lists every holder: no map uses it
        return None
    for m in multipath_maps(roots):  # holders directory missing in a partial tree
        if base in m.slaves:
            return m
    return None


def maps_by_slave(roots: HostRoots = DEFAULT_ROOTS) -> dict[str, MultipathMap]:
    """Path device name -> the multipath map using it, for every map (one pass over the maps).

    What :func:`map_for_slave` answers per device, for listings that ask it of every disk.
    """
    out: dict[str, MultipathMap] = {}
    for m in multipath_maps(roots):
        for slave in m.slaves:
            out.setdefault(slave, m)
    return out


def map_by_name(roots: HostRoots, name: str) -> MultipathMap | None:
    """The map called ``name`` (as in /dev/mapper/<name>)."""
    for m in multipath_maps(roots):
        if m.name == name:
            return m
    return None


def wwids_file_entries(roots: HostRoots = DEFAULT_ROOTS) -> list[str]:
    """WWIDs recorded in /etc/multipath/wwids (slashes stripped), in file order."""
    out = []
    for line in sysfs.read_lines(roots.etcfs("multipath", "wwids")):
        if line.startswith("#"):
            continue
        entry = line.strip().strip("/")
        if entry:
            out.append(entry)
    return out
