"""Read-only view of one ``/dev/disk/by-id`` / ``by-path`` link and whether it dangles.

udev names fabric volumes' links ``ip-ADDR:PORT-iscsi-IQN-lun-N`` and
``pci-...-fc-0xWWPN-lun-N`` (by-path), ``wwn-0x..``, ``scsi-3..``, ``nvme-..``,
``dm-uuid-mpath-..``, ``dm-name-..`` (by-id): :data:`FABRIC_LINK_NAMES`.
"""

from __future__ import annotations

import os
import re

from brick_agent.host.roots import HostRoots

LINK_KINDS = ("by-id", "by-path")
FABRIC_LINK_NAMES = {
    "by-path": re.compile(r"^(?:ip-.+-iscsi-|.*-fc-0x|.*-nvme-|nvme-)"),
    "by-id": re.compile(r"^(?:wwn-|scsi-|nvme-|dm-uuid-mpath-|dm-name-)"),
}


def split_link(path: str) -> tuple[str, str] | None:
    """``/dev/disk/KIND/NAME`` -> (KIND, NAME); None for anything else."""
    parts = path.split("/")
    if len(parts) != 5 or parts[:3] != ["", "dev", "disk"] or parts[3] not in LINK_KINDS:
        return None
    return (parts[3], parts[4]) if parts[4] not in ("", ".", "..") else None


def is_fabric_link(kind: str, name: str) -> bool:
    pattern = FABRIC_LINK_NAMES.get(kind)
    return bool(pattern and pattern.match(name))


def link_target(roots: HostRoots, kind: str, name: str) -> str | None:
    """The text of link ``/dev/disk/KIND/NAME``; None when it is absent or not a link."""
    try:
        return os.readlink(roots.devfs("disk", kind, name))
    except OSError:
        return None


def target_exists(roots: HostRoots, kind: str, target: str) -> bool:
    """Whether a link's ``target`` text names something that exists (read as the kernel
    would from ``/dev/disk/KIND``; absolute ``/dev/...`` targets under ``roots.dev``)."""
    if target.startswith("/dev/"):
        return os.path.lexists(roots.devfs(target[len("/dev/") :]))
    if target.startswith("/"):
        return os.path.lexists(target)
    return os.path.lexists(os.path.join(roots.devfs("disk", kind), target))
