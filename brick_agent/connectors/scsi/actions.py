"""What a SCSI transport may *do* to the host (:class:`ScsiActions`), and the adapter.

:class:`PrivilegedScsiActions` is a thin, transport-neutral adapter over
``brick_agent.privileged.{scsi,block,multipath}`` used by every SCSI transport
(Fibre Channel directly, iSCSI extended with iscsiadm in
:mod:`brick_agent.connectors.iscsi.actions`).  It decides nothing about which
device to touch.  Unit tests pass objects with the same methods that change a
fake sysfs tree the way the kernel would.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from typing import Protocol

from oslo_config import cfg

from brick_agent import privileged
from brick_agent.errors import CommandFailed
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.host.scsi import Hctl

LOG = logging.getLogger(__name__)


class ScsiActions(Protocol):
    """The protocol-neutral privileged operations every SCSI transport needs.

    Production: :class:`brick_agent.connectors.scsi.actions.PrivilegedScsiActions`
    (iSCSI's adapter extends it with iscsiadm).
    """

    def start_daemon(self) -> None:
        """Start the privileged side now if it runs apart and has not started (else nothing):
        an operation calls it before its deadline starts."""

    def scan_lun(self, host: int, channel: int | None, target: int | None, lun: int) -> None:
        """Write ``"c t l"`` to the host's scan file (None means the '-' wildcard)."""

    def rescan_device(self, hctl: Hctl) -> None:
        """Re-read a LUN's capacity and VPD pages."""

    def delete_device(self, hctl: Hctl) -> None:
        """Remove a SCSI device from the kernel."""

    def flush(self, device: str) -> None:
        """Flush a block device's buffers."""

    def multipath_add(self, wwid: str, devices: list[str]) -> None:
        """Ask multipathd to build the map of ``wwid`` from ``devices``."""

    def multipath_remove(self, map_name: str) -> None:
        """Flush and remove a multipath map (by its dm name)."""

    def multipath_forget(self, wwid: str) -> None:
        """Remove ``wwid`` from multipath's wwids file."""

    def multipath_resize(self, map_name: str) -> None:
        """Resize a map after its paths grew."""

    def multipathd_running(self) -> bool:
        """True when multipathd answers."""


class PrivilegedScsiActions:
    """ScsiActions over brick_agent.privileged (daemon or in-process per config)."""

    def __init__(self, conf: cfg.ConfigOpts, roots: HostRoots = DEFAULT_ROOTS) -> None:
        self.conf = conf
        self.opts = conf.brick_agent
        self.roots = roots
        privileged.configure(conf)  # applied before the first entrypoint call

    def start_daemon(self) -> None:
        privileged.start_daemon()

    # SCSI / block ----------------------------------------------------------------
    def scan_lun(self, host: int, channel: int | None, target: int | None, lun: int) -> None:
        from brick_agent.privileged import scsi

        scsi.scan_scsi_target(
            host, "-" if channel is None else channel, "-" if target is None else target, lun
        )

    def rescan_device(self, hctl: Hctl) -> None:
        from brick_agent.privileged import scsi

        scsi.rescan_scsi_device(str(hctl))

    def delete_device(self, hctl: Hctl) -> None:
        """Delete ``hctl``; a write the kernel blocks (a disk of a dead target) is abandoned
        after ``device_removal_timeout`` with KernelActionTimeout."""
        from brick_agent.privileged import scsi

        try:
            scsi.delete_scsi_device(str(hctl), timeout=self.opts.device_removal_timeout)
        except OSError as exc:
            raise CommandFailed(
                ["delete", str(hctl)], exc.errno, exc.strerror or str(exc)
            ) from None

    def flush(self, device: str) -> None:
        """The privileged flush of ``device`` within ``flush_timeout``
        (:func:`brick_agent.connectors.actions.flush_device`); the kernel sends the disk's
        cache flush itself when the device is deleted."""
        from brick_agent.connectors.actions import flush_device

        flush_device(device, self.opts.flush_timeout)

    # multipath ---------------------------------------------------------------------
    def multipath_add(self, wwid: str, devices: list[str]) -> None:
        """Best effort: record the wwid and hand multipathd the paths.

        multipathd may already be adding a path from its uevent (``add path``
        then fails); the caller waits for the map either way.
        """
        from brick_agent.privileged import multipath

        def add_path(dev: str) -> None:
            try:
                multipath.add_path(dev)
            except CommandFailed as exc:
                LOG.debug("multipathd add path %s failed: %s", dev, exc)

        try:
            multipath.add_wwid(wwid)
        except CommandFailed as exc:
            LOG.debug("multipath -a %s failed: %s", wwid, exc)
        if len(devices) > 1:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(devices)) as pool:
                list(pool.map(add_path, devices))
        else:
            for dev in devices:
                add_path(dev)

    def multipath_remove(self, map_name: str) -> None:
        from brick_agent.privileged import multipath

        multipath.flush_map(map_name, timeout=self.opts.flush_timeout)

    def multipath_forget(self, wwid: str) -> None:
        from brick_agent.privileged import multipath

        multipath.remove_wwid(wwid)

    def multipath_resize(self, map_name: str) -> None:
        from brick_agent.privileged import multipath

        multipath.resize_map(map_name)

    def multipathd_running(self) -> bool:
        return multipathd_running(self.roots)


def multipathd_running(roots: HostRoots) -> bool:
    """multipathd's pid file names a live process."""
    try:
        with open(roots.runfs("multipathd.pid"), encoding="ascii") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    return os.path.exists(f"/proc/{pid}")


__all__ = ["PrivilegedScsiActions", "multipathd_running"]
