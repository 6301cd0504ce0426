"""Privileged NVMe-oF operations: connect (a write to /dev/nvme-fabrics), disconnect, rescan,
host identity files.

A connect uses only this host's identity (``/etc/nvme/hostnqn`` and ``hostid``, or the
kernel's default when none is given); a disconnect deletes only a fabrics controller made
with this host's NQN whose namespaces the host does not use (see :mod:`._owned`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from brick_agent.errors import DeviceNotFound, InvalidArgument, NotOwned
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _owned
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint
from brick_agent.privileged._files import create_file_if_missing, write_attr

LOG = logging.getLogger(__name__)


TRANSPORTS = _owned.FABRIC_NVME_TRANSPORTS
FABRIC_TRANSPORTS = TRANSPORTS


#: Integer connect options: (name, minimum, maximum); -1 means "off"/"forever" where allowed.
_INT_OPTIONS = (
    ("ctrl_loss_tmo", -1, 10**7),
    ("reconnect_delay", 1, 3600),
    ("keep_alive_tmo", 1, 3600),
    ("fast_io_fail_tmo", -1, 10**7),
)


def fabrics_options(
    transport: str,
    traddr: str | None,
    trsvcid: int | str | None,
    nqn: str,
    *,
    hostnqn: str | None = None,
    hostid: str | None = None,
    host_traddr: str | None = None,
    **timeouts: int | None,
) -> str:
    """The validated option string written to ``/dev/nvme-fabrics`` (``nvmf_parse_options``).

    Every value is validated against a strict pattern, so none can carry a ``,`` or
    ``=`` that would smuggle in another option.  ``timeouts`` are the keys of
    ``_INT_OPTIONS`` (None = the kernel's default).
    """
    if not isinstance(transport, str) or transport not in TRANSPORTS:
        raise InvalidArgument(f"NVMe transport not supported: {transport!r}")
    unknown = set(timeouts) - {name for name, _, _ in _INT_OPTIONS}
    if unknown:
        raise InvalidArgument(f"unknown NVMe connect options: {sorted(unknown)}")
    parts = [f"nqn={v.nqn(nqn, 'subsystem NQN')}", f"transport={transport}"]
    parts += _address_options(transport, traddr, trsvcid, host_traddr)
    if hostnqn is not None:
        parts.append(f"hostnqn={v.nqn(hostnqn, 'host NQN')}")
    if hostid is not None:
        parts.append(f"hostid={v.uuid_str(hostid, 'host id')}")
    for name, low, high in _INT_OPTIONS:
        value = timeouts.get(name)
        if value is not None:
            parts.append(f"{name}={v.int_arg(value, name, minimum=low, maximum=high)}")
    return ",".join(parts)


def _address_options(
    transport: str, traddr: str | None, trsvcid: int | str | None, host_traddr: str | None
) -> list[str]:
    """The validated address options of ``transport``: FC WWN pairs, an IP address or
    host name and port (4420 by default) for TCP and RDMA, none for loop."""
    parts = []
    if transport == "fc":
        parts.append(f"traddr={v.fc_address(traddr, 'traddr')}")
        if host_traddr is not None:
            parts.append(f"host_traddr={v.fc_address(host_traddr, 'host_traddr')}")
    elif transport in ("tcp", "rdma"):
        parts.append(f"traddr={v.host_address(traddr, 'traddr')}")
        parts.append(f"trsvcid={v.port(4420 if trsvcid is None else trsvcid, 'trsvcid')}")
        if host_traddr is not None:
            parts.append(f"host_traddr={v.host_address(host_traddr, 'host_traddr')}")
    elif traddr is not None or trsvcid is not None:
        raise InvalidArgument("loop transport takes no address")
    return parts


def _numeric(address: str | None, what: str, resolve: Callable[[str], str]) -> str | None:
    """A (validated) IP address or host name as a numeric address: the kernel parses
    only numeric ones (nvme-cli used to resolve names)."""
    if address is None:
        return None
    address = v.host_address(address, what)
    try:
        ipaddress.ip_address(address.split("%", 1)[0])
        return address
    except ValueError:
        return v.host_address(resolve(address), what)


def _resolve(name: str) -> str:
    try:
        return str(socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)[0][4][0])
    except OSError as exc:
        raise InvalidArgument(f"cannot resolve NVMe address {name!r}: {exc}") from None


def _fabrics_io(device: str, options: str) -> str:
    """Write ``options`` to the fabrics device; the kernel's reply (``instance=N,cntlid=M``).

    The write blocks until the controller is created or the connect failed (OSError).
    """
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.write(fd, options.encode())
        return os.read(fd, 256).decode(errors="replace")
    finally:
        os.close(fd)


def do_connect(
    roots: HostRoots,
    transport: str,
    traddr: str | None,
    trsvcid: int | str | None,
    nqn: str,
    *,
    hostnqn: str | None = None,
    hostid: str | None = None,
    host_traddr: str | None = None,
    timeout: float = 30.0,
    io: Callable[[str, str], str] = _fabrics_io,
    resolve: Callable[[str], str] = _resolve,
    **timeouts: int | None,
) -> dict:
    """Create a fabrics controller by writing to ``<dev>/nvme-fabrics``.

    Returns ``{"controller": "nvmeN"}``, or ``{"errno": E, "error": text}`` when the
    kernel refused (``EALREADY``: an identical controller exists), or
    ``{"timed_out": True}`` after ``timeout`` seconds.  A connect that completes
    after its caller gave up deletes the controller it made: nobody owns it.
    """

    def build() -> str:
        return fabrics_options(
            transport,
            traddr,
            trsvcid,
            nqn,
            hostnqn=hostnqn,
            hostid=hostid,
            host_traddr=host_traddr,
            **timeouts,
        )

    options = build()  # every argument validated before any lookup
    timeout = v.timeout_arg(timeout)
    _require_own_identity(roots, hostnqn, hostid)
    if transport in ("tcp", "rdma"):
        names = (traddr, host_traddr)
        traddr = _numeric(traddr, "traddr", resolve)
        host_traddr = _numeric(host_traddr, "host_traddr", resolve)
        if (traddr, host_traddr) != names:
            options = build()
    device = roots.devfs("nvme-fabrics")
    result: dict = {}
    state = threading.Lock()
    done = threading.Event()
    abandoned = threading.Event()

    def attempt() -> None:
        started = time.monotonic()
        try:
            reply = io(device, options)
            fields = dict(f.split("=", 1) for f in reply.strip().split(",") if "=" in f)
            result["controller"] = f"nvme{int(fields['instance'])}"
        except OSError as exc:
            result.update(errno=exc.errno, error=os.strerror(exc.errno) if exc.errno else str(exc))
        except (KeyError, ValueError):
            result.update(errno=None, error="unexpected reply from nvme-fabrics")
        result["duration"] = time.monotonic() - started
        with state:
            done.set()
            late = abandoned.is_set()
        if late and "controller" in result:
            LOG.warning(
                "NVMe connect %s finished after its caller gave up: deleting %s",
                _describe(options),
                result["controller"],
            )
            try:  # ours by construction: it carries the identity this call passed
                _delete_controller(roots, result["controller"], owned=False)
            except (OSError, DeviceNotFound, InvalidArgument) as exc:
                LOG.warning(
                    "could not delete abandoned controller %s: %s", result["controller"], exc
                )

    threading.Thread(target=attempt, name="nvme-fabrics-connect", daemon=True).start()
    if not done.wait(timeout):
        with state:
            if not done.is_set():
                abandoned.set()
                return {"timed_out": True, "error": f"no reply within {timeout:.1f}s"}
    return dict(result)


def _describe(options: str) -> str:
    """The target part of an option string, for logs (no host identity)."""
    keep = ("nqn", "transport", "traddr", "trsvcid")
    return ",".join(p for p in options.split(",") if p.partition("=")[0] in keep)


def _require_own_identity(roots: HostRoots, hostnqn: str | None, hostid: str | None) -> None:
    """Refuse a host NQN / host ID that is not this host's (``/etc/nvme``)."""
    mine_nqn, mine_id = _owned.own_identity(roots)
    if hostnqn is not None and hostnqn != mine_nqn:
        raise NotOwned(f"host NQN {hostnqn}", f"this host's is {mine_nqn or 'not set'}")
    if hostid is not None and (
        mine_id is None or v.uuid_str(hostid, "host id") != v.uuid_str(mine_id, "this host's id")
    ):
        raise NotOwned(f"host id {hostid}", f"this host's is {mine_id or 'not set'}")


def _fabrics_controller(roots: HostRoots, controller: str, *, owned: bool) -> str:
    """sysfs directory of fabrics controller ``controller`` (``owned``: made with this
    host's NQN, and none of its namespaces used by the host)."""
    controller = v.device_name(controller, v.NVME_CONTROLLER, "NVMe controller")
    base = roots.sysfs("class", "nvme", controller)
    if not os.path.isdir(base):
        raise DeviceNotFound(f"NVMe controller {controller} does not exist")
    if not os.path.exists(os.path.join(base, "transport")):
        raise DeviceNotFound(f"NVMe controller {controller} has no transport")
    problem = _owned.controller_problem(roots, controller, owned=owned)
    if problem:
        raise NotOwned(f"NVMe controller {controller}", problem)
    if owned:
        _owned.require_unused(
            roots, f"NVMe controller {controller}", _owned.controller_devices(roots, controller)
        )
    return base


def _delete_controller(
    roots: HostRoots, controller: str, *, owned: bool, timeout: float | None = None
) -> str:
    base = _fabrics_controller(roots, controller, owned=owned)
    return write_attr(roots.sys, os.path.join(base, "delete_controller"), "1", timeout=timeout)


def do_disconnect(roots: HostRoots, controller: str, timeout: float | None = None) -> str:
    """Delete a fabrics controller: write ``1`` to ``<sys>/class/nvme/nvmeN/delete_controller``.

    Refuses PCIe (non-fabrics) controllers, controllers made with another host NQN and
    controllers whose namespaces the host uses (root, swap, a mounted filesystem).
    ``timeout``: seconds the write may block (with its target gone the kernel holds it
    for a minute or more); then KernelActionTimeout, the deletion going on in the kernel.
    """
    timeout = None if timeout is None else v.timeout_arg(timeout)
    return _delete_controller(roots, controller, owned=True, timeout=timeout)


def do_rescan_controller(roots: HostRoots, controller: str) -> str:
    """Rescan namespaces: write ``1`` to ``<sys>/class/nvme/nvmeN/rescan_controller``."""
    base = _fabrics_controller(roots, controller, owned=False)
    return write_attr(roots.sys, os.path.join(base, "rescan_controller"), "1")


def do_write_host_identity(
    roots: HostRoots, hostnqn: str, hostid: str | None = None
) -> dict[str, bool]:
    """Create ``<etc>/nvme/hostnqn`` (and ``hostid``) only if missing; never overwrite."""
    hostnqn = v.nqn(hostnqn, "host NQN")
    if hostid is not None:
        hostid = v.uuid_str(hostid, "host id")
    written = {
        "hostnqn": create_file_if_missing(roots.etc, roots.etcfs("nvme", "hostnqn"), hostnqn + "\n")
    }
    if hostid is not None:
        written["hostid"] = create_file_if_missing(
            roots.etc, roots.etcfs("nvme", "hostid"), hostid + "\n"
        )
    return written


@entrypoint
def connect(
    transport: str,
    traddr: str | None,
    trsvcid: int | str | None,
    nqn: str,
    hostnqn: str | None = None,
    hostid: str | None = None,
    host_traddr: str | None = None,
    ctrl_loss_tmo: int | None = None,
    reconnect_delay: int | None = None,
    keep_alive_tmo: int | None = None,
    fast_io_fail_tmo: int | None = None,
    timeout: float = 30.0,
) -> dict:
    return do_connect(
        DEFAULT_ROOTS,
        transport,
        traddr,
        trsvcid,
        nqn,
        hostnqn=hostnqn,
        hostid=hostid,
        host_traddr=host_traddr,
        timeout=timeout,
        ctrl_loss_tmo=ctrl_loss_tmo,
        reconnect_delay=reconnect_delay,
        keep_alive_tmo=keep_alive_tmo,
        fast_io_fail_tmo=fast_io_fail_tmo,
    )


@entrypoint
def disconnect(controller: str, timeout: float | None = None) -> str:
    return do_disconnect(DEFAULT_ROOTS, controller, timeout)


@entrypoint
def rescan_controller(controller: str) -> str:
    return do_rescan_controller(DEFAULT_ROOTS, controller)


@entrypoint
def write_host_identity(hostnqn: str, hostid: str | None = None) -> dict[str, bool]:
    return do_write_host_identity(DEFAULT_ROOTS, hostnqn, hostid)
