"""Where one volume is on this host: the objects a detach must have removed.

The gate's verifier (``brick-agent verify-detach``) asks each host for the volume's
presence after a live migration: on the source nothing may be left (a device at the
volume's address, a map over it, a link to it or a dangling link naming it, a session or
controller of its target left without any volume), on the destination every path the
properties name must be there.  Each connector builds its :class:`VolumePresence` from
its own view of the volume (``volume_presence``); the helpers here add what every
protocol shares: the maps stacked on the devices and the ``/dev/disk`` links.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from brick_agent.host import sysfs
from brick_agent.host.block import DEFAULT_LINK_KINDS, disk_links, resolve_dev_path
from brick_agent.host.multipath import map_for_slave
from brick_agent.host.roots import HostRoots

#: A block device of the volume (SCSI disk at its address, NVMe namespace).
DEVICE = "device"
#: A device-mapper multipath map over the volume's devices.
MAP = "map"
#: A /dev/disk link to the volume's device or map, or a dangling one naming the volume.
LINK = "link"
#: An iSCSI session to the volume's target with no LUN at all.
SESSION = "session"
#: An NVMe-oF controller of the volume's subsystem with no namespace at all.
CONTROLLER = "controller"


@dataclasses.dataclass(frozen=True)
class VolumeObject:
    """One kernel object of a volume: ``kind`` (module constants), ``name``, ``detail``."""

    kind: str
    name: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "detail": self.detail}


@dataclasses.dataclass
class VolumePresence:
    """What of one volume this host has.

    ``objects``: everything that belongs to the volume (empty: nothing of it here).
    ``missing``: addresses the properties name where this host has no path (empty on a
    host with all its paths).  ``shared``: objects of the volume the host cannot remove
    without removing another volume's (an NVMe namespace stays visible while its
    controller serves other namespaces of the subsystem): reported, not left behind.
    """

    objects: list[VolumeObject] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    shared: list[VolumeObject] = dataclasses.field(default_factory=list)

    @property
    def devices(self) -> list[VolumeObject]:
        return [o for o in self.objects if o.kind == DEVICE]

    def add_stacked(self, roots: HostRoots, names: Sequence[str]) -> None:
        """The maps over ``names`` and every /dev/disk link to them or to those maps."""
        self.objects += stacked_objects(roots, names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [o.to_dict() for o in self.objects],
            "missing": list(self.missing),
            "shared": [o.to_dict() for o in self.shared],
        }


def stacked_objects(
    roots: HostRoots, names: Sequence[str], links: Mapping[str, tuple[str, ...]] | None = None
) -> list[VolumeObject]:
    """Multipath maps over the devices ``names`` and the /dev/disk links to any of them
    (``links``: :func:`disk_links` when the caller read it already)."""
    out: list[VolumeObject] = []
    targets = list(dict.fromkeys(names))
    for name in list(targets):
        m = map_for_slave(roots, name)
        if m is not None and m.dm_name not in targets:
            targets.append(m.dm_name)
            label = m.name or m.dm_name
            out.append(
                VolumeObject(
                    MAP, label, f"{m.dm_name} (WWID {m.wwid}) over {', '.join(m.slaves) or '-'}"
                )
            )
    by_device = disk_links(roots) if links is None else links
    for name in targets:
        for link in by_device.get(name, ()):
            out.append(VolumeObject(LINK, _shown(roots, link), f"-> {name}"))
    return out


def dangling_links(
    roots: HostRoots, suffixes: Iterable[str], kinds: tuple[str, ...] = DEFAULT_LINK_KINDS
) -> list[VolumeObject]:
    """/dev/disk links whose device is gone and whose name ends with one of ``suffixes``
    (or has it before a ``-partN`` tail): udev left them for a removed device of the volume."""
    wanted = tuple(suffixes)
    out: list[VolumeObject] = []
    for kind in kinds:
        base = roots.devfs("disk", kind)
        for entry in sysfs.list_dir(base):
            if not any(_names(entry, s) for s in wanted):
                continue
            link = os.path.join(base, entry)
            if not os.path.islink(link) or resolve_dev_path(roots, link) is not None:
                continue
            try:
                target = os.readlink(link)
            except OSError:
                continue
            out.append(VolumeObject(LINK, _shown(roots, link), f"-> {target}, which is gone"))
    return out


def _names(entry: str, suffix: str) -> bool:
    if entry.endswith(suffix):
        return True
    head, sep, tail = entry.rpartition("-part")
    return bool(sep) and tail.isdigit() and head.endswith(suffix)


def _shown(roots: HostRoots, path: str) -> str:
    """``path`` as the host names it (/dev/...), whatever roots.dev is."""
    rel = os.path.relpath(path, roots.dev)
    return "/dev/" + rel if not rel.startswith("..") else path
