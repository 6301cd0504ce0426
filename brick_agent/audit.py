"""Leftover audit: what the kernel shows that no attached volume explains.

A detach that goes wrong leaves artefacts behind: an iSCSI session with no LUN,
a LUN whose session is gone or that went offline, a multipath map with no (or
only dead) paths, a stale ``/etc/multipath/wwids`` entry, an NVMe-oF controller
with no namespace or stuck out of the ``live`` state, a ``/dev/disk/by-*`` link
to nothing, an iSCSI node record (``/etc/iscsi/nodes``) without a session.  Such
leftovers later collide with a new volume that reuses the target's IQN/LUN or
NQN/NSID and corrupt it.  :func:`audit` reads the host views (read-only: sysfs,
/etc, /proc) and lists them as :class:`Finding` s; given the volumes that
*should* be attached it also names volumes present but unexpected and volumes
expected but missing; given the ledger, controllers whose namespaces nobody uses.

The audit never acts; it is what the gate app's ``/v1/audit`` serves.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from brick_agent import errors
from brick_agent.host import sysfs
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

# Finding kinds.
ISCSI_SESSION_WITHOUT_LUNS = "iscsi_session_without_luns"
ISCSI_SESSION_NOT_LOGGED_IN = "iscsi_session_not_logged_in"
SCSI_DEVICE_NOT_RUNNING = "scsi_device_not_running"
SCSI_DEVICE_WITHOUT_SESSION = "scsi_device_without_session"
SCSI_DEVICE_WITHOUT_RPORT = "scsi_device_without_rport"
MULTIPATH_MAP_WITHOUT_PATHS = "multipath_map_without_paths"
MULTIPATH_MAP_ALL_PATHS_FAILED = "multipath_map_all_paths_failed"
WWIDS_ENTRY_WITHOUT_DEVICE = "wwids_entry_without_device"
NVME_CONTROLLER_WITHOUT_NAMESPACES = "nvme_controller_without_namespaces"
NVME_CONTROLLER_NOT_LIVE = "nvme_controller_not_live"
NVME_NAMESPACE_WITHOUT_PATHS = "nvme_namespace_without_paths"
ISCSI_NODE_RECORD_WITHOUT_SESSION = "iscsi_node_record_without_session"
NVME_CONTROLLER_NAMESPACES_UNUSED = "nvme_controller_namespaces_unused"
DANGLING_LINK = "dangling_link"
STALE_LINK = "stale_link"
UNEXPECTED_VOLUME = "unexpected_volume"
MISSING_VOLUME = "missing_volume"

# SCSI host drivers (proc_name) that carry iSCSI sessions.
ISCSI_HOST_DRIVERS = frozenset(
    {"iscsi_tcp", "ib_iser", "iser", "bnx2i", "cxgb3i", "cxgb4i", "qedi", "be2iscsi", "qla4xxx"}
)
# NVMe controller states that may pass on their own (a grace period applies to them).
NVME_TRANSIENT_STATES = frozenset(
    {"new", "connecting", "resetting", "deleting", "deleting (no IO)"}
)
NVME_DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"
LINK_KINDS = ("by-id", "by-path")

PROTOCOL_ALIASES = {
    "ISCSI": "ISCSI",
    "ISER": "ISCSI",
    "NVMEOF": "NVMEOF",
    "NVME": "NVMEOF",
    "FIBRE_CHANNEL": "FIBRE_CHANNEL",
    "FC": "FIBRE_CHANNEL",
}

_SESSION_RE = re.compile(r"session(\d+)")
_RPORT_RE = re.compile(r"rport-\d+:\d+-\d+")


class InvalidExpectedVolume(errors.InvalidArgument):
    """An expected volume given to the audit is malformed."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One leftover: ``kind`` (see module constants), the object's ``name``, a ``detail``."""

    kind: str
    name: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "detail": self.detail}


@dataclasses.dataclass(frozen=True)
class PresentVolume:
    """A volume (LUN or namespace) of a storage protocol that the host has now."""

    protocol: str  # ISCSI, FIBRE_CHANNEL or NVMEOF
    devices: tuple[str, ...]  # kernel names of its devices/paths ('sdb', 'nvme0n1')
    wwid: str | None = None  # SCSI: udev form '36001405...'; NVMe: the ns wwid
    uuid: str | None = None  # NVMe only, canonical
    nguid: str | None = None  # NVMe only, canonical (32 hex)

    @property
    def label(self) -> str:
        return self.wwid or self.uuid or self.nguid or ",".join(self.devices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "devices": list(self.devices),
            "wwid": self.wwid,
            "uuid": self.uuid,
            "nguid": self.nguid,
        }


@dataclasses.dataclass(frozen=True)
class ExpectedVolume:
    """A volume that should be attached: protocol and identity.

    ISCSI/FIBRE_CHANNEL need ``wwid`` (any spelling: ``naa.6001405..``,
    ``36001405..``); NVMEOF needs ``uuid`` or ``nguid`` (or the namespace ``wwid``).
    """

    protocol: str
    wwid: str | None = None
    uuid: str | None = None
    nguid: str | None = None
    name: str | None = None  # free label (e.g. the volume id) for the report

    def __post_init__(self) -> None:
        proto = PROTOCOL_ALIASES.get(str(self.protocol).upper())
        if proto is None:
            raise InvalidExpectedVolume(
                f"unknown protocol {self.protocol!r}; known: ISCSI, NVMEOF, FIBRE_CHANNEL",
                key="protocol",
            )
        object.__setattr__(self, "protocol", proto)
        if proto == "NVMEOF":
            if not (self.uuid or self.nguid or self.wwid):
                raise InvalidExpectedVolume(
                    "an NVMEOF volume needs 'uuid', 'nguid' or 'wwid'", key="uuid"
                )
        elif not self.wwid:
            raise InvalidExpectedVolume(f"an {proto} volume needs 'wwid'", key="wwid")

    @classmethod
    def from_dict(cls, data: Any, index: int | None = None) -> ExpectedVolume:
        """Build from a JSON object; :class:`InvalidExpectedVolume` names the bad key."""
        where = "expected volume" if index is None else f"expected[{index}]"
        if not isinstance(data, Mapping):
            raise InvalidExpectedVolume(f"{where} must be an object", key="expected")
        fields = ("protocol", "wwid", "uuid", "nguid", "name")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise InvalidExpectedVolume(
                f"{where}: unknown field(s) {', '.join(map(str, unknown))}", key=str(unknown[0])
            )
        for key in fields:
            value = data.get(key)
            if key == "name" or key not in data:
                if value is not None and not isinstance(value, str):
                    raise InvalidExpectedVolume(f"{where}: {key!r} must be a string", key=key)
            elif not isinstance(value, str) or not value:
                raise InvalidExpectedVolume(f"{where}: {key!r} must be a non-empty string", key=key)
        if not data.get("protocol"):
            raise InvalidExpectedVolume(f"{where}: 'protocol' is required", key="protocol")
        try:
            return cls(data["protocol"], **{k: data.get(k) or None for k in fields[1:]})
        except InvalidExpectedVolume as exc:
            raise InvalidExpectedVolume(f"{where}: {exc}", key=exc.key) from None

    def matches(self, vol: PresentVolume) -> bool:
        if vol.protocol != self.protocol:
            return False
        from brick_agent.host.nvme import canonical_nguid, canonical_uuid
        from brick_agent.host.scsi import same_wwid

        if self.protocol != "NVMEOF":
            return same_wwid(self.wwid, vol.wwid)
        if self.uuid and vol.uuid and canonical_uuid(self.uuid) == vol.uuid:
            return True
        if self.nguid and vol.nguid and canonical_nguid(self.nguid) == vol.nguid:
            return True
        return bool(self.wwid and vol.wwid and self.wwid.strip().lower() == vol.wwid.lower())

    @property
    def label(self) -> str:
        ident = self.wwid or self.uuid or self.nguid or "?"
        return f"{self.name} ({ident})" if self.name else ident

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class AuditReport:
    """The audit's result; ``clean`` when nothing was found and every view could be read."""

    findings: list[Finding] = dataclasses.field(default_factory=list)
    volumes: list[PresentVolume] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings and not self.errors

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def add(self, kind: str, name: str, detail: str) -> None:
        self.findings.append(Finding(kind, name, detail))

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "findings": [f.to_dict() for f in self.findings],
            "volumes": [v.to_dict() for v in self.volumes],
            "counts": dict(self.counts),
            "errors": list(self.errors),
        }


@dataclasses.dataclass
class _Snapshot:
    """What the host views showed (each None when its view failed)."""

    sessions: list | None = None
    scsi_hosts: dict[int, Any] | None = None
    scsi: list | None = None
    rports: dict[str, Any] | None = None
    maps: list | None = None
    wwids: list[str] | None = None
    controllers: list | None = None
    namespaces: list | None = None
    block_names: set[str] | None = None
    node_records: list | None = None


def expected_from_ledger(ledger: Any) -> list[ExpectedVolume]:
    """Every volume an :class:`~brick_agent.ledger.AttachmentLedger` holds, as ``expected``.

    Volumes attached right now (only a pending intent) are not listed yet.
    """
    return [
        ExpectedVolume.from_dict(item, index=i) for i, item in enumerate(ledger.expected_volumes())
    ]


def audit(
    roots: HostRoots = DEFAULT_ROOTS,
    expected: Iterable[ExpectedVolume] | None = None,
    *,
    nvme_grace: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
    ledger: Any = None,
) -> AuditReport:
    """Audit the host at ``roots`` for leftovers.

    ``expected``: every volume that should be attached now (``[]``: none should be);
    ``None`` skips the present/expected comparison.  ``nvme_grace``: seconds to wait
    before re-reading controllers found in a transient state (connecting, resetting,
    deleting); only those still in it are reported.  A view that cannot be read is
    reported in ``errors`` (the report is then not clean) and the rest goes on.
    ``ledger``: the :class:`~brick_agent.ledger.AttachmentLedger` (only its ``read()``);
    given, fabrics controllers whose namespaces are neither attached through it nor used
    on the host are reported (``nvme_controller_namespaces_unused``).
    """
    report = AuditReport()
    snap = _read(roots, report)
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("iscsi", lambda: _check_iscsi(snap, report)),
        ("iscsi nodes", lambda: _check_node_records(snap, report)),
        ("scsi", lambda: _check_scsi(snap, report)),
        ("multipath", lambda: _check_multipath(snap, report)),
        ("wwids", lambda: _check_wwids(snap, report)),
        ("nvme", lambda: _check_nvme(roots, snap, report, nvme_grace, sleep)),
        ("links", lambda: _check_links(roots, snap, report)),
    ]
    for name, check in checks:
        _guard(report, f"check {name}", check)
    report.volumes = _guard(report, "volumes", lambda: _present_volumes(snap)) or []
    if ledger is not None:
        _guard(
            report,
            "check nvme use",
            lambda: _check_unused_controllers(roots, snap, report, ledger.read()),
        )
    if expected is not None:
        _compare(report, list(expected))
    return report


def _guard(report: AuditReport, what: str, func: Callable[[], Any]) -> Any:
    """Run one part of the audit; a failure becomes an entry of ``report.errors``."""
    try:
        return func()
    except Exception as exc:  # noqa: BLE001 - the rest of the audit must still run
        report.errors.append(f"{what}: {type(exc).__name__}: {exc}")
        return None


# ---------------------------------------------------------------- reading


def _read(roots: HostRoots, report: AuditReport) -> _Snapshot:
    from brick_agent.host import block, fc, iscsi, multipath, nvme, scsi

    snap = _Snapshot()

    def view(what: str, func: Callable[[], Any]) -> Any:
        return _guard(report, what, func)

    snap.sessions = view("iscsi sessions", lambda: iscsi.iscsi_sessions(roots))
    snap.node_records = view("iscsi node records", lambda: iscsi.iscsi_node_records(roots))
    snap.scsi_hosts = view("scsi hosts", lambda: {h.number: h for h in scsi.scsi_hosts(roots)})
    snap.scsi = view("scsi devices", lambda: scsi.scsi_devices(roots))
    snap.rports = view("fc remote ports", lambda: {r.name: r for r in fc.fc_remote_ports(roots)})
    snap.maps = view("multipath maps", lambda: multipath.multipath_maps(roots))
    snap.wwids = view("multipath wwids", lambda: multipath.wwids_file_entries(roots))
    snap.controllers = view("nvme controllers", lambda: nvme.nvme_controllers(roots))
    snap.namespaces = view("nvme namespaces", lambda: nvme.nvme_namespaces(roots))
    snap.block_names = view("block devices", lambda: {b.name for b in block.block_devices(roots)})
    report.counts = {
        "iscsi_sessions": len(snap.sessions or []),
        "scsi_devices": len(snap.scsi or []),
        "multipath_maps": len(snap.maps or []),
        "wwids_entries": len(snap.wwids or []),
        "nvme_controllers": len(snap.controllers or []),
        "nvme_namespaces": len(snap.namespaces or []),
    }
    return snap


def _session_of(path: str | None) -> int | None:
    for part in reversed((path or "").split(os.sep)):
        m = _SESSION_RE.fullmatch(part)
        if m:
            return int(m.group(1))
    return None


def _rport_of(path: str | None) -> str | None:
    for part in reversed((path or "").split(os.sep)):
        if _RPORT_RE.fullmatch(part):
            return part
    return None


def _is_iscsi_device(dev: Any, snap: _Snapshot) -> bool:
    if _session_of(dev.sysfs_path) is not None:
        return True
    host = (snap.scsi_hosts or {}).get(dev.hctl.host)
    return host is not None and (host.proc_name or "") in ISCSI_HOST_DRIVERS


# ---------------------------------------------------------------- checks


def _check_iscsi(snap: _Snapshot, report: AuditReport) -> None:
    if snap.sessions is None:
        return
    for s in snap.sessions:
        where = (
            f"target {s.target_iqn or '?'} portal {s.portal_address or '?'}:{s.portal_port or '?'}"
        )
        luns = _session_luns(s, snap)
        if not luns:
            report.add(
                ISCSI_SESSION_WITHOUT_LUNS,
                f"session{s.sid}",
                f"{where} (host{s.host_number}) has no SCSI device (LUN) behind it",
            )
        if s.state and s.state.upper() != "LOGGED_IN":
            report.add(
                ISCSI_SESSION_NOT_LOGGED_IN, f"session{s.sid}", f"{where} is in state {s.state}"
            )


def _check_node_records(snap: _Snapshot, report: AuditReport) -> None:
    """Node records with no session (a killed attach leaves one).  Records of boot or
    administrator sessions (``node.startup = automatic``) are reported as such: the
    audit only shows the evidence, it never decides whose a record is."""
    if snap.node_records is None or snap.sessions is None:
        return
    from brick_agent.host.iscsi import normalize_address

    live = {
        (s.target_iqn, normalize_address(s.portal_address), s.portal_port) for s in snap.sessions
    }
    for rec in snap.node_records:
        if (rec.iqn, normalize_address(rec.address), rec.port) in live:
            continue
        report.add(
            ISCSI_NODE_RECORD_WITHOUT_SESSION,
            f"{rec.iqn} {rec.portal} {rec.iface}",
            f"{rec.path} has no session; {_node_evidence(rec.settings)}",
        )


def _node_evidence(settings: Mapping[str, str]) -> str:
    """Who likely wrote a node record, from its settings (brick_agent writes manual startup
    and, where iscsiadm supports it, manual scan)."""
    shown = ", ".join(f"{k}={v}" for k, v in sorted(settings.items())) or "no settings read"
    if settings.get("node.startup") == "automatic":
        return f"logged in at boot (not brick_agent's: left alone): {shown}"
    return f"not logged in at boot (an attach that was killed leaves such a record): {shown}"


def _session_luns(session: Any, snap: _Snapshot) -> list[Any]:
    devices = snap.scsi or []
    by_path = [d for d in devices if _session_of(d.sysfs_path) == session.sid]
    if by_path or session.device_path:
        return by_path
    # No session device directory known: fall back to the session's SCSI host.
    return [d for d in devices if d.hctl.host == session.host_number]


def _check_scsi(snap: _Snapshot, report: AuditReport) -> None:
    if snap.scsi is None:
        return
    sids = {s.sid for s in snap.sessions or []}
    session_hosts = {s.host_number for s in snap.sessions or []}
    for d in snap.scsi:
        label = f"{d.hctl}" + (f" ({d.name})" if d.name else "")
        if d.state and d.state.lower() != "running":
            report.add(
                SCSI_DEVICE_NOT_RUNNING,
                str(d.hctl),
                f"SCSI device {label} wwid {d.wwid or '?'} is in state {d.state}",
            )
        if snap.sessions is not None and _is_iscsi_device(d, snap):
            sid = _session_of(d.sysfs_path)
            if (sid is not None and sid not in sids) or (
                sid is None and d.hctl.host not in session_hosts
            ):
                report.add(
                    SCSI_DEVICE_WITHOUT_SESSION,
                    str(d.hctl),
                    f"iSCSI device {label} wwid {d.wwid or '?'} has no iSCSI session"
                    + (f" (session{sid} is gone)" if sid is not None else ""),
                )
        rport = _rport_of(d.sysfs_path)
        if rport is not None and snap.rports is not None:
            rp = snap.rports.get(rport)
            if rp is None or (rp.port_state or "").lower() != "online":
                state = "gone" if rp is None else f"in state {rp.port_state}"
                report.add(
                    SCSI_DEVICE_WITHOUT_RPORT,
                    str(d.hctl),
                    f"FC device {label} wwid {d.wwid or '?'}: remote port {rport} is {state}",
                )


def _check_multipath(snap: _Snapshot, report: AuditReport) -> None:
    if snap.maps is None:
        return
    states = {d.name: d.state for d in snap.scsi or [] if d.name}
    for m in snap.maps:
        name = m.name or m.dm_name
        if not m.slaves:
            report.add(
                MULTIPATH_MAP_WITHOUT_PATHS,
                name,
                f"multipath map {name} ({m.dm_name}, wwid {m.wwid}) has no paths",
            )
            continue
        known = [s for s in m.slaves if s in states]
        if (
            known
            and len(known) == len(m.slaves)
            and all((states[s] or "").lower() != "running" for s in known)
        ):
            detail = ", ".join(f"{s}={states[s]}" for s in known)
            report.add(
                MULTIPATH_MAP_ALL_PATHS_FAILED,
                name,
                f"multipath map {name} ({m.dm_name}, wwid {m.wwid}): every path is down ({detail})",
            )


def _check_wwids(snap: _Snapshot, report: AuditReport) -> None:
    if snap.wwids is None:
        return
    from brick_agent.host.scsi import same_wwid

    known: list[str] = []
    known += [d.wwid for d in snap.scsi or [] if d.wwid]
    known += [m.wwid for m in snap.maps or []]
    nvme_wwids = {ns.wwid.lower() for ns in snap.namespaces or [] if ns.wwid}
    for entry in snap.wwids:
        if entry.lower() in nvme_wwids or any(same_wwid(entry, w) for w in known):
            continue
        report.add(
            WWIDS_ENTRY_WITHOUT_DEVICE,
            entry,
            f"/etc/multipath/wwids lists {entry} but no device or map has that WWID",
        )


def _still_transient(
    roots: HostRoots, transient: list[Any], grace: float, sleep: Callable[[float], None]
) -> list[Any]:
    """The controllers of ``transient`` still in a transient state after ``grace`` seconds
    (each read again)."""
    from brick_agent.host import nvme

    sleep(grace)
    still = set()
    for c in transient:
        again = nvme.read_controller(roots, c.name)
        if again is not None and (again.state or "") in NVME_TRANSIENT_STATES:
            still.add(c.name)
    return [c for c in transient if c.name in still]


def _check_nvme(
    roots: HostRoots,
    snap: _Snapshot,
    report: AuditReport,
    grace: float,
    sleep: Callable[[float], None],
) -> None:
    if snap.controllers is None:
        return
    fabrics = [c for c in snap.controllers if (c.transport or "").lower() != "pcie"]
    transient = [c for c in fabrics if (c.state or "") in NVME_TRANSIENT_STATES]
    if transient and grace > 0:
        transient = _still_transient(roots, transient, grace, sleep)
    transient_names = {c.name for c in transient}
    for c in fabrics:
        where = (
            f"{c.transport or '?'} controller to {c.subsysnqn or '?'} at "
            f"{c.traddr or '?'}:{c.trsvcid or '-'}"
        )
        discovery = c.subsysnqn == NVME_DISCOVERY_NQN
        if not c.namespaces and not discovery:
            report.add(NVME_CONTROLLER_WITHOUT_NAMESPACES, c.name, f"{where} has no namespace")
        state = c.state or "unknown"
        if state == "live":
            continue
        if state in NVME_TRANSIENT_STATES and c.name not in transient_names:
            continue  # it left the transient state during the grace period
        report.add(
            NVME_CONTROLLER_NOT_LIVE,
            c.name,
            f"{where} is in state {state}"
            + (
                f" (still after {grace:g}s)" if grace > 0 and state in NVME_TRANSIENT_STATES else ""
            ),
        )
    for ns in snap.namespaces or []:
        if ns.native_multipath and not ns.paths:
            report.add(
                NVME_NAMESPACE_WITHOUT_PATHS,
                ns.name,
                f"NVMe namespace head {ns.name} (nsid {ns.nsid}, uuid {ns.uuid or '?'}) "
                "has no controller path",
            )


def _check_unused_controllers(
    roots: HostRoots, snap: _Snapshot, report: AuditReport, attachments: Mapping[str, Any]
) -> None:
    """Fabrics controllers whose namespaces are all neither attached through brick_agent
    (``attachments``: the ledger's content) nor used on the host: the last detach of a
    shared subsystem kept the controller while the array still exports them."""
    from brick_agent.connectors.nvmeof.connector import ledger_claims
    from brick_agent.host.usage import devices_users

    for c in snap.controllers or []:
        if (c.transport or "").lower() == "pcie" or c.subsysnqn == NVME_DISCOVERY_NQN:
            continue
        nss = [ns for ns in snap.namespaces or [] if c.name in ns.controllers]
        if not nss or ledger_claims(attachments, c.subsysnqn or "", nss):
            continue
        if devices_users(roots, [ns.name for ns in nss]):
            continue
        report.add(
            NVME_CONTROLLER_NAMESPACES_UNUSED,
            c.name,
            f"{c.transport or '?'} controller to {c.subsysnqn or '?'} shows namespace(s) "
            f"{', '.join(ns.name for ns in nss)}: none is attached through brick_agent, "
            "none is held, mounted, swapped on or open on this host",
        )


def _nvme_volume(ns: Any) -> PresentVolume:
    return PresentVolume("NVMEOF", (ns.name,), wwid=ns.wwid, uuid=ns.uuid, nguid=ns.nguid)


def _check_links(roots: HostRoots, snap: _Snapshot, report: AuditReport) -> None:
    from brick_agent.host.block import resolve_dev_path

    for kind in LINK_KINDS:
        base = roots.devfs("disk", kind)
        for entry in sysfs.list_dir(base):
            link = os.path.join(base, entry)
            try:
                target = os.readlink(link)
            except OSError:
                continue  # not a link, or removed while we read
            shown = f"/dev/disk/{kind}/{entry}"
            final = resolve_dev_path(roots, link)
            if final is None:
                report.add(DANGLING_LINK, shown, f"{shown} -> {target} points to nothing")
            elif snap.block_names is not None and os.path.basename(final) not in snap.block_names:
                report.add(
                    STALE_LINK,
                    shown,
                    f"{shown} -> {target}: the kernel has no block device "
                    f"{os.path.basename(final)}",
                )


# ---------------------------------------------------------------- volumes


def _present_volumes(snap: _Snapshot) -> list[PresentVolume]:
    from brick_agent.host.scsi import scsi_wwid_to_udev

    grouped: dict[tuple[str, str], list[str]] = {}
    for d in snap.scsi or []:
        if (d.scsi_type not in (None, 0)) or d.name is None:
            continue  # not a disk (enclosure, controller LUN) or no block device
        if _is_iscsi_device(d, snap):
            proto = "ISCSI"
        elif _rport_of(d.sysfs_path) is not None:
            proto = "FIBRE_CHANNEL"
        else:
            continue  # local disk
        ident = scsi_wwid_to_udev(d.wwid) if d.wwid else f"?{d.name}"
        grouped.setdefault((proto, ident), []).append(d.name)
    vols = [
        PresentVolume(proto, tuple(names), wwid=None if ident.startswith("?") else ident)
        for (proto, ident), names in grouped.items()
    ]
    fabrics = {
        c.name for c in snap.controllers or [] if (c.transport or "").lower() not in ("pcie", "")
    }
    for ns in snap.namespaces or []:
        if ns.controllers and not set(ns.controllers) & fabrics:
            continue  # a local PCIe namespace (a head without any path counts: stale fabric)
        vols.append(_nvme_volume(ns))
    return vols


def _compare(report: AuditReport, expected: list[ExpectedVolume]) -> None:
    matched: set[int] = set()
    for vol in report.volumes:
        hits = [i for i, e in enumerate(expected) if e.matches(vol)]
        matched.update(hits)
        if not hits:
            report.add(
                UNEXPECTED_VOLUME,
                vol.label,
                f"{vol.protocol} volume {vol.label} on {', '.join(vol.devices)} "
                "is present but not expected",
            )
    for i, e in enumerate(expected):
        if i not in matched:
            report.add(
                MISSING_VOLUME,
                e.label,
                f"{e.protocol} volume {e.label} is expected but not present",
            )


def present_volumes(roots: HostRoots = DEFAULT_ROOTS) -> list[PresentVolume]:
    """The fabric volumes (iSCSI, FC LUNs, NVMe-oF namespaces) the host has now."""
    report = AuditReport()
    volumes = _present_volumes(_read(roots, report))
    if report.errors:
        raise errors.BrickError("cannot list the host's volumes: " + "; ".join(report.errors))
    return volumes


def audit_against_ledger(
    ledger: Any, roots: HostRoots = DEFAULT_ROOTS, *, nvme_grace: float = 0.0
) -> AuditReport:
    """:func:`audit` with the ledger's volumes as ``expected`` and its concerns as findings.

    A ledger that cannot be read (or is corrupt) is an error of the report, never
    an empty ``expected`` list (which would call every live volume unexpected).
    """
    from brick_agent.ledger import LedgerError

    failure: str | None
    try:
        expected: list[ExpectedVolume] | None = expected_from_ledger(ledger)
        concerns = ledger.concerns()
    except LedgerError as exc:
        expected, concerns = None, []
        failure = f"attachment ledger: {type(exc).__name__}: {exc}"
    else:
        failure = None
    report = audit(roots, expected, nvme_grace=nvme_grace, ledger=None if failure else ledger)
    if failure:
        report.errors.append(failure)
    for kind, name, detail in concerns:
        report.add(kind, name, detail)
    return report
