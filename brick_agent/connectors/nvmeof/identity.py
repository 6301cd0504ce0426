"""The host's NVMe identity, created once when missing: host NQN and host ID.

Read from ``/etc/nvme`` (:mod:`brick_agent.host.nvme_identity`).  When a file is
missing it is created once through a privileged writer: the host ID comes from
the host NQN's UUID when it has one, else from a valid DMI ``product_uuid``,
else from a random UUID; whatever ends up on disk is read back, so two
processes racing to create the files agree on the result.  A new random
identity per call (the os-brick bug 2016029) cannot happen: nothing random is
returned unless it was written first.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable

from brick_agent.connectors.nvmeof.actions import write_host_identity
from brick_agent.errors import NotSupported
from brick_agent.host.nvme_identity import (
    NQN_UUID_PREFIX,
    HostIdentity,
    dmi_uuid,
    native_multipath_enabled,
    parse_uuid,
    read_identity,
)
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)

#: ``writer(hostnqn, hostid)`` creates whichever of the two files is missing
#: (never overwrites an existing one).  The default is the privileged entrypoint
#: (:func:`brick_agent.connectors.nvmeof.actions.write_host_identity`).
IdentityWriter = Callable[[str, str], None]


def _derive(nqn: str | None, hostid: str | None, roots: HostRoots) -> tuple[str, str]:
    """Values for the missing files, consistent with the present ones."""
    base: uuid.UUID | None = None
    if hostid is not None:
        base = parse_uuid(hostid)
    if base is None and nqn is not None and nqn.startswith(NQN_UUID_PREFIX):
        base = parse_uuid(nqn[len(NQN_UUID_PREFIX) :])
    if base is None:
        base = dmi_uuid(roots)
    if base is None:
        base = uuid.uuid4()
        LOG.info("no usable DMI product UUID: creating a random NVMe host identity once")
    return (nqn or NQN_UUID_PREFIX + str(base)), (hostid or str(base))


def ensure_identity(
    roots: HostRoots = DEFAULT_ROOTS, writer: IdentityWriter | None = None
) -> HostIdentity:
    """The host identity, creating missing files once (never per call)."""
    nqn, hostid = read_identity(roots)
    if nqn is not None and hostid is not None:
        return HostIdentity(nqn, hostid)
    if writer is None and roots != DEFAULT_ROOTS:
        # the privileged writer only ever writes the live host, never this tree
        raise NotSupported(
            f"no NVMe host identity under {roots.etcfs('nvme')}, and a tree "
            "other than the live host's is not written"
        )
    new_nqn, new_hostid = _derive(nqn, hostid, roots)
    (writer or write_host_identity)(new_nqn, new_hostid)  # creates only the missing file(s)
    nqn, hostid = read_identity(roots)  # whatever won a race is the identity
    if nqn is None or hostid is None:
        raise NotSupported(f"cannot create the NVMe host identity under {roots.etcfs('nvme')}")
    return HostIdentity(nqn, hostid)


def connector_properties(
    roots: HostRoots = DEFAULT_ROOTS, writer: IdentityWriter | None = None, *, create: bool = True
) -> dict[str, object]:
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
