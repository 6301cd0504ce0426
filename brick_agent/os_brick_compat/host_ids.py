"""Moved to :mod:`brick_agent.host_ids` (the connector object of the core library has
``uuid`` and ``system uuid`` too); this name stays for imports of the compat layer."""

from brick_agent.host_ids import (
    BY_UUID,
    DMI_PRODUCT_UUID,
    MOUNTINFO,
    host_ids,
    root_fs_uuid,
    root_source,
    system_uuid,
)

__all__ = [
    "BY_UUID",
    "DMI_PRODUCT_UUID",
    "MOUNTINFO",
    "host_ids",
    "root_fs_uuid",
    "root_source",
    "system_uuid",
]
