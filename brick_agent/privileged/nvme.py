"""Privileged NVMe-oF operations: connect, disconnect, rescan, host identity files."""

from __future__ import annotations

import os
from collections.abc import Callable

from brick_agent import commands
from brick_agent.errors import DeviceNotFound, InvalidArgument
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint
from brick_agent.privileged._files import create_file_if_missing, write_attr

Runner = Callable[..., commands.CommandResult]

NVME = "nvme"
TRANSPORTS = frozenset({"tcp", "rdma", "fc", "loop"})
FABRIC_TRANSPORTS = TRANSPORTS


def connect_argv(transport: str, traddr: str | None, trsvcid: int | str | None, nqn: str, *,
                 hostnqn: str | None = None, hostid: str | None = None,
                 host_traddr: str | None = None, ctrl_loss_tmo: int | None = None,
                 reconnect_delay: int | None = None,
                 keep_alive_tmo: int | None = None) -> list[str]:
    """The validated ``nvme connect`` argument list."""
    if transport not in TRANSPORTS:
        raise InvalidArgument(f"NVMe transport not supported: {transport!r}")
    argv = [NVME, "connect", "-t", transport, "-n", v.nqn(nqn, "subsystem NQN")]
    if transport == "fc":
        argv += ["-a", v.fc_address(traddr, "traddr")]
        if host_traddr is not None:
            argv += ["-w", v.fc_address(host_traddr, "host_traddr")]
    elif transport in ("tcp", "rdma"):
        argv += ["-a", v.host_address(traddr, "traddr")]
        argv += ["-s", str(v.port(4420 if trsvcid is None else trsvcid, "trsvcid"))]
        if host_traddr is not None:
            argv += ["-w", v.host_address(host_traddr, "host_traddr")]
    elif traddr is not None or trsvcid is not None:
        raise InvalidArgument("loop transport takes no address")
    if hostnqn is not None:
        argv += ["-q", v.nqn(hostnqn, "host NQN")]
    if hostid is not None:
        argv += ["-I", v.uuid_str(hostid, "host id")]
    if ctrl_loss_tmo is not None:
        argv += ["-l", str(v.int_arg(ctrl_loss_tmo, "ctrl_loss_tmo", minimum=-1,
                                     maximum=10**7))]
    if reconnect_delay is not None:
        argv += ["-c", str(v.int_arg(reconnect_delay, "reconnect_delay", minimum=1,
                                     maximum=3600))]
    if keep_alive_tmo is not None:
        argv += ["-k", str(v.int_arg(keep_alive_tmo, "keep_alive_tmo", minimum=1,
                                     maximum=3600))]
    return argv


def do_connect(transport: str, traddr: str | None, trsvcid: int | str | None, nqn: str, *,
               hostnqn: str | None = None, hostid: str | None = None,
               host_traddr: str | None = None, ctrl_loss_tmo: int | None = None,
               reconnect_delay: int | None = None, keep_alive_tmo: int | None = None,
               timeout: float = 30.0, run: Runner = commands.run) -> dict:
    """``nvme connect``; returns returncode/stdout/stderr (caller finds the controller in sysfs)."""
    argv = connect_argv(transport, traddr, trsvcid, nqn, hostnqn=hostnqn, hostid=hostid,
                        host_traddr=host_traddr, ctrl_loss_tmo=ctrl_loss_tmo,
                        reconnect_delay=reconnect_delay, keep_alive_tmo=keep_alive_tmo)
    res = run(argv, timeout=v.timeout_arg(timeout))
    return {"returncode": res.returncode, "stdout": res.stdout, "stderr": res.stderr,
            "duration": res.duration}


def _fabrics_controller(roots: HostRoots, controller: str) -> str:
    controller = v.device_name(controller, v.NVME_CONTROLLER, "NVMe controller")
    base = roots.sysfs("class", "nvme", controller)
    if not os.path.isdir(base):
        raise DeviceNotFound(f"NVMe controller {controller} does not exist")
    try:
        with open(os.path.join(base, "transport")) as f:
            transport = f.read().strip()
    except FileNotFoundError:
        raise DeviceNotFound(f"NVMe controller {controller} has no transport") from None
    if transport not in FABRIC_TRANSPORTS:
        raise InvalidArgument(f"NVMe controller {controller} is not a fabrics controller "
                              f"(transport {transport!r})")
    return base


def do_disconnect(roots: HostRoots, controller: str) -> str:
    """Delete a fabrics controller: write ``1`` to ``<sys>/class/nvme/nvmeN/delete_controller``.

    Refuses PCIe (non-fabrics) controllers.
    """
    base = _fabrics_controller(roots, controller)
    return write_attr(roots.sys, os.path.join(base, "delete_controller"), "1")


def do_rescan_controller(roots: HostRoots, controller: str) -> str:
    """Rescan namespaces: write ``1`` to ``<sys>/class/nvme/nvmeN/rescan_controller``."""
    base = _fabrics_controller(roots, controller)
    return write_attr(roots.sys, os.path.join(base, "rescan_controller"), "1")


def do_write_host_identity(roots: HostRoots, hostnqn: str,
                           hostid: str | None = None) -> dict[str, bool]:
    """Create ``<etc>/nvme/hostnqn`` (and ``hostid``) only if missing; never overwrite."""
    hostnqn = v.nqn(hostnqn, "host NQN")
    if hostid is not None:
        hostid = v.uuid_str(hostid, "host id")
    written = {"hostnqn": create_file_if_missing(roots.etc, roots.etcfs("nvme", "hostnqn"),
                                                 hostnqn + "\n")}
    if hostid is not None:
        written["hostid"] = create_file_if_missing(roots.etc, roots.etcfs("nvme", "hostid"),
                                                   hostid + "\n")
    return written


@entrypoint
def connect(transport: str, traddr: str | None, trsvcid: int | str | None, nqn: str,
            hostnqn: str | None = None, hostid: str | None = None,
            host_traddr: str | None = None, ctrl_loss_tmo: int | None = None,
            reconnect_delay: int | None = None, keep_alive_tmo: int | None = None,
            timeout: float = 30.0) -> dict:
    return do_connect(transport, traddr, trsvcid, nqn, hostnqn=hostnqn, hostid=hostid,
                      host_traddr=host_traddr, ctrl_loss_tmo=ctrl_loss_tmo,
                      reconnect_delay=reconnect_delay, keep_alive_tmo=keep_alive_tmo,
                      timeout=timeout)


@entrypoint
def disconnect(controller: str) -> str:
    return do_disconnect(DEFAULT_ROOTS, controller)


@entrypoint
def rescan_controller(controller: str) -> str:
    return do_rescan_controller(DEFAULT_ROOTS, controller)


@entrypoint
def write_host_identity(hostnqn: str, hostid: str | None = None) -> dict[str, bool]:
    return do_write_host_identity(DEFAULT_ROOTS, hostnqn, hostid)
