"""``os_brick.initiator.connector.get_connector_properties`` served by brick_agent.

The connector object has os-brick 7.1.1's keys: the generic ones and those of
iSCSI, FC and NVMe-oF from brick_agent (with ``uuid`` and ``system uuid``, see
:mod:`~brick_agent.host_ids`), then whatever os-brick's other
connectors add (RBD ``do_local_attach``, ScaleIO ``sdc_guid``, LightOS ``nqn``,
``found_dsc``, ``host_ips``, ...), asked from os-brick itself in its own
order, later keys winning as in os-brick.
"""

from __future__ import annotations

import logging
from typing import Any

from brick_agent.connector_properties import iscsi_initiator
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)

#: os-brick classes whose keys brick_agent provides instead
SERVED = frozenset(
    {
        "os_brick.initiator.connectors.base.BaseLinuxConnector",
        "os_brick.initiator.connectors.iscsi.ISCSIConnector",
        "os_brick.initiator.connectors.fibre_channel.FibreChannelConnector",
        "os_brick.initiator.connectors.fibre_channel_s390x.FibreChannelConnectorS390X",
        "os_brick.initiator.connectors.fibre_channel_ppc64.FibreChannelConnectorPPC64",
        "os_brick.initiator.connectors.nvmeof.NVMeOFConnector",
    }
)


def brick_agent_properties(
    root_helper: Any,
    my_ip: str | None,
    multipath: bool,
    enforce_multipath: bool,
    host: str | None = None,
    *,
    roots: HostRoots = DEFAULT_ROOTS,
    mountinfo: str | None = None,
) -> dict[str, Any]:
    """The keys brick_agent serves (generic, iSCSI, FC, NVMe-oF, ``uuid``, ``system uuid``)."""
    from brick_agent.connector_properties import get_connector_properties

    return get_connector_properties(
        root_helper,
        my_ip,
        multipath,
        enforce_multipath,
        host=host,
        roots=roots,
        mountinfo=mountinfo,
    )


def os_brick_properties(
    root_helper: Any,
    host: str | None,
    multipath: bool,
    enforce_multipath: bool,
    execute: Any,
    platform: str,
    os_type: str,
) -> dict[str, Any]:
    """What os-brick's connectors that brick_agent does not serve contribute."""
    from oslo_utils import importutils
    from os_brick import utils as ob_utils
    from os_brick.initiator import connector as ob_connector
    from brick_agent.os_brick_compat import patch

    out: dict[str, Any] = {}
    for path in ob_connector._get_connector_list():
        if path in SERVED or path in patch.ADDED_CONNECTORS:
            continue
        cls = importutils.import_class(path)
        if not (
            ob_utils.platform_matches(platform, cls.platform)
            and ob_utils.os_matches(os_type, cls.os_type)
        ):
            continue
        out.update(
            cls.get_connector_properties(
                root_helper,
                host=host,
                multipath=multipath,
                enforce_multipath=enforce_multipath,
                execute=execute,
            )
        )
    return out


def get_connector_properties(
    root_helper: Any,
    my_ip: str | None,
    multipath: bool,
    enforce_multipath: bool,
    host: str | None = None,
    execute: Any = None,
) -> dict[str, Any]:
    """os-brick's signature and keys; iSCSI, FC, NVMe-oF and generic keys from brick_agent."""
    props = brick_agent_properties(root_helper, my_ip, multipath, enforce_multipath, host)
    props.update(
        os_brick_properties(
            root_helper,
            host,
            multipath,
            enforce_multipath,
            execute,
            props["platform"],
            props["os_type"],
        )
    )
    return props


__all__ = [
    "SERVED",
    "brick_agent_properties",
    "get_connector_properties",
    "iscsi_initiator",
    "os_brick_properties",
]
