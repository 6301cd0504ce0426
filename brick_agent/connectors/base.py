"""The connector contract shared by every protocol (os-brick compatible).

A connector turns connection properties (the dict a volume service's driver
returns from ``initialize_connection``) into a verified local block device and
back.  Inputs are plain dicts, never mutated; outputs are plain dicts
(``device_info``) of the same shape os-brick returns, so a compute service can
switch libraries without translating anything.
"""

from __future__ import annotations

import abc
import errno
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from oslo_config import cfg

from brick_agent import config
from brick_agent.connectors import actions, presence
from brick_agent.connectors.presence import VolumePresence
from brick_agent.host.block import resolve_dev_path
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.ledger import store as ledgermod

LOG = logging.getLogger(__name__)

DeviceInfo = dict[str, Any]


class Connector(abc.ABC):
    """Base of the per-protocol connectors.

    Constructor arguments follow os-brick's ``InitiatorConnector`` so callers can
    swap libraries: ``root_helper`` (os-brick's, e.g. ``sudo nova-rootwrap
    /etc/nova/rootwrap.conf``) prefixes the command that starts brick_agent's
    privsep daemon unless ``[brick_agent] privsep_helper_command`` is set
    (:func:`brick_agent.privileged.helper_command`); ``use_multipath`` keeps its
    meaning.  ``device_scan_attempts`` bounds the rescans of an NVMe-oF attach
    while it awaits its namespace (os-brick: rescans while awaiting a device; Nova
    passes ``num_nvme_discover_tries``); iSCSI and FC scan each address once, a
    targeted ``c t l`` scan the kernel answers before the write returns, and wait
    for the device within ``device_wait_timeout`` without rescanning.  ``roots``
    and ``conf`` are the seams tests and tools use.
    """

    protocol: ClassVar[str]

    def __init__(
        self,
        root_helper: str | None = None,
        driver: Any = None,
        *,
        use_multipath: bool | None = None,
        device_scan_attempts: int = 3,
        conf: cfg.ConfigOpts | None = None,
        roots: HostRoots = DEFAULT_ROOTS,
        ledger: ledgermod.AttachmentLedger | bool | None = None,
        read_only_setter: Callable[[str, bool], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.conf = conf if conf is not None else config.default_conf()
        self.opts = self.conf.brick_agent
        self.roots = roots
        if roots == DEFAULT_ROOTS:  # only the real host's connectors reach the daemon
            actions.configure_privsep(self.conf, root_helper)
        self.use_multipath = (
            self.opts.use_multipath if use_multipath is None else bool(use_multipath)
        )
        self.device_scan_attempts = max(1, int(device_scan_attempts))
        self.driver = driver
        # The ledger describes the real host: by default only a connector on the real
        # roots uses [brick_agent] ledger_path; others (fake trees) need ledger=... .
        if ledger is None:
            ledger = roots == DEFAULT_ROOTS
        if ledger is True:
            ledger = ledgermod.AttachmentLedger.from_conf(self.conf)
        self.ledger: ledgermod.AttachmentLedger | None = ledger or None
        self._read_only_setter = read_only_setter
        if kwargs:
            LOG.debug("%s ignores os-brick arguments %s", type(self).__name__, sorted(kwargs))

    # --- the os-brick contract -------------------------------------------------
    @abc.abstractmethod
    def connect_volume(self, connection_properties: Mapping[str, Any]) -> DeviceInfo:
        """Attach the volume; return ``{'type': 'block', 'path': ..., ...}``."""

    @abc.abstractmethod
    def disconnect_volume(
        self,
        connection_properties: Mapping[str, Any],
        device_info: Mapping[str, Any] | None,
        force: bool = False,
        ignore_errors: bool = False,
    ) -> None:
        """Detach the volume and remove every host artefact that belongs only to it."""

    @abc.abstractmethod
    def extend_volume(self, connection_properties: Mapping[str, Any]) -> int:
        """Make the host see the volume's new size; return it in bytes."""

    @abc.abstractmethod
    def get_volume_paths(self, connection_properties: Mapping[str, Any]) -> list[str]:
        """Device paths of this volume that exist on the host now (maybe empty)."""

    @abc.abstractmethod
    def get_all_available_volumes(
        self, connection_properties: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every volume of this protocol attached to the host, with its identity."""

    @abc.abstractmethod
    def get_search_path(self) -> str | None:
        """Where this protocol's device links live (None when there is no such place)."""

    def volume_presence(self, connection_properties: Mapping[str, Any]) -> VolumePresence:
        """What of this volume the host has (the verifier's view after a detach); this
        default knows only :meth:`get_volume_paths` and the links and maps over them."""
        found = presence.VolumePresence()
        names = []
        for path in self.get_volume_paths(connection_properties):
            name = os.path.basename(resolve_dev_path(self.roots, path) or path)
            names.append(name)
            found.objects.append(presence.VolumeObject(presence.DEVICE, name, f"path {path}"))
        found.add_stacked(self.roots, names)
        return found

    def check_valid_device(self, path: str, run_as_root: bool = True) -> bool:
        """True when the first block of ``path`` can be read (see :func:`device_readable`)."""
        return device_readable(path, run_as_root, self.roots)

    def supports_multipath(self) -> bool:
        return False

    def set_driver(self, driver: Any) -> None:
        self.driver = driver

    def _ledger_revalidate(self, device_info: Mapping[str, Any]) -> bool:
        """Before a new attachment shares a recorded device: is it still the volume?

        Here: the identity check of the caller suffices.  Transports whose devices
        cache an identity the array may have changed (SCSI LUN reuse) re-read it.
        """
        return True

    def _set_read_only(self, name: str, read_only: bool) -> None:
        """Set block device ``name``'s read-only flag (the ledger's access modes)."""
        setter = self._read_only_setter or actions.set_read_only
        setter(name, read_only)

    def _ledger_lookup(self, props: Mapping[str, Any]) -> list[str] | None:
        """Ledger lookup keys of ``props`` (validates them; None: no ledger for this volume)."""
        return ledgermod.lookup_keys(
            getattr(self, "protocol", ""), props, use_multipath=self.use_multipath
        )


def read_first_block(path: str, size: int = 4096) -> bool:
    """Read one block from a device; False on any I/O error or missing device.

    ``os.pread``, not ``os.read``: eventlet's monkey patching (Cinder's services) makes
    ``os.read`` of anything but a regular file wait in epoll first, which refuses a block
    device (EPERM), so every check would say False there."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        LOG.debug("cannot open %s: %s", path, exc)
        return False
    try:
        os.pread(fd, size, 0)
        return True
    except OSError as exc:
        LOG.debug("cannot read %s: %s", path, errno.errorcode.get(exc.errno or 0, exc))
        return False
    finally:
        os.close(fd)


def device_readable(path: str, run_as_root: bool = True, roots: HostRoots = DEFAULT_ROOTS) -> bool:
    """os-brick's ``check_valid_device``: does the first block of ``path`` read?

    ``run_as_root`` from a non-root process on the real host reads through the
    privileged side, which reads only a fabric volume's device (SCSI LUN, NVMe
    namespace, multipath map or md array over them) and returns only yes/no.
    Otherwise (root already, ``run_as_root=False``, a fake tree) this process reads.
    """
    if not run_as_root or actions.reads_host_itself(roots):
        return read_first_block(path)
    return actions.volume_device_readable(path)
