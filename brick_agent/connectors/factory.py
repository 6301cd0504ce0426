"""Pick a connector class by protocol name (os-brick's ``InitiatorConnector.factory``)."""

from __future__ import annotations

import importlib
from typing import Any

from brick_agent.connectors.base import Connector
from brick_agent.errors import InvalidConnectorProtocol

# protocol name -> (module, class, extra constructor kwargs)
_CONNECTORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ISCSI": ("brick_agent.connectors.iscsi.connector", "ISCSIConnector", {}),
    "ISER": ("brick_agent.connectors.iscsi.connector", "ISCSIConnector", {"transport": "iser"}),
    "NVME": ("brick_agent.connectors.nvmeof.connector", "NVMeOFConnector", {}),
    "NVMEOF": ("brick_agent.connectors.nvmeof.connector", "NVMeOFConnector", {}),
    "FIBRE_CHANNEL": ("brick_agent.connectors.fc.connector", "FibreChannelConnector", {}),
    "FC": ("brick_agent.connectors.fc.connector", "FibreChannelConnector", {}),
}

PROTOCOLS = ("ISCSI", "NVMEOF", "FIBRE_CHANNEL")


def connector_class(protocol: str) -> type[Connector]:
    """The connector class for ``protocol`` (case-insensitive)."""
    try:
        module_name, class_name, _ = _CONNECTORS[str(protocol).upper()]
    except KeyError:
        raise InvalidConnectorProtocol(
            f"no connector for protocol {protocol!r}; known: {', '.join(PROTOCOLS)}"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


def factory(
    protocol: str,
    root_helper: str | None = None,
    driver: Any = None,
    use_multipath: bool | None = None,
    device_scan_attempts: int = 3,
    *args: Any,
    **kwargs: Any,
) -> Connector:
    """Build the connector for ``protocol`` (same signature as os-brick's factory)."""
    cls = connector_class(protocol)
    extra = dict(_CONNECTORS[str(protocol).upper()][2])
    extra.update(kwargs)
    return cls(
        root_helper,
        driver,
        use_multipath=use_multipath,
        device_scan_attempts=device_scan_attempts,
        **extra,
    )
