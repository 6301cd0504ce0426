"""Typed, validated, immutable connection properties (iSCSI, NVMe-oF, FC).

Parsers take the ``connection_properties`` dict a volume service (Cinder driver)
sends, never mutate it, ignore keys they do not read, strictly validate the
ones they do, and raise :class:`brick_agent.errors.InvalidConnectionProperties`
naming the offending key path.  Models are frozen dataclasses; secrets are
:class:`brick_agent.secrets.Secret` and ``to_dict()``/``redacted()`` mask them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brick_agent.errors import InvalidConnectionProperties
from brick_agent.properties.common import (
    AccessMode,
    AddressingMode,
    CommonProperties,
    jsonable,
    max_lun,
    scsi_lun,
)
from brick_agent.properties.fc import FcProperties, FcTarget, normalize_wwpn, parse_fc
from brick_agent.properties.iscsi import (
    ChapCredentials,
    IscsiProperties,
    IscsiTarget,
    Portal,
    parse_iqn,
    parse_iscsi,
    parse_portal,
)
from brick_agent.properties.nvmeof import (
    NvmeofProperties,
    NvmePortal,
    NvmeTarget,
    canonical_id,
    parse_nqn,
    parse_nvmeof,
    sysfs_id_matches,
)

ConnectionProperties = IscsiProperties | NvmeofProperties | FcProperties

_PROTOCOLS = {
    "iscsi": "ISCSI",
    "nvmeof": "NVMEOF",
    "nvme": "NVMEOF",
    "fibre_channel": "FIBRE_CHANNEL",
    "fc": "FIBRE_CHANNEL",
}


def canonical_protocol(protocol: str) -> str:
    """'ISCSI', 'NVMEOF' or 'FIBRE_CHANNEL' for any accepted spelling, else ValueError."""
    name = _PROTOCOLS.get(protocol.lower()) if isinstance(protocol, str) else None
    if name is None:
        raise InvalidConnectionProperties(
            "protocol", "must be ISCSI, NVMEOF or FIBRE_CHANNEL (or iscsi, nvme, fc)"
        )
    return name


def parse_properties(protocol: str, props: Mapping[str, Any], **kw: Any) -> ConnectionProperties:
    """Parse ``props`` for ``protocol``; ``kw`` goes to the parser (``use_multipath`` for iSCSI)."""
    name = canonical_protocol(protocol)
    if name == "ISCSI":
        return parse_iscsi(props, **kw)
    kw.pop("use_multipath", None)  # accepted for symmetry; only iSCSI uses it at parse time
    if name == "NVMEOF":
        return parse_nvmeof(props, **kw)
    return parse_fc(props, **kw)


__all__ = [
    "AccessMode",
    "AddressingMode",
    "ChapCredentials",
    "CommonProperties",
    "ConnectionProperties",
    "FcProperties",
    "FcTarget",
    "IscsiProperties",
    "IscsiTarget",
    "InvalidConnectionProperties",
    "NvmeofProperties",
    "NvmePortal",
    "NvmeTarget",
    "Portal",
    "canonical_id",
    "canonical_protocol",
    "jsonable",
    "max_lun",
    "normalize_wwpn",
    "parse_fc",
    "parse_iqn",
    "parse_iscsi",
    "parse_nqn",
    "parse_nvmeof",
    "parse_portal",
    "parse_properties",
    "scsi_lun",
    "sysfs_id_matches",
]
