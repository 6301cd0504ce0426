"""Small read-only helpers the iSCSI connector needs on top of :mod:`brick_agent.host`."""

from __future__ import annotations

import os

from brick_agent.host.block import read_block_device
from brick_agent.host.iscsi import IscsiSession, session_devices
from brick_agent.host.multipath import MultipathMap, map_for_slave, map_for_wwid, read_map
from brick_agent.host.roots import HostRoots
from brick_agent.host.scsi import ScsiDevice, scsi_wwid_to_udev

__all__ = ["MultipathMap", "map_for_slave", "map_for_wwid", "read_map", "udev_wwid",
           "session_lun", "block_size", "dev_node_exists", "scsi_wwid_to_udev"]

def udev_wwid(dev: ScsiDevice) -> str | None:
    """WWID in udev/multipath spelling ('36001405...'); None when unreadable."""
    return scsi_wwid_to_udev(dev.wwid) if dev.wwid else None


def session_lun(roots: HostRoots, session: IscsiSession, lun: int) -> ScsiDevice | None:
    """The LUN ``lun`` of ``session`` (any state), or None."""
    for dev in session_devices(roots, session):
        if dev.hctl.lun == lun:
            return dev
    return None


def block_size(roots: HostRoots, name: str) -> int | None:
    dev = read_block_device(roots, name)
    return None if dev is None else dev.size_bytes


def dev_node_exists(roots: HostRoots, name: str) -> bool:
    return os.path.exists(roots.devfs(name))
