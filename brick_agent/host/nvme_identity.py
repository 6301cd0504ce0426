"""The host's NVMe identity as found on disk: host NQN (/etc/nvme/hostnqn) and host ID
(/etc/nvme/hostid), the DMI product UUID a new one derives from, and whether
nvme_core's native multipath is on.

Read-only, under injectable roots.  Creating a missing identity (once, through
the privileged writer) is :mod:`brick_agent.connectors.nvmeof.identity`'s job.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.nqn import nqn_problem

LOG = logging.getLogger(__name__)

NQN_UUID_PREFIX = "nqn.2014-08.org.nvmexpress:uuid:"
HOSTNQN_FILE = ("nvme", "hostnqn")
HOSTID_FILE = ("nvme", "hostid")
DMI_PRODUCT_UUID = ("class", "dmi", "id", "product_uuid")
NATIVE_MULTIPATH_PARAM = ("module", "nvme_core", "parameters", "multipath")

# Placeholder DMI UUIDs shipped by some firmware (also refused by nvme-cli): every
# board would get the same host NQN.
_BOGUS_DMI_UUIDS = frozenset(
    {
        uuid.UUID("03000200-0400-0500-0006-000700080009"),
        uuid.UUID("00000000-0000-0000-0000-000000000000"),
        uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"),
    }
)


@dataclasses.dataclass(frozen=True)
class HostIdentity:
    """The NVMe host NQN and host ID of this host."""

    hostnqn: str
    hostid: str


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            value = fh.read().strip()
    except OSError:
        return None
    return value or None


def valid_hostnqn(value: str | None) -> bool:
    """True for an NQN the kernel accepts (:func:`brick_agent.nqn.nqn_problem`)."""
    return value is not None and nqn_problem(value) is None


def parse_uuid(value: str | None) -> uuid.UUID | None:
    """``value`` as a UUID (surrounding blanks ignored); None if it is none."""
    if not value:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def is_placeholder_uuid(value: uuid.UUID | None) -> bool:
    """A UUID some firmware ships on every board (an identity built on it is shared)."""
    return value in _BOGUS_DMI_UUIDS


def dmi_uuid(roots: HostRoots = DEFAULT_ROOTS) -> uuid.UUID | None:
    """The DMI product UUID when it is readable and not a known placeholder."""
    value = parse_uuid(_read(roots.sysfs(*DMI_PRODUCT_UUID)))
    if value is None or value in _BOGUS_DMI_UUIDS:
        return None
    return value


def read_identity(roots: HostRoots = DEFAULT_ROOTS) -> tuple[str | None, str | None]:
    """(hostnqn, hostid) as found on disk; None for a missing or invalid file."""
    nqn = _read(roots.etcfs(*HOSTNQN_FILE))
    hostid = _read(roots.etcfs(*HOSTID_FILE))
    if nqn is not None and not valid_hostnqn(nqn):
        LOG.warning("ignoring invalid host NQN in %s", roots.etcfs(*HOSTNQN_FILE))
        nqn = None
    if hostid is not None and parse_uuid(hostid) is None:
        LOG.warning("ignoring invalid host ID in %s", roots.etcfs(*HOSTID_FILE))
        hostid = None
    return nqn, hostid


def native_multipath_enabled(roots: HostRoots = DEFAULT_ROOTS) -> bool:
    """True when nvme_core's native multipath is on (one head device per namespace)."""
    return (_read(roots.sysfs(*NATIVE_MULTIPATH_PARAM)) or "N").upper().startswith("Y")
