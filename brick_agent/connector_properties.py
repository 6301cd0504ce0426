"""The host's "connector object": what a volume service needs to export a volume to us.

``get_connector_properties`` returns the same keys as os-brick's function of that
name, so it can be passed unchanged to a driver's ``create_export`` and
``initialize_connection``.
"""

from __future__ import annotations

import logging
import platform
import socket
import sys
from typing import Any

from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)


def get_connector_properties(root_helper: str | None = None, my_ip: str | None = None,
                             multipath: bool = False, enforce_multipath: bool = False,
                             host: str | None = None, execute: Any = None, *,
                             roots: HostRoots = DEFAULT_ROOTS,
                             create_nvme_identity: bool = True) -> dict[str, Any]:
    """The connector object of this host.

    ``root_helper`` and ``execute`` are accepted for os-brick compatibility and
    ignored.  Each protocol contributes its own keys: ``initiator`` (iSCSI IQN),
    ``wwpns``/``wwnns`` (online FC ports only), ``nqn``/``nvme_hostid``/
    ``nvme_native_multipath`` (NVMe, created once and stable when missing unless
    ``create_nvme_identity`` is False).  A protocol whose host side is absent
    simply contributes nothing.
    """
    props: dict[str, Any] = {
        "platform": platform.machine(),
        "os_type": sys.platform,
        "ip": my_ip,
        "host": host or socket.gethostname(),
        "multipath": bool(multipath),
        "enforce_multipath": bool(enforce_multipath),
    }
    props.update(_iscsi_properties(roots))
    props.update(_fc_properties(roots))
    props.update(_nvme_properties(roots, create_nvme_identity))
    return props


def _iscsi_properties(roots: HostRoots) -> dict[str, Any]:
    from brick_agent.connectors.iscsi import initiator_name
    name = initiator_name(roots)
    return {"initiator": name} if name else {}


def _fc_properties(roots: HostRoots) -> dict[str, Any]:
    from brick_agent.host.fc import fc_hosts
    online = [h for h in fc_hosts(roots) if (h.port_state or "").lower() == "online"]
    if not online:
        return {}
    return {"wwpns": [h.port_name for h in online], "wwnns": [h.node_name for h in online]}


def _nvme_properties(roots: HostRoots, create: bool) -> dict[str, Any]:
    from brick_agent.nvme_identity import connector_properties
    return connector_properties(roots, create=create)
