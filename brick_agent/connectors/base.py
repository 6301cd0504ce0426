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
from collections.abc import Mapping
from typing import Any, ClassVar

from oslo_config import cfg

from brick_agent import config
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)

DeviceInfo = dict[str, Any]


class Connector(abc.ABC):
    """Base of the per-protocol connectors.

    Constructor arguments follow os-brick's ``InitiatorConnector`` so callers can
    swap libraries: ``root_helper`` is accepted and ignored (privileged work goes
    through brick_agent's privsep daemon), ``use_multipath`` and
    ``device_scan_attempts`` keep their meaning.  ``roots`` and ``conf`` are the
    seams tests and tools use.
    """

    protocol: ClassVar[str]

    def __init__(self, root_helper: str | None = None, driver: Any = None, *,
                 use_multipath: bool | None = None, device_scan_attempts: int = 3,
                 conf: cfg.ConfigOpts | None = None, roots: HostRoots = DEFAULT_ROOTS,
                 **kwargs: Any) -> None:
        self.conf = conf if conf is not None else default_conf()
        self.opts = self.conf.brick_agent
        self.roots = roots
        self.use_multipath = (self.opts.use_multipath if use_multipath is None
                              else bool(use_multipath))
        self.device_scan_attempts = max(1, int(device_scan_attempts))
        self.driver = driver
        if kwargs:
            LOG.debug("%s ignores os-brick arguments %s", type(self).__name__,
                      sorted(kwargs))

    # --- the os-brick contract -------------------------------------------------
    @abc.abstractmethod
    def connect_volume(self, connection_properties: Mapping[str, Any]) -> DeviceInfo:
        """Attach the volume; return ``{'type': 'block', 'path': ..., ...}``."""

    @abc.abstractmethod
    def disconnect_volume(self, connection_properties: Mapping[str, Any],
                          device_info: Mapping[str, Any] | None, force: bool = False,
                          ignore_errors: bool = False) -> None:
        """Detach the volume and remove every host artefact that belongs only to it."""

    @abc.abstractmethod
    def extend_volume(self, connection_properties: Mapping[str, Any]) -> int:
        """Make the host see the volume's new size; return it in bytes."""

    @abc.abstractmethod
    def get_volume_paths(self, connection_properties: Mapping[str, Any]) -> list[str]:
        """Device paths of this volume that exist on the host now (maybe empty)."""

    @abc.abstractmethod
    def get_all_available_volumes(
            self, connection_properties: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every volume of this protocol attached to the host, with its identity."""

    @abc.abstractmethod
    def get_search_path(self) -> str | None:
        """Where this protocol's device links live (None when there is no such place)."""

    def check_valid_device(self, path: str, run_as_root: bool = True) -> bool:
        """True when the first block of ``path`` can be read."""
        return read_first_block(path)

    def supports_multipath(self) -> bool:
        return False

    def set_driver(self, driver: Any) -> None:
        self.driver = driver


def read_first_block(path: str, size: int = 4096) -> bool:
    """Read one block from a device; False on any I/O error or missing device."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        LOG.debug("cannot open %s: %s", path, exc)
        return False
    try:
        os.read(fd, size)
        return True
    except OSError as exc:
        LOG.debug("cannot read %s: %s", path, errno.errorcode.get(exc.errno, exc))
        return False
    finally:
        os.close(fd)


_DEFAULT_CONF: cfg.ConfigOpts | None = None


def default_conf() -> cfg.ConfigOpts:
    """The process-wide brick_agent configuration (parsed lazily, defaults only)."""
    global _DEFAULT_CONF
    if _DEFAULT_CONF is None:
        _DEFAULT_CONF = config.new_conf()
    return _DEFAULT_CONF


def set_default_conf(conf: cfg.ConfigOpts) -> None:
    """Use ``conf`` (with brick_agent options registered) for connectors built without one."""
    global _DEFAULT_CONF
    _DEFAULT_CONF = conf
