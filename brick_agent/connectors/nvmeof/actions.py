"""The privileged actions the NVMe-oF connector needs, behind one small interface.

The connector decides; an ``NvmeActions`` object acts.  Production uses
:class:`PrivilegedNvmeActions` (a thin adapter over ``brick_agent.privileged``);
unit tests pass a fake that changes a fake sysfs tree the way the kernel would.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from typing import Protocol

from brick_agent.errors import CommandFailed, TargetUnreachable
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)


class AlreadyConnected(Exception):
    """The kernel refused a connect because an identical controller exists (EALREADY)."""


@dataclasses.dataclass(frozen=True)
class ConnectRequest:
    """One fabrics connect: the options written to ``/dev/nvme-fabrics``."""

    subsysnqn: str
    transport: str  # tcp | rdma | fc
    traddr: str
    trsvcid: str | None
    hostnqn: str
    hostid: str
    host_traddr: str | None = None
    ctrl_loss_tmo: int | None = None
    reconnect_delay: int | None = None
    keep_alive_tmo: int | None = None
    #: Seconds after a lost connection before queued I/O fails (None: kernel default, off).
    fast_io_fail_tmo: int | None = None
    timeout: float = 30.0  # seconds the connect may take (login_timeout)

    def timeouts(self) -> dict[str, int | None]:
        return {
            "ctrl_loss_tmo": self.ctrl_loss_tmo,
            "reconnect_delay": self.reconnect_delay,
            "keep_alive_tmo": self.keep_alive_tmo,
            "fast_io_fail_tmo": self.fast_io_fail_tmo,
        }

    def options(self) -> str:
        """The validated option string the kernel parses (``nvmf_parse_options``)."""
        from brick_agent.privileged.nvme import fabrics_options

        return fabrics_options(
            self.transport,
            self.traddr,
            self.trsvcid,
            self.subsysnqn,
            hostnqn=self.hostnqn,
            hostid=self.hostid,
            host_traddr=self.host_traddr,
            **self.timeouts(),
        )

    def describe(self) -> str:
        port = f":{self.trsvcid}" if self.trsvcid else ""
        return f"{self.transport}://{self.traddr}{port}/{self.subsysnqn}"


def write_host_identity(hostnqn: str, hostid: str) -> None:
    """Create the live host's /etc/nvme/hostnqn and hostid, each only when missing
    (never overwrite), through the privileged entrypoint."""
    from brick_agent.privileged import nvme  # late: privsep is heavy

    nvme.write_host_identity(hostnqn, hostid)


class NvmeActions(Protocol):
    """What the connector asks privileged code to do (nothing here decides)."""

    def start_daemon(self) -> None:
        """Start the privileged side now if it runs apart and has not started (else nothing):
        an operation calls it before its deadline starts."""

    def connect(self, request: ConnectRequest) -> str:
        """Create a controller; return its name (``nvme3``).

        Raises :class:`AlreadyConnected` when the kernel says EALREADY, another
        ``BrickError`` (TargetUnreachable, CommandFailed...) otherwise.
        """

    def disconnect(self, controller: str, timeout: float | None = None) -> None:
        """Delete controller ``nvmeN`` (``delete_controller``); returns once it is gone.

        ``timeout``: seconds the kernel may take; then KernelActionTimeout (the
        deletion goes on in the kernel)."""

    def rescan(self, controller: str) -> None:
        """Ask controller ``nvmeN`` to rescan its namespaces (``rescan_controller``)."""

    def flush(self, device: str, timeout: float) -> None:
        """Flush the buffers of block device ``device`` (a /dev path) within ``timeout``."""

    def write_host_identity(self, hostnqn: str, hostid: str) -> None:
        """Create /etc/nvme/hostnqn and hostid, each only when missing (never overwrite)."""

    def md_create(self, name: str, devices: list[str | None]) -> None:
        """Create (or assemble) RAID1 ``/dev/md/<name>`` of ``devices`` (None = missing member)."""

    def md_stop(self, name: str) -> None:
        """Stop RAID ``/dev/md/<name>``."""

    def multipathd_running(self) -> bool:
        """True when multipathd is running (dm-multipath over non-native NVMe)."""

    def multipath_add(self, wwid: str, devices: list[str]) -> None:
        """Ask multipathd to map ``devices`` (namespace paths) of ``wwid``; best effort."""

    def multipath_remove(self, map_name: str) -> None:
        """Flush and remove multipath map ``map_name``."""

    def multipath_resize(self, map_name: str) -> None:
        """Resize multipath map ``map_name`` after its paths grew."""


class PrivilegedNvmeActions:
    """Default actions: each call goes to one narrow ``brick_agent.privileged`` entrypoint.

    The privileged connect writes the options to ``/dev/nvme-fabrics`` and returns
    the kernel's answer: the new controller's instance, or the errno (``EALREADY``
    when an identical controller exists).  No nvme-cli, no text to parse, no guess
    from a before/after sysfs listing.
    """

    def __init__(self, roots: HostRoots = DEFAULT_ROOTS) -> None:
        self.roots = roots

    def start_daemon(self) -> None:
        from brick_agent import privileged

        privileged.start_daemon()

    def connect(self, request: ConnectRequest) -> str:
        from brick_agent.privileged import nvme

        result = nvme.connect(
            request.transport,
            request.traddr,
            request.trsvcid,
            request.subsysnqn,
            hostnqn=request.hostnqn,
            hostid=request.hostid,
            host_traddr=request.host_traddr,
            timeout=request.timeout,
            **request.timeouts(),
        )
        if result.get("controller"):
            return str(result["controller"])
        if result.get("errno") == errno.EALREADY:
            raise AlreadyConnected(request.describe())
        if result.get("timed_out"):
            raise TargetUnreachable(
                f"connect {request.describe()} timed out after {request.timeout:.1f}s"
            )
        raise TargetUnreachable(
            f"connect {request.describe()} failed: {result.get('error') or 'unknown error'}"
        )

    def disconnect(self, controller: str, timeout: float | None = None) -> None:
        from brick_agent.privileged import nvme

        try:
            nvme.disconnect(controller, timeout=timeout)
        except OSError as exc:  # the kernel refused the write (EBUSY...): typed
            raise CommandFailed(
                ["delete_controller", controller], exc.errno, exc.strerror or str(exc)
            ) from None

    def rescan(self, controller: str) -> None:
        from brick_agent.privileged import nvme

        nvme.rescan_controller(controller)

    def flush(self, device: str, timeout: float) -> None:
        from brick_agent.connectors.actions import flush_device

        flush_device(device, timeout)

    def write_host_identity(self, hostnqn: str, hostid: str) -> None:
        write_host_identity(hostnqn, hostid)

    def md_create(self, name: str, devices: list[str | None]) -> None:
        from brick_agent.privileged import md

        md.create_or_assemble_raid1(name, [os.path.basename(d) if d else None for d in devices])

    def md_stop(self, name: str) -> None:
        from brick_agent.privileged import md

        md.stop_raid(name)

    def multipathd_running(self) -> bool:
        from brick_agent.connectors.scsi.actions import multipathd_running

        return multipathd_running(self.roots)

    def multipath_add(self, wwid: str, devices: list[str]) -> None:
        """``multipath -a <wwid>`` then ``multipathd add path`` per device, each best effort.

        The wwids entry alone lets ``find_multipaths`` accept the paths on their next
        uevent; a path the privileged validation does not accept is skipped (logged).
        """
        from brick_agent.errors import BrickError
        from brick_agent.privileged import multipath

        try:
            multipath.add_wwid(wwid)
        except BrickError as exc:
            LOG.debug("multipath -a %s failed: %s", wwid, exc)
        for dev in devices:
            try:
                multipath.add_path(os.path.basename(dev))
            except BrickError as exc:
                LOG.debug("multipathd add path %s failed: %s", dev, exc)

    def multipath_remove(self, map_name: str) -> None:
        from brick_agent.privileged import multipath

        multipath.flush_map(map_name)

    def multipath_resize(self, map_name: str) -> None:
        from brick_agent.privileged import multipath

        multipath.resize_map(map_name)
