"""The cleanup plan: the leftover audit's findings, each examined (:mod:`.examine`).

Which findings become candidates::

    iscsi_session_without_luns          -> iscsi_session_without_luns (logout + delete record)
    iscsi_node_record_without_session   -> iscsi_node_record_without_session (delete record)
    multipath_map_without_paths         -> multipath_map_without_usable_paths (multipath -f)
    multipath_map_all_paths_failed      -> the same, with --ledger only
    nvme_controller_without_namespaces  -> nvme_controller_without_namespaces (delete_controller)
    nvme_controller_namespaces_unused   -> the same kind of action, with --ledger only
    wwids_entry_without_device          -> wwids_entry_without_device (multipath -w)
    dangling_link                       -> dangling_link (rm)
    unexpected_volume (iSCSI/FC, --ledger) -> scsi_device_not_in_ledger per LUN (flush,
        delete), the map over them (multipath_map_not_in_ledger) and sessions left without
        LUNs by them

Planned in that dependency order: maps first (their paths are then unheld), then LUNs
(their sessions are then without LUNs), then sessions.
"""

from __future__ import annotations

from typing import Any

from brick_agent import audit as A
from brick_agent.cleanup import items as K
from brick_agent.cleanup.examine import SESSION_RE, Context, examine
from brick_agent.cleanup.items import Kept, Plan, PlanItem
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

#: audit finding kind -> plan item kind (findings of other kinds are not acted on)
FROM_AUDIT = {
    A.ISCSI_SESSION_WITHOUT_LUNS: K.ISCSI_SESSION,
    A.ISCSI_NODE_RECORD_WITHOUT_SESSION: K.ISCSI_NODE,
    A.MULTIPATH_MAP_WITHOUT_PATHS: K.MAP,
    A.MULTIPATH_MAP_ALL_PATHS_FAILED: K.MAP,
    A.NVME_CONTROLLER_WITHOUT_NAMESPACES: K.NVME_CONTROLLER,
    A.NVME_CONTROLLER_NAMESPACES_UNUSED: K.NVME_UNUSED,
    A.WWIDS_ENTRY_WITHOUT_DEVICE: K.WWID,
    A.DANGLING_LINK: K.LINK,
}


def _candidates(report: A.AuditReport) -> list[tuple[str, str]]:
    """(item kind, object) for each finding the cleanup may act on, deduplicated."""
    out: list[tuple[str, str]] = []
    for f in report.findings:
        kind = FROM_AUDIT.get(f.kind)
        if kind and (kind, f.name) not in out:
            out.append((kind, f.name))
    return out


def _unexpected_luns(ctx: Context, report: A.AuditReport) -> list[str]:
    """H:C:T:L of the LUNs of the iSCSI/FC volumes the ledger does not hold."""
    names = {
        dev
        for vol in report.volumes
        if vol.protocol in ("ISCSI", "FIBRE_CHANNEL")
        for f in report.of_kind(A.UNEXPECTED_VOLUME)
        if f.name == vol.label
        for dev in vol.devices
    }
    return sorted(str(d.hctl) for d in ctx.scsi if d.name in names)


def _holding_maps(ctx: Context, luns: list[str]) -> list[str]:
    from brick_agent.host import multipath

    names = {d.name for d in ctx.scsi if str(d.hctl) in luns and d.name}
    return [
        m.name or m.dm_name
        for m in multipath.multipath_maps(ctx.roots)
        if m.slaves and set(m.slaves) <= names
    ]


def _sessions_of(ctx: Context, luns: list[str]) -> list[str]:
    """The sessions carrying any of ``luns``."""
    found = (SESSION_RE.search(d.sysfs_path + "/") for d in ctx.scsi if str(d.hctl) in luns)
    return sorted({f"session{m.group(1)}" for m in found if m})


class _Planner:
    """Examine candidates in order; what is planned loosens the later examinations."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.plan = Plan()
        self.seen: set[tuple[str, str]] = set()

    def add(self, kind: str, obj: str) -> None:
        if (kind, obj) in self.seen:
            return
        self.seen.add((kind, obj))
        try:
            found = examine(self.ctx, kind, obj)
        except Exception as exc:  # noqa: BLE001 - one unreadable object must not hide the rest
            self.plan.errors.append(f"examine {kind} {obj}: {type(exc).__name__}: {exc}")
            return
        if isinstance(found, PlanItem):
            self.plan.items.append(found)
            self.ctx.planned.add(str(found.evidence.get("dm") or found.object))
        elif isinstance(found, Kept):
            self.plan.kept.append(found)


def build_plan(
    roots: HostRoots = DEFAULT_ROOTS, ledger: Any = None, *, authoritative: bool = False
) -> Plan:
    """The cleanup plan of the host at ``roots``.

    ``ledger``: the :class:`~brick_agent.ledger.AttachmentLedger` (None: none on this
    host); whatever it records, and any attach it shows pending, is kept.
    ``authoritative`` (``--ledger``): fabric LUNs, maps and controllers that no ledger
    volume owns are leftovers too.  An unreadable ledger raises (nothing is planned).
    """
    data = ledger.read() if ledger is not None else None
    if authoritative and ledger is not None:
        report = A.audit_against_ledger(ledger, roots)
    else:
        report = A.audit(roots, ledger=ledger)
    planner = _Planner(Context(roots, data, authoritative=authoritative))
    planner.plan.errors += report.errors
    candidates = _candidates(report)
    luns = _unexpected_luns(planner.ctx, report) if planner.ctx.authoritative else []
    for kind, obj in candidates:
        if kind == K.MAP:
            planner.add(kind, obj)
    for obj in _holding_maps(planner.ctx, luns):
        planner.add(K.MAP_NOT_IN_LEDGER, obj)
    for obj in luns:
        planner.add(K.SCSI_DEVICE, obj)
    for obj in _sessions_of(planner.ctx, luns):
        planner.add(K.ISCSI_SESSION, obj)
    for kind, obj in candidates:
        if kind != K.MAP:
            planner.add(kind, obj)
    planner.plan.items.sort(key=lambda i: K.ORDER.index(i.kind))
    return planner.plan
