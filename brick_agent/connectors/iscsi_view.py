"""Small read-only helpers the iSCSI connector needs on top of :mod:`brick_agent.host`."""

from __future__ import annotations

import errno
import os
import re

from brick_agent.host import iscsi as host_iscsi
from brick_agent.host import sysfs
from brick_agent.host.iscsi import IscsiSession, normalize_address, session_devices
from brick_agent.host.roots import HostRoots
from brick_agent.host.scsi import ScsiDevice

__all__ = ["session_lun", "read_session", "iscsi_sessions", "find_sessions"]

# A connection whose socket is down (logging in, recovering, portal dead) fails
# reads of its current 'address'/'port' with ENOTCONN; brick_agent.host.sysfs
# does not (yet) count that as "unreadable", so its session reader raises.
_CONN_DOWN = frozenset({errno.ENOTCONN, errno.ESHUTDOWN, errno.ECONNRESET})
_SESSION_RE = re.compile(r"session(\d+)")


def _attr(path: str) -> str | None:
    try:
        value = sysfs.read_attr(path)
    except OSError as exc:
        if exc.errno in _CONN_DOWN:
            return None
        raise
    return value if value not in ("", "<NULL>", "(null)") else None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _read_session_conn_down(roots: HostRoots, sid: int) -> IscsiSession | None:
    real = sysfs.resolve(roots.sysfs("class", "iscsi_session", f"session{sid}"))
    if real is None:
        return None
    device_path = sysfs.resolve(os.path.join(real, "device"))
    conn = roots.sysfs("class", "iscsi_connection", f"connection{sid}:0")
    host = None
    for part in reversed((device_path or real).split(os.sep)):
        if part.startswith("host") and part[4:].isdigit():
            host = int(part[4:])
            break
    return IscsiSession(
        sid=sid, target_iqn=_attr(os.path.join(real, "targetname")),
        tpgt=_int(_attr(os.path.join(real, "tpgt"))),
        portal_address=_attr(os.path.join(conn, "persistent_address")),
        portal_port=_int(_attr(os.path.join(conn, "persistent_port"))),
        state=_attr(os.path.join(real, "state")), host_number=host,
        iface_name=_attr(os.path.join(real, "ifacename")), sysfs_path=real,
        device_path=device_path, connection_state=_attr(os.path.join(conn, "state")))


def read_session(roots: HostRoots, sid: int) -> IscsiSession | None:
    """host.iscsi.read_session, tolerating a connection that is down (see _CONN_DOWN)."""
    try:
        return host_iscsi.read_session(roots, sid)
    except OSError as exc:
        if exc.errno not in _CONN_DOWN:
            raise
        return _read_session_conn_down(roots, sid)


def iscsi_sessions(roots: HostRoots) -> list[IscsiSession]:
    out = []
    for entry in sysfs.list_dir(roots.sysfs("class", "iscsi_session"), _SESSION_RE):
        session = read_session(roots, int(entry[len("session"):]))
        if session is not None:
            out.append(session)
    return out


def find_sessions(roots: HostRoots, iqn: str, address: str, port: int) -> list[IscsiSession]:
    """Sessions to ``iqn`` through portal ``address:port`` (persistent or current address)."""
    want = normalize_address(address)
    out = []
    for s in iscsi_sessions(roots):
        if (s.target_iqn or "").lower() != iqn.strip().lower():
            continue
        pairs = {(normalize_address(s.portal_address), s.portal_port),
                 (normalize_address(s.current_address), s.current_port)}
        if (want, int(port)) in pairs:
            out.append(s)
    return out


def session_lun(roots: HostRoots, session: IscsiSession, lun: int) -> ScsiDevice | None:
    """The LUN ``lun`` of ``session`` (any state), or None."""
    for dev in session_devices(roots, session):
        if dev.hctl.lun == lun:
            return dev
    return None
