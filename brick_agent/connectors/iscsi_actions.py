"""What the iSCSI connector may *do* to the host: the narrow, injectable action set.

The connector decides; an :class:`ISCSIActions` object acts.  Production uses
:class:`PrivilegedISCSIActions`, a thin adapter over the privileged entrypoints
(``brick_agent.privileged``: iscsiadm here; SCSI scan/delete, flush, multipath
through :class:`~brick_agent.connectors.scsi_volume.ScsiActions`).
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

import dataclasses
from typing import Protocol

from brick_agent.connectors.scsi_volume import ScsiActions
from brick_agent.properties.iscsi import ChapCredentials


@dataclasses.dataclass(frozen=True)
class NodeSettings:
    """How to create/update the iscsiadm node record before logging in."""

    portal: str                      # 'ip:port' / '[v6]:port' (Portal.address)
    iqn: str
    iface: str = "default"           # iscsiadm iface name ('default', 'iser', offload ifaces)
    auth: ChapCredentials | None = None
    manual_scan: bool = True         # node.session.scan = manual
    login_timeout: float = 15.0      # seconds the login may take
    replacement_timeout: int | None = None   # seconds I/O waits for a dead session (multipath: short)


class ISCSIActions(ScsiActions, Protocol):
    """Privileged operations used by :class:`~brick_agent.connectors.iscsi.ISCSIConnector`:
    iscsiadm's, on top of the SCSI/block/multipath ones of :class:`ScsiActions`."""

    def manual_scan_supported(self) -> bool:
        """True when iscsiadm knows ``node.session.scan`` (detected once, cached)."""

    def discover(self, portal: str, iface: str, auth: ChapCredentials | None,
                 timeout: float) -> list[tuple[str, str]]:
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
