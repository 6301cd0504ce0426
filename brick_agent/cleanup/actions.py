"""What the cleanup may *do* (:class:`CleanupActions`), and the adapter that does it.

:class:`PrivilegedCleanupActions` goes through the same privileged entrypoints, with
the same ownership checks, as a detach: iscsiadm logout and node delete (through the
iSCSI connector's adapter, under its node-database lock), the flush and SCSI delete of
the SCSI adapter, ``multipath -f``, the NVMe adapter's flush and ``delete_controller``.
Two narrow entrypoints exist for the cleanup alone: ``multipath -w`` of an entry no
present device has (:func:`brick_agent.privileged.multipath.forget_stale_wwid`) and
the removal of a dangling ``/dev/disk`` link
(:func:`brick_agent.privileged.links.remove_dangling_link`).  Nothing here decides.
"""

from __future__ import annotations

from typing import Protocol

from oslo_config import cfg

from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.host.scsi import Hctl


class CleanupActions(Protocol):
    """The privileged operations of a cleanup (unit tests pass a fake that changes a
    fake host tree the way the kernel and the tools would)."""

    def logout(self, portal: str, iqn: str, iface: str) -> None:
        """Log out of the session and delete its node record."""

    def delete_node_record(self, portal: str, iqn: str, iface: str) -> None:
        """Delete a node record that has no session."""

    def flush(self, device: str) -> None:
        """Flush block device ``device`` (a kernel name)."""

    def delete_scsi_device(self, hctl: Hctl) -> None:
        """Remove a SCSI device from the kernel."""

    def remove_map(self, name: str) -> None:
        """``multipath -f NAME``."""

    def delete_controller(self, name: str) -> None:
        """Delete NVMe controller ``name``."""

    def forget_wwid(self, wwid: str) -> None:
        """Remove a stale entry from ``/etc/multipath/wwids``."""

    def remove_link(self, kind: str, name: str, target: str) -> None:
        """Remove dangling link ``/dev/disk/KIND/NAME`` (still pointing to ``target``)."""


class PrivilegedCleanupActions:
    """CleanupActions over brick_agent.privileged (daemon or in-process per config)."""

    def __init__(self, conf: cfg.ConfigOpts, roots: HostRoots = DEFAULT_ROOTS) -> None:
        from brick_agent.connectors.iscsi.actions import PrivilegedIscsiActions
        from brick_agent.connectors.nvmeof.actions import PrivilegedNvmeActions

        self.opts = conf.brick_agent
        self.roots = roots
        self.iscsi = PrivilegedIscsiActions(conf, roots)  # also the SCSI/multipath adapter
        self.nvme = PrivilegedNvmeActions(roots)

    def logout(self, portal: str, iqn: str, iface: str) -> None:
        self.iscsi.logout(portal, iqn, iface)

    def delete_node_record(self, portal: str, iqn: str, iface: str) -> None:
        # iscsiadm --logout finds no session (success) and --op delete removes the record,
        # both under the node-database lock a detach takes
        self.iscsi.logout(portal, iqn, iface)

    def flush(self, device: str) -> None:
        from brick_agent.connectors.actions import flush_device

        flush_device(self.roots.devfs(device), self.opts.flush_timeout)

    def delete_scsi_device(self, hctl: Hctl) -> None:
        self.iscsi.delete_device(hctl)

    def remove_map(self, name: str) -> None:
        self.iscsi.multipath_remove(name)

    def delete_controller(self, name: str) -> None:
        self.nvme.disconnect(name, timeout=self.opts.device_removal_timeout)

    def forget_wwid(self, wwid: str) -> None:
        from brick_agent.privileged import multipath

        multipath.forget_stale_wwid(wwid)

    def remove_link(self, kind: str, name: str, target: str) -> None:
        from brick_agent.privileged import links

        links.remove_dangling_link(kind, name, target)
