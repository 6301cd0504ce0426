"""The host's stable NVMe identity: host NQN (/etc/nvme/hostnqn) and host ID (/etc/nvme/hostid).

The files are read under injectable roots.  When one is missing it is created
once through a privileged writer: the host ID comes from the host NQN's UUID
when it has one, else from a valid DMI ``product_uuid``, else from a random
UUID; whatever ends up on disk is read back, so two processes racing to
create the files agree on the result.  A new random identity per call (the
os-brick bug 2016029) cannot happen: nothing random is returned unless it was
written first.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable

from brick_agent.errors import NotSupported
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
_BOGUS_DMI_UUIDS = frozenset({
    uuid.UUID("03000200-0400-0500-0006-000700080009"),
    uuid.UUID("00000000-0000-0000-0000-000000000000"),
    uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"),
})

#: ``writer(hostnqn, hostid)`` creates whichever of the two files is missing
#: (never overwrites an existing one).  The default is the privileged entrypoint.
IdentityWriter = Callable[[str, str], None]


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


def _as_uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        return None


def dmi_uuid(roots: HostRoots = DEFAULT_ROOTS) -> uuid.UUID | None:
    """The DMI product UUID when it is readable and not a known placeholder."""
    value = _as_uuid(_read(roots.sysfs(*DMI_PRODUCT_UUID)))
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
    if hostid is not None and _as_uuid(hostid) is None:
        LOG.warning("ignoring invalid host ID in %s", roots.etcfs(*HOSTID_FILE))
        hostid = None
    return nqn, hostid


def _derive(nqn: str | None, hostid: str | None,
            roots: HostRoots) -> tuple[str, str]:
    """Values for the missing files, consistent with the present ones."""
    base: uuid.UUID | None = None
    if hostid is not None:
        base = _as_uuid(hostid)
    if base is None and nqn is not None and nqn.startswith(NQN_UUID_PREFIX):
        base = _as_uuid(nqn[len(NQN_UUID_PREFIX):])
    if base is None:
        base = dmi_uuid(roots)
    if base is None:
        base = uuid.uuid4()
        LOG.info("no usable DMI product UUID: creating a random NVMe host identity once")
    return (nqn or NQN_UUID_PREFIX + str(base)), (hostid or str(base))


def default_writer(hostnqn: str, hostid: str) -> None:
    """Create the missing identity files through the privileged entrypoint."""
    from brick_agent.privileged import nvme as priv_nvme  # late: privsep is heavy
    priv_nvme.write_host_identity(hostnqn, hostid)


def ensure_identity(roots: HostRoots = DEFAULT_ROOTS,
                    writer: IdentityWriter | None = None) -> HostIdentity:
    """The host identity, creating missing files once (never per call)."""
    nqn, hostid = read_identity(roots)
    if nqn is not None and hostid is not None:
        return HostIdentity(nqn, hostid)
    if writer is None and roots != DEFAULT_ROOTS:
        # the privileged writer only ever writes the live host, never this tree
        raise NotSupported(f"no NVMe host identity under {roots.etcfs('nvme')}, and a tree "
                           "other than the live host's is not written")
    new_nqn, new_hostid = _derive(nqn, hostid, roots)
    (writer or default_writer)(new_nqn, new_hostid)  # creates only the missing file(s)
    nqn, hostid = read_identity(roots)  # whatever won a race is the identity
    if nqn is None or hostid is None:
        raise NotSupported(f"cannot create the NVMe host identity under "
                           f"{roots.etcfs('nvme')}")
    return HostIdentity(nqn, hostid)


def native_multipath_enabled(roots: HostRoots = DEFAULT_ROOTS) -> bool:
    """True when nvme_core's native multipath is on (one head device per namespace)."""
    return (_read(roots.sysfs(*NATIVE_MULTIPATH_PARAM)) or "N").upper().startswith("Y")


def connector_properties(roots: HostRoots = DEFAULT_ROOTS,
                         writer: IdentityWriter | None = None, *,
                         create: bool = True) -> dict[str, object]:
    """NVMe keys of ``get_connector_properties``: nqn, nvme_hostid, nvme_native_multipath.

    With ``create=False`` (a fake or read-only tree) only existing files are
    reported.  A host that cannot have an identity (read-only /etc, no
    privileges) reports no ``nqn``/``nvme_hostid`` rather than failing the call.
    """
    props: dict[str, object] = {"nvme_native_multipath": native_multipath_enabled(roots)}
    if create:
        try:
            nqn, hostid = dataclasses.astuple(ensure_identity(roots, writer))
        except Exception as exc:  # noqa: BLE001 - connector properties must not fail
            LOG.warning("no NVMe host identity: %s", exc)
            return props
    else:
        nqn, hostid = read_identity(roots)
    if nqn:
        props["nqn"] = nqn
    if hostid:
        props["nvme_hostid"] = hostid
    return props
