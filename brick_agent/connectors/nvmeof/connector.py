"""NVMe over Fabrics (TCP, RDMA, FC) connector.

Attach: per subsystem NQN (an external lock, not a host-wide one) reuse live
controllers to the target's portals (and rescan them: a backend may not send
an AEN), connect the missing portals (all of them with native multipath or
``use_multipath``, else until one works), then wait for the namespace by UUID,
then NGUID, then NSID on one deadline budget, verify its identity and return
``/dev/nvmeXnY``.  A stale namespace (same NSID, other UUID) is never returned:
controllers are rescanned (the kernel drops a namespace whose ids changed and
adds the new one on the next scan) and the attach fails with
:class:`VolumeIdentityMismatch` when the deadline passes.

Detach: flush, then delete each of the subsystem's controllers (ours, by host
NQN) that exposes no namespace other than this volume's.  The rule is the safe
one: any other namespace present on a controller keeps it, whether or not some
process holds it open -- sysfs cannot tell "attached to a guest" from "mapped
but unused", and deleting a controller under a namespace in use loses I/O.
The backend unmapping a namespace makes it disappear from the controller, so
the last detach of a shared subsystem removes the controller.

dm-multipath (``use_multipath`` with native NVMe multipath off): every portal is
connected, the per-controller devices must agree on the namespace's identity,
and the dm map multipathd builds over them is returned (``/dev/dm-N`` with
``multipath_id``); detach flushes and removes the map before the controllers
go (:mod:`brick_agent.connectors.nvmeof.multipath`).

Replicated volumes: each replica is attached as above; an md RAID1 named after
the alias (``/dev/md/<alias>``) is created or assembled over them (degraded
when a replica is unreachable).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar

from brick_agent import ledger, locking, metrics
from brick_agent.connectors import presence
from brick_agent.connectors.actions import volume_devices_users
from brick_agent.ledger import store as ledgermod
from brick_agent.connectors.base import Connector, DeviceInfo
from brick_agent.connectors.nvmeof.actions import (
    AlreadyConnected,
    ConnectRequest,
    NvmeActions,
    PrivilegedNvmeActions,
)
from brick_agent.connectors.nvmeof import identity
from brick_agent.connectors.nvmeof.multipath import NvmeMultipath, map_of
from brick_agent.connectors.presence import VolumePresence
from brick_agent.deadline import Deadline
from brick_agent.errors import (
    BrickError,
    DeviceNotFound,
    InvalidArgument,
    InvalidConnectionProperties,
    LeftoversRemain,
    NotOwned,
    NotSupported,
    TargetUnreachable,
    VolumeIdentityMismatch,
)
from brick_agent.host import nvme as hostnvme
from brick_agent.host.block import disk_links
from brick_agent.host.multipath import MultipathMap
from brick_agent.host.udev import DeviceWatch
from brick_agent.properties import NvmeofProperties, NvmePortal, NvmeTarget, parse_nvmeof

LOG = logging.getLogger(__name__)
T = TypeVar("T")

#: States in which a controller is on its way to live (do not connect again).
_PENDING_STATES = frozenset({"new", "connecting", "resetting"})
#: How long extend_volume waits for the kernel to report a new size.
_EXTEND_SETTLE = 3.0
#: Seconds a detach's flush or delete_controller gets even when its deadline is spent
#: (a healthy delete_controller takes ~0.1 s in the lab).
KERNEL_ACTION_MIN = 0.5


def _poll(
    predicate: Callable[[], T | None], deadline: Deadline, first: float = 0.005, cap: float = 0.1
) -> T | None:
    """Call ``predicate`` until it returns something or the deadline passes (short waits
    where no kernel event announces the change, e.g. a capacity update)."""
    delay = first
    while True:
        result = predicate()
        if result is not None or deadline.expired:
            return result
        time.sleep(min(delay, deadline.remaining()))
        delay = min(cap, delay * 2)


@dataclasses.dataclass
class _MapRequest:
    """dm-multipath wanted over non-native paths; ``result`` is the map once built."""

    enforce: bool
    result: MultipathMap | None = None


@dataclasses.dataclass
class _Topology:
    """One consistent read of the subsystem's controllers and namespaces."""

    controllers: list[hostnvme.NvmeController]
    namespaces: list[hostnvme.NvmeNamespace]


def _identity_of(target: NvmeTarget) -> str:
    for key in ("uuid", "nguid", "nsid"):
        value = getattr(target, key)
        if value is not None:
            return f"{key}={value}"
    return "no identity"


def matches(ns: hostnvme.NvmeNamespace, target: NvmeTarget) -> bool:
    """Does ``ns`` carry the target's identity?  UUID first, then NGUID, then NSID.

    Every identifier the target gives and the namespace reports must agree; the
    strongest one the target has must be present on the namespace.
    """
    if target.uuid is not None and ns.uuid != target.uuid:
        return False
    if target.nguid is not None and ns.nguid is not None and ns.nguid != target.nguid:
        return False
    if target.uuid is None and target.nguid is not None and ns.nguid != target.nguid:
        return False
    if target.nsid is not None and ns.nsid is not None and ns.nsid != target.nsid:
        # a namespace whose uuid/nguid matches under another nsid is still ours
        # only when the target identified it by uuid/nguid
        return target.uuid is not None or target.nguid is not None
    if target.uuid is None and target.nguid is None and target.nsid is None:
        return False
    return True


def is_stale(ns: hostnvme.NvmeNamespace, target: NvmeTarget) -> bool:
    """An old namespace in the target's slot (same NSID, other identity), or one whose
    UUID and NGUID disagree with the target's about being the same volume."""
    if target.nsid is not None and ns.nsid == target.nsid:
        return not matches(ns, target)
    if target.uuid and target.nguid and ns.uuid and ns.nguid:
        return (ns.uuid == target.uuid) != (ns.nguid == target.nguid)
    return False


#: Seconds a detach waits for udev's workers to finish probing the other namespaces of a
#: controller it would delete (a detach right after an attach) before it keeps it.
UDEV_PROBE_GRACE = 3.0


class NVMeOFConnector(Connector):
    """Attach/detach NVMe-oF namespaces (os-brick ``NVMeOFConnector`` compatible)."""

    protocol = "NVMEOF"
    #: Seconds between rescans of the live controllers while a namespace is awaited
    #: (``device_scan_attempts`` of them at most, after the one that starts an attach).
    rescan_interval = 0.5
    #: Seconds multipathd gets to map non-native paths by itself before it is asked.
    multipath_grace = 1.0
    #: Seconds a map removal is retried while the map is briefly held (udev probing it).
    multipath_removal_timeout = 20.0
    #: Times an attach waits for another thread's exclusive section and looks again
    #: (shared) before it takes the exclusive subsystem lock itself.
    max_shared_looks = 3

    def __init__(
        self,
        root_helper: str | None = None,
        driver: Any = None,
        *,
        actions: NvmeActions | None = None,
        watch_factory: Callable[[], DeviceWatch] | None = None,
        fc_local_ports: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root_helper, driver, **kwargs)
        self._watch_factory = watch_factory
        #: NVMe/FC host addresses (``nn-0x..:pn-0x..``) to connect from; None: every
        #: online SCSI fc_host port (an HBA's FC port serves both protocols).
        self.fc_local_ports = list(fc_local_ports) if fc_local_ports is not None else None
        self.actions: NvmeActions = (
            actions if actions is not None else PrivilegedNvmeActions(self.roots)
        )
        self._identity: identity.HostIdentity | None = None
        self._identity_lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def supports_multipath(self) -> bool:
        return True

    def host_identity(self) -> identity.HostIdentity:
        """This host's NQN and host ID (created once if missing)."""
        if self._identity is None:
            with self._identity_lock:  # concurrent first attaches create it once
                if self._identity is None:
                    self._identity = identity.ensure_identity(
                        self.roots, self.actions.write_host_identity
                    )
        return self._identity

    def _hostnqn(self, target: NvmeTarget) -> str:
        return target.host_nqn or self.host_identity().hostnqn

    def _rw(self, target: NvmeTarget) -> locking.ReaderWriterLock:
        """The subsystem's lock: shared to return an already visible namespace, exclusive
        to create or delete controllers (so a detach deleting a controller never races
        an attach returning one of its namespaces)."""
        return locking.target_rw_lock("nvme", target.nqn, lock_path=self.opts.lock_path)

    @contextlib.contextmanager
    def _lock(self, target: NvmeTarget) -> Iterator[None]:
        """The subsystem lock, exclusive."""
        with self._rw(target).exclusive():
            yield

    def _topology(
        self,
        nqn: str,
        hostnqn: str | None,
        only: NvmeTarget | None = None,
        *,
        after_removal: bool = False,
    ) -> _Topology:
        """Our controllers of subsystem ``nqn`` and its namespaces (only that subsystem's
        sysfs directories are read: the cost does not grow with the host's other volumes).

        ``only``: namespaces that cannot be this target's (another UUID) may be left out.
        ``after_removal``: what is left after deleting controllers of ``nqn``
        (:func:`hostnvme.subsystem_view`).
        """
        all_ctrls, all_nss = hostnvme.subsystem_view(
            self.roots,
            nqn,
            uuid=only.uuid if only is not None else None,
            lean=True,
            nsid=only.nsid if only is not None else None,
            after_removal=after_removal,
        )
        ctrls = [
            c
            for c in all_ctrls
            if c.subsysnqn == nqn
            and c.transport != "pcie"
            and (hostnqn is None or c.hostnqn in (None, hostnqn))
        ]
        names = {c.name for c in ctrls}
        nss = [n for n in all_nss if not n.controllers or names.intersection(n.controllers)]
        return _Topology(ctrls, nss)

    @staticmethod
    def _portal_matches(ctrl: hostnvme.NvmeController, portal: NvmePortal) -> bool:
        if (ctrl.transport or "").lower() != portal.transport:
            return False
        if hostnvme.normalize_traddr(ctrl.traddr, ctrl.transport) != hostnvme.normalize_traddr(
            portal.address, portal.transport
        ):
            return False
        if portal.transport == "fc":
            return True
        return (ctrl.trsvcid or "") == portal.trsvcid

    def _requests(
        self, target: NvmeTarget, portal: NvmePortal, hostnqn: str
    ) -> list[ConnectRequest]:
        """Connect requests for one portal: one per online local FC port for NVMe/FC."""
        host_traddrs: list[str | None] = [None]
        if portal.transport == "fc":
            host_traddrs = list(self._fc_local_ports())
        # Under dm-multipath, I/O on a lost path must fail over, not queue forever.
        fast_io_fail = (
            self.opts.nvme_fast_io_fail_tmo
            if self.use_multipath and not hostnvme.native_multipath_enabled(self.roots)
            else None
        )
        return [
            ConnectRequest(
                subsysnqn=target.nqn,
                transport=portal.transport,
                traddr=portal.address,
                trsvcid=None if portal.transport == "fc" else portal.trsvcid,
                hostnqn=hostnqn,
                hostid=self.host_identity().hostid,
                host_traddr=host_traddr,
                ctrl_loss_tmo=self.opts.nvme_ctrl_loss_tmo,
                reconnect_delay=self.opts.nvme_reconnect_delay,
                keep_alive_tmo=self.opts.nvme_keep_alive_tmo,
                fast_io_fail_tmo=fast_io_fail,
                timeout=self.opts.login_timeout,
            )
            for host_traddr in host_traddrs
        ]

    def _fc_local_ports(self) -> list[str]:
        """Online local FC ports as NVMe/FC host addresses (``nn-0x..:pn-0x..``)."""
        if self.fc_local_ports is not None:
            return list(self.fc_local_ports)
        from brick_agent.host import fc as hostfc

        return [
            f"nn-0x{_wwn(h.node_name)}:pn-0x{_wwn(h.port_name)}"
            for h in hostfc.fc_hosts(self.roots)
            if h.online and h.port_name and h.node_name
        ]

    # ------------------------------------------------------------------ attach
    @metrics.timed("attach")
    @ledger.records_attach
    def connect_volume(self, connection_properties: Mapping[str, Any]) -> DeviceInfo:
        props = parse_nvmeof(connection_properties)
        self.actions.start_daemon()  # its first start is not this call's deadline
        deadline = Deadline.after(self.opts.device_wait_timeout)
        start = time.monotonic()
        if props.replicated and props.replica_count > 1:
            path = self._connect_replicated(props, deadline)
        else:
            target = props.targets[0]
            mp = (
                _MapRequest(bool(props.enforce_multipath or self.opts.enforce_multipath))
                if self.use_multipath
                else None
            )
            path = self.roots.devfs(self._attach_locked(target, deadline, mp).name)
            if mp is not None and mp.result is not None:
                LOG.info(
                    "attached NVMe-oF volume at %s (map of %s) in %.3fs",
                    self.roots.devfs(mp.result.dm_name),
                    path,
                    time.monotonic() - start,
                )
                return {
                    "type": "block",
                    "path": self.roots.devfs(mp.result.dm_name),
                    "multipath_id": mp.result.wwid,
                }
        LOG.info("attached NVMe-oF volume at %s in %.3fs", path, time.monotonic() - start)
        return {"type": "block", "path": path}

    def _attach_locked(
        self, target: NvmeTarget, deadline: Deadline, mp: _MapRequest | None = None
    ) -> hostnvme.NvmeNamespace:
        """Attach one target: the fast path under the shared subsystem lock, else the
        full attach under the exclusive one.

        While another thread of this process changes the subsystem (holds or awaits the
        exclusive lock), a failed fast path waits for it and looks again instead of
        queueing for the exclusive lock behind it.
        """
        rw = self._rw(target)
        for looks in range(self.max_shared_looks, -1, -1):
            with rw.shared():
                ns = self._fast_path(target, mp)
            if ns is not None:
                return ns
            if looks and not deadline.expired and rw.wait_for_writers():
                continue
            with rw.exclusive():
                return self._attach_target(target, deadline, mp)
        raise AssertionError("unreachable: the last look takes the exclusive lock")

    def _fast_path(
        self, target: NvmeTarget, mp: _MapRequest | None
    ) -> hostnvme.NvmeNamespace | None:
        """The verified namespace when it is visible through a controller and no portal
        needs a connect (no rescan, watch or wait; a subsystem lock is held); else None."""
        if not target.identified:
            return None
        return self._plan(target, mp)[0]

    def _plan(
        self, target: NvmeTarget, mp: _MapRequest | None
    ) -> tuple[hostnvme.NvmeNamespace | None, Any]:
        """(the fast-path answer or None, the state the full attach continues from)."""
        hostnqn = self._hostnqn(target)
        native = hostnvme.native_multipath_enabled(self.roots)
        all_paths = native or self.use_multipath
        topo = self._topology(target.nqn, hostnqn, only=target)
        present: dict[NvmePortal, hostnvme.NvmeController] = {}
        for portal in target.portals:
            for ctrl in topo.controllers:
                if self._portal_matches(ctrl, portal) and ctrl.state != "deleting":
                    present[portal] = ctrl
                    break
        live = [c for c in present.values() if c.live]
        missing = [p for p in target.portals if p not in present]
        connect = bool(missing and (all_paths or not live))
        visible = self._visible(topo, target)
        if visible is not None and not connect and (mp is None or native):
            self._verify(visible, target)
            LOG.debug(
                "%s of %s already visible as %s: no rescan",
                _identity_of(target),
                target.nqn,
                visible.name,
            )
            return visible, None
        return None, (hostnqn, native, all_paths, present, live, missing, connect, visible)

    def _attach_target(
        self, target: NvmeTarget, deadline: Deadline, mp: _MapRequest | None = None
    ) -> hostnvme.NvmeNamespace:
        """Attach one target (subsystem lock held); the verified namespace device.

        When no portal needs a connect and a controller already shows the namespace,
        that is the answer: no rescan, no watch, no wait (the namespace is verified).
        Otherwise live controllers are rescanned (a backend may not send an AEN)
        unless the namespace is already visible, missing portals are connected and
        the namespace is awaited.
        """
        if not target.identified:
            raise DeviceNotFound(
                f"target {target.nqn} names no namespace (no uuid, nguid "
                f"or ns_id): refusing to guess"
            )
        found, state = self._plan(target, mp)
        if found is not None:
            return found
        hostnqn, native, all_paths, present, live, missing, connect, visible = state
        created: list[str] = []
        errors: dict[str, str] = {}
        with self._watch() as watch:  # opened before acting: no event can be missed
            try:
                if visible is None:
                    for ctrl in live:  # the backend may not have sent an AEN
                        self._safe_rescan(ctrl.name)
                if connect:
                    created = self._connect_portals(
                        target, missing, hostnqn, all_paths, deadline, errors
                    )
                if (
                    not live
                    and not created
                    and not any(c.state in _PENDING_STATES for c in present.values())
                ):
                    raise TargetUnreachable(
                        f"no path to {target.nqn}: "
                        + "; ".join(f"{k}: {v}" for k, v in errors.items())
                    )
                ns = self._wait_namespace(watch, target, hostnqn, deadline)
                if mp is not None and not native:
                    mp.result = self._wait_map(watch, target, hostnqn, ns, mp.enforce, deadline)
                return ns
            except BaseException:
                LOG.warning(
                    "NVMe-oF attach of %s on %s failed; host saw: %s",
                    _identity_of(target),
                    target.nqn,
                    self._snapshot(target.nqn, errors),
                )
                self._undo_created(created)
                raise

    def _visible(self, topo: _Topology, target: NvmeTarget) -> hostnvme.NvmeNamespace | None:
        """The namespace device of ``target`` in ``topo`` whose /dev node exists, preferring
        one reachable through a live controller (None when there is none)."""
        live = {c.name for c in topo.controllers if c.live}
        found = [
            ns
            for ns in topo.namespaces
            if matches(ns, target) and os.path.exists(self.roots.devfs(ns.name))
        ]
        found.sort(
            key=lambda ns: (
                not live.intersection(ns.controllers),
                hostnvme.sysfs.natural_key(ns.name),
            )
        )
        return found[0] if found else None

    def _connect_portals(
        self,
        target: NvmeTarget,
        portals: list[NvmePortal],
        hostnqn: str,
        all_paths: bool,
        deadline: Deadline,
        errors: dict[str, str],
    ) -> list[str]:
        """Connect ``portals`` (in parallel when all are wanted); names of new controllers."""
        requests = []
        for portal in portals:
            reqs = self._requests(target, portal, hostnqn)
            if not reqs:
                errors[f"fc://{portal.address}"] = "no online local FC port"
            requests += reqs
        created: list[str] = []
        if not all_paths or len(requests) <= 1:
            for req in requests:
                name = self._connect_one(req, errors)
                if name:
                    created.append(name)
                    if not all_paths:
                        break
            return created
        timeout = max(0.1, min(self.opts.login_timeout, deadline.remaining()))
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(requests)))
        try:
            futures = {pool.submit(self._connect_one, req, errors): req for req in requests}
            done, pending = concurrent.futures.wait(futures, timeout=timeout)
            for fut in done:
                name = fut.result()
                if name:
                    created.append(name)
            for fut in pending:
                errors[futures[fut].describe()] = f"connect still running after {timeout:.1f}s"
        finally:
            pool.shutdown(wait=False)
        return sorted(created)

    @metrics.step("connect")
    def _connect_one(self, req: ConnectRequest, errors: dict[str, str]) -> str | None:
        start = time.monotonic()
        try:
            name = self.actions.connect(req)
        except AlreadyConnected:
            LOG.debug("%s already connected (raced with another attach)", req.describe())
            return None
        except InvalidArgument as exc:  # the request itself is refused: no portal helps
            raise InvalidConnectionProperties(
                "host_nqn"
                if isinstance(exc, NotOwned)
                else "target_nqn"
                if "NQN" in str(exc)
                else "portals",
                str(exc),
            ) from exc
        except BrickError as exc:
            LOG.warning(
                "connect %s failed after %.3fs: %s", req.describe(), time.monotonic() - start, exc
            )
            errors[req.describe()] = str(exc)
            return None
        LOG.debug("connected %s as %s in %.3fs", req.describe(), name, time.monotonic() - start)
        if name:
            hostnvme.note_new_controller(self.roots, req.subsysnqn, name)
        return name

    @metrics.step("scan")
    def _safe_rescan(self, ctrl: str) -> None:
        try:
            self.actions.rescan(ctrl)
        except BrickError as exc:
            LOG.warning("rescan of %s failed: %s", ctrl, exc)

    def _watch(self) -> DeviceWatch:
        """Kernel uevents are enough: the predicate reads sysfs and devtmpfs nodes."""
        if self._watch_factory is not None:
            return self._watch_factory()
        return DeviceWatch(
            subsystems=("block", "nvme"), roots=self.roots, source="kernel", poll_interval=0.25
        )

    @metrics.step("wait")
    def _wait_namespace(
        self, watch: DeviceWatch, target: NvmeTarget, hostnqn: str, deadline: Deadline
    ) -> hostnvme.NvmeNamespace:
        stale_seen: list[str] = []
        last_rescan = [time.monotonic()]
        rescans_left = [self.device_scan_attempts]

        def probe() -> hostnvme.NvmeNamespace | None:
            topo = self._topology(target.nqn, hostnqn, only=target)
            found = self._visible(topo, target)
            if found is not None:
                return found
            if target.uuid is not None:  # the UUID filter applied: read stale ones too
                topo = self._topology(target.nqn, hostnqn)
            live = {c.name for c in topo.controllers if c.live}
            stale = [ns.name for ns in topo.namespaces if is_stale(ns, target)]
            if stale and not stale_seen:
                LOG.warning(
                    "namespace slot of %s on %s holds another volume (%s): rescanning",
                    _identity_of(target),
                    target.nqn,
                    ", ".join(stale),
                )
            if stale:
                stale_seen[:] = stale
            # Not there yet: rescan now and then, at most device_scan_attempts times (then
            # only the kernel's own events count).  A missed AEN is covered, and the
            # kernel drops a namespace whose ids changed on one scan and adds its
            # successor only on the next one.
            if rescans_left[0] > 0 and time.monotonic() - last_rescan[0] >= self.rescan_interval:
                last_rescan[0] = time.monotonic()
                rescans_left[0] -= 1
                for name in sorted(live):
                    self._safe_rescan(name)
            return None

        try:
            ns = watch.wait_for(probe, deadline, what=f"namespace {_identity_of(target)}")
        except DeviceNotFound:
            ns = None
        if ns is None:
            if stale_seen:
                raise VolumeIdentityMismatch(
                    f"{target.nqn}: namespace device(s) {', '.join(stale_seen)} carry "
                    f"another identity than {_identity_of(target)}"
                )
            raise DeviceNotFound(
                f"namespace {_identity_of(target)} of {target.nqn} did not "
                f"appear within {self.opts.device_wait_timeout}s"
            )
        self._verify(ns, target)
        return ns

    # ------------------------------------------------------------------ dm-multipath
    def _multipath(self) -> NvmeMultipath:
        return NvmeMultipath(
            self.roots,
            self.actions,
            self._watch,
            grace=self.multipath_grace,
            map_timeout=self.opts.multipath_wait_timeout,
            removal_timeout=self.multipath_removal_timeout,
        )

    @metrics.step("map")
    def _wait_map(
        self,
        watch: DeviceWatch,
        target: NvmeTarget,
        hostnqn: str,
        first: hostnvme.NvmeNamespace,
        enforce: bool,
        deadline: Deadline,
    ) -> MultipathMap | None:
        """Non-native multipath: the dm map over every controller's device of the namespace.

        Waits (briefly) for each live controller's device, requires one identity
        across them, then waits for multipathd's map.  Without multipathd: None
        (single device, logged), or NotSupported when multipath is enforced.
        """
        if not self.actions.multipathd_running():
            if enforce:
                raise NotSupported("multipath enforced but multipathd is not running")
            LOG.warning(
                "use_multipath set but multipathd is not running: returning single path %s of %s",
                first.name,
                target.nqn,
            )
            return None

        def all_paths() -> list[hostnvme.NvmeNamespace] | None:
            topo = self._topology(target.nqn, hostnqn)
            found = [
                ns
                for ns in topo.namespaces
                if matches(ns, target) and os.path.exists(self.roots.devfs(ns.name))
            ]
            live = {c.name for c in topo.controllers if c.live}
            covered = {c for ns in found for c in ns.controllers}
            return found if live <= covered else None

        try:
            paths = watch.wait_for(
                all_paths,
                deadline.capped(self.multipath_grace + 2.0),
                what=f"every path of {_identity_of(target)}",
            )
        except DeviceNotFound:
            paths = [
                ns
                for ns in self._topology(target.nqn, hostnqn).namespaces
                if matches(ns, target) and os.path.exists(self.roots.devfs(ns.name))
            ]
            LOG.warning(
                "%s: only %s of the live controllers' paths appeared",
                target.nqn,
                ", ".join(ns.name for ns in paths),
            )
        paths = sorted(paths or [first], key=lambda ns: hostnvme.sysfs.natural_key(ns.name))
        ids = {(ns.uuid, ns.nguid, ns.wwid) for ns in paths}
        if len(ids) != 1 or not paths[0].wwid:
            raise VolumeIdentityMismatch(
                f"paths of {_identity_of(target)} disagree on or lack an identity: "
                + ", ".join(
                    f"{ns.name}=(uuid {ns.uuid}, nguid {ns.nguid}, wwid {ns.wwid})" for ns in paths
                )
            )
        wwid = paths[0].wwid
        names = [ns.name for ns in paths]
        known = {ns.name: ns for ns in hostnvme.nvme_namespaces(self.roots)}

        def is_ours(slave: str) -> bool:
            ns = known.get(slave)
            return ns is not None and matches(ns, target)

        try:
            m = self._multipath().wait_for_map(wwid, names, deadline, is_ours)
        except DeviceNotFound as exc:
            if enforce:
                raise
            LOG.warning("%s; returning single path %s of %s", exc, first.name, target.nqn)
            return None
        LOG.info("multipath map %s (%s) over %s", m.dm_name, m.wwid, ", ".join(m.slaves))
        return m

    @metrics.step("verify")
    def _verify(self, ns: hostnvme.NvmeNamespace, target: NvmeTarget) -> None:
        """Re-read the device's identity (its own sysfs directory) right before returning it."""
        again = hostnvme.read_namespace(self.roots, ns, identity_only=True)
        if again is None or not matches(again, target):
            raise VolumeIdentityMismatch(
                f"{ns.name} changed identity while attaching {_identity_of(target)}"
            )

    def _snapshot(self, nqn: str, errors: Mapping[str, str]) -> dict[str, Any]:
        """What the kernel shows for subsystem ``nqn`` (for the failure log)."""
        try:
            topo = self._topology(nqn, None)
        except Exception as exc:  # noqa: BLE001 - diagnostics must not mask the error
            return {"error": repr(exc)}
        return {
            "controllers": [
                {
                    "name": c.name,
                    "state": c.state,
                    "transport": c.transport,
                    "traddr": c.traddr,
                    "trsvcid": c.trsvcid,
                    "hostnqn": c.hostnqn,
                    "paths": list(c.namespaces),
                }
                for c in topo.controllers
            ],
            "namespaces": [
                {
                    "name": n.name,
                    "nsid": n.nsid,
                    "uuid": n.uuid,
                    "nguid": n.nguid,
                    "controllers": list(n.controllers),
                }
                for n in topo.namespaces
            ],
            "connect_errors": dict(errors),
            "native_multipath": hostnvme.native_multipath_enabled(self.roots),
        }

    def _undo_created(self, created: list[str]) -> None:
        """Delete the controllers this failed attach created.

        Unconditional: they appeared under our subsystem lock, so nothing else can
        use their namespaces yet (with native multipath a namespace also reachable
        through an older controller only loses the new path).
        """
        for name in created:
            try:
                self.actions.disconnect(name)
            except BrickError as exc:
                LOG.warning("could not undo controller %s: %s", name, exc)

    # ------------------------------------------------------------------ replicated
    def _md_path(self, alias: str) -> str:
        return self.roots.devfs("md", alias)

    def _connect_replicated(self, props: NvmeofProperties, deadline: Deadline) -> str:
        alias = props.alias or ""
        devices: list[str | None] = []
        failures = []
        for target in props.targets:
            try:
                with self._lock(target):
                    devices.append(self.roots.devfs(self._attach_target(target, deadline).name))
            except (DeviceNotFound, TargetUnreachable) as exc:
                LOG.warning("replica %s of %s unavailable: %s", target.nqn, alias, exc)
                failures.append(exc)
                devices.append(None)
        if not any(devices):
            raise failures[0]
        if os.path.exists(self._md_path(alias)):
            return self._md_path(alias)
        self.actions.md_create(alias, [d for d in devices])
        md = _poll(
            lambda: self._md_path(alias) if os.path.exists(self._md_path(alias)) else None, deadline
        )
        if md is None:
            raise DeviceNotFound(f"RAID device {self._md_path(alias)} did not appear")
        return md

    # ------------------------------------------------------------------ detach
    @metrics.timed("detach")
    @ledger.records_detach
    def disconnect_volume(
        self,
        connection_properties: Mapping[str, Any],
        device_info: Mapping[str, Any] | None,
        force: bool = False,
        ignore_errors: bool = False,
    ) -> None:
        props = parse_nvmeof(connection_properties)
        self.actions.start_daemon()  # its first start is not this call's deadline
        leftovers: list[str] = []
        errors: list[str] = []
        # every kernel action of this detach (flushes, delete_controller) ends by then
        deadline = Deadline.after(self.opts.flush_timeout)
        if props.replicated and props.replica_count > 1 and props.alias:
            md = self._md_path(props.alias)
            if os.path.exists(md):
                # stopping an array flushes it (STOP_ARRAY syncs the md device)
                try:
                    self.actions.md_stop(props.alias)
                except BrickError as exc:
                    errors.append(f"stop {md}: {exc}")
                    if not force:
                        return self._finish([md], errors, ignore_errors)
        for target in props.targets:
            flushed: set[str] = set()
            if not props.replicated:
                # the subsystem lock guards controllers, not our own buffers: flush first
                flushed, left = self._preflush(target, force, errors, deadline)
                if left:
                    leftovers += left
                    continue
                if self._kept_for_attached_others(target, flushed):
                    continue
            with self._lock(target):
                leftovers += self._detach_target(
                    target,
                    props,
                    force,
                    errors,
                    deadline,
                    flush=not props.replicated,
                    flushed=flushed,
                )
        self._finish(leftovers, errors, ignore_errors)

    def _preflush(
        self, target: NvmeTarget, force: bool, errors: list[str], deadline: Deadline
    ) -> tuple[set[str], list[str]]:
        """Flush the target's namespace devices before the subsystem lock is taken.

        Returns (devices flushed, leftovers: the device whose flush failed without
        ``force``).  A namespace under a dm-multipath map is left to the locked path
        (the map is flushed and removed first there).
        """
        if not target.identified:
            return set(), []
        topo = self._topology(target.nqn, self._hostnqn(target), only=target)
        ours = [ns for ns in topo.namespaces if matches(ns, target)]
        if map_of(self.roots, [ns.name for ns in ours if not ns.native_multipath]) is not None:
            return set(), []
        flushed: set[str] = set()
        for ns in ours:
            if not self._flush(self.roots.devfs(ns.name), force, errors, deadline, ns.controllers):
                return flushed, [self.roots.devfs(ns.name)]
            flushed.add(ns.name)
        return flushed, []

    def _kept_for_attached_others(self, target: NvmeTarget, flushed: Collection[str]) -> bool:
        """Does every controller of ``target`` stay for another namespace attached through
        brick_agent (the ledger) or an attach pending?  Then this detach's part is done
        (its namespaces flushed, none under a map) without the exclusive subsystem lock,
        for which the subsystem's other detaches and new controllers queue.  Decided under
        the shared lock, from the volumes the ledger's subsystem index names (each found
        by its recorded UUID: one namespace read, not the subsystem's every namespace).

        A concurrent last detach cannot leave the controller to nobody: the ledger
        clears a volume's attachments before its detach looks here, so of two detaches
        the one clearing last sees the other's cleared and goes on to the exclusive
        path.  Anything else (no ledger, a map, a namespace not visible or not flushed, a
        controller no attached volume's namespace shows) is the exclusive path's to
        decide."""
        if self.ledger is None or not target.identified:
            return False
        try:
            data = self.ledger.view()
        except (BrickError, OSError):
            return False
        if not subsystem_attached(data, target.nqn):
            return False
        hostnqn = self._hostnqn(target)
        with self._rw(target).shared():
            topo = self._topology(target.nqn, hostnqn, only=target)
            ours = [ns for ns in topo.namespaces if matches(ns, target)]
            if not topo.controllers or not ours or any(ns.name not in flushed for ns in ours):
                return False
            wanted = {c.name for c in topo.controllers}
            kept = self._controllers_showing_attached(target, hostnqn, data, wanted)
            if set(kept) != wanted:
                return False
        for name, why in sorted(kept.items()):
            LOG.info("keeping controller %s of %s: %s", name, target.nqn, why)
        return True

    #: Volumes of the subsystem a keeping detach looks up before it leaves the decision to
    #: the exclusive path (one namespace read each).
    max_attached_looks = 4

    def _controllers_showing_attached(
        self, target: NvmeTarget, hostnqn: str, data: Mapping[str, Any], wanted: set[str]
    ) -> dict[str, str]:
        """Which of controllers ``wanted`` show a namespace of another volume the ledger
        ``data`` holds attached (all of them while an attach to the subsystem is pending):
        ``{controller: why}``.  Each volume's namespace is found by the UUID of its
        recorded identity, its recorded head tried first; a volume recorded by another
        identity is not looked at (the exclusive path reads every namespace)."""
        if attach_pending(data, target.nqn):
            return {c: f"an attach to {target.nqn} is pending" for c in wanted}
        own = hostnvme.canonical_uuid(target.uuid)
        out: dict[str, str] = {}
        looks = 0
        for key, entry in ledgermod.entries_of_scope(data, f"nvme:{target.nqn}"):
            uuid = hostnvme.canonical_uuid(ledgermod.nvme_identity_uuid(entry.get("identity")))
            if not entry.get("attachments") or uuid is None or uuid == own:
                continue
            if looks == self.max_attached_looks:
                break
            looks += 1
            head = os.path.basename(str((entry.get("device_info") or {}).get("path") or ""))
            hint = _HEAD_NSID.fullmatch(head)
            other = dataclasses.replace(
                target, uuid=uuid, nguid=None, nsid=int(hint.group(1)) if hint else None
            )
            for ns in self._topology(target.nqn, hostnqn, only=other).namespaces:
                if hostnvme.canonical_uuid(ns.uuid) != uuid:
                    continue
                for c in wanted.intersection(ns.controllers).difference(out):
                    out[c] = f"its namespace {ns.name} is attached through brick_agent ({key})"
            if set(out) == wanted:
                break
        return out

    def _finish(self, leftovers: list[str], errors: list[str], ignore_errors: bool) -> None:
        if not leftovers and not errors:
            return
        if ignore_errors:
            LOG.warning(
                "NVMe-oF detach left %s (errors: %s)",
                ", ".join(leftovers) or "nothing",
                "; ".join(errors) or "none",
            )
            return
        raise LeftoversRemain("; ".join(errors) or "NVMe-oF detach incomplete", leftovers)

    #: Seconds a device whose flush failed while none of its controllers was live gets to
    #: go with them (another volume's last detach deleting the controller meanwhile).
    removal_grace = 3.0

    @metrics.step("flush")
    def _flush(
        self,
        path: str,
        force: bool,
        errors: list[str],
        deadline: Deadline,
        controllers: Collection[str] = (),
    ) -> bool:
        """Flush the device at ``path`` (a namespace or a map) before it goes; False when
        that failed (without ``force``).  A device that is gone by the time the flush
        failed, or goes within :attr:`removal_grace` while none of its ``controllers`` is
        live, needs none: another volume's last detach of the subsystem deleted the
        controller meanwhile (the kernel syncs a disk as it removes it), or the kernel
        dropped it; nothing of it is left to keep."""
        try:
            self.actions.flush(path, max(deadline.remaining(), KERNEL_ACTION_MIN))
            return True
        except BrickError as exc:
            if self._gone_with_its_controllers(path, controllers, deadline):
                LOG.info("%s went with its controller meanwhile: nothing to flush (%s)", path, exc)
                return True
            errors.append(f"flush {path}: {exc}")
            return force

    def _gone_with_its_controllers(
        self, path: str, controllers: Collection[str], deadline: Deadline
    ) -> bool:
        """Is the device at ``path`` gone, or going (none of its ``controllers`` live, and
        gone within :attr:`removal_grace`, waited for on uevents)?"""
        sysdir = self.roots.sysfs("class", "block", os.path.basename(path))
        if not os.path.isdir(sysdir):
            return True
        if not controllers or any(
            hostnvme.controller_state(self.roots, c) == "live" for c in controllers
        ):
            return False
        grace = Deadline.after(min(self.removal_grace, max(deadline.remaining(), 0.1)))
        with self._watch() as watch:
            try:
                watch.wait_gone(lambda: os.path.isdir(sysdir), grace, what=path)
            except DeviceNotFound:
                return False
        return True

    def _detach_target(
        self,
        target: NvmeTarget,
        props: NvmeofProperties,
        force: bool,
        errors: list[str],
        deadline: Deadline,
        flush: bool,
        flushed: Collection[str] = (),
    ) -> list[str]:
        hostnqn = self._hostnqn(target)
        # other volumes' namespaces need not be read: a controller entry that is not one
        # of ours counts as foreign (_foreign_namespaces), which is all the rule needs
        topo = self._topology(target.nqn, hostnqn, only=target)
        ours = [ns for ns in topo.namespaces if matches(ns, target)] if target.identified else []
        mpath = map_of(self.roots, [ns.name for ns in ours if not ns.native_multipath])
        if mpath is not None:
            if flush and not self._flush(self.roots.devfs(mpath.dm_name), force, errors, deadline):
                return [self.roots.devfs(mpath.dm_name)]
            try:
                with metrics.phase(self.protocol, "unmap"):
                    self._multipath().remove_map(mpath)
            except BrickError as exc:
                errors.append(f"remove map {mpath.dm_name}: {exc}")
                if not force:
                    return [self.roots.devfs(mpath.dm_name)]
        if flush:
            for ns in ours:
                if ns.name in flushed:
                    continue
                if not self._flush(
                    self.roots.devfs(ns.name), force, errors, deadline, ns.controllers
                ):
                    return [self.roots.devfs(ns.name)]
        doomed = self._disconnect_controllers(topo, target, hostnqn, errors, deadline)
        if not doomed:
            return []
        # what is left that should have gone
        after = self._topology(target.nqn, hostnqn, only=target, after_removal=True)
        left = [f"controller {c.name}" for c in after.controllers if c.name in doomed]
        left += [
            self.roots.devfs(ns.name)
            for ns in after.namespaces
            if matches(ns, target) and ns.controllers and set(ns.controllers) <= set(doomed)
        ]
        return left

    @metrics.step("disconnect")
    def _disconnect_controllers(
        self,
        topo: _Topology,
        target: NvmeTarget,
        hostnqn: str,
        errors: list[str],
        deadline: Deadline,
    ) -> list[str]:
        """Disconnect the target's controllers but those whose other namespaces are in use
        (:meth:`_users_of_others`); the names of the controllers disconnected (or tried)."""
        doomed = []
        for ctrl in topo.controllers:
            foreign = self._foreign_namespaces(ctrl, topo, [target])
            if foreign:
                users = self._users_of_others(ctrl, target, hostnqn)
                if users:
                    LOG.info(
                        "keeping controller %s of %s: its other namespace(s) %s are in use (%s)",
                        ctrl.name,
                        target.nqn,
                        ", ".join(foreign),
                        "; ".join(users),
                    )
                    continue
                LOG.info(
                    "deleting controller %s of %s: its other namespace(s) %s are attached "
                    "through nobody and unused on this host",
                    ctrl.name,
                    target.nqn,
                    ", ".join(foreign),
                )
            doomed.append(ctrl.name)
            try:
                self.actions.disconnect(
                    ctrl.name, timeout=max(deadline.remaining(), KERNEL_ACTION_MIN)
                )
            except BrickError as exc:
                errors.append(f"disconnect {ctrl.name}: {exc}")
        return doomed

    def _users_of_others(
        self, ctrl: hostnvme.NvmeController, target: NvmeTarget, hostnqn: str
    ) -> list[str]:
        """Why ``ctrl`` must stay for namespaces other than ``target``'s: attached through
        brick_agent (the ledger, matched by identity), or used on the host (holders,
        mounts, swap, open); ``[]`` when nobody uses them.  Fails closed: no ledger, an
        unreadable one or an unresolved namespace entry is a reason to keep it."""
        if self.ledger is None:
            return ["no attachment ledger to tell whether they are attached"]
        if not target.identified:
            return ["the volume's own namespace cannot be told from the others"]
        full = self._topology(target.nqn, hostnqn)
        others = [
            ns for ns in full.namespaces if ctrl.name in ns.controllers and not matches(ns, target)
        ]
        known = {p for ns in full.namespaces for p in ns.paths}
        reasons = [
            f"{p} not resolved to a namespace device" for p in ctrl.namespaces if p not in known
        ]
        try:
            data = self.ledger.view()
        except (BrickError, OSError) as exc:
            return reasons + [f"attachment ledger unreadable: {exc}"]
        reasons += ledger_claims(data, target.nqn, others)
        if reasons:
            return reasons  # kept: the host's own use of the others need not be read
        # udev may still be probing a namespace attached a moment ago: not a user
        return volume_devices_users(
            self.roots, [ns.name for ns in others], udev_grace=UDEV_PROBE_GRACE
        )

    def _foreign_namespaces(
        self, ctrl: hostnvme.NvmeController, topo: _Topology, targets: list[NvmeTarget]
    ) -> list[str]:
        """Namespaces on ``ctrl`` that belong to none of ``targets``."""
        out = []
        for ns in topo.namespaces:
            if ctrl.name not in ns.controllers:
                continue
            if not any(t.identified and matches(ns, t) for t in targets):
                out.append(ns.name)
        # entries under the controller not (yet) resolved to a namespace device
        known = {p for ns in topo.namespaces for p in ns.paths}
        out += [p for p in ctrl.namespaces if p not in known]
        return out

    # ------------------------------------------------------------------ queries
    def get_volume_paths(self, connection_properties: Mapping[str, Any]) -> list[str]:
        props = parse_nvmeof(connection_properties)
        if props.replicated and props.replica_count > 1 and props.alias:
            md = self._md_path(props.alias)
            return [md] if os.path.exists(md) else []
        paths = []
        for target in props.targets:
            if not target.identified:
                continue
            topo = self._topology(target.nqn, None)
            found = [
                ns.name
                for ns in topo.namespaces
                if matches(ns, target) and os.path.exists(self.roots.devfs(ns.name))
            ]
            mpath = map_of(self.roots, found)
            if mpath is not None:  # dm-multipath over non-native paths: the map is the volume
                paths.append(self.roots.devfs(mpath.dm_name))
            else:
                paths += [self.roots.devfs(n) for n in found]
        return paths

    def volume_presence(self, connection_properties: Mapping[str, Any]) -> VolumePresence:
        """The volume's namespaces (``shared`` when every controller showing one also serves
        a namespace in use: NVMe-oF cannot hide it while that controller stays), the maps and
        links over them, dangling by-id links of its identity, its subsystem's controllers
        without any namespace; ``missing``: portals without a live controller and an
        absent namespace."""
        props = parse_nvmeof(connection_properties)
        result = VolumePresence()
        claims = self._ledger_view()  # read once for every namespace
        links: dict[str, tuple[str, ...]] | None = None  # /dev/disk, read once for all namespaces
        for target in props.targets:
            topo = self._topology(target.nqn, None)
            found = [ns for ns in topo.namespaces if target.identified and matches(ns, target)]
            if found and links is None:
                links = disk_links(self.roots)
            for ns in found:
                obj = presence.VolumeObject(
                    presence.DEVICE,
                    ns.name,
                    f"namespace {ns.nsid} of {target.nqn} ({_identity_of(target)}) "
                    f"on {', '.join(ns.controllers) or 'no controller'}",
                )
                # the namespace and what udev stacked on it: kept with it, or left with it
                kept = self._kept_for_others(ns, target, topo, claims)
                into = result.shared if kept else result.objects
                into.append(obj)
                into += presence.stacked_objects(self.roots, [ns.name, *ns.paths], links)
            for c in topo.controllers:
                if not any(c.name in ns.controllers for ns in topo.namespaces):
                    result.objects.append(
                        presence.VolumeObject(
                            presence.CONTROLLER, c.name, f"{c.address or c.traddr}: no namespace"
                        )
                    )
            result.objects += presence.dangling_links(self.roots, _id_link_suffixes(target))
            result.missing += _missing_paths(target, topo, found)
        return result

    def _ledger_view(self) -> Mapping[str, Any] | None:
        """The ledger's current content (None: no ledger, or unreadable)."""
        if self.ledger is None:
            return None
        try:
            return self.ledger.view()
        except (BrickError, OSError):
            return None

    def _kept_for_others(
        self,
        ns: hostnvme.NvmeNamespace,
        target: NvmeTarget,
        topo: _Topology,
        data: Mapping[str, Any] | None,
    ) -> bool:
        """Does every controller showing ``ns`` serve another namespace a volume uses
        (attached through brick_agent per the ledger ``data``, or used on the host)?
        Unlike a detach, this leans to "no": without a readable ledger (``data`` None)
        ``ns`` counts as left."""
        if not ns.controllers or data is None:
            return False
        for c in ns.controllers:
            others = [o for o in topo.namespaces if o is not ns and c in o.controllers]
            if not ledger_claims(data, target.nqn, others) and not volume_devices_users(
                self.roots, [o.name for o in others]
            ):
                return False
        return True

    def get_all_available_volumes(
        self, connection_properties: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        nqn = None
        if connection_properties is not None:
            nqn = parse_nvmeof(connection_properties).targets[0].nqn
        subsystems = {s.name: s for s in hostnvme.nvme_subsystems(self.roots)}
        ctrls = {c.name: c for c in hostnvme.nvme_controllers(self.roots)}
        out = []
        for ns in hostnvme.nvme_namespaces(self.roots):
            sub = subsystems.get(ns.subsystem_name or "")
            subnqn = sub.nqn if sub else None
            if nqn is not None and subnqn != nqn:
                continue
            members = [ctrls[c] for c in ns.controllers if c in ctrls]
            if any(c.transport == "pcie" for c in members):
                continue  # local PCIe drives are not volumes
            out.append(
                {
                    "path": ns.devpath or self.roots.devfs(ns.name),
                    "name": ns.name,
                    "subsysnqn": subnqn,
                    "uuid": ns.uuid,
                    "nguid": ns.nguid,
                    "nsid": ns.nsid,
                    "size": ns.size_bytes,
                    "native_multipath": ns.native_multipath,
                    "controllers": [
                        {
                            "name": c.name,
                            "transport": c.transport,
                            "traddr": c.traddr,
                            "trsvcid": c.trsvcid,
                            "host_traddr": c.host_traddr,
                            "state": c.state,
                            "hostnqn": c.hostnqn,
                        }
                        for c in members
                    ],
                }
            )
        return out

    def get_search_path(self) -> str | None:
        return self.roots.dev

    # ------------------------------------------------------------------ extend
    def extend_volume(self, connection_properties: Mapping[str, Any]) -> int:
        props = parse_nvmeof(connection_properties)
        self.actions.start_daemon()  # its first start is not this call's deadline
        targets = list(props.targets)
        before = {}
        for target in targets:
            topo = self._topology(target.nqn, self._hostnqn(target))
            for ns in topo.namespaces:
                if target.identified and matches(ns, target):
                    before[ns.name] = (target, ns.size_bytes or 0)
            for ctrl in topo.controllers:
                if ctrl.live:
                    self._safe_rescan(ctrl.name)
        if not before:
            raise DeviceNotFound("extend: the volume's namespace is not attached")
        deadline = Deadline.after(min(_EXTEND_SETTLE, self.opts.device_wait_timeout))

        def sizes() -> dict[str, int]:
            return {
                ns.name: ns.size_bytes or 0
                for ns in hostnvme.nvme_namespaces(self.roots)
                if ns.name in before
            }

        def grown() -> dict[str, int] | None:
            now = sizes()
            changed = any(now.get(n, 0) != old for n, (_, old) in before.items())
            return now if changed else None

        current = _poll(grown, deadline) or sizes()
        new_size = max(current.values()) if current else 0
        mpath = map_of(self.roots, sorted(before))
        if mpath is not None and new_size and mpath.size_bytes != new_size:
            self._multipath().resize_map(mpath, new_size)
        if props.replicated and props.replica_count > 1 and props.alias:
            LOG.warning(
                "extend of RAID %s: members grew to %d bytes; growing md is not implemented",
                props.alias,
                new_size,
            )
        LOG.info("NVMe-oF volume now %d bytes (%s)", new_size, ", ".join(sorted(current)))
        return new_size


def _id_link_suffixes(target: NvmeTarget) -> list[str]:
    """Endings of udev's by-id link names for the target's namespace identity."""
    out = []
    if target.uuid:
        out.append(f"-uuid.{target.uuid}")
    if target.nguid:
        out.append(f"-eui.{target.nguid}")
    return out


def _missing_paths(
    target: NvmeTarget, topo: _Topology, found: list[hostnvme.NvmeNamespace]
) -> list[str]:
    """The target's portals without a live controller here, and its namespace if absent."""
    missing = []
    for portal in target.portals:
        want = hostnvme.normalize_traddr(portal.address, portal.transport)
        if not any(
            c.live
            and c.transport == portal.transport
            and hostnvme.normalize_traddr(c.traddr, c.transport) == want
            and (portal.port is None or c.trsvcid == portal.trsvcid)
            for c in topo.controllers
        ):
            missing.append(f"{portal.transport} {portal.address}:{portal.trsvcid} {target.nqn}")
    if not found:
        missing.append(f"namespace {_identity_of(target)} of {target.nqn}")
    return missing


def _identities(nqn: str, ns: hostnvme.NvmeNamespace) -> set[str]:
    """Every spelling a ledger entry may use for ``ns``: its wwid, UUID, NGUID, and the
    ledger's lookup keys (``nvme:<nqn>:<uuid|nguid|nsidN>``), lowercase."""
    names = {
        ns.wwid,
        ns.uuid,
        ns.nguid,
        ns.uuid and f"uuid.{ns.uuid}",
        ns.nguid and f"eui.{ns.nguid}",
        ns.nsid is not None and f"nsid{ns.nsid}",
    }
    plain = {str(n).strip().lower() for n in names if n}
    return plain | {f"nvme:{nqn.lower()}:{n}" for n in plain}


#: A namespace head's name: nvme<subsystem instance>n<namespace instance>.
_HEAD_NSID = re.compile(r"nvme\d+n(\d+)")


def attach_pending(data: Mapping[str, Any], nqn: str) -> bool:
    """Whether the ledger content ``data`` holds an attach to subsystem ``nqn`` pending."""
    prefix = f"nvme:{nqn.lower()}:"
    return any(
        str(k).lower().startswith(prefix)
        for p in data.get("pending", ())
        for k in p.get("lookup", ())
    )


def subsystem_attached(data: Mapping[str, Any], nqn: str) -> bool:
    """Whether the ledger content ``data`` holds any volume of subsystem ``nqn`` attached
    (an entry with attachments) or an attach to it pending: a bound on
    :func:`ledger_claims` that reads no namespace."""
    return attach_pending(data, nqn) or any(
        e.get("attachments") for _, e in ledgermod.entries_of_scope(data, f"nvme:{nqn}")
    )


def ledger_claims(
    data: Mapping[str, Any],
    nqn: str,
    namespaces: Collection[hostnvme.NvmeNamespace],
    *,
    attached_only: bool = True,
) -> list[str]:
    """Which of ``namespaces`` (of subsystem ``nqn``) the ledger content ``data``
    (:meth:`AttachmentLedger.read`) holds attached, matched by identity or lookup key; an
    attach to ``nqn`` still pending counts for all of them.

    An entry without attachments holds nothing: its detach is under way (the ledger
    clears them before the kernel work and drops the entry after it, outside the
    subsystem lock) or failed half way.  Counting it would let two last detaches of one
    subsystem each keep the controller for the other; whether its namespace is still
    used is the host's to tell (:func:`volume_devices_users`).  ``attached_only=False``
    counts every entry (the cleanup's rule: nothing a ledger volume records is a
    leftover)."""
    out = []
    if attach_pending(data, nqn):
        out.append(f"an attach to {nqn} is pending")
    names = set().union(*(_identities(nqn, ns) for ns in namespaces)) if namespaces else set()
    for key, entry in ledgermod.entries_named(data, names):
        if attached_only and not entry.get("attachments"):
            continue
        said = {str(entry.get("identity") or "").strip().lower()}
        said |= {str(k).lower() for k in entry.get("lookup", ())}
        out += [
            f"{ns.name} attached through brick_agent ({key})"
            for ns in namespaces
            if said & _identities(nqn, ns)
        ]
    return out


def _wwn(value: str | None) -> str:
    return (value or "").lower().removeprefix("0x").replace(":", "")
