"""NVMe-oF checks: the fabrics modules, and a host NQN / host ID that is present,
this host's own and the one its controllers connected with."""

from __future__ import annotations

import os
from collections.abc import Iterator

from brick_agent.health import Check, Context, fail, ok, skip, warn
from brick_agent.host import nvme_identity
from brick_agent.host.nvme import nvme_controllers

TRANSPORTS = ("nvme_tcp", "nvme_rdma", "nvme_fc")
FABRIC_TRANSPORTS = ("tcp", "rdma", "fc")


def _loaded(ctx: Context, module: str) -> bool:
    return os.path.isdir(ctx.roots.sysfs("module", module))


def check_modules(ctx: Context) -> Iterator[Check]:
    name = "nvme.modules"
    fabrics = _loaded(ctx, "nvme_fabrics") or os.path.exists(
        ctx.roots.sysfs("class", "misc", "nvme-fabrics")
    )
    if not fabrics:
        yield fail(
            name,
            "nvme_fabrics is not loaded: no /dev/nvme-fabrics, no NVMe-oF connect",
            "modprobe nvme-fabrics nvme-tcp (and list them in /etc/modules-load.d/)",
        )
        return
    transports = [m for m in TRANSPORTS if _loaded(ctx, m)]
    if not transports:
        yield warn(
            name,
            "nvme_fabrics is loaded but no transport (nvme_tcp, nvme_rdma, nvme_fc): the "
            "first connect has the kernel load one, which fails if it is not installed",
            "modprobe nvme-tcp (and list it in /etc/modules-load.d/)",
        )
        return
    yield ok(name, "nvme_fabrics and " + ", ".join(transports) + " loaded")


def check_identity(ctx: Context) -> Iterator[Check]:
    name = "nvme.host_identity"
    nqn_path = ctx.roots.etcfs(*nvme_identity.HOSTNQN_FILE)
    nqn, hostid = nvme_identity.read_identity(ctx.roots)
    fix = f"rm {nqn_path}: brick_agent writes a stable one at the next attach"
    if nqn is None:
        if os.path.exists(nqn_path):
            yield fail(name, f"{nqn_path} holds no valid NQN", fix)
        else:
            yield warn(
                name,
                f"{nqn_path} does not exist yet: brick_agent creates it at the first attach",
                "nvme gen-hostnqn > /etc/nvme/hostnqn, to register the host with arrays first",
            )
        return
    placeholder = _placeholder_uuid(nqn)
    if placeholder:
        yield fail(
            name,
            f"host NQN {nqn} is built on a placeholder UUID every such machine shares: "
            "targets cannot tell the hosts apart",
            fix,
        )
    elif hostid is None:
        yield warn(
            name,
            f"{nqn}; no valid host ID in /etc/nvme/hostid (each connect may differ)",
            "write the NQN's UUID to /etc/nvme/hostid",
        )
    else:
        yield ok(name, f"{nqn}, host ID {hostid}")


def _placeholder_uuid(nqn: str) -> bool:
    if not nqn.startswith(nvme_identity.NQN_UUID_PREFIX):
        return False
    value = nvme_identity.parse_uuid(nqn[len(nvme_identity.NQN_UUID_PREFIX) :])
    return value is not None and nvme_identity.is_placeholder_uuid(value)


def check_identity_stable(ctx: Context) -> Iterator[Check]:
    """The controllers in use connected with the identity brick_agent reports now."""
    name = "nvme.host_identity_stable"
    nqn, hostid = nvme_identity.read_identity(ctx.roots)
    if nqn is None:
        yield skip(name, "no host NQN to compare")
        return
    fabric = [c for c in nvme_controllers(ctx.roots) if c.transport in FABRIC_TRANSPORTS]
    changed = [f"{c.name} as {c.hostnqn}" for c in fabric if c.hostnqn and c.hostnqn != nqn] + [
        f"{c.name} with host ID {c.hostid}"
        for c in fabric
        if hostid and c.hostid and c.hostid != hostid
    ]
    if changed:
        yield fail(
            name,
            f"the host identity changed: the files say {nqn}, connected: {', '.join(changed)}",
            "restore the old /etc/nvme/hostnqn and hostid, or detach those volumes first and "
            "have the arrays' host entries updated",
        )
    else:
        yield ok(
            name,
            f"{len(fabric)} fabric controller(s), all connected as {nqn}"
            if fabric
            else "no fabric controller connected",
        )


CHECKS = (check_modules, check_identity, check_identity_stable)
