"""iSCSI sessions for the connector: find, log in (once per portal+IQN), discover, log out.

:class:`IscsiSessions` owns everything about sessions and node records: the
per-target locks, SendTargets discovery, merged concurrent logins with manual
scan, and logging out of sessions left without LUNs.  What happens to the
LUNs of a session (scan, identity, maps) is the connector's business.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from brick_agent import locking, metrics
from brick_agent.connectors.iscsi.actions import IscsiActions, NodeSettings
from brick_agent.deadline import Deadline
from brick_agent.errors import BrickError, DeviceNotFound, TargetUnreachable
from brick_agent.host.iscsi import IscsiSession, find_sessions, read_session, session_has_luns
from brick_agent.host.roots import HostRoots
from brick_agent.host.scsi import Hctl
from brick_agent.properties.iscsi import IscsiProperties, IscsiTarget, Portal

LOG = logging.getLogger(__name__)

#: Seconds an undo's lock wait or logout gets even when the attach deadline is spent.
UNDO_LOGOUT_MIN = 3.0

#: With multipath, a dead session fails its I/O after this many seconds so dm
#: retries it on another path (open-iscsi's default of 120 s stalls the volume).
MULTIPATH_REPLACEMENT_TIMEOUT = 15
_LIVE_STATES = (None, "LOGGED_IN")
_LOGINS = locking.SingleFlight()


@dataclasses.dataclass
class AttachRecord:
    """What one connect call created, so a failure can undo exactly that."""

    logins: list[tuple[IscsiTarget, int]] = dataclasses.field(default_factory=list)  # (target, sid)
    prepared: set[tuple[str, str]] = dataclasses.field(default_factory=set)  # (portal, iqn)
    scanned: list[Hctl] = dataclasses.field(default_factory=list)
    via: dict[Hctl, IscsiTarget] = dataclasses.field(default_factory=dict)  # target of a scan
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    #: this call's identity in :data:`~brick_agent.connectors.scsi.volume.CLAIMS`
    owner: object = dataclasses.field(default_factory=object)


@dataclasses.dataclass
class IscsiSessions:
    """Session handling bound to one host, one iface and the connector's options."""

    roots: HostRoots
    actions: IscsiActions
    opts: Any  # the [brick_agent] option group
    iface: str
    watch_factory: Callable[[], Any]
    protocol: ClassVar[str] = "ISCSI"  # the metrics' label

    # ---------------------------------------------------------------- locks
    def lock_timeout(self) -> float:
        # bounded: a stuck holder must not hang every later attach of that target
        return self.opts.login_timeout + self.opts.device_wait_timeout + self.opts.command_timeout

    def target_lock(
        self, target: IscsiTarget, timeout: float | None = None, *, shared: bool = False
    ):
        """The lock of ``target`` (portal+IQN); ``timeout`` defaults to :meth:`lock_timeout`.

        Held shared by what adds to a session or takes one LUN from it (an attach's login
        and scan, a detach's LUN delete: the LUNs of one session are independent, and the
        kernel orders the scans of one SCSI host), exclusive by what ends a session or
        decides from all of its LUNs (logouts, an attach's undo)."""
        return self._lock(target.portal.address, target.iqn, timeout, shared)

    def session_lock(self, session: IscsiSession, *, shared: bool = False):
        """:meth:`target_lock` of the session's target."""
        return self._lock(session.portal or "unknown", session.target_iqn or "?", None, shared)

    def _lock(self, portal: str, iqn: str, timeout: float | None, shared: bool):
        lock = locking.target_rw_lock(
            "iscsi", locking.iscsi_target_key(portal, iqn), lock_path=self.opts.lock_path
        )
        timeout = self.lock_timeout() if timeout is None else timeout
        return lock.shared(timeout) if shared else lock.exclusive(timeout)

    # ---------------------------------------------------------------- lookup
    def find(self, target: IscsiTarget) -> list[IscsiSession]:
        """Sessions to ``target`` (portal given by name or address); live ones first choice."""
        found: list[IscsiSession] = []
        for address in _portal_addresses(target.portal.host):
            for s in find_sessions(self.roots, target.iqn, address, target.portal.port):
                if all(s.sid != f.sid for f in found):
                    found.append(s)
        return [s for s in found if s.state in _LIVE_STATES] or found

    def discover_targets(self, props: IscsiProperties, deadline: Deadline) -> list[IscsiTarget]:
        """The volume's targets; SendTargets at the primary portal when the caller gave one."""
        if not props.needs_discovery:
            return list(props.targets)
        primary = props.primary
        found = self.actions.discover(
            primary.portal.address,
            self.iface,
            props.discovery_auth,
            min(self.opts.login_timeout, deadline.remaining()),
        )
        same_iqn = [(p, q) for p, q in found if q == primary.iqn]
        chosen = same_iqn or found
        targets = [primary]
        for portal_text, iqn in chosen:
            portal = _portal(portal_text)
            if portal is None:
                continue
            t = IscsiTarget(portal, iqn, primary.lun)
            if t not in targets:
                targets.append(t)
        LOG.debug("sendtargets at %s gave %d path(s)", primary.portal.address, len(targets))
        return targets

    # ---------------------------------------------------------------- login
    def node_settings(
        self, props: IscsiProperties, target: IscsiTarget, deadline: Deadline
    ) -> NodeSettings:
        return NodeSettings(
            portal=target.portal.address,
            iqn=target.iqn,
            iface=self.iface,
            auth=props.auth,
            manual_scan=self.actions.manual_scan_supported(),
            login_timeout=min(self.opts.login_timeout, max(deadline.remaining(), 0.1)),
            replacement_timeout=MULTIPATH_REPLACEMENT_TIMEOUT if props.use_multipath else None,
        )

    def prepare(
        self,
        props: IscsiProperties,
        targets: list[IscsiTarget],
        deadline: Deadline,
        record: AttachRecord,
    ) -> None:
        """Write the node records of the ``targets`` without a session in one go, so the
        parallel logins do not queue one by one behind each other's record writes."""
        need_login = [t for t in targets if not self.find(t)]
        if len(need_login) > 1:
            self.actions.prepare_nodes([self.node_settings(props, t, deadline) for t in need_login])
            record.prepared.update((t.portal.address, t.iqn) for t in need_login)

    def ensure(
        self, props: IscsiProperties, target: IscsiTarget, deadline: Deadline, record: AttachRecord
    ) -> IscsiSession:
        """A session to ``target``: an existing one, or one login shared by concurrent callers."""
        found = self.find(target)
        if found:
            return found[0]
        key = (target.portal.address, target.iqn, self.iface)

        def login() -> IscsiSession:
            again = self.find(target)
            if again:
                return again[0]
            prepared = (target.portal.address, target.iqn) in record.prepared
            with metrics.phase(self.protocol, "login"):
                self.actions.login(self.node_settings(props, target, deadline), prepared=prepared)
            with self.watch_factory() as watch:
                try:
                    session = watch.wait_for(
                        lambda: next(iter(self.find(target)), None),
                        Deadline.after(min(2.0, max(deadline.remaining(), 0.1)), deadline.clock),
                        what=f"session to {target.iqn}",
                    )
                except DeviceNotFound:
                    raise TargetUnreachable(
                        f"login to {target.iqn} at {target.portal.address} reported success "
                        "but no session appeared"
                    ) from None
            with record.lock:
                record.logins.append((target, session.sid))
            LOG.debug(
                "logged in to %s at %s: session%d (host%s)",
                target.iqn,
                target.portal.address,
                session.sid,
                session.host_number,
            )
            return session

        return _LOGINS.do(key, login)

    # ---------------------------------------------------------------- logout
    def undo_logins(
        self,
        record: AttachRecord,
        deadline: Deadline | None = None,
        in_use: Callable[[IscsiSession], bool] | None = None,
    ) -> list[str]:
        """Log out of sessions this attach created that carry no LUN; what was left.

        ``deadline`` bounds the whole undo (lock waits and iscsiadm included), except
        that each step gets at least ``UNDO_LOGOUT_MIN`` seconds;
        ``in_use(session)`` keeps a session another attach is using although it
        shows no LUN yet.
        """
        left: list[str] = []

        def budget() -> float | None:
            """What is left of ``deadline``, but never less than UNDO_LOGOUT_MIN: a
            session left behind is worse than a late error."""
            return None if deadline is None else max(deadline.remaining(), UNDO_LOGOUT_MIN)

        for target, sid in record.logins:
            try:
                with self.target_lock(target, budget()):
                    session = read_session(self.roots, sid)
                    if session is None or session_has_luns(self.roots, session):
                        continue
                    if in_use is not None and in_use(session):
                        LOG.info(
                            "undo: session%d is in use by another attach: staying logged in", sid
                        )
                        continue
                    self.actions.logout(
                        target.portal.address, target.iqn, self.iface, timeout=budget()
                    )
            except BrickError as exc:
                LOG.warning(
                    "undo: could not log out of %s at %s: %s",
                    target.iqn,
                    target.portal.address,
                    exc,
                )
                left.append(f"session{sid} (logout failed: {exc})")
        return left

    @metrics.step("logout")
    def logout_if_empty(self, session: IscsiSession) -> BrickError | None:
        """Log out of ``session`` if it carries no LUN any more; the error, if any.

        A session that still shows a LUN is left without taking its lock: its last LUN's
        detach logs out (a LUN deleted through sysfs is gone when the write returns, so of
        two last detaches the later one sees the session empty).  Only a session that
        looks empty is read again under the exclusive lock, where no scan is under way."""
        if session_has_luns(self.roots, session):  # a vanished session shows none
            return None
        try:
            with self.session_lock(session):
                now = read_session(self.roots, session.sid)
                if now is None:
                    return None
                if session_has_luns(self.roots, now):
                    LOG.debug("session%d keeps other LUN(s): staying logged in", session.sid)
                    return None
                self.actions.logout(now.portal or "", now.target_iqn or "", self.iface)
        except BrickError as exc:
            return exc
        return None


def _portal(text: str) -> Portal | None:
    from brick_agent.properties.iscsi import parse_portal

    try:
        return parse_portal(text.split(",", 1)[0], "discovered portal")
    except (BrickError, ValueError):
        LOG.warning("ignoring unparseable discovered portal %r", text)
        return None


@functools.lru_cache(maxsize=256)
def _portal_addresses(host: str) -> tuple[str, ...]:
    """The portal host and, for a host name, its IP addresses (sysfs shows IPs)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return (host,)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        LOG.debug("cannot resolve portal host %s: %s", host, exc)
        return (host,)
    addresses = [host]
    for info in infos:
        addr = str(info[4][0])
        if addr not in addresses:
            addresses.append(addr)
    return tuple(addresses)


__all__ = ["AttachRecord", "IscsiSessions", "MULTIPATH_REPLACEMENT_TIMEOUT"]
