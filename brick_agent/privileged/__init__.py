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

Deliberately not kept:

* ``CAP_DAC_OVERRIDE`` / ``CAP_DAC_READ_SEARCH`` — the daemon stays uid 0 and
  every file it writes (sysfs ``scan``/``delete``/``rescan``/
  ``delete_controller``/``rescan_controller`` attributes, ``/etc/nvme``,
  ``/etc/iscsi``) is root-owned with an owner-write bit, so plain owner DAC
  suffices; all reads happen unprivileged in the caller.  Add it only when
  running the daemon under a non-root ``user`` (then iscsid and multipathd,
  which check the peer uid, would refuse anyway).
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
``privsep-helper`` (see :func:`init` and etc/brick_agent/rootwrap.d).  With
``[brick_agent]/privsep_in_process`` the entrypoints run in the calling
process (tests and tools that are already root).
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

from oslo_config import cfg
from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context

from brick_agent.errors import CommandFailed

CFG_SECTION = "brick_agent_privileged"

CAPABILITIES = [caps.CAP_SYS_ADMIN]

default = priv_context.PrivContext(
    "brick_agent",
    cfg_section=CFG_SECTION,
    pypath=__name__ + ".default",
    capabilities=CAPABILITIES,
    logger_name="brick_agent.privileged",
)


class PrivilegedCommandFailed(CommandFailed):
    """CommandFailed that survives the privsep channel (rebuilt from ``args``)."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str = "",
                 timed_out: bool = False) -> None:
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
            raise PrivilegedCommandFailed(exc.argv, exc.returncode, exc.stderr,
                                          exc.timed_out) from None

    return default.entrypoint(wrapper)


def helper_command(conf: cfg.ConfigOpts) -> str | None:
    """The daemon start command from ``[brick_agent]/privsep_helper_command``.

    brick_agent's config files are appended (the daemon reads its
    ``[brick_agent_privileged]`` section from them); oslo.privsep appends
    ``--privsep_context`` and ``--privsep_sock_path``.
    """
    base = conf.brick_agent.privsep_helper_command
    if not base:
        base = _root_helper_default()
    if not base:
        return None
    cmd = shlex.split(base)
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


def init(conf: cfg.ConfigOpts) -> None:
    """Apply brick_agent's privsep options; call once at startup, before any entrypoint."""
    default.set_client_mode(not conf.brick_agent.privsep_in_process)
    command = helper_command(conf)
    if command:
        cfg.CONF.set_override("helper_command", command, group=CFG_SECTION)


def set_in_process(enabled: bool) -> None:
    """Run entrypoints in this process (True) or through the daemon (False)."""
    default.set_client_mode(not enabled)
