"""Per-protocol connectors and the factory that picks one by protocol name."""

from brick_agent.connectors.base import Connector, DeviceInfo
from brick_agent.connectors.factory import PROTOCOLS, connector_class, factory

__all__ = ["Connector", "DeviceInfo", "PROTOCOLS", "connector_class", "factory"]
