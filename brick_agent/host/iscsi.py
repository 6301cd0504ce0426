"""Read-only view of open-iscsi sessions from sysfs (no iscsiadm).

Layout read (iscsi_tcp, kernel 6.x)::

    /sys/class/iscsi_session/sessionS
            -> ../../devices/platform/hostH/sessionS/iscsi_session/sessionS
        targetname, tpgt, state (LOGGED_IN / FAILED / FREE), ifacename, initiatorname
        device -> ../../../sessionS          (the session device: holds targetH:C:T/H:C:T:L)
    /sys/class/iscsi_connection/connectionS:0
        persistent_address, persistent_port  (portal used to log in)
        address, port                        (current, may differ after a redirect)
        state

The session's SCSI host number is the ``hostH`` component of the resolved
session path.  Credentials attributes (username/password) are never read.

Also read here, from ``<etc>/iscsi``: the host's initiator name
(``initiatorname.iscsi``) and open-iscsi's node records (``nodes/``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Collection, Iterable, Mapping

from brick_agent.host import sysfs
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.host.scsi import (
    Hctl,
    ListedLun,
    ScsiDevice,
    list_lun,
    read_scsi_device,
    scsi_devices,
)

_SESSION_RE = re.compile(r"session(\d+)")
_HOST_RE = re.compile(r"host(\d+)")
_TARGET_RE = re.compile(r"target(\d+):(\d+):(\d+)")
_LUN_RE = re.compile(r"\d+:\d+:\d+:\d+")


@dataclasses.dataclass(frozen=True)
class IscsiSession:
    sid: int
    target_iqn: str | None
    tpgt: int | None
    # persistent (login) address, as the kernel prints it (no brackets)
    portal_address: str | None
    portal_port: int | None
    state: str | None  # 'LOGGED_IN', 'FAILED', 'FREE'
    host_number: int | None
    iface_name: str | None
    sysfs_path: str  # resolved .../sessionS/iscsi_session/sessionS
    device_path: str | None = None  # resolved .../hostH/sessionS (parent of targetH:C:T)
    current_address: str | None = None
    current_port: int | None = None
    connection_state: str | None = None
    initiator_name: str | None = None

    @property
    def name(self) -> str:
        return f"session{self.sid}"

    @property
    def portal(self) -> str | None:
        """``'addr:port'`` with brackets around IPv6 addresses."""
        if self.portal_address is None:
            return None
        return format_portal(self.portal_address, self.portal_port)

    @property
    def logged_in(self) -> bool:
        return self.state == "LOGGED_IN"


def normalize_address(address: str | None) -> str | None:
    """Comparable form of an address: brackets/zone dropped for IP literals, IPs canonical,
    names lowercased."""
    if address is None:
        return None
    a = address.strip()
    if a.startswith("[") and a.endswith("]"):
        a = a[1:-1]
    try:
        return ipaddress.ip_address(a.split("%", 1)[0]).compressed
    except ValueError:
        return a.lower()


def split_portal(portal: str, default_port: int = 3260) -> tuple[str, int]:
    """``'10.0.0.1:3260'``, ``'[fe80::1]:3260'``, ``'fe80::1'``, ``'host'`` -> (address, port).

    Raises ``ValueError`` on a non-numeric port.  A trailing ``,tpgt`` is ignored.
    """
    p = portal.strip().split(",", 1)[0]
    if p.startswith("["):
        addr, _, rest = p[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return addr, int(port) if port else default_port
    if p.count(":") == 1:
        addr, _, port = p.partition(":")
        return addr, int(port) if port else default_port
    return p, default_port  # bare IPv6 without port, or bare host


def format_portal(address: str, port: int | None) -> str:
    addr = address
    if ":" in addr and not addr.startswith("["):
        addr = f"[{addr}]"
    return addr if port is None else f"{addr}:{port}"


def _host_number(path: str | None) -> int | None:
    if not path:
        return None
    for part in reversed(path.split(os.sep)):
        m = _HOST_RE.fullmatch(part)
        if m:
            return int(m.group(1))
    return None


def _connection_dir(roots: HostRoots, sid: int, device_path: str | None) -> str | None:
    cls = roots.sysfs("class", "iscsi_connection")
    first = os.path.join(cls, f"connection{sid}:0")  # open-iscsi's only one: no listing
    if os.path.isdir(first):
        return first
    names = sysfs.list_dir(cls, re.compile(rf"connection{sid}:\d+"))
    if names:
        return os.path.join(cls, names[0])
    # fall back to the device tree: sessionS/connectionS:0/iscsi_connection/connectionS:0
    if device_path:
        for entry in sysfs.list_dir(device_path, re.compile(rf"connection{sid}:\d+")):
            candidate = os.path.join(device_path, entry, "iscsi_connection", entry)
            if os.path.isdir(candidate):
                return candidate
    return None


def read_session(roots: HostRoots, sid: int) -> IscsiSession | None:
    """Session ``sid`` or ``None`` if it does not exist (or vanished)."""
    link = roots.sysfs("class", "iscsi_session", f"session{sid}")
    real = sysfs.resolve(link)
    if real is None:
        return None

    def attr(name: str) -> str | None:
        value = sysfs.read_attr(os.path.join(real, name))
        return value if value not in ("", "<NULL>", "(null)") else None

    device_path = sysfs.resolve(os.path.join(real, "device"))
    conn = _connection_dir(roots, sid, device_path)

    def cattr(name: str) -> str | None:
        if conn is None:
            return None
        value = sysfs.read_attr(os.path.join(conn, name))
        return value if value not in ("", "<NULL>", "(null)") else None

    def as_int(text: str | None) -> int | None:
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None

    current_address, current_port = cattr("address"), as_int(cattr("port"))
    portal_address = cattr("persistent_address") or current_address
    portal_port = as_int(cattr("persistent_port"))
    if portal_port is None:
        portal_port = current_port
    return IscsiSession(
        sid=sid,
        target_iqn=attr("targetname"),
        tpgt=as_int(attr("tpgt")),
        portal_address=portal_address,
        portal_port=portal_port,
        state=attr("state"),
        host_number=_host_number(device_path or real),
        iface_name=attr("ifacename"),
        sysfs_path=real,
        device_path=device_path,
        current_address=current_address,
        current_port=current_port,
        connection_state=cattr("state"),
        initiator_name=attr("initiatorname"),
    )


def iscsi_sessions(roots: HostRoots = DEFAULT_ROOTS) -> list[IscsiSession]:
    """All iSCSI sessions, by session id."""
    out = []
    for entry in sysfs.list_dir(roots.sysfs("class", "iscsi_session"), _SESSION_RE):
        session = read_session(roots, int(entry[len("session") :]))
        if session is not None:
            out.append(session)
    return out


def session_targets(session: IscsiSession) -> list[tuple[int, int, int]]:
    """(host, channel, target) of the ``targetH:C:T`` directories under the session."""
    if not session.device_path:
        return []
    out = []
    for entry in sysfs.list_dir(session.device_path, _TARGET_RE):
        m = _TARGET_RE.fullmatch(entry)
        assert m is not None  # list_dir returns matching names only
        h, c, t = (int(g) for g in m.groups())
        out.append((h, c, t))
    return out


def session_devices(roots: HostRoots, session: IscsiSession) -> list[ScsiDevice]:
    """SCSI LUNs reached through ``session``.

    Reads the ``targetH:C:T/H:C:T:L`` directories below the session device
    (exact even when an offload HBA carries several sessions on one host).
    When the session's device directory is unknown, falls back to the LUNs
    of the session's SCSI host.
    """
    if session.device_path and os.path.isdir(session.device_path):
        out = []
        for entry in sysfs.list_dir(session.device_path, _TARGET_RE):
            tdir = os.path.join(session.device_path, entry)
            for lun in sysfs.list_dir(tdir, _LUN_RE):
                dev = read_scsi_device(os.path.join(tdir, lun), Hctl.parse(lun), resolved=True)
                if dev is not None:
                    out.append(dev)
        return sorted(out, key=lambda d: d.hctl)
    if session.host_number is None:
        return []
    return scsi_devices(roots, host=session.host_number)


def session_lun(roots: HostRoots, session: IscsiSession, lun: int) -> ScsiDevice | None:
    """LUN ``lun`` of ``session`` (any state), or None: only that LUN's directory is read,
    whatever the number of other LUNs on the session (the first in address order, as
    :func:`session_devices` would list it)."""
    if not (session.device_path and os.path.isdir(session.device_path)):
        return next((d for d in session_devices(roots, session) if d.hctl.lun == lun), None)
    for entry in sysfs.list_dir(session.device_path, _TARGET_RE):
        m = _TARGET_RE.fullmatch(entry)
        assert m is not None  # list_dir returns matching names only
        hctl = Hctl(int(m.group(1)), int(m.group(2)), int(m.group(3)), lun)
        dev = read_scsi_device(
            os.path.join(session.device_path, entry, str(hctl)), hctl, resolved=True
        )
        if dev is not None:
            return dev
    return None


def session_has_luns(roots: HostRoots, session: IscsiSession) -> bool:
    """Does ``session`` carry any LUN (its directory only: nothing of a LUN is read)?"""
    if not (session.device_path and os.path.isdir(session.device_path)):
        return bool(session_devices(roots, session))
    return any(
        sysfs.list_dir(os.path.join(session.device_path, entry), _LUN_RE, sort=False)
        for entry in sysfs.list_dir(session.device_path, _TARGET_RE, sort=False)
    )


def session_luns(
    roots: HostRoots, session: IscsiSession, disks: Mapping[str, str] | None = None
) -> list[ListedLun]:
    """The LUNs of ``session`` as a listing needs them (name, WWID), by address.

    Same LUNs and order as :func:`session_devices`, with one or two reads per LUN
    (``disks``: :func:`brick_agent.host.scsi.disks_by_hctl`, read once per listing).
    """
    if not (session.device_path and os.path.isdir(session.device_path)):
        return [ListedLun(d.hctl, d.name, d.wwid) for d in session_devices(roots, session)]
    out = []
    for entry in sysfs.list_dir(session.device_path, _TARGET_RE, sort=False):
        tdir = f"{session.device_path}/{entry}"
        for lun in sysfs.list_dir(tdir, _LUN_RE, sort=False):
            # list_dir matched H:C:T:L: four numbers
            listed = list_lun(f"{tdir}/{lun}", Hctl(*map(int, lun.split(":"))), disks)
            if listed is not None:
                out.append(listed)
    return sorted(out, key=_address)


def _address(lun: ListedLun) -> tuple[int, int, int, int]:
    """The sort key of :class:`Hctl`'s order, as a plain tuple (cheaper to compare)."""
    h = lun.hctl
    return (h.host, h.channel, h.target, h.lun)


def find_sessions(
    roots: HostRoots,
    iqn: str,
    portal_address: str | None = None,
    portal_port: int | None = None,
    iface_name: str | None = None,
) -> list[IscsiSession]:
    """Sessions to ``iqn`` (optionally at a portal and through an iface), by sid.

    Addresses are compared normalised (IPv6 brackets, zero-compression, case);
    the persistent (login) and the current address both count as a match.
    """
    want_addr = normalize_address(portal_address)
    out = []
    for s in _sessions_to(roots, iqn):
        if want_addr is not None:
            pairs = {
                (normalize_address(s.portal_address), s.portal_port),
                (normalize_address(s.current_address), s.current_port),
            }
            if not any(
                a == want_addr and (portal_port is None or p == int(portal_port)) for a, p in pairs
            ):
                continue
        if iface_name is not None and s.iface_name not in (iface_name, None):
            continue
        out.append(s)
    return out


def _sessions_to(roots: HostRoots, iqn: str) -> list[IscsiSession]:
    """The sessions whose target is ``iqn``: one read (``targetname``) per other session."""
    base = roots.sysfs("class", "iscsi_session")
    want = iqn.strip().lower()
    out = []
    for entry in sysfs.list_dir(base, _SESSION_RE):
        name = sysfs.read_attr(os.path.join(base, entry, "targetname"))
        if name is None or name.lower() != want:
            continue  # (an unreadable name never matched: read_session gives None then)
        session = read_session(roots, int(entry[len("session") :]))
        if session is not None and (session.target_iqn or "").lower() == want:
            out.append(session)
    return out


def find_session(
    roots: HostRoots,
    iqn: str,
    portal_address: str | None = None,
    portal_port: int | None = None,
    iface_name: str | None = None,
) -> IscsiSession | None:
    """The first (lowest sid) session matching, see :func:`find_sessions`."""
    found = find_sessions(roots, iqn, portal_address, portal_port, iface_name)
    return found[0] if found else None


def initiator_name(roots: HostRoots) -> str | None:
    """This host's iSCSI initiator IQN from /etc/iscsi/initiatorname.iscsi (None if unset)."""
    try:
        with open(roots.etcfs("iscsi", "initiatorname.iscsi"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        line = line.strip()
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if key.strip() == "InitiatorName" and value.strip():
            return value.strip()
    return None


@dataclasses.dataclass(frozen=True)
class IscsiNodeRecord:
    """One record of open-iscsi's node database (``/etc/iscsi/nodes``), credentials unread."""

    iqn: str
    address: str
    port: int
    tpgt: int | None
    iface: str
    path: str  # the record file
    settings: dict[str, str]  # node.startup, node.session.scan, ... (no auth keys)

    @property
    def portal(self) -> str:
        return format_portal(self.address, self.port)


#: node settings kept from a record (evidence of who wrote it); auth keys are never read
_NODE_EVIDENCE = (
    "node.startup",
    "node.conn[0].startup",
    "node.session.scan",
    "node.discovery_type",
    "node.session.timeo.replacement_timeout",
)


def record_fields(lines: Iterable[str], names: Collection[str]) -> dict[str, str]:
    """The ``name = value`` lines of a node record whose name is in ``names``, as open-iscsi
    reads them (the last line of a name wins); other lines (CHAP secrets) are not kept."""
    out: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() in names:
            out[key.strip()] = value.strip()
    return out


def _record_settings(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return record_fields(f, _NODE_EVIDENCE)
    except OSError:
        return {}


def _record(iqn: str, entry: str, iface: str, path: str) -> IscsiNodeRecord | None:
    """``entry`` is ``ADDRESS,PORT,TPGT``, or ``ADDRESS,PORT`` for a record made without
    a portal group tag (``iscsiadm -m node -o new``); IPv6 addresses keep their colons."""
    tail = entry.rsplit(",", 2)
    if len(tail) == 3:
        address, port, tpgt_text = tail
    elif len(tail) == 2:
        (address, port), tpgt_text = tail, ""
    else:
        return None
    if not port.isdigit():
        return None
    tpgt = int(tpgt_text) if tpgt_text.lstrip("-").isdigit() else None
    return IscsiNodeRecord(iqn, address, int(port), tpgt, iface, path, _record_settings(path))


def iscsi_node_records(roots: HostRoots = DEFAULT_ROOTS) -> list[IscsiNodeRecord]:
    """Every record of ``<etc>/iscsi/nodes``: ``IQN/ADDR,PORT,TPGT/IFACE`` files (open-iscsi
    2.x), or ``IQN/ADDR,PORT,TPGT`` files (older layout, iface ``default``)."""
    base = roots.etcfs("iscsi", "nodes")
    out: list[IscsiNodeRecord] = []
    for iqn in sysfs.list_dir(base):
        for entry in sysfs.list_dir(os.path.join(base, iqn)):
            path = os.path.join(base, iqn, entry)
            if os.path.isdir(path):
                found = [
                    _record(iqn, entry, iface, os.path.join(path, iface))
                    for iface in sysfs.list_dir(path)
                ]
            else:
                found = [_record(iqn, entry, "default", path)]
            out += [r for r in found if r is not None]
    return out
