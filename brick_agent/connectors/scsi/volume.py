"""SCSI-level volume steps shared by the SCSI transports (iSCSI and Fibre Channel).

A transport connector finds *which* SCSI devices (H:C:T:L) belong to a volume
and makes them appear (iSCSI login + ``c t l`` scan, FC rport lookup + scan).
Everything after that is the same for every SCSI transport and lives here:

* readiness of a disk (bound to ``sd``, ``/dev`` node present, udev done),
* identity: every path must report one WWID (fail closed otherwise),
  re-validation of a LUN that already existed (LUN reuse),
* the dm-multipath map ``mpath-<wwid>`` holding the paths,
* the ``device_info`` returned to callers (stable paths),
* undo of devices an attach created (only those no other attach holds:
  :class:`DeviceClaims`),
* detach: flush what was used, remove the map, delete exactly the volume's
  devices (WWID confirmed), wait for the kernel to drop them and for udev to
  remove their /dev links (on udev's events),
* extend: rescan every path, check they agree, resize the map.

:class:`ScsiVolumeOps` holds the host seams (roots, actions, the udev watch
factory, timeouts); it decides nothing about transports.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from brick_agent import metrics
from brick_agent.connectors import multipath_wait
from brick_agent.connectors.scsi.actions import ScsiActions
from brick_agent.deadline import Deadline
from brick_agent.errors import (
    BrickError,
    CommandFailed,
    DeviceBusy,
    DeviceInUse,
    DeviceNotFound,
    NotSupported,
    VolumeIdentityMismatch,
)
from brick_agent.host import udev
from brick_agent.host.block import block_device_for_path, block_device_name, read_block_device
from brick_agent.host.holders import open_holders
from brick_agent.host.multipath import (
    MultipathMap,
    map_for_slave,
    map_for_wwid,
    maps_by_slave,
    read_map,
)
from brick_agent.host.roots import HostRoots
from brick_agent.host.scsi import (
    Hctl,
    ListedLun,
    ScsiDevice,
    same_wwid,
    scsi_device,
    scsi_device_by_name,
    scsi_wwid_to_udev,
)
from brick_agent.host.udev import DeviceWatch

LOG = logging.getLogger(__name__)

DeviceInfo = dict[str, Any]


class DeviceClaims:
    """Which attach calls of this process hold which SCSI devices, in flight or returned.

    The same LUN scanned by two concurrent attaches is *one* device: each
    attach only knows "I scanned it", so a failing one must not delete what
    the other is about to return (or returned).  An attach claims every device
    it scans or reuses, under its target's lock, before it waits for it; it
    keeps its claims when it succeeds and releases them when it fails.  A
    detach forgets the claims of the devices it deleted.  An undo deletes a
    device it scanned only when :meth:`held_by_others` says no one else holds it.

    A claim taken before the device exists (scan) holds whatever appears at
    that address; a claim on a device remembers its kernel name and WWID, so a
    device that went away and came back at the same address (another LUN, a
    detach in another process) is not held by it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (sysfs root, hctl) -> owner -> (name, wwid) of the device, or None before it exists
        self._held: dict[
            tuple[str, Hctl], dict[Hashable, tuple[str | None, str | None] | None]
        ] = {}

    def hold(
        self, roots: HostRoots, owner: Hashable, hctl: Hctl, dev: ScsiDevice | None = None
    ) -> None:
        """``owner`` holds the device at ``hctl`` (``dev``: the device it found there)."""
        ident = None if dev is None else (dev.name, dev.wwid)
        with self._lock:
            self._held.setdefault((roots.sys, hctl), {})[owner] = ident

    def held_by_others(self, roots: HostRoots, owner: Hashable, dev: ScsiDevice) -> bool:
        """True when an owner other than ``owner`` holds ``dev`` (the device now at its address)."""
        with self._lock:
            holders = dict(self._held.get((roots.sys, dev.hctl), {}))
        return any(
            ident is None or ident == (dev.name, dev.wwid)
            for who, ident in holders.items()
            if who != owner
        )

    def others_on_host(self, roots: HostRoots, owner: Hashable, host: int) -> bool:
        """True when an owner other than ``owner`` holds any device of SCSI host ``host``."""
        with self._lock:
            return any(
                hctl.host == host and any(who != owner for who in holders)
                for (root, hctl), holders in self._held.items()
                if root == roots.sys
            )

    def release(self, roots: HostRoots, owner: Hashable) -> None:
        """Drop every claim of ``owner`` (a failed attach, after its undo)."""
        with self._lock:
            for key in [k for k in self._held if k[0] == roots.sys]:
                holders = self._held[key]
                holders.pop(owner, None)
                if not holders:
                    del self._held[key]

    def forget(self, roots: HostRoots, hctls: Iterable[Hctl]) -> None:
        """Drop every claim on ``hctls`` (the devices were deleted by a detach)."""
        with self._lock:
            for hctl in hctls:
                self._held.pop((roots.sys, hctl), None)


#: the claims of this process (shared by every connector instance: they share the host)
CLAIMS = DeviceClaims()


def scsi_watch_factory(roots: HostRoots) -> Callable[[], DeviceWatch]:
    """New watches of block and scsi uevents (the SCSI transports' default watch factory)."""

    def make() -> DeviceWatch:
        return DeviceWatch(subsystems=("block", "scsi"), roots=roots, poll_interval=0.25)

    return make


def udev_wwid(dev: ScsiDevice) -> str | None:
    """WWID in udev/multipath spelling ('36001405...'); None when unreadable."""
    return scsi_wwid_to_udev(dev.wwid) if dev.wwid else None


def wwn_link_name(wwid: str) -> str | None:
    """udev's ``/dev/disk/by-id`` ``wwn-0x...`` link name of an NAA WWID, else None."""
    for cand in _candidates(wwid):
        if cand.startswith("0x"):
            return "wwn-" + cand
    return None


def _candidates(wwid: str) -> tuple[str, ...]:
    from brick_agent.host.scsi import wwid_candidates

    return wwid_candidates(wwid)


@dataclasses.dataclass
class ScsiVolumeOps:
    """SCSI volume steps bound to one host (see module doc)."""

    roots: HostRoots
    actions: ScsiActions
    watch_factory: Callable[[], DeviceWatch]
    multipath_wait_timeout: float = 20.0
    device_removal_timeout: float = 20.0
    wait_for_udev: bool = True
    multipath_grace: float = 1.0  # let multipathd map the paths itself before poking it
    map_removal_timeout: float = 20.0  # retry a map removal this long while it is in use
    #: device_info paths: True gives udev's stable links (by-id/wwn-0x..., by-id/dm-uuid-mpath-..),
    #: False the kernel names (/dev/sdX, /dev/dm-N) as os-brick's iSCSI connector returns them
    stable_paths: bool = True
    protocol: str = "SCSI"  # the metrics' label: ISCSI or FIBRE_CHANNEL

    # ------------------------------------------------------------ readiness / identity
    def disk_ready(self, dev: ScsiDevice | None) -> ScsiDevice | None:
        """``dev`` once it is a usable disk: ``sdX`` bound, /dev node made, udev done
        (if running)."""
        if dev is None or not dev.name or not os.path.exists(self.roots.devfs(dev.name)):
            return None
        if self.wait_for_udev and udev.udev_running(self.roots):
            path = udev.udev_db_path(self.roots, dev.name)
            if path is None or not os.path.exists(path):
                return None
        return dev

    def ready_at(self, hctl: Hctl) -> ScsiDevice | None:
        return self.disk_ready(scsi_device(self.roots, hctl))

    @staticmethod
    def require_wwid(dev: ScsiDevice) -> str:
        """The udev-form WWID of ``dev``; VolumeIdentityMismatch when it has none."""
        wwid = udev_wwid(dev)
        if not wwid:
            raise VolumeIdentityMismatch(
                f"{dev.name} ({dev.hctl}) has no WWID (VPD page 0x83): cannot verify it is "
                "the volume"
            )
        return wwid

    def common_wwid(self, devices: Sequence[ScsiDevice]) -> str:
        """The one WWID all ``devices`` report; VolumeIdentityMismatch if they disagree."""
        if not devices:
            raise DeviceNotFound("no device to identify")
        first = self.require_wwid(devices[0])
        for dev in devices[1:]:
            other = self.require_wwid(dev)
            if not same_wwid(other, first):
                raise VolumeIdentityMismatch(
                    f"paths of one volume disagree on its WWID: {devices[0].name} "
                    f"({devices[0].hctl})={first}, {dev.name} ({dev.hctl})={other}"
                )
        return first

    @metrics.step("verify")
    def revalidate(self, dev: ScsiDevice) -> ScsiDevice | None:
        """A LUN that was already there: rescan it; a changed identity makes it stale.

        Stale and unheld: deleted, ``None`` returned (the caller scans afresh).
        Stale and held by a map: VolumeIdentityMismatch (fail closed).
        """
        before = dev.wwid
        self.actions.rescan_device(dev.hctl)
        now = scsi_device(self.roots, dev.hctl)
        if now is None:
            return None
        if before is None or before == now.wwid:
            return now
        holder = map_for_slave(self.roots, now.name) if now.name else None
        if holder is not None:
            raise VolumeIdentityMismatch(
                f"{now.name} ({now.hctl}) changed identity from {before} to {now.wwid} and is "
                f"still held by {holder.dm_name}; refusing to use it"
            )
        LOG.warning(
            "%s (%s) is stale: WWID was %s, target now reports %s; removing it",
            now.name,
            now.hctl,
            before,
            now.wwid,
        )
        self.actions.delete_device(now.hctl)
        return None

    def still_the_volume(self, path: str) -> bool:
        """Before a new attachment shares the recorded device at ``path``: is it still the volume?

        Every SCSI device behind the path is rescanned (a device rescan re-reads the
        identity the kernel caches; it is not a target scan): an array that reused the
        LUN for another volume makes the device stale (:meth:`revalidate`).
        """
        dev = block_device_for_path(self.roots, path)
        if dev is None:
            return False
        for name in list(dev.slaves) if dev.is_dm else [dev.name]:
            sdev = scsi_device_by_name(self.roots, name)
            if sdev is None or self.revalidate(sdev) is None:
                return False
        return True

    # ------------------------------------------------------------ multipath
    @metrics.step("map")
    def wait_for_map(self, wwid: str, names: Sequence[str], deadline: Deadline) -> MultipathMap:
        """The map ``mpath-<wwid>`` holding ``names``; asks multipathd to build it if needed.

        multipathd normally maps new paths on its own (find_multipaths); only
        after ``multipath_grace`` seconds are the paths added explicitly.

        A map holding only some of ``names`` at the deadline is accepted with a
        warning; a map holding a path of another LUN is refused.
        """
        wanted = set(names)
        m = multipath_wait.wait_for_map(
            self.roots,
            self.watch_factory,
            lambda: map_for_wwid(self.roots, wwid),
            names,
            budget=deadline.capped(self.multipath_wait_timeout),
            grace=self.multipath_grace,
            add=lambda: self.actions.multipath_add(wwid, list(names)),
            what=f"multipath map mpath-{wwid}",
        )
        for slave in m.slaves:
            if slave in wanted:
                continue
            dev = scsi_device_by_name(self.roots, slave)
            if dev is not None and dev.wwid and not same_wwid(dev.wwid, wwid):
                raise VolumeIdentityMismatch(f"map {m.dm_name} holds {slave} with WWID {dev.wwid}")
        return m

    # ------------------------------------------------------------ results
    def stable_disk_path(self, dev: ScsiDevice, deadline: Deadline | None = None) -> str:
        """``/dev/disk/by-id/wwn-0x...`` when udev made it for ``dev``, else ``/dev/sdX``.

        Every path of a LUN claims its ``wwn-0x`` link, and udev re-points or
        briefly removes it while it processes one of them coming or going (an
        earlier path of the same LUN still being removed, say).  So the link is
        returned only once no claim is pending in udev (waited for on udev's
        events within ``deadline``, the attach's own) and it then resolves to
        ``dev``; a claim still pending at the deadline gives the kernel name.
        """
        kernel = self.roots.devfs(dev.name or "")
        name = wwn_link_name(dev.wwid) if dev.wwid else None
        if not name:
            return kernel
        link = self.roots.devfs("disk", "by-id", name)

        def settled() -> str | None:
            if not udev.link_claims_settled(self.roots, link):
                return None
            target = block_device_for_path(self.roots, link)
            return link if target is not None and target.name == dev.name else kernel

        if deadline is None or not (self.wait_for_udev and udev.udev_running(self.roots)):
            return settled() or kernel
        with self.watch_factory() as watch:
            try:
                return watch.wait_for(settled, deadline, what=f"udev claims of {link}")
            except DeviceNotFound:
                LOG.info("udev is still re-linking %s; returning %s", link, kernel)
                return kernel

    def map_path(self, m: MultipathMap) -> str:
        """``/dev/disk/by-id/dm-uuid-mpath-<wwid>`` if present, else /dev/mapper/<name>,
        else /dev/dm-N."""
        for path in (self.roots.devfs("disk", "by-id", f"dm-uuid-{m.uuid}"), m.mapper_path):
            if path and os.path.lexists(path):
                target = block_device_for_path(self.roots, path)
                if target is not None and target.name == m.dm_name:
                    return path
        return self.roots.devfs(m.dm_name)

    def device_info(
        self,
        devices: Sequence[ScsiDevice],
        wwid: str,
        *,
        use_multipath: bool,
        enforce_multipath: bool,
        deadline: Deadline,
    ) -> DeviceInfo:
        """os-brick's ``device_info`` for verified ``devices`` (first one preferred)."""
        if use_multipath:
            if self.actions.multipathd_running():
                m = self.wait_for_map(wwid, [d.name for d in devices if d.name], deadline)
                self._settle(m.dm_name, deadline)
                path = self.map_path(m) if self.stable_paths else self.roots.devfs(m.dm_name)
                return {"type": "block", "path": path, "scsi_wwn": wwid, "multipath_id": wwid}
            if enforce_multipath:
                raise NotSupported("multipath enforced but multipathd is not running")
            LOG.warning("multipathd is not running: returning single path %s", devices[0].name)
        path = (
            self.stable_disk_path(devices[0], deadline)
            if self.stable_paths
            else self.roots.devfs(devices[0].name or "")
        )
        return {"type": "block", "path": path, "scsi_wwn": wwid}

    def _settle(self, name: str, deadline: Deadline) -> None:
        """Let udev finish ``name`` (its links) within the budget; no-op without udev."""
        if not (self.wait_for_udev and udev.udev_running(self.roots)):
            return
        with self.watch_factory() as watch:
            try:
                udev.udev_settled_for(self.roots, name, deadline.capped(5.0), watch)
            except DeviceNotFound:
                LOG.debug("udev has not processed %s yet; returning its kernel name", name)

    # ------------------------------------------------------------ undo
    def delete_created(
        self,
        hctls: Iterable[Hctl],
        wait: bool = True,
        *,
        keep: Callable[[ScsiDevice], bool] | None = None,
        lock_for: Callable[[ScsiDevice], AbstractContextManager[Any]] | None = None,
        deadline: Deadline | None = None,
    ) -> list[str]:
        """Delete devices an attach created; a map made only of them goes first.

        A device that a map also built from other paths holds is left (and
        reported).  ``keep(dev)`` (checked under ``lock_for(dev)``, right before
        the delete) spares a device someone else holds (not reported: it is in
        use, not left over).  The removal wait ends at ``deadline`` (default:
        ``device_removal_timeout``).  Returns what could not be removed.
        """
        devs = [
            d for d in (scsi_device(self.roots, h) for h in dict.fromkeys(hctls)) if d is not None
        ]
        names = {d.name for d in devs if d.name}
        todo: list[Hctl] = []
        left: list[str] = []
        removed_maps: set[str] = set()
        entries: list[udev.UdevEntry] = []

        def kept(dev: ScsiDevice) -> bool:
            if keep is None or not keep(dev):
                return False
            LOG.info("undo: keeping %s (%s): another attach holds it", dev.name, dev.hctl)
            return True

        with self.watch_factory() as watch:
            for dev in devs:
                try:
                    with lock_for(dev) if lock_for is not None else contextlib.nullcontext():
                        if kept(dev):
                            continue
                        m = map_for_slave(self.roots, dev.name) if dev.name else None
                        if m is not None and m.dm_name not in removed_maps:
                            if not set(m.slaves) <= names:
                                left.append(f"{dev.hctl} (held by {m.dm_name})")
                                continue
                            others = [
                                o
                                for o in (
                                    scsi_device_by_name(self.roots, n)
                                    for n in m.slaves
                                    if n != dev.name
                                )
                                if o
                            ]
                            if keep is not None and any(keep(o) for o in others):
                                LOG.info(
                                    "undo: keeping %s and map %s: another attach holds "
                                    "a path of it",
                                    dev.name,
                                    m.dm_name,
                                )
                                continue
                            self.actions.multipath_remove(m.name or m.dm_name)
                            removed_maps.add(m.dm_name)
                            self.forget(m.wwid)
                        entries += self.udev_entries([dev.name])
                        self.actions.delete_device(dev.hctl)
                        todo.append(dev.hctl)
                except BrickError as exc:  # LockTimeout included: the device stays
                    LOG.warning("undo: could not delete %s: %s", dev.hctl, exc)
                    left.append(f"{dev.hctl} (delete failed: {exc})")
            if wait and todo:
                left += self._wait_removed(watch, todo, deadline, entries)
        return left

    def forget(self, wwid: str) -> None:
        """Best effort: drop ``wwid`` from the wwids file (a stale entry only costs a lookup)."""
        try:
            self.actions.multipath_forget(wwid)
        except BrickError as exc:
            LOG.warning("could not remove %s from the wwids file: %s", wwid, exc)

    def udev_entries(self, names: Iterable[str | None]) -> list[udev.UdevEntry]:
        """udev's entries of block devices about to be deleted (none without udev)."""
        return [e for e in (udev.udev_entry(self.roots, n) for n in names if n) if e]

    def _wait_removed(
        self,
        watch: DeviceWatch,
        hctls: Sequence[Hctl],
        deadline: Deadline | None = None,
        entries: Sequence[udev.UdevEntry] = (),
    ) -> list[str]:
        """Wait until the kernel dropped ``hctls`` and udev processed their removal
        (``entries``: their links are gone), woken by the watch's events; what stayed.

        Links udev has not removed by the deadline are logged, not returned: the kernel
        side is done and udev removes them when it gets to the event."""

        def present() -> bool:
            return any(scsi_device(self.roots, h) for h in hctls) or any(
                not udev.udev_forgot(self.roots, e, watch) for e in entries
            )

        try:
            watch.wait_gone(
                present,
                deadline or Deadline.after(self.device_removal_timeout),
                what="SCSI devices " + ", ".join(map(str, hctls)),
            )
        except DeviceNotFound:
            late = [e.name for e in entries if not udev.udev_forgot(self.roots, e, watch)]
            if late:
                LOG.warning("udev has not removed the links of %s yet", ", ".join(late))
            return [f"{h} (still present)" for h in hctls if scsi_device(self.roots, h) is not None]
        return []

    # ------------------------------------------------------------ detach
    def expected_wwid(self, info: Mapping[str, Any], found: Sequence[ScsiDevice]) -> str | None:
        """The volume's WWID: from device_info, else its path, else the devices if they agree."""
        for key in ("scsi_wwn", "multipath_id"):
            value = info.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        path = info.get("path")
        if isinstance(path, str) and path:
            dev = block_device_for_path(self.roots, path)
            if dev is not None and dev.dm_uuid and dev.dm_uuid.startswith("mpath-"):
                return dev.dm_uuid[len("mpath-") :]
            if dev is not None and dev.wwid:
                return scsi_wwid_to_udev(dev.wwid)
        wwids = {udev_wwid(d) for d in found if d.wwid}
        if len(wwids) == 1:
            return wwids.pop()
        if len(wwids) > 1:
            raise VolumeIdentityMismatch(
                "devices at this volume's address disagree on the WWID and device_info names "
                f"none: {', '.join(sorted(w for w in wwids if w))}; refusing to guess"
            )
        return None

    def confirmed(
        self, found: Sequence[ScsiDevice], wwid: str | None, force: bool
    ) -> tuple[list[ScsiDevice], list[str]]:
        """(devices that are the volume, leftovers notes): WWID must match; unreadable only
        if forced."""
        ours: list[ScsiDevice] = []
        notes: list[str] = []
        for d in found:
            if wwid and d.wwid and same_wwid(d.wwid, wwid):
                ours.append(d)
            elif d.wwid is None and force:
                ours.append(d)
            else:
                LOG.warning(
                    "leaving %s (%s): WWID %s is not the volume's %s", d.name, d.hctl, d.wwid, wwid
                )
                if d.wwid is None:
                    notes.append(f"{d.hctl} (WWID unreadable; use force)")
        return ours, notes

    def volume_map(self, wwid: str | None, ours: Sequence[ScsiDevice]) -> MultipathMap | None:
        m = map_for_wwid(self.roots, wwid) if wwid else None
        if m is None:
            for d in ours:
                if d.name:
                    m = map_for_slave(self.roots, d.name)
                    if m is not None:
                        break
        return m

    def slave_maps(self) -> dict[str, MultipathMap]:
        """Path device -> its multipath map, for :meth:`listing_fields` over many disks."""
        return maps_by_slave(self.roots)

    def listing_fields(
        self, dev: ScsiDevice | ListedLun, maps: Mapping[str, MultipathMap] | None = None
    ) -> dict[str, Any]:
        """``wwid``, ``path`` and ``multipath`` of one disk: the tail of a listed volume's row.

        ``maps``: :func:`maps_by_slave`, read once for a listing of many disks.
        """
        if maps is not None:
            mpath = maps.get(dev.name) if dev.name else None
        else:
            mpath = map_for_slave(self.roots, dev.name) if dev.name else None
        return {
            "wwid": scsi_wwid_to_udev(dev.wwid) if dev.wwid else None,
            "path": self.roots.devfs(dev.name) if dev.name else None,
            "multipath": self.roots.devfs(mpath.dm_name) if mpath else None,
        }

    def used_device(
        self, info: Mapping[str, Any], mpath: MultipathMap | None, ours: Sequence[ScsiDevice]
    ) -> str | None:
        """Kernel name of the device the caller used (to flush): its path, the map, or the
        only disk."""
        names = {d.name for d in ours if d.name}
        path = info.get("path")
        if isinstance(path, str) and path:
            name = block_device_name(self.roots, path)
            if name is not None and (
                name in names or (mpath is not None and name == mpath.dm_name)
            ):
                return name
        if mpath is not None:
            return mpath.dm_name
        if len(names) == 1:
            return next(iter(names))
        return None

    def remove_volume(
        self,
        ours: Sequence[ScsiDevice],
        wwid: str | None,
        info: Mapping[str, Any],
        force: bool,
        lock_for: Callable[[ScsiDevice], AbstractContextManager[Any]] | None = None,
        then: Callable[[], list[str]] | None = None,
    ) -> list[str]:
        """Flush what was used, remove the map, delete ``ours``, wait; return leftovers.

        ``then()`` runs once the devices are deleted, while udev removes their links
        (iSCSI: the logouts), and its leftovers are added; only then is the wait for
        udev.  The map's wwids entry is dropped meanwhile.

        Without ``force`` the first failure raises (DeviceBusy for a failed flush).
        A map still briefly held (udev/blkid probing a fresh map) is retried for
        ``map_removal_timeout``.
        """
        leftovers: list[str] = []
        mpath = self.volume_map(wwid, ours)
        used = self.used_device(info, mpath, ours)
        if used is not None:
            try:
                with metrics.phase(self.protocol, "flush"):
                    self.actions.flush(self.roots.devfs(used))
            except BrickError as exc:
                if not force:
                    raise in_use_error(
                        self.roots,
                        [used],
                        f"cannot flush {used}: {exc}",
                        DeviceBusy(f"cannot flush {used}: {exc}"),
                    ) from exc
                leftovers.append(f"{used} (flush failed: {exc})")
        with contextlib.ExitStack() as background:
            if mpath is not None:
                try:
                    with metrics.phase(self.protocol, "unmap"):
                        remove_map(
                            self.roots,
                            self.watch_factory,
                            self.actions.multipath_remove,
                            mpath,
                            removal_timeout=self.map_removal_timeout,
                            gone_timeout=self.device_removal_timeout,
                        )
                except BrickError as exc:
                    err = in_use_error(
                        self.roots,
                        [mpath.dm_name],
                        f"map {mpath.dm_name} was not removed: {exc}",
                        exc,
                    )
                    if not force:
                        raise err from exc
                    leftovers.append(f"{mpath.dm_name} (map removal failed: {err})")
                else:  # (a `multipath -w` exec) while the devices go
                    pool = background.enter_context(
                        concurrent.futures.ThreadPoolExecutor(
                            max_workers=1, thread_name_prefix="wwid-forget"
                        )
                    )
                    pool.submit(self.forget, mpath.wwid)
            leftovers += self._delete_devices(ours, force, lock_for, then)
        return leftovers

    @metrics.step("remove")
    def _delete_devices(
        self,
        ours: Sequence[ScsiDevice],
        force: bool,
        lock_for: Callable[[ScsiDevice], AbstractContextManager[Any]] | None,
        then: Callable[[], list[str]] | None,
    ) -> list[str]:
        leftovers: list[str] = []
        deleted: list[Hctl] = []
        with self.watch_factory() as watch:
            entries = self.udev_entries([d.name for d in ours])  # before they go
            try:
                for d in ours:
                    try:
                        with lock_for(d) if lock_for is not None else contextlib.nullcontext():
                            self.actions.delete_device(d.hctl)
                        deleted.append(d.hctl)
                    except BrickError as exc:
                        if not force:
                            raise
                        leftovers.append(f"{d.name or d.hctl} (delete failed: {exc})")
                if then is not None:
                    leftovers += then()
            finally:
                if deleted:
                    CLAIMS.forget(self.roots, deleted)
                    names = {d.name for d in ours if d.hctl in deleted}
                    leftovers += self._wait_removed(
                        watch, deleted, entries=[e for e in entries if e.name in names]
                    )
        return leftovers

    # ------------------------------------------------------------ extend
    def extend(self, devices: Sequence[ScsiDevice], what: str) -> int:
        """Rescan every path, require one WWID and one size, resize the map; new size in bytes."""
        devices = [d for d in devices if d.name]
        if not devices:
            raise DeviceNotFound(f"no device of {what} to extend")
        wwid = self.common_wwid(devices)
        for d in devices:
            self.actions.rescan_device(d.hctl)
        sizes = {d.name: self.block_size(d.name) for d in devices if d.name}
        size = next(iter(sizes.values()))
        if len(set(sizes.values())) != 1 or size is None:
            raise BrickError(f"paths of {what} disagree on the size after a rescan: {sizes}")
        m = map_for_wwid(self.roots, wwid)
        if m is not None:
            budget = Deadline.after(self.multipath_wait_timeout)
            with self.watch_factory() as watch:
                try:
                    # multipathd refuses until it has processed the paths' change uevents
                    retry(
                        lambda: self.actions.multipath_resize(m.name or m.dm_name),
                        budget,
                        until=lambda: self.block_size(m.dm_name) == size,
                        what=f"resize of map {m.dm_name}",
                    )
                    watch.wait_for(
                        lambda: True if self.block_size(m.dm_name) == size else None,
                        budget,
                        what=f"map {m.dm_name} at {size} bytes",
                    )
                except (DeviceNotFound, CommandFailed):
                    raise BrickError(
                        f"map {m.dm_name} did not grow to {size} bytes (now "
                        f"{self.block_size(m.dm_name)})"
                    ) from None
        return size

    def block_size(self, name: str) -> int | None:
        dev = read_block_device(self.roots, name)
        return None if dev is None else dev.size_bytes


def remove_map(
    roots: HostRoots,
    watch_factory: Callable[[], DeviceWatch],
    remove: Callable[[str], object],
    m: MultipathMap,
    *,
    removal_timeout: float,
    gone_timeout: float,
) -> None:
    """Flush and remove multipath map ``m`` with ``remove(name)`` (retried for
    ``removal_timeout`` while briefly held), then wait, on udev events, until the kernel
    dropped it and udev removed its links (/dev/mapper, by-id/dm-*); links still there
    after ``gone_timeout`` are logged, not raised: the kernel side is done."""
    entries = [e for e in [udev.udev_entry(roots, m.dm_name)] if e]
    with watch_factory() as watch:
        retry(
            lambda: remove(m.name or m.dm_name),
            Deadline.after(removal_timeout),
            until=lambda: read_map(roots, m.dm_name) is None,
            what=f"removal of map {m.dm_name}",
        )
        watch.wait_gone(
            lambda: read_map(roots, m.dm_name),
            Deadline.after(gone_timeout),
            what=f"map {m.dm_name}",
        )
        try:
            watch.wait_gone(
                lambda: any(not udev.udev_forgot(roots, e, watch) for e in entries),
                Deadline.after(gone_timeout),
                what=f"udev links of {m.dm_name}",
            )
        except DeviceNotFound:
            LOG.warning("udev has not removed the links of %s yet", m.dm_name)


def in_use_error(
    roots: HostRoots, names: Sequence[str], message: str, otherwise: BrickError
) -> BrickError:
    """:class:`DeviceInUse` naming the processes holding ``names`` open, if any; else
    ``otherwise``."""
    holders = open_holders(roots, names)
    return DeviceInUse(message, holders) if holders else otherwise


def retry(
    action: Callable[[], object],
    deadline: Deadline,
    *,
    until: Callable[[], bool],
    what: str,
    first_delay: float = 0.1,
    max_delay: float = 1.0,
) -> None:
    """Run ``action`` until it succeeds or ``until()`` holds; re-raise its error at the deadline."""
    delay = first_delay
    while True:
        try:
            action()
            return
        except BrickError as exc:
            if until():
                return
            if deadline.remaining() <= 0:
                raise
            LOG.debug("%s failed (%s); retrying in %.2fs", what, exc, delay)
            time.sleep(min(delay, deadline.remaining()))
            delay = min(delay * 2, max_delay)


__all__ = [
    "CLAIMS",
    "DeviceClaims",
    "DeviceInfo",
    "ScsiActions",
    "ScsiVolumeOps",
    "in_use_error",
    "remove_map",
    "retry",
    "scsi_watch_factory",
    "udev_wwid",
    "wwn_link_name",
]
