"""Fibre Channel checks: the HBAs' ports are online."""

from __future__ import annotations

from collections.abc import Iterator

from brick_agent.health import Check, Context, fail, ok, warn
from brick_agent.host.fc import fc_hosts


def check_hbas(ctx: Context) -> Iterator[Check]:
    name = "fc.hbas"
    hosts = fc_hosts(ctx.roots)
    if not hosts:
        yield fail(name, "no FC HBA (no /sys/class/fc_host)", "install the HBA's driver")
        return
    offline = [f"host{h.host_number} ({h.port_state or 'unknown'})" for h in hosts if not h.online]
    online = [f"host{h.host_number}" for h in hosts if h.online]
    if not online:
        yield fail(
            name,
            "no HBA port is online: " + ", ".join(offline),
            "check cabling, switch zoning and each port's link (/sys/class/fc_host/*/port_state)",
        )
    elif offline:
        yield warn(
            name,
            f"online: {', '.join(online)}; not online: {', '.join(offline)} (fewer paths)",
            "check cabling and zoning of the ports not online",
        )
    else:
        yield ok(name, "online: " + ", ".join(online))


CHECKS = (check_hbas,)
