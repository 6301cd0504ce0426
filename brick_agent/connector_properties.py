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


def get_connector_properties(
    root_helper: str | None = None,
    my_ip: str | None = None,
    multipath: bool = False,
    enforce_multipath: bool = False,
    host: str | None = None,
    execute: Any = None,
    *,
    roots: HostRoots = DEFAULT_ROOTS,
    create_nvme_identity: bool = True,
    mountinfo: str | None = None,
) -> dict[str, Any]:
    """The connector object of this host.

    ``root_helper`` and ``execute`` are accepted for os-brick compatibility and
    ignored.  Each protocol contributes its own keys: ``initiator`` (iSCSI IQN),
    ``wwpns``/``wwnns`` (online FC ports only), ``nqn``/``nvme_hostid``/
    ``nvme_native_multipath`` (NVMe, created once and stable when missing unless
    ``create_nvme_identity`` is False), and the host's ``uuid`` (root filesystem)
    and ``system uuid`` (DMI) as os-brick's NVMe-oF connector reports them
    (:mod:`brick_agent.host_ids`; ``mountinfo`` defaults to the roots' own).  A
    protocol whose host side is absent simply contributes nothing.  Root-only
    files (initiatorname.iscsi, DMI product_uuid) of the real host are read
    through the privileged readers when this process is not root.
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
    props.update(_host_ids(roots, mountinfo))
    return props


def iscsi_initiator(roots: HostRoots = DEFAULT_ROOTS) -> str | None:
    """This host's IQN; a root-only initiatorname file of the real host is read through privsep."""
    from brick_agent.host.iscsi import initiator_name

    name = initiator_name(roots)
    if name is not None or roots != DEFAULT_ROOTS:
        return name
    path = roots.etcfs("iscsi", "initiatorname.iscsi")
    try:
        with open(path, "rb"):
            return None  # readable and without a name
    except PermissionError:
        pass
    except OSError:
        return None
    try:
        from brick_agent.privileged import reads

        return reads.iscsi_initiator_name()
    except Exception as exc:  # noqa: BLE001 - a connector object must not fail on this
        LOG.warning("cannot read %s: %s", path, exc)
        return None


def _iscsi_properties(roots: HostRoots) -> dict[str, Any]:
    name = iscsi_initiator(roots)
    return {"initiator": name} if name else {}


def _host_ids(roots: HostRoots, mountinfo: str | None) -> dict[str, str]:
    from brick_agent import host_ids

    return host_ids.host_ids(roots, mountinfo or roots.procfs("self", "mountinfo"))


def _fc_properties(roots: HostRoots) -> dict[str, Any]:
    from brick_agent.host.fc import fc_hosts

    online = [h for h in fc_hosts(roots) if (h.port_state or "").lower() == "online"]
    if not online:
        return {}
    return {"wwpns": [h.port_name for h in online], "wwnns": [h.node_name for h in online]}


def _nvme_properties(roots: HostRoots, create: bool) -> dict[str, Any]:
    from brick_agent.connectors.nvmeof.identity import connector_properties

    return connector_properties(roots, create=create)
