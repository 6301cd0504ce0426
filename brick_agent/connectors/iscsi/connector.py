"""iSCSI connector: log in, scan exactly one LUN, verify identity, build the map; and back.

Attach (:meth:`ISCSIConnector.connect_volume`):

1. Validate the properties (nothing runs before that).
2. Per path (one target, or every portal with multipath, in parallel), under
   the target's lock (portal+IQN): reuse a session or log in once (manual
   scan when supported; concurrent logins to one portal+IQN are merged),
   re-validate a LUN that is already there (LUN reuse), else write
   ``"c t l"`` to the session host's scan file.
3. Wait for every device with a udev watch opened before the scan, all paths
   under one deadline budget (``device_wait_timeout``).
4. Check every path reports the same WWID (fail closed otherwise); with
   multipath, wait for the dm map ``mpath-<wwid>`` holding the paths.
   (Steps after the scan are the SCSI-level ones of
   :class:`~brick_agent.connectors.scsi.volume.ScsiVolumeOps`, shared with FC.)
5. On any failure undo what this call created: devices it scanned that no
   other attach holds (:data:`~brick_agent.connectors.scsi.volume.CLAIMS`),
   sessions it logged in that carry no other LUN.  The undo fits in the same
   ``device_wait_timeout``: the attach steps end :func:`undo_reserve` seconds
   before it, so a failed attach raises within the configured deadline.

Sessions (lookup, login, discovery, logout) live in
:mod:`brick_agent.connectors.iscsi.sessions`.

Detach finds the volume's devices by session+LUN *and* WWID, flushes the
device that was used, removes the map, deletes each SCSI device, waits for
them to go, and logs out of sessions left without LUNs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from brick_agent import ledger, locking, metrics
from brick_agent.connectors import presence
from brick_agent.connectors.base import Connector, DeviceInfo
from brick_agent.connectors.iscsi.actions import IscsiActions
from brick_agent.connectors.iscsi.sessions import AttachRecord, IscsiSessions
from brick_agent.connectors.presence import VolumePresence
from brick_agent.connectors.scsi.volume import CLAIMS, ScsiVolumeOps, scsi_watch_factory
from brick_agent.errors import (
    AuthenticationFailed,
    BrickError,
    DeviceNotFound,
    LeftoversRemain,
    NotSupported,
    TargetUnreachable,
    VolumeIdentityMismatch,
)
from brick_agent.deadline import Clock, Deadline
from brick_agent.host import sysfs
from brick_agent.host.block import block_device_for_path
from brick_agent.host.iscsi import (
    IscsiSession,
    iscsi_sessions,
    session_has_luns,
    session_lun,
    session_luns,
    session_targets,
)
from brick_agent.host.multipath import MultipathMap, map_for_wwid
from brick_agent.host.scsi import Hctl, ScsiDevice, disks_by_hctl, scsi_device_by_name
from brick_agent.properties.iscsi import IscsiProperties, IscsiTarget, parse_iscsi

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

SEARCH_DIR = ("disk", "by-path")

#: share of an attach's deadline kept for undoing a failure (logout, deletes), and its bounds
#: (never more than half the deadline)
UNDO_RESERVE_SHARE = 0.1
UNDO_RESERVE_MIN = 1.5
UNDO_RESERVE_MAX = 5.0


def undo_reserve(budget: float) -> float:
    """Seconds of a ``budget``-second attach deadline kept for its undo (10 %, at least
    1.5 s, at most 5 s, never more than half the budget).

    Measured in the lab (6.1, TCG): the undo of a missing LUN (a logout and the
    node record's deletion) takes ~0.3 s alone, over 0.4 s under load (a CI run
    with a 0.4 s reserve left its session); 16 concurrent logouts ~2 s.
    """
    budget = max(0.0, budget)
    return min(UNDO_RESERVE_MAX, budget / 2, max(UNDO_RESERVE_MIN, budget * UNDO_RESERVE_SHARE))


@dataclasses.dataclass(frozen=True)
class _Path:
    target: IscsiTarget
    session: IscsiSession
    device: ScsiDevice
    wwid: str


# ----------------------------------------------------------------------------- connector
class ISCSIConnector(Connector):
    """Attach/detach iSCSI volumes (os-brick compatible ``ISCSIConnector``)."""

    protocol = "ISCSI"
    #: seconds to let multipathd build a map from uevents before asking it explicitly
    multipath_grace = 0.5

    def __init__(
        self,
        root_helper: str | None = None,
        driver: Any = None,
        *,
        transport: str | None = "default",
        actions: IscsiActions | None = None,
        watch_factory: Callable[[], Any] | None = None,
        clock: Clock = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(root_helper, driver, **kwargs)
        self.clock = clock
        self.transport = transport or "default"
        self.iface = "default" if self.transport in ("default", "tcp") else self.transport
        self._actions = actions
        self._watch_factory = watch_factory or scsi_watch_factory(self.roots)
        self._ops: ScsiVolumeOps | None = None
        self._sessions: IscsiSessions | None = None
        self._limit: locking.HostConcurrencyLimit | None = None

    # ---------------------------------------------------------------- plumbing
    @property
    def actions(self) -> IscsiActions:
        if self._actions is None:
            from brick_agent.connectors.iscsi.actions import PrivilegedIscsiActions

            self._actions = PrivilegedIscsiActions(self.conf)
        return self._actions

    @property
    def ops(self) -> ScsiVolumeOps:
        """The SCSI-level steps; iSCSI keeps os-brick's kernel-name paths (/dev/sdX, /dev/dm-N)
        and does not wait for udev: the returned path is the kernel's node.  Measured in the
        lab (6.1, TCG): waiting for udev's entry makes a single-path attach 0.58 s instead of
        0.24 s; without it the by-path link may not exist yet when connect_volume returns
        (get_volume_paths then falls back to /dev/sdX)."""
        if self._ops is None:
            self._ops = ScsiVolumeOps(
                self.roots,
                self.actions,
                self._watch_factory,
                multipath_wait_timeout=self.opts.multipath_wait_timeout,
                device_removal_timeout=self.opts.device_removal_timeout,
                map_removal_timeout=self.opts.flush_timeout,
                multipath_grace=self.multipath_grace,
                wait_for_udev=False,
                protocol=self.protocol,
                stable_paths=False,
            )
        return self._ops

    @property
    def sessions(self) -> IscsiSessions:
        if self._sessions is None:
            self._sessions = IscsiSessions(
                self.roots, self.actions, self.opts, self.iface, self._watch_factory
            )
        return self._sessions

    def _parse(self, props: Mapping[str, Any]) -> IscsiProperties:
        return parse_iscsi(props, use_multipath=self.use_multipath)

    def _host_slot(self):
        if self._limit is None:
            self._limit = locking.HostConcurrencyLimit(
                self.opts.max_concurrent_operations, self.opts.lock_path
            )
        return self._limit.slot(timeout=self.sessions.lock_timeout())

    # ---------------------------------------------------------------- attach
    def _ledger_revalidate(self, device_info: Mapping[str, Any]) -> bool:
        """A recorded device about to be shared: its LUNs rescanned, still the volume?"""
        return self.ops.still_the_volume(str(device_info.get("path") or ""))

    @metrics.timed("attach")
    @ledger.records_attach
    def connect_volume(self, connection_properties: Mapping[str, Any]) -> DeviceInfo:
        props = self._parse(connection_properties)
        self.actions.start_daemon()  # its first start is not this call's deadline
        deadline = Deadline.after(self.opts.device_wait_timeout, self.clock)
        work = deadline.reserving(undo_reserve(deadline.budget))  # the rest is the undo's
        record = AttachRecord()
        start = time.monotonic()
        with self._host_slot():
            try:
                if props.use_multipath:
                    info = self._connect_multipath(props, work, record)
                else:
                    info = self._connect_single(props, work, record)
            except BaseException as exc:
                LOG.warning(
                    "iSCSI attach of %s failed (%s: %s); undoing what it created",
                    self._describe(props),
                    type(exc).__name__,
                    exc,
                )
                self._undo(record, deadline)
                raise
        LOG.info(
            "iSCSI attach of %s -> %s in %.3fs",
            self._describe(props),
            info["path"],
            time.monotonic() - start,
        )
        return info

    @staticmethod
    def _describe(props: IscsiProperties) -> str:
        t = props.primary
        return f"{t.iqn} lun {t.lun} via {t.portal.address}"

    def _connect_single(
        self, props: IscsiProperties, deadline: Deadline, record: AttachRecord
    ) -> DeviceInfo:
        ordered = [props.primary] + [t for t in props.targets if t != props.primary]
        errors: list[BaseException] = []
        for target in ordered:
            try:
                path = self._attach_path(props, target, deadline, record)
            except (AuthenticationFailed, VolumeIdentityMismatch):
                raise
            except BrickError as exc:
                errors.append(exc)
                if deadline.expired:
                    break
                continue
            return self.ops.device_info(
                [path.device],
                path.wwid,
                use_multipath=False,
                enforce_multipath=False,
                deadline=deadline,
            )
        raise _best_error(errors)

    def _connect_multipath(
        self, props: IscsiProperties, deadline: Deadline, record: AttachRecord
    ) -> DeviceInfo:
        targets = self.sessions.discover_targets(props, deadline)
        self.sessions.prepare(props, targets, deadline, record)
        paths: list[_Path] = []
        errors: list[BaseException] = []
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=len(targets), thread_name_prefix="iscsi-path"
        ) as pool:
            futures = [pool.submit(self._attach_path, props, t, deadline, record) for t in targets]
            for fut in futures:
                try:
                    paths.append(fut.result())
                except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
                    errors.append(exc)
        for err in errors:
            if isinstance(err, VolumeIdentityMismatch):
                raise err
        if not paths:
            raise _best_error(errors)
        if errors:
            LOG.warning(
                "iSCSI multipath attach continues with %d of %d paths (%s)",
                len(paths),
                len(targets),
                "; ".join(str(e) for e in errors),
            )
        devices = [p.device for p in paths]
        return self.ops.device_info(
            devices,
            self.ops.common_wwid(devices),
            use_multipath=True,
            enforce_multipath=bool(props.enforce_multipath or self.opts.enforce_multipath),
            deadline=deadline,
        )

    # one path ---------------------------------------------------------------
    def _attach_path(
        self, props: IscsiProperties, target: IscsiTarget, deadline: Deadline, record: AttachRecord
    ) -> _Path:
        lun = props.scsi_lun(target.lun)
        with self._watch_factory() as watch:
            with self.sessions.target_lock(target, shared=True):
                session = self.sessions.ensure(props, target, deadline, record)
                existing = session_lun(self.roots, session, lun)
                if existing is not None:
                    existing = self.ops.revalidate(existing)
                if existing is None:
                    self._scan(session, lun, target, record)
                else:  # held from now on: another attach's undo must not delete it
                    CLAIMS.hold(self.roots, record.owner, existing.hctl, existing)
            try:
                with metrics.phase(self.protocol, "wait"):
                    device = watch.wait_for(
                        lambda: self.ops.disk_ready(session_lun(self.roots, session, lun)),
                        deadline,
                        what=f"LUN {target.lun} of {target.iqn} via {target.portal.address}",
                    )
            except DeviceNotFound as exc:
                raise DeviceNotFound(
                    f"LUN {target.lun} of {target.iqn} did not appear via "
                    f"{target.portal.address} within {deadline.budget:.1f}s"
                ) from exc
        CLAIMS.hold(self.roots, record.owner, device.hctl, device)
        with metrics.phase(self.protocol, "verify"):
            wwid = self.ops.require_wwid(device)
        return _Path(target, session, device, wwid)

    @metrics.step("scan")
    def _scan(
        self, session: IscsiSession, lun: int, target: IscsiTarget, record: AttachRecord
    ) -> None:
        """``c t l`` scan of ``lun``; the address is recorded (and claimed) before the scan."""
        targets = session_targets(session)
        channel: int | None
        target_id: int | None
        if targets:
            channel, target_id = targets[0][1], targets[0][2]
        else:
            tid = sysfs.read_int(os.path.join(session.sysfs_path, "target_id"))
            channel, target_id = (0, tid) if tid is not None else (None, None)
        if session.host_number is None:
            raise DeviceNotFound(f"session{session.sid} has no SCSI host")
        if channel is not None and target_id is not None:
            self._note_scan(Hctl(session.host_number, channel, target_id, lun), target, record)
        self.actions.scan_lun(session.host_number, channel, target_id, lun)
        if channel is None:
            dev = session_lun(self.roots, session, lun)
            if dev is not None:
                self._note_scan(dev.hctl, target, record)

    def _note_scan(self, hctl: Hctl, target: IscsiTarget, record: AttachRecord) -> None:
        with record.lock:
            record.scanned.append(hctl)
            record.via[hctl] = target
        CLAIMS.hold(self.roots, record.owner, hctl)

    def _undo(self, record: AttachRecord, deadline: Deadline | None = None) -> None:
        """Delete devices this attach scanned that no one else holds; log out sessions it
        created that are empty.  Everything ends by ``deadline`` (the attach's own)."""

        def lock_for(dev: ScsiDevice):
            target = record.via.get(dev.hctl)
            if target is None:
                return contextlib.nullcontext()
            return self.sessions.target_lock(
                target, None if deadline is None else deadline.remaining()
            )

        def keep(dev: ScsiDevice) -> bool:
            return CLAIMS.held_by_others(self.roots, record.owner, dev) or self._ledger_holds(dev)

        def session_in_use(session: IscsiSession) -> bool:
            return session.host_number is not None and CLAIMS.others_on_host(
                self.roots, record.owner, session.host_number
            )

        try:
            left = self.ops.delete_created(
                record.scanned, keep=keep, lock_for=lock_for, deadline=deadline
            )
            left += self.sessions.undo_logins(record, deadline, in_use=session_in_use)
        finally:
            CLAIMS.release(self.roots, record.owner)
        if left:
            LOG.warning("iSCSI attach undo left behind: %s", ", ".join(left))

    def _ledger_holds(self, dev: ScsiDevice) -> bool:
        """True when an attachment in the ledger (any process) uses ``dev`` or a map over it."""
        if self.ledger is None or not dev.name:
            return False
        try:
            entries = self.ledger.entries()
        except (BrickError, OSError) as exc:
            LOG.warning("undo: cannot read the ledger (%s): keeping %s", exc, dev.name)
            return True
        for entry in entries.values():
            if not entry.get("attachments"):
                continue
            used = block_device_for_path(
                self.roots, str((entry.get("device_info") or {}).get("path") or "")
            )
            if used is not None and (used.name == dev.name or dev.name in used.slaves):
                return True
        return False

    # ---------------------------------------------------------------- detach
    def _volume_devices(
        self,
        props: IscsiProperties,
        mpath: MultipathMap | None = None,
        per_target: list[list[IscsiSession]] | None = None,
    ) -> tuple[list[tuple[IscsiSession, ScsiDevice]], list[IscsiSession]]:
        """(session, LUN) pairs at this volume's targets (plus ``mpath``'s iSCSI paths),
        and every session looked at; ``per_target``: each target's sessions, when the
        caller looked them up already."""
        seen: dict[tuple[int, Hctl], tuple[IscsiSession, ScsiDevice]] = {}
        looked: dict[int, IscsiSession] = {}
        iqns = {t.iqn for t in props.targets}
        want: list[tuple[IscsiSession, int]] = []
        if per_target is None:
            per_target = [self.sessions.find(t) for t in props.targets]
        for t, sessions in zip(props.targets, per_target, strict=True):
            for s in sessions:
                want.append((s, props.scsi_lun(t.lun)))
        if props.use_multipath:
            lun = props.scsi_lun()
            for s in iscsi_sessions(self.roots):
                if s.target_iqn in iqns:
                    want.append((s, lun))
        for s, lun in want:
            looked[s.sid] = s
            dev = session_lun(self.roots, s, lun)
            if dev is not None:
                seen[(s.sid, dev.hctl)] = (s, dev)
        if mpath is not None:  # every iSCSI path of the map (discovered portals included)
            by_host = {s.host_number: s for s in iscsi_sessions(self.roots)}
            for slave in mpath.slaves:
                dev = scsi_device_by_name(self.roots, slave)
                if dev is not None and dev.hctl.host in by_host:
                    s = by_host[dev.hctl.host]
                    looked[s.sid] = s
                    seen.setdefault((s.sid, dev.hctl), (s, dev))
        return list(seen.values()), list(looked.values())

    @metrics.timed("detach")
    @ledger.records_detach
    def disconnect_volume(
        self,
        connection_properties: Mapping[str, Any],
        device_info: Mapping[str, Any] | None,
        force: bool = False,
        ignore_errors: bool = False,
    ) -> None:
        props = self._parse(connection_properties)
        self.actions.start_daemon()  # its first start is not this call's deadline
        info = dict(device_info or {})
        start = time.monotonic()
        with self._host_slot():
            leftovers = self._disconnect(props, info, force)
        if leftovers:
            LOG.warning(
                "iSCSI detach of %s left behind: %s", self._describe(props), ", ".join(leftovers)
            )
            if not ignore_errors:
                raise LeftoversRemain("iSCSI detach incomplete", leftovers)
        else:
            LOG.info(
                "iSCSI detach of %s done in %.3fs", self._describe(props), time.monotonic() - start
            )

    def _disconnect(self, props: IscsiProperties, info: dict[str, Any], force: bool) -> list[str]:
        found, looked = self._volume_devices(props)
        wwid = self.ops.expected_wwid(info, [d for _, d in found])
        mpath = map_for_wwid(self.roots, wwid) if wwid else None
        if mpath is not None:
            found, looked = self._volume_devices(props, mpath)
        session_of = {d.hctl: s for s, d in found}
        ours, leftovers = self.ops.confirmed([d for _, d in found], wwid, force)
        ours_sids = {session_of[d.hctl].sid for d in ours}
        by_sid: dict[int, IscsiSession] = {s.sid: s for s in looked}
        candidates = [s for _, s in sorted(by_sid.items()) if self._touches(props, s, ours_sids)]

        def log_out() -> list[str]:
            """Log out of this volume's sessions left without LUNs."""
            left = []
            for s, exc in zip(
                candidates, _each(self.sessions.logout_if_empty, candidates), strict=True
            ):
                if exc is None:
                    continue
                if not force:
                    raise exc
                left.append(f"session{s.sid} (logout failed: {exc})")
            return left

        # flush, map, the LUNs (under their target's lock), then the logouts while udev
        # removes the LUNs' links
        leftovers += self.ops.remove_volume(
            ours,
            wwid,
            info,
            force,
            lock_for=lambda d: self.sessions.session_lock(session_of[d.hctl], shared=True),
            then=log_out,
        )
        return leftovers

    @staticmethod
    def _touches(props: IscsiProperties, session: IscsiSession, ours_sids: set[int]) -> bool:
        """Log out only of sessions of this volume: ones we deleted from, or its targets."""
        if session.sid in ours_sids:
            return True
        return any(t.iqn == session.target_iqn for t in props.targets)

    # ---------------------------------------------------------------- queries
    def get_volume_paths(self, connection_properties: Mapping[str, Any]) -> list[str]:
        props = self._parse(connection_properties)
        found, _ = self._volume_devices(props)
        out = []
        for s, d in found:
            if not d.name:
                continue
            link = self.roots.devfs(*SEARCH_DIR, _by_path_name(s, d))
            out.append(link if os.path.lexists(link) else self.roots.devfs(d.name))
        return out

    def volume_presence(self, connection_properties: Mapping[str, Any]) -> VolumePresence:
        """The volume's LUNs on every session of its targets, the maps and links over them,
        dangling by-path links of its address, its target's sessions left without LUNs;
        ``missing``: the target portals without the LUN (all of them with multipath, else
        only when no portal has it)."""
        props = self._parse(connection_properties)
        per_target = [self.sessions.find(t) for t in props.targets]
        found, looked = self._volume_devices(props, per_target=per_target)
        result = VolumePresence()
        for s, d in found:
            result.objects.append(
                presence.VolumeObject(
                    presence.DEVICE,
                    d.name or str(d.hctl),
                    f"LUN {d.hctl.lun} of {s.name} ({s.portal} {s.target_iqn}), "
                    f"WWID {d.wwid or 'unknown'}",
                )
            )
        result.add_stacked(self.roots, [d.name for _, d in found if d.name])
        for s in looked:
            if not session_has_luns(self.roots, s):
                result.objects.append(
                    presence.VolumeObject(
                        presence.SESSION, s.name, f"{s.portal} {s.target_iqn}: no LUN at all"
                    )
                )
        result.objects += presence.dangling_links(
            self.roots, {f"-iscsi-{t.iqn}-lun-{t.lun}" for t in props.targets}, ("by-path",)
        )
        result.missing = self._missing_paths(props, per_target, found)
        return result

    @staticmethod
    def _missing_paths(
        props: IscsiProperties,
        per_target: list[list[IscsiSession]],
        found: list[tuple[IscsiSession, ScsiDevice]],
    ) -> list[str]:
        """Target addresses without the volume's LUN on this host (``per_target``: each
        target's sessions; ``found``: the volume's LUNs on them)."""
        have = {(s.sid, d.hctl.lun) for s, d in found}
        missing = []
        for t, sessions in zip(props.targets, per_target, strict=True):
            lun = props.scsi_lun(t.lun)
            if not any((s.sid, lun) in have for s in sessions):
                missing.append(f"{t.portal.address} {t.iqn} LUN {t.lun}")
        if props.use_multipath and props.plural_targets:
            return missing
        return missing if len(missing) == len(props.targets) else []

    def get_all_available_volumes(
        self, connection_properties: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        iqns = None
        if connection_properties is not None:
            iqns = {t.iqn for t in self._parse(connection_properties).targets}
        out = []
        maps = self.ops.slave_maps()
        # every disk's name in one pass when listing them all
        disks = disks_by_hctl(self.roots) if iqns is None else None
        for s in iscsi_sessions(self.roots):
            if iqns is not None and s.target_iqn not in iqns:
                continue
            for d in session_luns(self.roots, s, disks):
                out.append(
                    {
                        "portal": s.portal,
                        "iqn": s.target_iqn,
                        "lun": d.hctl.lun,
                        "hctl": str(d.hctl),
                        "session": s.sid,
                        **self.ops.listing_fields(d, maps),
                    }
                )
        return out

    def get_initiator(self) -> str | None:
        """This host's iSCSI initiator name (os-brick's ``get_initiator``; Datera uses it)."""
        from brick_agent.connector_properties import iscsi_initiator

        return iscsi_initiator(self.roots)

    def get_search_path(self) -> str:
        return self.roots.devfs(*SEARCH_DIR)

    def supports_multipath(self) -> bool:
        return self.actions.multipathd_running()

    def extend_volume(self, connection_properties: Mapping[str, Any]) -> int:
        props = self._parse(connection_properties)
        self.actions.start_daemon()  # its first start is not this call's deadline
        found, _ = self._volume_devices(props)
        size = self.ops.extend([d for _, d in found], self._describe(props))
        LOG.info("iSCSI extend of %s: %d bytes", self._describe(props), size)
        return size


# ----------------------------------------------------------------------------- module helpers
def _by_path_name(session: IscsiSession, dev: ScsiDevice) -> str:
    lun = dev.hctl.lun
    lun_text = str(lun) if lun < 256 else f"0x{lun & 0xFFFF:04x}{(lun >> 16) & 0xFFFF:04x}00000000"
    return f"ip-{session.portal}-iscsi-{session.target_iqn}-lun-{lun_text}"


def _each(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``fn`` over ``items``, in parallel threads when there are several (independent
    iscsiadm calls: logouts of different sessions)."""
    if len(items) < 2:
        return [fn(x) for x in items]
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=len(items), thread_name_prefix="iscsi-logout"
    ) as pool:
        return list(pool.map(fn, items))


def _best_error(errors: list[BaseException]) -> BaseException:
    """The most telling error of several failed paths
    (auth > identity > not found > unreachable)."""
    for kind in (
        AuthenticationFailed,
        VolumeIdentityMismatch,
        DeviceNotFound,
        TargetUnreachable,
        NotSupported,
    ):
        for exc in errors:
            if isinstance(exc, kind):
                return exc
    if errors:
        return errors[0]
    return DeviceNotFound("no path to the volume")


__all__ = ["ISCSIConnector"]
