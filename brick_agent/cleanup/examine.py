"""Is one object a leftover the cleanup may remove?  Its evidence, or why it is kept.

Each ``examine_*`` reads the host views afresh (through :class:`Context`, which reads
each view once) and returns a :class:`~.items.PlanItem` (a leftover, with the
evidence that makes it one and the exact action), a :class:`~.items.Kept` (a
leftover candidate the cleanup must not touch, and why), or None (not a leftover,
or gone).  The plan calls them for the audit's findings; apply calls them again for
each item right before acting, under the item's lock.

Never a candidate: anything a ledger volume owns (by identity or by its recorded
device path), anything of a target or subsystem with an attach pending in the
ledger, a device that is held, open, mounted or swapped on (or whose partitions or
stacked devices are), the firmware's iSCSI boot target, node records logged in at
boot (``node.startup = automatic``), local (non-fabric) devices and maps, NVMe
controllers made with another host NQN.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

from brick_agent.cleanup import items as K
from brick_agent.cleanup.items import Kept, PlanItem
from brick_agent.host import disk_links, iscsi, multipath, nvme, nvme_identity, scsi, usage
from brick_agent.host.roots import HostRoots
from brick_agent.ledger.store import same_identity

Result = PlanItem | Kept | None

SESSION_RE = re.compile(r"/session(\d+)/")
_RPORT_RE = re.compile(r"/(rport-\d+:\d+-\d+)/")
_DM_HOLDER = re.compile(r"^(\S+) held by (dm-\d+)$")
DISCOVERY_NQN = "nqn.2014-08.org.nvmexpress.discovery"


class Context:
    """The host views one examination needs, each read at most once.

    ``ledger``: the ledger's content (None: no ledger on this host); ``authoritative``:
    the operator gave ``--ledger`` (fabric devices and controllers it does not own are
    leftovers); ``planned``: while planning, the dm names of maps and the H:C:T:L of LUNs
    the plan removes first (a path held only by such a map is not in use, a session
    whose LUNs are all such LUNs is without LUNs); empty when applying.
    """

    def __init__(
        self,
        roots: HostRoots,
        ledger: dict[str, Any] | None = None,
        *,
        authoritative: bool = False,
        planned: Iterable[str] = (),
    ) -> None:
        self.roots = roots
        self.ledger = ledger
        self.authoritative = authoritative and ledger is not None
        self.planned = set(planned)

    @functools.cached_property
    def sessions(self) -> list[iscsi.IscsiSession]:
        return iscsi.iscsi_sessions(self.roots)

    @functools.cached_property
    def scsi(self) -> list[scsi.ScsiDevice]:
        return scsi.scsi_devices(self.roots)

    @functools.cached_property
    def namespaces(self) -> list[nvme.NvmeNamespace]:
        return nvme.nvme_namespaces(self.roots)

    @functools.cached_property
    def host_nqn(self) -> str | None:
        return nvme_identity.read_identity(self.roots)[0]

    # ------------------------------------------------------------ ledger
    def ledger_owner(self, identity: str | None, devices: Iterable[str]) -> str | None:
        """The ledger key of the volume with ``identity`` or recorded at one of
        ``devices`` (kernel names); None when no ledger volume owns it."""
        names = set(devices)
        for key, entry in (self.ledger or {}).get("volumes", {}).items():
            if identity and same_identity(str(entry.get("identity") or ""), identity):
                return str(key)
            if self._recorded_device(entry) in names:
                return str(key)
        return None

    def _recorded_device(self, entry: dict[str, Any]) -> str | None:
        from brick_agent.host.block import resolve_dev_path

        path = (entry.get("device_info") or {}).get("path")
        if not isinstance(path, str) or not path:
            return None
        final = resolve_dev_path(self.roots, path)
        return os.path.basename(final) if final else None

    def pending(self, prefix: str) -> bool:
        """An attach whose lookup key starts with ``prefix`` is pending in the ledger."""
        return any(
            str(k).lower().startswith(prefix.lower())
            for p in (self.ledger or {}).get("pending", ())
            for k in p.get("lookup", ())
        )

    def ledger_at(self, lookup: str) -> str | None:
        """Identity the ledger recorded at address ``lookup`` (``iscsi:IQN:LUN``)."""
        for entry in (self.ledger or {}).get("volumes", {}).values():
            if lookup in entry.get("lookup", ()):
                return str(entry.get("identity") or "?")
        return None

    # ------------------------------------------------------------ use
    def users(self, name: str) -> list[str]:
        """What uses block device ``name``; a holder that is a planned map is not a use."""
        found = usage.device_users(self.roots, name)
        return [u for u in found if not _held_by_planned(u, self.planned)]


def _held_by_planned(user: str, planned: set[str]) -> bool:
    m = _DM_HOLDER.match(user)
    return bool(m and m.group(2) in planned)


def _first(*checks: Callable[[], str | None]) -> str | None:
    """The first reason any check gives (checks run lazily, in order)."""
    for check in checks:
        reason = check()
        if reason:
            return reason
    return None


# ---------------------------------------------------------------- iSCSI
def _boot(ctx: Context, iqn: str, address: str | None, port: int | None) -> str | None:
    if usage.is_boot_target(ctx.roots, iqn, address, port):
        return "the firmware's iSCSI boot target (iBFT)"
    return None


def _iscsi_pending(ctx: Context, iqn: str) -> str | None:
    return f"an attach to {iqn} is pending in the ledger" if ctx.pending(f"iscsi:{iqn}:") else None


def examine_session(ctx: Context, obj: str) -> Result:
    """``sessionN``: an iSCSI session without LUNs (or whose LUNs are all planned)."""
    sid = int(obj.removeprefix("session")) if re.fullmatch(r"session\d+", obj) else None
    s = None if sid is None else iscsi.read_session(ctx.roots, sid)
    if s is None or not s.target_iqn or not s.portal:
        return None
    luns = [str(d.hctl) for d in iscsi.session_devices(ctx.roots, s)]
    if any(h not in ctx.planned for h in luns):
        return None  # it has a LUN (not one the plan removes first)
    why = _first(
        lambda: _boot(ctx, s.target_iqn or "", s.portal_address, s.portal_port),
        lambda: _iscsi_pending(ctx, s.target_iqn or ""),
    )
    if why:
        return Kept(K.ISCSI_SESSION, obj, why)
    iface = s.iface_name or "default"
    node = f"iscsiadm -m node -T {s.target_iqn} -p {s.portal} -I {iface}"
    return PlanItem(
        K.ISCSI_SESSION,
        obj,
        {"session": s.sid, "target": s.target_iqn, "portal": s.portal, "iface": iface},
        f"{node} --logout; {node} --op delete",
        f"host{s.host_number}, state {s.state or '?'}, "
        + (f"its LUNs {', '.join(luns)} are removed first" if luns else "no LUN"),
    )


def examine_node(ctx: Context, obj: str) -> Result:
    """``IQN PORTAL IFACE``: a node record with no session."""
    rec = next((r for r in iscsi.iscsi_node_records(ctx.roots) if _node_name(r) == obj), None)
    if rec is None:
        return None
    address = iscsi.normalize_address(rec.address)
    for s in ctx.sessions:
        if (s.target_iqn, iscsi.normalize_address(s.portal_address), s.portal_port) == (
            rec.iqn,
            address,
            rec.port,
        ):
            return None
    startup = rec.settings.get("node.startup")
    why = _first(
        lambda: "logged in at boot (node.startup = automatic)" if startup == "automatic" else None,
        lambda: _boot(ctx, rec.iqn, rec.address, rec.port),
        lambda: _iscsi_pending(ctx, rec.iqn),
    )
    if why:
        return Kept(K.ISCSI_NODE, obj, why)
    return PlanItem(
        K.ISCSI_NODE,
        obj,
        {"record": rec.path, "target": rec.iqn, "portal": rec.portal, "iface": rec.iface},
        f"iscsiadm -m node -T {rec.iqn} -p {rec.portal} -I {rec.iface} --op delete",
        f"node.startup = {startup or '?'}, no session",
    )


def _node_name(rec: iscsi.IscsiNodeRecord) -> str:
    return f"{rec.iqn} {rec.portal} {rec.iface}"


# ---------------------------------------------------------------- SCSI
def _address(ctx: Context, dev: scsi.ScsiDevice) -> tuple[str, dict[str, Any]] | None:
    """(ledger lookup prefix of the LUN's address, evidence of it); None when the LUN is
    not on an iSCSI session or FC remote port (a local disk)."""
    m = SESSION_RE.search(dev.sysfs_path + "/")
    if m:
        s = next((s for s in ctx.sessions if s.sid == int(m.group(1))), None)
        if s is None or not s.target_iqn:
            return None
        where = {"target": s.target_iqn, "portal": s.portal, "lun": dev.hctl.lun}
        return f"iscsi:{s.target_iqn}:", where
    m = _RPORT_RE.search(dev.sysfs_path + "/")
    if m:
        return "fc:", {"rport": m.group(1), "lun": dev.hctl.lun}
    return None


def examine_scsi(ctx: Context, obj: str) -> Result:
    """``H:C:T:L``: a fabric LUN no ledger volume owns (with ``--ledger`` only)."""
    dev = next((d for d in ctx.scsi if str(d.hctl) == obj), None)
    if dev is None or not dev.name or not ctx.authoritative:
        return None
    address = _address(ctx, dev)
    if address is None:
        return Kept(K.SCSI_DEVICE, obj, f"{dev.name} is not an iSCSI or FC LUN")
    prefix, where = address
    udev = dev.udev_wwid
    why = _first(
        lambda: _owned_by(ctx, udev, [dev.name or ""]),
        lambda: f"an attach to {prefix} is pending in the ledger" if ctx.pending(prefix) else None,
        lambda: _in_use(ctx, dev.name or ""),
    )
    if why:
        return Kept(K.SCSI_DEVICE, obj, why)
    detail = f"no ledger volume has WWID {udev or '?'}"
    recorded = ctx.ledger_at(f"{prefix}{dev.hctl.lun}") if prefix != "fc:" else None
    if recorded:
        detail += f"; the ledger recorded {recorded} at this address: its WWID no longer matches"
    return PlanItem(
        K.SCSI_DEVICE,
        obj,
        {"device": dev.name, "wwid": dev.wwid, **where},
        f"flush /dev/{dev.name}; echo 1 > /sys/class/scsi_device/{obj}/device/delete",
        detail,
    )


def _owned_by(ctx: Context, identity: str | None, devices: list[str]) -> str | None:
    key = ctx.ledger_owner(identity, devices)
    return f"in the ledger ({key})" if key else None


def _in_use(ctx: Context, *names: str) -> str | None:
    found = [u for n in names for u in ctx.users(n)]
    return "in use: " + "; ".join(found) if found else None


# ---------------------------------------------------------------- multipath
def _path_states(ctx: Context, mp: multipath.MultipathMap) -> dict[str, str]:
    states = {d.name: d.state or "?" for d in ctx.scsi if d.name}
    return {s: states.get(s, "?") for s in mp.slaves}


def _foreign_path(ctx: Context, mp: multipath.MultipathMap) -> str | None:
    fabric = {d.name for d in ctx.scsi if d.name and _address(ctx, d) is not None}
    for s in mp.slaves:
        if s not in fabric and not s.startswith("nvme"):
            return f"its path {s} is not an iSCSI or FC LUN"
    return None


def examine_map(ctx: Context, obj: str) -> Result:
    """A multipath map without paths, or (with ``--ledger``) whose paths all failed."""
    mp = multipath.map_by_name(ctx.roots, obj)
    if mp is None:
        return None
    states = _path_states(ctx, mp)
    dead = bool(mp.slaves) and all(st.lower() not in ("running", "?") for st in states.values())
    if mp.slaves and not (dead and ctx.authoritative):
        return None
    why = _first(
        lambda: _foreign_path(ctx, mp),
        lambda: _owned_by(ctx, mp.wwid, [mp.dm_name]),
        lambda: _in_use(ctx, mp.dm_name),
    )
    if why:
        return Kept(K.MAP, obj, why)
    shown = ", ".join(f"{s}={st}" for s, st in states.items()) or "no paths"
    return _map_item(K.MAP, mp, f"paths: {shown}")


def _map_item(kind: str, mp: multipath.MultipathMap, detail: str) -> PlanItem:
    return PlanItem(
        kind,
        mp.name or mp.dm_name,
        {"map": mp.name, "dm": mp.dm_name, "wwid": mp.wwid, "paths": sorted(mp.slaves)},
        f"multipath -f {mp.name or mp.dm_name}",
        detail,
    )


def examine_unledgered_map(ctx: Context, obj: str) -> Result:
    """A map (``--ledger``) over fabric LUNs of its WWID that no ledger volume owns."""
    mp = multipath.map_by_name(ctx.roots, obj)
    if mp is None or not ctx.authoritative or not mp.slaves:
        return None
    why = _first(
        lambda: _foreign_path(ctx, mp),
        lambda: _owned_by(ctx, mp.wwid, [mp.dm_name, *mp.slaves]),
        lambda: _in_use(ctx, mp.dm_name),
    )
    if why:
        return Kept(K.MAP_NOT_IN_LEDGER, obj, why)
    return _map_item(K.MAP_NOT_IN_LEDGER, mp, f"no ledger volume has WWID {mp.wwid}")


# ---------------------------------------------------------------- NVMe
def _foreign_controller(ctx: Context, c: nvme.NvmeController) -> str | None:
    if (c.transport or "pcie") == "pcie" or c.subsysnqn == DISCOVERY_NQN:
        return f"{c.name} is not an NVMe-oF I/O controller"
    if ctx.host_nqn is None or c.hostnqn != ctx.host_nqn:
        return f"made with host NQN {c.hostnqn or '?'}, not this host's ({ctx.host_nqn or 'none'})"
    return None


def _ns_claims(ctx: Context, c: nvme.NvmeController, nss: list[nvme.NvmeNamespace]) -> str | None:
    from brick_agent.connectors.nvmeof.connector import ledger_claims

    claims = ledger_claims(ctx.ledger or {}, c.subsysnqn or "", nss, attached_only=False)
    return "; ".join(claims) if claims else None


def examine_controller(ctx: Context, obj: str) -> Result:
    """An NVMe-oF controller of this host without namespaces, or (``--ledger``) whose
    namespaces no ledger volume owns and nothing on the host uses."""
    c = nvme.read_controller(ctx.roots, obj) if re.fullmatch(r"nvme\d+", obj) else None
    if c is None:
        return None
    nss = [ns for ns in ctx.namespaces if obj in ns.controllers]
    kind = K.NVME_UNUSED if nss else K.NVME_CONTROLLER
    if nss and not ctx.authoritative:
        return None
    nqn = c.subsysnqn or ""
    why = _first(
        lambda: _foreign_controller(ctx, c),
        lambda: (
            f"an attach to {nqn} is pending in the ledger" if ctx.pending(f"nvme:{nqn}:") else None
        ),
        lambda: _ns_claims(ctx, c, nss) if nss else None,
        lambda: _in_use(ctx, *[ns.name for ns in nss]),
    )
    if why:
        return Kept(kind, obj, why)
    names = [ns.name for ns in nss]
    flush = f"flush {', '.join('/dev/' + n for n in names)}; " if names else ""
    return PlanItem(
        kind,
        obj,
        {
            "controller": obj,
            "subsysnqn": nqn,
            "transport": c.transport,
            "address": c.address,
            "hostnqn": c.hostnqn,
            "namespaces": {ns.name: ns.wwid for ns in nss},
        },
        f"{flush}echo 1 > /sys/class/nvme/{obj}/delete_controller",
        f"state {c.state or '?'}; "
        + (f"namespaces {', '.join(names)} unused" if names else "no namespace"),
    )


# ---------------------------------------------------------------- wwids, links
def examine_wwid(ctx: Context, obj: str) -> Result:
    """An ``/etc/multipath/wwids`` entry no present map, LUN or namespace has."""
    if obj not in multipath.wwids_file_entries(ctx.roots):
        return None
    if any(d.wwid and scsi.same_wwid(d.wwid, obj) for d in ctx.scsi):
        return None
    if multipath.map_for_wwid(ctx.roots, obj) is not None:
        return None
    if any(ns.wwid and ns.wwid.lower() == obj.lower() for ns in ctx.namespaces):
        return None
    key = ctx.ledger_owner(obj, ())
    if key:
        return Kept(K.WWID, obj, f"a ledger volume has that WWID ({key})")
    return PlanItem(
        K.WWID,
        obj,
        {"wwid": obj, "file": "/etc/multipath/wwids"},
        f"multipath -w {obj}",
        "no multipath map, SCSI device or NVMe namespace has that WWID",
    )


def examine_link(ctx: Context, obj: str) -> Result:
    """``/dev/disk/by-{id,path}/NAME``: a link whose target does not exist."""
    split = disk_links.split_link(obj)
    if split is None:
        return None
    kind, name = split
    target = disk_links.link_target(ctx.roots, kind, name)
    if target is None or disk_links.target_exists(ctx.roots, kind, target):
        return None
    if not disk_links.is_fabric_link(kind, name):
        return Kept(K.LINK, obj, "not a link udev makes for a fabric volume")
    return PlanItem(
        K.LINK, obj, {"link": obj, "target": target}, f"rm {obj}", f"{target} is missing"
    )


EXAMINE: dict[str, Callable[[Context, str], Result]] = {
    K.MAP: examine_map,
    K.MAP_NOT_IN_LEDGER: examine_unledgered_map,
    K.SCSI_DEVICE: examine_scsi,
    K.ISCSI_SESSION: examine_session,
    K.ISCSI_NODE: examine_node,
    K.NVME_CONTROLLER: examine_controller,
    K.NVME_UNUSED: examine_controller,
    K.WWID: examine_wwid,
    K.LINK: examine_link,
}


def examine(ctx: Context, kind: str, obj: str) -> Result:
    """Examine ``obj`` as a leftover of ``kind`` (:data:`EXAMINE`)."""
    return EXAMINE[kind](ctx, obj)
