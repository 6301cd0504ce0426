"""What the iSCSI connector may *do* to the host: the narrow, injectable action set.

The connector decides; an :class:`ISCSIActions` object acts.  Production uses
:class:`PrivilegedISCSIActions`, a thin adapter over the privileged entrypoints
(``brick_agent.privileged``: iscsiadm, SCSI scan/delete, flush, multipath).
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

from brick_agent.host.scsi import HCTL
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


class ISCSIActions(Protocol):
    """Privileged operations used by :class:`~brick_agent.connectors.iscsi.ISCSIConnector`."""

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

    def logout(self, portal: str, iqn: str, iface: str) -> None:
        """Log out of the session and delete the node record."""

    def scan_lun(self, host: int, channel: int | None, target: int | None, lun: int) -> None:
        """Write ``"c t l"`` to the SCSI host's scan file (None means the '-' wildcard)."""

    def rescan_device(self, hctl: HCTL) -> None:
        """Re-read a LUN's capacity and VPD pages (``device/rescan``)."""

    def delete_device(self, hctl: HCTL) -> None:
        """Remove a SCSI device from the kernel (``device/delete``)."""

    def flush(self, device: str) -> None:
        """Flush a block device's buffers (``/dev/sdX`` or ``/dev/dm-N``)."""

    def multipath_add(self, wwid: str, devices: list[str]) -> None:
        """Ask multipathd to build a map for ``wwid`` from ``devices`` ('sdb', ...)."""

    def multipath_remove(self, map_name: str) -> None:
        """Flush and remove a multipath map (by its dm name)."""

    def multipath_forget(self, wwid: str) -> None:
        """Remove ``wwid`` from multipath's wwids file."""

    def multipath_resize(self, map_name: str) -> None:
        """Make multipathd resize a map after its paths grew."""

    def multipathd_running(self) -> bool:
        """True when multipathd answers (needed to build maps)."""
