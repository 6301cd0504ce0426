"""The privilege boundary of brick_agent: one oslo.privsep context, narrow entrypoints.

Only the modules of this package run as root.  Each entrypoint is a thin
``@entrypoint`` wrapper around a plain ``do_*`` function that takes explicit
:class:`~brick_agent.host.roots.HostRoots`; the wrapper always passes
``DEFAULT_ROOTS``, so a caller can never choose which tree is written to.
Entrypoints validate every argument (see :mod:`._validate`) before acting and
never run an arbitrary command.

Capabilities kept by the daemon (everything else is dropped):

* ``CAP_SYS_ADMIN`` — the kernel gates the block and device-mapper operations
  we need on it: ``BLKFLSBUF`` (``blockdev --flushbufs``), the DM ioctls
  behind ``multipath -f`` / ``multipathd resize map``, and NVMe/SCSI
  management paths that call ``capable(CAP_SYS_ADMIN)``.
* ``CAP_SYS_PTRACE`` and ``CAP_DAC_READ_SEARCH`` — for one read only: who holds a
  volume device open (:func:`.reads.volume_devices_users`), which lists every
  process's ``/proc/PID/fd``.  The kernel lets a process read another's descriptors
  only with ptrace read access, which a daemon holding fewer capabilities than a
  root process lacks without ``CAP_SYS_PTRACE``, and lists the descriptors of a
  process of another uid (qemu's) only with ``CAP_DAC_READ_SEARCH``.  Without them a
  service user's NVMe detach could not tell whether the host uses the other
  namespaces of a shared controller, and kept every such controller.

Deliberately not kept:

* ``CAP_DAC_OVERRIDE`` — the daemon stays uid 0 and every file it writes (sysfs
  ``scan``/``delete``/``rescan``/``delete_controller``/``rescan_controller``
  attributes, ``/etc/nvme``, ``/etc/iscsi``) is root-owned with an owner-write bit,
  so plain owner DAC suffices; the other reads happen unprivileged in the caller.
* ``CAP_NET_ADMIN`` — iscsiadm talks to iscsid over a unix socket (iscsid does
  the iSCSI netlink work); the NVMe connect writes ``/dev/nvme-fabrics``
  (root-owned, 0600); no entrypoint configures network interfaces or offload
  ifaces.
* ``CAP_SYS_RAWIO``, ``CAP_MKNOD``, ``CAP_CHOWN``, ``CAP_FOWNER`` — nothing here
  issues raw SCSI commands, creates nodes or changes ownership.

Note: the tools the daemon execs (iscsiadm, multipath, mdadm, blockdev) run as
uid 0 with the *bounding* set intact, so the kernel gives them the full root
capability set again (tests/unit/test_privileged_daemon.py shows it).  The
capability list narrows the daemon's own Python code; what the exec'd tools
can do is narrowed by the fixed argument lists and validation here.

The daemon starts lazily on the first entrypoint call, through
``privsep-helper`` (see :func:`helper_command` and etc/brick_agent/rootwrap.d).
Every entrypoint applies the configuration first (:func:`ensure_initialised`):
the last one given to :func:`configure` (each connector gives its ``conf`` and
the caller's ``root_helper``) or to :func:`init`, else the default
configuration, so no path reaches oslo.privsep's bare ``sudo privsep-helper``
unconfigured.  With
``[brick_agent]/privsep_in_process`` the entrypoints run in the calling
process (tests and tools that are already root).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from oslo_config import cfg
from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

from brick_agent.errors import CommandFailed

CFG_SECTION = "brick_agent_privileged"

CAPABILITIES = [caps.CAP_SYS_ADMIN, caps.CAP_SYS_PTRACE, caps.CAP_DAC_READ_SEARCH]

default = priv_context.PrivContext(
    "brick_agent",
    cfg_section=CFG_SECTION,
    pypath=__name__ + ".default",
    capabilities=CAPABILITIES,
    logger_name="brick_agent.privileged",
)


class PrivilegedCommandFailed(CommandFailed):
    """CommandFailed that survives the privsep channel (rebuilt from ``args``)."""

    def __init__(
        self, argv: list[str], returncode: int | None, stderr: str = "", timed_out: bool = False
    ) -> None:
        super().__init__(argv, returncode, stderr, timed_out)
        self._message = Exception.__str__(self)
        self.args = (list(argv), returncode, stderr, timed_out)

    def __str__(self) -> str:
        return self._message


def entrypoint(func: Callable[..., Any]) -> Any:
    """``default.entrypoint`` whose CommandFailed errors cross the channel intact."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PrivilegedCommandFailed:
            raise
        except CommandFailed as exc:
            raise PrivilegedCommandFailed(
                exc.argv, exc.returncode, exc.stderr, exc.timed_out
            ) from None

    remote = default.entrypoint(wrapper)
    # the daemon resolves a call by module attribute: this object must be the entrypoint
    call = _Entrypoint(remote.func, *remote.args, **remote.keywords)
    setattr(call, priv_context._ENTRYPOINT_ATTR, default)
    return call


class _Entrypoint(functools.partial):
    """oslo.privsep's entrypoint object that applies brick_agent's privsep setup first."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ensure_initialised()
        return super().__call__(*args, **kwargs)


RootHelper = str | Sequence[str] | None


def helper_command(conf: cfg.ConfigOpts, root_helper: RootHelper = None) -> str | None:
    """The daemon start command; None leaves oslo.privsep's default (``sudo privsep-helper``).

    In order: ``[brick_agent]/privsep_helper_command``; else, when already root,
    the ``privsep-helper`` beside this Python (no elevation to ask for: a
    ``sudo`` prefix would only fail where sudo is absent); else the caller's
    ``root_helper`` (os-brick's argument, e.g. ``sudo nova-rootwrap
    /etc/nova/rootwrap.conf``) followed by ``privsep-helper``, as oslo.privsep's
    ``init(root_helper=...)`` builds it.  brick_agent's config files are
    appended (the daemon reads ``[brick_agent_privileged]`` from them);
    oslo.privsep appends ``--privsep_context`` and ``--privsep_sock_path``.
    """
    base = conf.brick_agent.privsep_helper_command or _root_helper_default()
    if base:
        cmd = shlex.split(base)
    elif root_helper:
        cmd = _split(root_helper) + ["privsep-helper"]
    else:
        return None
    for path in getattr(conf, "config_file", None) or []:
        cmd += ["--config-file", path]
    return shlex.join(cmd)


def _root_helper_default() -> str | None:
    """Already root: start the ``privsep-helper`` installed beside this Python, no sudo.

    Otherwise None, and oslo.privsep's own default (``sudo privsep-helper``) applies.
    """
    if os.geteuid() != 0:
        return None
    helper = os.path.join(os.path.dirname(sys.executable), "privsep-helper")
    return shlex.quote(helper) if os.access(helper, os.X_OK) else None


def _split(root_helper: str | Sequence[str]) -> list[str]:
    return shlex.split(root_helper) if isinstance(root_helper, str) else list(root_helper)


@dataclasses.dataclass
class _InitState:
    """What the next :func:`ensure_initialised` applies, and what was applied."""

    conf: cfg.ConfigOpts | None = None
    root_helper: RootHelper = None
    applied: tuple[Any, ...] | None = None


_state = _InitState()
_state_lock = threading.Lock()
_start_lock = threading.Lock()


def configure(conf: cfg.ConfigOpts | None = None, root_helper: RootHelper = None) -> None:
    """Remember ``conf`` and the caller's ``root_helper`` for the daemon's start (no effect yet).

    Connectors call this on construction; the first entrypoint call applies it.
    A ``root_helper`` once given is kept (a later caller without one does not drop it).
    """
    with _state_lock:
        if conf is not None:
            _state.conf = conf
        if root_helper:
            _state.root_helper = root_helper


def ensure_initialised() -> None:
    """Apply the remembered configuration before a call through the daemon.

    Nothing happens in the daemon itself (nothing was configured there and
    client mode is off) or when the same configuration is already applied.  A
    connector configured for the daemon after an in-process one switches the
    mode back (the last configuration wins, as ``init`` did); a daemon already
    running keeps its channel.
    """
    applied = _state.applied
    if applied is not None and applied[0] is _state.conf and applied[1] == _state.root_helper:
        return  # the common case: nothing changed since the last call
    with _state_lock:
        if _state.conf is None:
            if not default.client_mode:
                return  # the daemon itself, or in-process use nobody configured
            from brick_agent import config

            _state.conf = config.default_conf()
        applied = _state.applied
        if applied is None or applied[0] is not _state.conf or applied[1] != _state.root_helper:
            _apply(_state.conf, _state.root_helper)


def start_daemon() -> None:
    """Start the privsep daemon now, when entrypoints run through one and none has started.

    Its first start (the root helper, e.g. ``sudo nova-rootwrap``, then the helper's
    imports) took 15 s in the emulated lab; an operation calls this before its deadline
    starts, so that one-time cost is never charged to a device wait.  A daemon that died
    is left to the next entrypoint call, which starts a new one (oslo.privsep).
    """
    ensure_initialised()
    if not default.client_mode or default.channel is not None:
        return
    with _start_lock:  # PrivContext.start warns when it finds one already started
        if default.channel is None:
            default.start()


def _apply(conf: cfg.ConfigOpts, root_helper: RootHelper) -> None:
    """Set the client mode and the daemon's start command (``helper_command`` override)."""
    default.set_client_mode(not conf.brick_agent.privsep_in_process)
    command = helper_command(conf, root_helper)
    if command:
        cfg.CONF.set_override("helper_command", command, group=CFG_SECTION)
    elif _state.applied is not None:
        cfg.CONF.clear_override("helper_command", group=CFG_SECTION)
    _state.applied = (conf, root_helper)


def init(conf: cfg.ConfigOpts, root_helper: RootHelper = None) -> None:
    """Apply brick_agent's privsep options now (startup of the CLI, the gate, ``os_brick.setup``).

    Without it the first entrypoint call applies them (:func:`ensure_initialised`).
    """
    configure(conf, root_helper)
    with _state_lock:
        _apply(conf, _state.root_helper)


def set_in_process(enabled: bool) -> None:
    """Run entrypoints in this process (True) or through the daemon (False)."""
    default.set_client_mode(not enabled)
