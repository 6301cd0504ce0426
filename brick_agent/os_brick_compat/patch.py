"""Patch the installed os-brick in place (:func:`enable`) and undo it (:func:`disable`).

What changes (attributes of the modules Nova and Cinder imported, so their
call-time lookups and their tests' ``mock.patch`` targets see it):

* ``os_brick.initiator.connector.InitiatorConnector.factory`` — ISCSI (default/tcp
  transport), NVME, NVMEOF and FIBRE_CHANNEL build the classes of
  :mod:`brick_agent.os_brick_compat.connectors` when os-brick's mapping for the
  architecture would build the generic class; everything else (ISER, offload
  iSCSI transports, s390x/ppc64 FC, RBD, NFS, ...) is os-brick's own factory.
* ``os_brick.initiator.connector.get_connector_properties`` —
  :func:`brick_agent.os_brick_compat.properties.get_connector_properties`.
* ``os_brick.initiator.connector.unix_connector_list`` — our classes are
  appended (fixtures that stub every listed class, like Nova's OSBrickFixture,
  then stub ours too).
* ``os_brick.setup`` — os-brick's setup, then brick_agent's options on the
  same ConfigOpts, made the connectors' default (:func:`setup`).
* the ``brick_agent`` loggers take the level the service set for ``os_brick``
  (:mod:`brick_agent.os_brick_compat.log_levels`).
* ``os_brick.initiator.utils.guard_connection`` and
  ``os_brick.initiator.linuxscsi.LinuxSCSI.is_multipath_running`` —
  :mod:`brick_agent.os_brick_compat.locks`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from brick_agent.os_brick_compat import log_levels

LOG = logging.getLogger(__name__)

#: dotted paths appended to os-brick's ``unix_connector_list``
ADDED_CONNECTORS = (
    "brick_agent.os_brick_compat.connectors.ISCSIConnector",
    "brick_agent.os_brick_compat.connectors.FibreChannelConnector",
    "brick_agent.os_brick_compat.connectors.NVMeOFConnector",
)
#: iSCSI transports brick_agent serves; others (iser, offload ifaces) stay os-brick's
ISCSI_TRANSPORTS = (None, "", "default", "tcp")
#: the os-brick release the layer is tested against (tools/compat/run-nova-tests.sh)
TESTED_OS_BRICK = "7.1.1"

_lock = threading.RLock()
_originals: dict[str, Any] = {}
_protocols: frozenset[str] = frozenset()


def is_enabled() -> bool:
    return bool(_originals)


def original(name: str) -> Callable[..., Any]:
    """os-brick's own function replaced under ``name`` (works while disabled too)."""
    if name in _originals:
        return _originals[name]
    return _current()[name]


def _current() -> dict[str, Any]:
    import os_brick
    from os_brick.initiator import connector, linuxscsi
    from os_brick.initiator import utils as ob_utils

    def func(obj: Any) -> Any:
        return getattr(obj, "__func__", obj)

    return {
        "factory": func(connector.InitiatorConnector.__dict__["factory"]),
        "get_connector_properties": connector.get_connector_properties,
        "setup": os_brick.setup,
        "guard_connection": ob_utils.guard_connection,
        "is_multipath_running": func(linuxscsi.LinuxSCSI.__dict__["is_multipath_running"]),
    }


def routed_class(
    protocol: str, arch: str | None = None, kwargs: dict[str, Any] | None = None
) -> type | None:
    """The compat class ``factory`` builds for these arguments, or None (os-brick's own)."""
    from os_brick.initiator import connector
    from brick_agent.os_brick_compat.connectors import REPLACES

    protocol = str(protocol).upper()
    if protocol not in _protocols:
        return None
    if protocol == "ISCSI" and (kwargs or {}).get("transport") not in ISCSI_TRANSPORTS:
        return None
    return REPLACES.get(connector.get_connector_mapping(arch).get(protocol, ""))


def factory(
    protocol: str,
    root_helper: Any,
    driver: Any = None,
    use_multipath: bool = False,
    device_scan_attempts: int = 3,
    arch: str | None = None,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """os-brick's ``InitiatorConnector.factory``; our protocols get brick_agent connectors."""
    cls = routed_class(protocol, arch, kwargs)
    log_levels.follow_os_brick()
    if cls is None:
        return original("factory")(
            protocol,
            root_helper,
            driver,
            use_multipath,
            device_scan_attempts,
            arch,
            *args,
            **kwargs,
        )
    kwargs.update(
        root_helper=root_helper,
        driver=driver,
        use_multipath=use_multipath,
        device_scan_attempts=device_scan_attempts,
    )
    return cls(*args, **kwargs)


def setup(conf: Any, **kwargs: Any) -> None:
    """os-brick's ``setup(conf)``, then brick_agent configured from the same ``conf``.

    ``[brick_agent]`` options are registered on ``conf`` (the service's), the
    connectors default to it, and the lock path and privsep mode come from it.
    """
    original("setup")(conf, **kwargs)
    from brick_agent import config, locking, privileged

    config.register_opts(conf)
    config.set_default_conf(conf)
    locking.configure(conf)
    privileged.init(conf)
    log_levels.follow_os_brick()


def enable(protocols: Iterable[str] | None = None) -> None:
    """Patch os-brick (idempotent; a new ``protocols`` set replaces the previous one)."""
    global _protocols
    import os_brick
    from os_brick.initiator import connector, linuxscsi
    from os_brick.initiator import utils as ob_utils
    from brick_agent.os_brick_compat import PROTOCOLS, locks
    from brick_agent.os_brick_compat import properties

    wanted = frozenset(p.upper() for p in (PROTOCOLS if protocols is None else protocols))
    unknown = wanted - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"brick_agent serves {', '.join(PROTOCOLS)}; not {sorted(unknown)}")
    with _lock:
        _protocols = wanted
        if _originals:
            return
        _originals.update(_current())
        connector.InitiatorConnector.factory = staticmethod(factory)
        connector.get_connector_properties = properties.get_connector_properties
        os_brick.setup = setup
        ob_utils.guard_connection = locks.guard_connection
        linuxscsi.LinuxSCSI.is_multipath_running = staticmethod(locks.is_multipath_running)
        for path in ADDED_CONNECTORS:
            if path not in connector.unix_connector_list:
                connector.unix_connector_list.append(path)
    version = _os_brick_version()
    if version != TESTED_OS_BRICK:
        LOG.warning(
            "os-brick %s is installed; the brick_agent compatibility layer is tested with %s",
            version,
            TESTED_OS_BRICK,
        )
    LOG.info("os-brick compatibility enabled: brick_agent serves %s", ", ".join(sorted(wanted)))


def _os_brick_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("os-brick")
    except metadata.PackageNotFoundError:
        return None


def disable() -> None:
    """Put os-brick's own functions back."""
    global _protocols
    import os_brick
    from os_brick.initiator import connector, linuxscsi
    from os_brick.initiator import utils as ob_utils

    with _lock:
        if not _originals:
            return
        connector.InitiatorConnector.factory = staticmethod(_originals["factory"])
        connector.get_connector_properties = _originals["get_connector_properties"]
        os_brick.setup = _originals["setup"]
        ob_utils.guard_connection = _originals["guard_connection"]
        linuxscsi.LinuxSCSI.is_multipath_running = staticmethod(_originals["is_multipath_running"])
        for path in ADDED_CONNECTORS:
            while path in connector.unix_connector_list:
                connector.unix_connector_list.remove(path)
        _originals.clear()
        _protocols = frozenset()
        log_levels.reset()


__all__ = [
    "ADDED_CONNECTORS",
    "disable",
    "enable",
    "factory",
    "is_enabled",
    "original",
    "routed_class",
    "setup",
]
