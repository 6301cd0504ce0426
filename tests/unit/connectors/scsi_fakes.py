"""Kernel and multipathd behaviour shared by the SCSI transport fakes (FakeIscsi, FakeFc).

:class:`FakeScsiKernel` implements the transport-neutral half of
:class:`~brick_agent.connectors.scsi.volume.ScsiActions` on a ``FakeHost``
tree the way the kernel and multipathd would: deleting a SCSI device (its
path leaves any map, an emptied target is reaped), flushing, building a map
``dm-N`` from the paths of one WWID, removing and resizing it.  A transport
fake adds how LUNs appear (login + scan, rport scan) and rescans.

Subclasses set ``h`` (FakeHost), ``lock`` (RLock), ``log``, ``fail_flush``,
``fail_delete``, ``multipathd`` and ``_dm``; ``udev=True`` also writes the
maps' udev database entries, and ``_udev_remove`` drops a disk's links.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from brick_agent.errors import CommandFailed
from brick_agent.host import multipath as host_mpath
from brick_agent.host.scsi import Hctl, scsi_device


@dataclasses.dataclass
class FakeLun:
    """A LUN of the array model."""

    wwid: str  # kernel form 'naa.6001405...'
    sectors: int = 2048


def wwid_of(n: int) -> str:
    """Kernel-form WWID of test LUN ``n``."""
    return f"naa.6001405{n:025x}"


def udev_of(n: int) -> str:
    """udev/multipath-form WWID of test LUN ``n``."""
    return "3" + wwid_of(n)[4:]


class FakeScsiKernel:
    """The transport-neutral ScsiActions of the fakes (see module doc)."""

    udev = False
    fail_map_remove = 0  # next N map removals fail ("map in use"); -1: all
    daemon_starts = 0  # start_daemon calls (the real one starts the privsep daemon once)

    def start_daemon(self) -> None:
        self.daemon_starts += 1

    # ------------------------------------------------------------ tree helpers
    def _read(self, rel: str) -> str | None:
        try:
            return self.h.p(rel).read_text().strip()
        except OSError:
            return None

    def _udev_remove(self, name: str, devnum: str | None) -> None:
        """udev's side of a disk going away (no udev model: nothing)."""

    def _remove_scsi_device(self, hctl: Hctl) -> None:
        """What the kernel does when a SCSI device goes (delete, logout)."""
        dev = scsi_device(self.h.roots, hctl)
        if dev is None:
            return
        if dev.name:
            m = host_mpath.map_for_slave(self.h.roots, dev.name)
            if m is not None:  # the kernel drops the path from the map's slaves
                os.unlink(self.h.p(f"sys/devices/virtual/block/{m.dm_name}/slaves/{dev.name}"))
            devnum = Path(dev.sysfs_path, "block", dev.name, "dev").read_text().strip()
            self._udev_remove(dev.name, devnum)
            for rel in (
                f"sys/class/block/{dev.name}",
                f"sys/dev/block/{devnum}",
                f"dev/{dev.name}",
            ):
                if os.path.lexists(self.h.p(rel)):
                    os.unlink(self.h.p(rel))
        for rel in (f"sys/bus/scsi/devices/{hctl}", f"sys/class/scsi_device/{hctl}"):
            if os.path.lexists(self.h.p(rel)):
                os.unlink(self.h.p(rel))
        tdir = os.path.dirname(dev.sysfs_path)
        shutil.rmtree(dev.sysfs_path)
        if not os.listdir(tdir):
            os.rmdir(tdir)  # the kernel reaps a target without LUNs

    def _reread(self, hctl: Hctl, lun: FakeLun | None) -> None:
        """A rescan: the device re-reads ``lun``'s (the array's) WWID and size."""
        dev = scsi_device(self.h.roots, hctl)
        if lun is None or dev is None:
            return
        Path(dev.sysfs_path, "wwid").write_text(lun.wwid + "\n")
        if dev.name:
            Path(dev.sysfs_path, "block", dev.name, "size").write_text(f"{lun.sectors}\n")

    def _map_path(self, name: str) -> None:
        """Add path ``name`` to the map of its WWID (creating it), as multipathd would."""
        with self.lock:
            kernel = self._read(f"sys/class/block/{name}/device/wwid") or ""
            udev = "3" + kernel[4:]
            m = host_mpath.map_for_wwid(self.h.roots, udev)
            if m is None:
                sectors = int(self._read(f"sys/class/block/{name}/size") or 0)
                self.h.dm(self._dm, udev, f"mpath-{udev}", [name], sectors=sectors)
                self.h.link(f"dev/disk/by-id/dm-uuid-mpath-{udev}", f"dev/dm-{self._dm}")
                if self.udev:
                    devnum = self._read(f"sys/class/block/dm-{self._dm}/dev")
                    self.h.attr(
                        f"run/udev/data/b{devnum}",
                        f"S:disk/by-id/dm-uuid-mpath-{udev}\nE:DM_UUID=mpath-{udev}",
                    )
                self._dm += 1
            elif name not in m.slaves:
                bdir = f"sys/devices/virtual/block/{m.dm_name}"
                sreal = os.path.relpath(
                    os.path.realpath(self.h.p(f"sys/class/block/{name}")), self.h.base
                )
                self.h.link(f"{bdir}/slaves/{name}", sreal)
                self.h.link(f"{sreal}/holders/{m.dm_name}", bdir)

    # ------------------------------------------------------------ ScsiActions
    def delete_device(self, hctl: Hctl) -> None:
        with self.lock:
            self.log.append(("delete", str(hctl)))
            if str(hctl) in self.fail_delete:
                raise CommandFailed(["tee", "delete"], 1, "device busy")
            self._remove_scsi_device(hctl)

    def flush(self, device: str) -> None:
        with self.lock:
            name = os.path.basename(device)
            self.log.append(("flush", name))
            if name in self.fail_flush:
                raise CommandFailed(["blockdev", "--flushbufs", device], 1, "I/O error")

    def multipath_add(self, wwid: str, devices: list[str]) -> None:
        with self.lock:
            self.log.append(("multipath_add", wwid, tuple(devices)))
            for name in devices:
                self._map_path(name)

    def multipath_forget(self, wwid: str) -> None:
        with self.lock:
            self.log.append(("multipath_forget", wwid))

    def multipath_remove(self, map_name: str) -> None:
        with self.lock:
            self.log.append(("multipath_remove", map_name))
            if self.fail_map_remove:
                self.fail_map_remove -= 1 if self.fail_map_remove > 0 else 0
                raise CommandFailed(["multipath", "-f", map_name], 1, "map in use")
            m = host_mpath.map_by_name(self.h.roots, map_name)
            if m is None:
                return
            bdir = f"sys/devices/virtual/block/{m.dm_name}"
            for slave in m.slaves:
                holder = self.h.p(f"sys/class/block/{slave}/holders/{m.dm_name}")
                if os.path.lexists(holder):
                    os.unlink(holder)
            devnum = self._read(f"{bdir}/dev")
            for rel in (
                f"sys/class/block/{m.dm_name}",
                f"sys/dev/block/{devnum}",
                f"dev/{m.dm_name}",
                f"dev/mapper/{map_name}",
                f"dev/disk/by-id/dm-uuid-{m.uuid}",
                f"run/udev/data/b{devnum}",
            ):
                if os.path.lexists(self.h.p(rel)):
                    os.unlink(self.h.p(rel))
            shutil.rmtree(self.h.p(bdir))

    def multipath_resize(self, map_name: str) -> None:
        with self.lock:
            self.log.append(("multipath_resize", map_name))
            m = host_mpath.map_by_name(self.h.roots, map_name)
            size = self._read(f"sys/class/block/{m.slaves[0]}/size")
            Path(self.h.p(f"sys/devices/virtual/block/{m.dm_name}/size")).write_text(f"{size}\n")

    def multipathd_running(self) -> bool:
        return self.multipathd
