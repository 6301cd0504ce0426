"""Fibre Channel connector: scan exactly the volume's LUN on the right rports, verify, map;
and back.

Attach (:meth:`FibreChannelConnector.connect_volume`):

1. Validate the properties (nothing runs before that).
2. Usable HBAs: online ``fc_host`` ports the ``initiator_target_map`` allows.
   For each (HBA, target WWPN) find the SCSI channel/target id from
   ``fc_remote_ports`` (``scsi_target_id``) and ``fc_transport``.
3. Under the lock of the target WWPN set, with a udev watch already open:
   re-validate LUNs that are already there (LUN reuse), else write
   ``"c t l"`` to the HBA's scan file.  A wildcard ``"- - l"`` scan is sent
   only when no target of the volume is known on any usable HBA and ``enable_wildcard_scan``
   is true; devices it pulls in for other targets are deleted again.  Never a LIP.
4. Wait (one deadline, ``device_wait_timeout``) until every device present at
   the volume's addresses is a ready disk; rports that log in during the wait
   are scanned when they appear.
5. All paths must share one WWID; with multipath, wait for ``mpath-<wwid>``.
6. Any failure undoes what this call created (devices it scanned).

Return: ``{'type': 'block', 'path', 'scsi_wwn'}`` (+ ``'multipath_id'``);
the path is ``/dev/disk/by-id/wwn-0x...`` when udev made it, else ``/dev/sdX``,
or the map (``/dev/disk/by-id/dm-uuid-mpath-...``).  ``/dev/disk/by-path`` is
never required: virtual HBAs have no PCI parent and get no such link.

Detach flushes what was used, removes the map, deletes exactly the volume's
SCSI devices (WWID confirmed) and waits for the kernel to drop them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from brick_agent import ledger, locking, metrics
from brick_agent.connectors.fc import view as fc_view
from brick_agent.connectors.base import Connector, DeviceInfo
from brick_agent.connectors.scsi.actions import ScsiActions
from brick_agent.connectors.scsi.volume import ScsiVolumeOps, scsi_watch_factory
from brick_agent.deadline import Deadline
from brick_agent.errors import DeviceNotFound, LeftoversRemain, TargetUnreachable
from brick_agent.host.block import links_for
from brick_agent.host.fc import fc_hosts
from brick_agent.host.snapshot import host_snapshot
from brick_agent.host.scsi import Hctl, ScsiDevice, same_wwid, scsi_device, scsi_device_by_name
from brick_agent.properties.fc import FcProperties, parse_fc

LOG = logging.getLogger(__name__)

SEARCH_DIR = ("disk", "by-path")
UNKNOWN_RECHECK = 0.5  # seconds between looks for targets not yet logged in during a wait


@dataclasses.dataclass
class _AttachRecord:
    """What one connect call did, so a failure can undo exactly that."""

    created: list[Hctl] = dataclasses.field(default_factory=list)  # devices our scans made
    byproducts: list[Hctl] = dataclasses.field(default_factory=list)  # wildcard catch of others
    scanned: set[Hctl] = dataclasses.field(default_factory=set)
    wildcards: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    addresses: list[fc_view.FcAddress] = dataclasses.field(default_factory=list)
    unknown: list[tuple[Any, Any]] = dataclasses.field(default_factory=list)  # (FcHost, FcTarget)
    unknown_checked: float = 0.0  # monotonic time of the last look for them


class FibreChannelConnector(Connector):
    """Attach/detach Fibre Channel volumes (os-brick compatible ``FibreChannelConnector``)."""

    protocol = "FIBRE_CHANNEL"
    multipath_grace = 1.0  # seconds multipathd gets to map new paths by itself

    def __init__(
        self,
        root_helper: str | None = None,
        driver: Any = None,
        *,
        actions: ScsiActions | None = None,
        watch_factory: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root_helper, driver, **kwargs)
        self._actions = actions
        self._watch_factory = watch_factory or scsi_watch_factory(self.roots)
        self._ops: ScsiVolumeOps | None = None
        self._limit: locking.HostConcurrencyLimit | None = None

    # ---------------------------------------------------------------- plumbing
    @property
    def actions(self) -> ScsiActions:
        if self._actions is None:
            from brick_agent.connectors.scsi.actions import PrivilegedScsiActions

            self._actions = PrivilegedScsiActions(self.conf, self.roots)
        return self._actions

    @property
    def ops(self) -> ScsiVolumeOps:
        if self._ops is None:
            self._ops = ScsiVolumeOps(
                self.roots,
                self.actions,
                self._watch_factory,
                multipath_wait_timeout=self.opts.multipath_wait_timeout,
                device_removal_timeout=self.opts.device_removal_timeout,
                multipath_grace=self.multipath_grace,
                protocol=self.protocol,
            )
        return self._ops

    def _lock_timeout(self) -> float:
        return self.opts.device_wait_timeout + self.opts.command_timeout

    def _target_lock(self, props: FcProperties):
        return locking.target_lock(
            "fc",
            locking.fc_target_key(props.target_wwpns),
            lock_path=self.opts.lock_path,
            timeout=self._lock_timeout(),
        )

    def _scan_lock(self, host: int):
        """Serialises wildcard scans of one HBA so the before/after diff is ours."""
        return locking.target_lock(
            "fc_scan", f"host{host}", lock_path=self.opts.lock_path, timeout=self._lock_timeout()
        )

    def _host_slot(self):
        if self._limit is None:
            self._limit = locking.HostConcurrencyLimit(
                self.opts.max_concurrent_operations, self.opts.lock_path
            )
        return self._limit.slot(timeout=self._lock_timeout())

    @staticmethod
    def _describe(props: FcProperties) -> str:
        return ", ".join(f"{t.wwpn} lun {t.lun}" for t in props.targets)

    # ---------------------------------------------------------------- attach
    def _ledger_revalidate(self, device_info: Mapping[str, Any]) -> bool:
        """A recorded device about to be shared: its LUNs rescanned, still the volume?"""
        return self.ops.still_the_volume(str(device_info.get("path") or ""))

    @metrics.timed("attach")
    @ledger.records_attach
    def connect_volume(self, connection_properties: Mapping[str, Any]) -> DeviceInfo:
        props = parse_fc(connection_properties)
        self.actions.start_daemon()  # its first start is not this call's deadline
        deadline = Deadline.after(self.opts.device_wait_timeout)
        record = _AttachRecord()
        start = time.monotonic()
        with self._host_slot():
            try:
                info = self._connect(props, deadline, record)
            except BaseException as exc:
                LOG.warning(
                    "FC attach of %s failed (%s: %s); undoing what it created; "
                    "scanned %s, wildcards %s; host saw: %s",
                    self._describe(props),
                    type(exc).__name__,
                    exc,
                    sorted(map(str, record.scanned)),
                    record.wildcards,
                    self._snapshot(),
                )
                with self._target_lock(props):
                    left = self.ops.delete_created(record.created + record.byproducts)
                if left:
                    LOG.warning("FC attach undo left behind: %s", ", ".join(left))
                raise
            if record.byproducts:
                left = self.ops.delete_created(record.byproducts)
                if left:
                    LOG.warning("wildcard scan by-products left behind: %s", ", ".join(left))
        LOG.info(
            "FC attach of %s -> %s in %.3fs",
            self._describe(props),
            info["path"],
            time.monotonic() - start,
        )
        return info

    def _connect(
        self, props: FcProperties, deadline: Deadline, record: _AttachRecord
    ) -> DeviceInfo:
        plan = fc_view.plan(self.roots, props)
        if not plan.hbas:
            raise TargetUnreachable(
                "no online FC HBA"
                + (
                    " allowed by initiator_target_map"
                    if props.initiator_target_map is not None
                    else ""
                )
            )
        hbas = list(plan.hbas)
        record.addresses = list(plan.addresses)
        record.unknown = list(plan.unknown)
        record.unknown_checked = time.monotonic()
        with self._watch_factory() as watch:
            with self._target_lock(props):
                self._scan_known(list(plan.addresses), record)
                for host, lun in plan.wildcards(props):
                    self._scan_wildcard(props, host, lun, record)

            def found() -> list[ScsiDevice] | None:
                return self._paths(props, record, require_all=True)

            what = f"{self._describe(props)} on {', '.join(f'host{h.host_number}' for h in hbas)}"
            try:
                with metrics.phase(self.protocol, "wait"):
                    devices = watch.wait_for(found, deadline, what=what)
            except DeviceNotFound as exc:
                devices = self._paths(props, record, require_all=False)
                if not devices:
                    if not plan.addresses and not self._known(props, hbas):
                        raise TargetUnreachable(
                            f"target port(s) {', '.join(props.target_wwpns)} not seen by any "
                            f"usable HBA within {deadline.budget:.1f}s"
                        ) from exc
                    raise DeviceNotFound(
                        f"{self._describe(props)} did not appear within {deadline.budget:.1f}s"
                    ) from exc
                LOG.warning(
                    "FC attach continues with %d ready path(s): %s",
                    len(devices),
                    ", ".join(f"{d.name} ({d.hctl})" for d in devices),
                )
        with metrics.phase(self.protocol, "verify"):
            wwid = self.ops.common_wwid(devices)
        return self.ops.device_info(
            devices,
            wwid,
            use_multipath=self.use_multipath,
            enforce_multipath=bool(props.enforce_multipath or self.opts.enforce_multipath),
            deadline=deadline,
        )

    def _known(self, props: FcProperties, hbas: list) -> bool:
        addrs, _ = fc_view.addresses_for(self.roots, props, hbas)
        return bool(addrs)

    @metrics.step("scan")
    def _scan_known(self, addresses: list[fc_view.FcAddress], record: _AttachRecord) -> None:
        """``c t l`` scan of each address not yet scanned (existing LUNs re-validated)."""
        for a in addresses:
            hctl = a.hctl
            if hctl in record.scanned:
                continue
            record.scanned.add(hctl)
            existing = scsi_device(self.roots, hctl)
            if existing is not None:
                if self.ops.revalidate(existing) is not None:
                    continue
            record.created.append(hctl)  # undo skips it if the scan made nothing
            self.actions.scan_lun(a.host, a.channel, a.target_id, a.lun)

    @metrics.step("scan")
    def _scan_wildcard(
        self, props: FcProperties, host: int, lun: int, record: _AttachRecord
    ) -> None:
        wanted = set(props.target_wwpns)
        with self._scan_lock(host):
            before = fc_view.host_luns(self.roots, host, lun)
            LOG.info("FC: target not known on any HBA; wildcard scan '- - %d' on host%d", lun, host)
            self.actions.scan_lun(host, None, None, lun)
            record.wildcards.append((host, lun))
            for hctl in sorted(fc_view.host_luns(self.roots, host, lun) - before):
                dev = scsi_device(self.roots, hctl)
                if dev is None:
                    continue
                if fc_view.target_wwpn_of(self.roots, dev) in wanted:
                    record.created.append(hctl)
                    record.scanned.add(hctl)
                else:
                    record.byproducts.append(hctl)

    def _paths(
        self, props: FcProperties, record: _AttachRecord, require_all: bool
    ) -> list[ScsiDevice] | None:
        """Ready devices at the volume's addresses; scans targets that logged in meanwhile.

        Only (HBA, target) pairs unknown so far are looked up again, so a
        re-check costs a few sysfs reads.  ``require_all``: None until every
        present device is ready.
        """
        now = time.monotonic()
        if record.unknown and now - record.unknown_checked >= UNKNOWN_RECHECK:
            record.unknown_checked = now
            still: list[tuple[Any, Any]] = []
            fresh: list[fc_view.FcAddress] = []
            for hba, target in record.unknown:
                pairs = fc_view.target_ids(self.roots, hba.host_number, target.wwpn)
                if not pairs:
                    still.append((hba, target))
                for channel, tid in pairs:
                    fresh.append(
                        fc_view.FcAddress(
                            hba.host_number,
                            hba.port_name,
                            target.wwpn,
                            channel,
                            tid,
                            props.scsi_lun(target.lun),
                        )
                    )
            record.unknown = still
            fresh = [a for a in fresh if a not in record.addresses]
            if fresh:
                LOG.debug("FC: target(s) logged in: %s; scanning", [str(a.hctl) for a in fresh])
                record.addresses += fresh
                with self._target_lock(props):
                    self._scan_known(fresh, record)
        present = [d for _, d in fc_view.devices_at(self.roots, record.addresses)]
        ready = [d for d in (self.ops.disk_ready(d) for d in present) if d is not None]
        if require_all and (not present or len(ready) < len(present)):
            return None
        return ready

    def _snapshot(self) -> dict[str, Any]:
        """FC ports, SCSI LUNs and maps as the host shows them (for failure logs)."""
        try:
            return host_snapshot(self.roots, ("fc", "scsi", "multipath"))
        except Exception as exc:  # noqa: BLE001 - diagnostics must not mask the error
            return {"error": repr(exc)}

    # ---------------------------------------------------------------- detach
    def _volume_devices(self, props: FcProperties) -> tuple[list[ScsiDevice], set[int]]:
        """Devices at the volume's addresses on every fc_host (online or not), and those hosts."""
        hbas = [
            h
            for h in fc_hosts(self.roots)
            if h.port_name and props.targets_for_initiator(h.port_name)
        ]
        addrs, _ = fc_view.addresses_for(self.roots, props, hbas)
        found = [d for _, d in fc_view.devices_at(self.roots, addrs)]
        return found, {h.host_number for h in hbas}

    def _with_map_paths(
        self, found: list[ScsiDevice], fc_numbers: set[int], wwid: str | None
    ) -> list[ScsiDevice]:
        """``found`` plus the FC paths of the volume's map (paths of other targets included)."""
        out = {d.hctl: d for d in found}
        if wwid:
            m = self.ops.volume_map(wwid, found)
            for slave in m.slaves if m is not None else ():
                dev = scsi_device_by_name(self.roots, slave)
                if dev is not None and dev.hctl.host in fc_numbers:
                    out.setdefault(dev.hctl, dev)
        return [out[h] for h in sorted(out)]

    @metrics.timed("detach")
    @ledger.records_detach
    def disconnect_volume(
        self,
        connection_properties: Mapping[str, Any],
        device_info: Mapping[str, Any] | None,
        force: bool = False,
        ignore_errors: bool = False,
    ) -> None:
        props = parse_fc(connection_properties)
        self.actions.start_daemon()  # its first start is not this call's deadline
        info = dict(device_info or {})
        start = time.monotonic()
        with self._host_slot(), self._target_lock(props):
            found, fc_numbers = self._volume_devices(props)
            wwid = self.ops.expected_wwid(info, found)
            found = self._with_map_paths(found, fc_numbers, wwid)
            ours, leftovers = self.ops.confirmed(found, wwid, force)
            leftovers += self.ops.remove_volume(ours, wwid, info, force)
        if leftovers:
            LOG.warning(
                "FC detach of %s left behind: %s; host saw: %s",
                self._describe(props),
                ", ".join(leftovers),
                self._snapshot(),
            )
            if not ignore_errors:
                raise LeftoversRemain("FC detach incomplete", leftovers)
        else:
            LOG.info(
                "FC detach of %s done in %.3fs (%d device(s))",
                self._describe(props),
                time.monotonic() - start,
                len(ours),
            )

    # ---------------------------------------------------------------- queries
    def get_volume_paths(self, connection_properties: Mapping[str, Any]) -> list[str]:
        props = parse_fc(connection_properties)
        out = []
        for d in self._volume_devices(props)[0]:
            if not d.name:
                continue
            links = links_for(self.roots, d.name, ("by-path",))
            out.append(links[0] if links else self.roots.devfs(d.name))
        return out

    def get_all_available_volumes(
        self, connection_properties: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        wanted = None
        if connection_properties is not None:
            wanted = set(parse_fc(connection_properties).target_wwpns)
        out = []
        maps = self.ops.slave_maps()
        for hba, d, target_wwpn in fc_view.fc_scsi_devices(self.roots):
            if wanted is not None and target_wwpn not in wanted:
                continue
            out.append(
                {
                    "hba": f"host{hba.host_number}",
                    "hba_wwpn": hba.port_name,
                    "target_wwpn": target_wwpn,
                    "lun": d.hctl.lun,
                    "hctl": str(d.hctl),
                    **self.ops.listing_fields(d, maps),
                }
            )
        return out

    def get_search_path(self) -> str:
        return self.roots.devfs(*SEARCH_DIR)

    def supports_multipath(self) -> bool:
        return self.actions.multipathd_running()

    def extend_volume(self, connection_properties: Mapping[str, Any]) -> int:
        props = parse_fc(connection_properties)
        self.actions.start_daemon()  # its first start is not this call's deadline
        devices = self._volume_devices(props)[0]
        if not devices:
            raise DeviceNotFound(f"no device of {self._describe(props)} to extend")
        wwid = self.ops.common_wwid([d for d in devices if d.name])
        devices = [d for d in devices if d.wwid and same_wwid(d.wwid, wwid)]
        size = self.ops.extend(devices, self._describe(props))
        LOG.info("FC extend of %s: %d bytes", self._describe(props), size)
        return size


__all__ = ["FibreChannelConnector"]
