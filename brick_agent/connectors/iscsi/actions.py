"""What the iSCSI connector may *do* to the host, and the adapter that does it.

The connector decides; an :class:`IscsiActions` object acts.  Production uses
:class:`PrivilegedIscsiActions`, a thin adapter over the privileged entrypoints
(``brick_agent.privileged``: iscsiadm here; SCSI scan/delete, flush, multipath
through :class:`~brick_agent.connectors.scsi.actions.PrivilegedScsiActions`): it
turns connector intents into privileged calls and iscsiadm exit codes into typed
errors, and decides nothing about which device or session to touch.
Unit tests pass an object with the same methods that mutates a fake sysfs tree
the way the kernel would, so tests assert outcomes on the tree.

Every method raises a :class:`~brick_agent.errors.BrickError` subclass on
failure: :class:`~brick_agent.errors.AuthenticationFailed` when the target
rejects CHAP, :class:`~brick_agent.errors.TargetUnreachable` when a portal
cannot be reached, :class:`~brick_agent.errors.CommandFailed` otherwise.
Secrets travel as :class:`~brick_agent.secrets.Secret` and are revealed only
inside the privileged process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from typing import Protocol

from brick_agent import locking
from brick_agent.connectors.scsi.actions import (
    PrivilegedScsiActions,
    ScsiActions,
    multipathd_running,
)
from brick_agent.deadline import Deadline
from brick_agent.errors import AuthenticationFailed, CommandFailed, TargetUnreachable
from brick_agent.host import iscsiadm
from brick_agent.host.iscsiadm import (
    ERR_FATAL_LOGIN,
    ERR_INVAL,
    ERR_LOGIN,
    ERR_LOGIN_AUTH_FAILED,
    ERR_NO_OBJS_FOUND,
    ERR_PDU_TIMEOUT,
    ERR_TRANS,
    ERR_TRANS_TIMEOUT,
)
from brick_agent.properties.iscsi import ChapCredentials

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class NodeSettings:
    """How to create/update the iscsiadm node record before logging in."""

    portal: str  # 'ip:port' / '[v6]:port' (Portal.address)
    iqn: str
    iface: str = "default"  # iscsiadm iface name ('default', 'iser', offload ifaces)
    auth: ChapCredentials | None = None
    manual_scan: bool = True  # node.session.scan = manual
    login_timeout: float = 15.0  # seconds the login may take
    # seconds I/O waits for a dead session (multipath: short)
    replacement_timeout: int | None = None


class IscsiActions(ScsiActions, Protocol):
    """Privileged operations used by
    :class:`~brick_agent.connectors.iscsi.connector.ISCSIConnector`: iscsiadm's, on top of
    the SCSI/block/multipath ones of :class:`ScsiActions`."""

    def manual_scan_supported(self) -> bool:
        """True when iscsiadm knows ``node.session.scan`` (detected once, cached)."""

    def discover(
        self, portal: str, iface: str, auth: ChapCredentials | None, timeout: float
    ) -> list[tuple[str, str]]:
        """SendTargets discovery at ``portal``; ``[(portal 'ip:port', iqn), ...]``."""

    def prepare_nodes(self, nodes: list[NodeSettings]) -> None:
        """Create/update the node records of several targets (before parallel logins)."""

    def login(self, node: NodeSettings, prepared: bool = False) -> None:
        """Create/update the node record (scan mode, CHAP) and log in.

        ``prepared``: :meth:`prepare_nodes` already wrote the record.
        Already-logged-in is success.  Raises AuthenticationFailed /
        TargetUnreachable / CommandFailed.
        """

    def logout(self, portal: str, iqn: str, iface: str, timeout: float | None = None) -> None:
        """Log out of the session and delete the node record, both within ``timeout``
        seconds when given (an attach's undo inside its deadline), else the command timeout."""


#: iscsiadm exit codes that mean the portal could not be reached
UNREACHABLE = {ERR_TRANS, ERR_TRANS_TIMEOUT, ERR_PDU_TIMEOUT, ERR_LOGIN}
#: login attempts iscsid makes (node.session.initial_login_retry_max + 1)
LOGIN_ATTEMPTS = 2
#: seconds iscsiadm --login may outlive iscsid's attempts before it is killed (a safety
#: net: killing it does not stop iscsid, whose own attempts end within the login timeout)
LOGIN_COMMAND_SLACK = 2.0


def login_attempt_seconds(login_timeout: float) -> int:
    """iscsid's per-attempt ``login_timeout`` (whole seconds, at least 1) such that every
    attempt together fits in ``login_timeout`` (when that is at least 2 s)."""
    return max(1, math.floor(max(0.0, login_timeout) / LOGIN_ATTEMPTS))


def _chap_settings(prefix: str, auth: ChapCredentials | None) -> list[tuple[str, str]]:
    if auth is None:
        return [(f"{prefix}.authmethod", "None")]
    return [
        (f"{prefix}.authmethod", "CHAP"),
        (f"{prefix}.username", auth.username),
        (f"{prefix}.password", auth.password.reveal()),
    ]


def _login_error(exc: CommandFailed, portal: str, iqn: str) -> Exception:
    where = f"{iqn} at {portal}"
    if exc.returncode == ERR_LOGIN_AUTH_FAILED:
        return AuthenticationFailed(f"CHAP authentication to {where} was rejected")
    if exc.timed_out or exc.returncode in UNREACHABLE:
        what = "timed out" if exc.timed_out else f"failed (iscsiadm exit {exc.returncode})"
        return TargetUnreachable(f"login to {where} {what}")
    if exc.returncode == ERR_FATAL_LOGIN:
        return AuthenticationFailed(f"target {where} refused the login (initiator not authorised)")
    return exc


class PrivilegedIscsiActions(PrivilegedScsiActions):
    """IscsiActions over brick_agent.privileged (daemon or in-process per config)."""

    # iscsiadm -----------------------------------------------------------------
    def _node_db(
        self, exclusive: bool, timeout: float | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Guard iscsiadm's node database across threads and processes of this host.

        Every ``iscsiadm -m node -T .. -p ..`` call (login, logout, delete) reads
        *all* node records of the host to find its match; a concurrent
        ``--op new``/``update``/``delete`` of any other record makes it fail with
        "iSCSI database failure" (exit 6).  Record changes take this lock
        exclusively, logins and logouts shared (so they still run in parallel).
        A waiting record change holds back new logins (:class:`ReaderWriterLock`
        prefers writers): the first logins of two targets then write both records
        and log in at the same time, instead of the second waiting for the whole
        first login before it may write its record.
        The wait is bounded (:class:`LockTimeout`): by default a login plus a
        command, what one holder can take.
        """
        if timeout is None:
            timeout = self.opts.login_timeout + LOGIN_COMMAND_SLACK + self.opts.command_timeout
        lock = locking.rw_lock(
            locking.safe_lock_name("iscsi-nodedb"), lock_path=self.opts.lock_path
        )
        return lock.exclusive(timeout) if exclusive else lock.shared(timeout)

    def manual_scan_supported(self) -> bool:
        return iscsiadm.iscsi_manual_scan_supported()

    def discover(
        self, portal: str, iface: str, auth: ChapCredentials | None, timeout: float
    ) -> list[tuple[str, str]]:
        from brick_agent.privileged import iscsi as piscsi

        settings = _chap_settings("discovery.sendtargets.auth", auth) if auth else None
        try:
            with self._node_db(exclusive=True):  # sendtargets writes node records
                res = piscsi.discover(portal, iface, settings, timeout=max(1.0, timeout))
        except CommandFailed as exc:
            raise _login_error(exc, portal, "sendtargets discovery") from None
        return parse_sendtargets(res["stdout"])

    @staticmethod
    def _node_settings(node: NodeSettings) -> list[tuple[str, str]]:
        # iscsid makes 1 + initial_login_retry_max attempts of at most login_timeout each
        # (a refused or silent portal uses the whole attempt): 2 whole seconds each that
        # add up to no more than the caller's login timeout (15 s -> 2 x 7 s)
        per_try = login_attempt_seconds(node.login_timeout)
        settings = [
            ("node.session.initial_login_retry_max", str(LOGIN_ATTEMPTS - 1)),
            ("node.conn[0].timeo.login_timeout", str(per_try)),
        ]
        if node.manual_scan:
            settings.insert(0, ("node.session.scan", "manual"))
        if node.replacement_timeout is not None:
            settings.append(
                ("node.session.timeo.replacement_timeout", str(int(node.replacement_timeout)))
            )
        if node.auth is not None:
            settings += _chap_settings("node.session.auth", node.auth)
        return settings

    def _write_node(self, node: NodeSettings) -> None:
        """``--op new``, then the settings written into the new record (CHAP never on an
        argv; no second iscsiadm walk of the node database); a setting the record has no
        line for goes through ``--op update`` (caller holds the exclusive node-DB lock)."""
        from brick_agent.privileged import iscsi as piscsi
        from brick_agent.privileged import iscsi_auth

        timeout = max(1.0, node.login_timeout)
        piscsi.node_create(node.iqn, node.portal, node.iface, timeout=timeout)
        settings = self._node_settings(node)
        written = iscsi_auth.node_set_settings(node.iqn, node.portal, node.iface, settings)
        rest = [item for item in settings if item[0] in written["absent"]]
        if rest:
            rest = self._update_node(node, rest, timeout)
        if node.manual_scan:
            scan = ("node.session.scan", "manual")
            iscsiadm.note_manual_scan_result(scan in rest or "node.session.scan" in written["set"])

    @staticmethod
    def _update_node(
        node: NodeSettings, settings: list[tuple[str, str]], timeout: float
    ) -> list[tuple[str, str]]:
        """``--op update`` of ``settings``; the settings it took.  An iscsiadm without
        ``node.session.scan`` (gobrick's "exit 7" case) gets the rest without it: automatic
        scans, remembered by the caller (guard_connection then locks)."""
        from brick_agent.privileged import iscsi as piscsi

        try:
            piscsi.node_update(node.iqn, node.portal, node.iface, settings, timeout=timeout)
            return settings
        except CommandFailed as exc:
            if not node.manual_scan or exc.returncode != ERR_INVAL:
                raise
            LOG.warning("iscsiadm rejected node.session.scan (%s): automatic LUN scans", exc)
            settings = [item for item in settings if item[0] != "node.session.scan"]
            if settings:
                piscsi.node_update(node.iqn, node.portal, node.iface, settings, timeout=timeout)
            return settings

    def prepare_nodes(self, nodes: list[NodeSettings]) -> None:
        with self._node_db(exclusive=True):
            for node in nodes:
                self._write_node(node)

    def login(self, node: NodeSettings, prepared: bool = False) -> None:
        from brick_agent.privileged import iscsi as piscsi

        timeout = max(1.0, node.login_timeout)
        try:
            if prepared:
                try:
                    with self._node_db(exclusive=False):
                        piscsi.node_login(
                            node.iqn, node.portal, node.iface, timeout=timeout + LOGIN_COMMAND_SLACK
                        )
                    return
                except CommandFailed as exc:
                    if exc.returncode != ERR_NO_OBJS_FOUND:
                        raise
                    LOG.debug(
                        "node record of %s %s vanished; writing it again", node.iqn, node.portal
                    )
            with self._node_db(exclusive=True):
                self._write_node(node)
            with self._node_db(exclusive=False):
                piscsi.node_login(
                    node.iqn, node.portal, node.iface, timeout=timeout + LOGIN_COMMAND_SLACK
                )
        except CommandFailed as exc:
            err = _login_error(exc, node.portal, node.iqn)
            try:  # leave no node record behind for a login that never worked
                with self._node_db(exclusive=True):
                    piscsi.node_delete(node.iqn, node.portal, node.iface, timeout=10)
            except CommandFailed as cleanup:
                LOG.warning(
                    "could not delete node record %s %s: %s", node.iqn, node.portal, cleanup
                )
            if err is exc:
                raise
            raise err from None

    def logout(self, portal: str, iqn: str, iface: str, timeout: float | None = None) -> None:
        from brick_agent.privileged import iscsi as piscsi

        if timeout is None:
            with self._node_db(exclusive=False):
                piscsi.node_logout(iqn, portal, iface, timeout=self.opts.command_timeout)
            with self._node_db(exclusive=True):
                piscsi.node_delete(iqn, portal, iface, timeout=self.opts.command_timeout)
            return
        budget = Deadline.after(timeout)
        with self._node_db(exclusive=False):
            piscsi.node_logout(iqn, portal, iface, timeout=max(0.1, budget.remaining()))
        with self._node_db(exclusive=True):
            piscsi.node_delete(iqn, portal, iface, timeout=max(0.1, budget.remaining()))


def parse_sendtargets(text: str) -> list[tuple[str, str]]:
    """``'10.0.0.1:3260,1 iqn.x'`` lines -> ``[('10.0.0.1:3260', 'iqn.x')]`` (tpgt dropped)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        portal = parts[0].rsplit(",", 1)[0]
        if (portal, parts[1]) not in out:
            out.append((portal, parts[1]))
    return out


__all__ = ["PrivilegedIscsiActions", "multipathd_running", "parse_sendtargets"]
