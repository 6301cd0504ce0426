"""oslo.config options of brick_agent.

Nothing is registered at import time: call :func:`register_opts` on the
ConfigOpts you own (or use :func:`new_conf` for a private one).
:func:`default_conf` is the process-wide configuration of connectors built
without one and of the privileged side's first call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from brick_agent.errors import ConfigurationError

GROUP = "brick_agent"
#: the file the default configuration reads when it exists
DEFAULT_CONFIG_FILE = "/etc/brick_agent/brick_agent.conf"
#: environment variable naming another file instead (set but empty: no file at all)
CONFIG_ENV = "BRICK_AGENT_CONFIG"

connection_opts = [
    cfg.StrOpt(
        "lock_path",
        default="/var/lib/brick_agent/locks",
        help="Directory of the external (file) locks that serialise work on one "
        "target or device across processes of this host.",
    ),
    cfg.IntOpt(
        "max_concurrent_operations",
        default=16,
        min=1,
        help="Host-wide bound on attach/detach operations running at once.",
    ),
    cfg.FloatOpt(
        "device_wait_timeout",
        default=30.0,
        min=0.1,
        help="Seconds an attach waits for its device(s) to appear (one deadline "
        "budget for every path).",
    ),
    cfg.FloatOpt(
        "login_timeout",
        default=15.0,
        min=0.1,
        help="Seconds one iSCSI login or NVMe connect may take before the portal "
        "counts as unreachable.",
    ),
    cfg.FloatOpt(
        "device_removal_timeout",
        default=20.0,
        min=0.1,
        help="Seconds a detach waits for the kernel to remove a device.",
    ),
    cfg.FloatOpt(
        "flush_timeout",
        default=60.0,
        min=0.1,
        help="Seconds a buffer flush of a device (or multipath map) may take.",
    ),
    cfg.FloatOpt(
        "command_timeout", default=60.0, min=0.1, help="Default timeout of an external command."
    ),
    cfg.StrOpt(
        "ledger_path",
        default="/var/lib/brick_agent/attachments.json",
        help="Attachment ledger (what brick_agent attached), written atomically.",
    ),
]

multipath_opts = [
    cfg.BoolOpt(
        "use_multipath",
        default=False,
        help="Attach through every path and build a dm-multipath map.",
    ),
    cfg.BoolOpt(
        "enforce_multipath",
        default=False,
        help="Fail an attach instead of falling back to a single path when "
        "multipathd is not running.",
    ),
    cfg.FloatOpt(
        "multipath_wait_timeout",
        default=20.0,
        min=0.1,
        help="Seconds to wait for a multipath map to be built.",
    ),
]

nvme_opts = [
    cfg.IntOpt(
        "nvme_ctrl_loss_tmo",
        default=600,
        min=-1,
        help="Seconds the kernel keeps retrying a lost NVMe-oF controller before "
        "removing it; -1 retries forever.",
    ),
    cfg.IntOpt(
        "nvme_reconnect_delay",
        default=10,
        min=1,
        help="Seconds between NVMe-oF reconnect attempts.",
    ),
    cfg.IntOpt(
        "nvme_keep_alive_tmo",
        default=None,
        min=1,
        help="NVMe-oF keep-alive timeout in seconds (kernel default when unset).",
    ),
    cfg.IntOpt(
        "nvme_fast_io_fail_tmo",
        default=5,
        min=-1,
        help="For NVMe-oF controllers used under dm-multipath (native NVMe "
        "multipath off): seconds after a connection is lost before its "
        "queued I/O fails, so dm-multipath retries it on another path "
        "instead of waiting up to ctrl_loss_tmo (forever with -1). "
        "-1 keeps the kernel default (queue until the controller is "
        "lost). Not applied to single-path or native-multipath "
        "controllers, whose I/O should wait for the reconnect.",
    ),
]

privsep_opts = [
    cfg.BoolOpt(
        "privsep_in_process",
        default=False,
        help="Run privileged entrypoints in this process (the process must "
        "already be root). For tests and tools only.",
    ),
    cfg.StrOpt(
        "privsep_helper_command",
        default=None,
        help="Command that starts brick_agent's privsep daemon, e.g. "
        "'sudo brick-agent-rootwrap /etc/brick_agent/rootwrap.conf "
        "privsep-helper' or, when already root, 'privsep-helper'. "
        "brick_agent's --config-file arguments, --privsep_context and "
        "--privsep_sock_path are appended. Unset: the root_helper the caller "
        "gave the connector (os-brick's, e.g. 'sudo nova-rootwrap "
        "/etc/nova/rootwrap.conf') followed by privsep-helper; without one, "
        "when root, the privsep-helper beside this Python; else oslo.privsep's "
        "default ('sudo privsep-helper' or "
        "[brick_agent_privileged]/helper_command).",
    ),
]

gate_opts = [
    cfg.BoolOpt(
        "gate_enabled",
        default=False,
        help="Allow the gate-only HTTP app to start. Never enable on production hosts.",
    ),
    cfg.HostAddressOpt("gate_host", default="127.0.0.1", help="Address the gate app binds to."),
    cfg.PortOpt("gate_port", default=8776, help="Port the gate app binds to."),
    cfg.StrOpt(
        "gate_token",
        default=None,
        secret=True,
        help="Bearer token required by the gate app; mandatory for a non-loopback bind.",
    ),
]

metrics_opts = [
    cfg.StrOpt(
        "metrics_textfile_path",
        default=None,
        help="Write brick_agent's metrics (attach/detach latency per protocol and "
        "phase, failures by error type, leftovers of the last audit) in the "
        "Prometheus text format to this file after every attach and detach, "
        "atomically, for node-exporter's textfile collector (e.g. "
        "/var/lib/prometheus/node-exporter/brick_agent.prom; the name must end in "
        ".prom). Unset: no file (the totals are still kept in metrics.json beside "
        "ledger_path and printed by 'brick-agent metrics'). brick_agent opens no port.",
    ),
]

ALL_OPTS = connection_opts + multipath_opts + nvme_opts + privsep_opts + gate_opts + metrics_opts


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every brick_agent option in ``conf`` under ``[brick_agent]``."""
    conf.register_opts(ALL_OPTS, group=GROUP)


def new_conf(
    args: list[str] | None = None,
    config_files: list[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> cfg.ConfigOpts:
    """A private, parsed ConfigOpts with brick_agent's options; ``overrides`` set
    ``[brick_agent]`` options (a None value leaves the option as configured)."""
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf(args=args or [], project="brick_agent", default_config_files=config_files or [])
    for name, value in (overrides or {}).items():
        if value is not None:
            conf.set_override(name, value, group=GROUP)
    return conf


def default_config_files(
    environ: Mapping[str, str] | None = None, default: str = DEFAULT_CONFIG_FILE
) -> list[str]:
    """The files a process without its own configuration reads.

    ``$BRICK_AGENT_CONFIG`` when set (empty: none; a missing file is a
    ConfigurationError), else ``/etc/brick_agent/brick_agent.conf`` when it exists.
    Deliberately not oslo.config's search path (``~/``, ``~/.brick_agent``, ``/etc``):
    a service user's home must not change a compute host's attach behaviour.
    """
    env = os.environ if environ is None else environ
    if CONFIG_ENV in env:
        path = env[CONFIG_ENV]
        if path and not os.path.isfile(path):
            raise ConfigurationError(f"{CONFIG_ENV}={path!r} is not a file")
        return [path] if path else []
    return [default] if os.path.isfile(default) else []


_DEFAULT_CONF: cfg.ConfigOpts | None = None


def default_conf() -> cfg.ConfigOpts:
    """The process-wide brick_agent configuration, parsed on first use.

    What :func:`set_default_conf` installed (``os_brick.setup(CONF)``: the
    service's own file, e.g. nova.conf's ``[brick_agent]``; the CLI: its
    ``--config-file``), else :func:`default_config_files`
    (``$BRICK_AGENT_CONFIG`` or ``/etc/brick_agent/brick_agent.conf``).
    """
    global _DEFAULT_CONF
    if _DEFAULT_CONF is None:
        _DEFAULT_CONF = new_conf(config_files=default_config_files())
    return _DEFAULT_CONF


def set_default_conf(conf: cfg.ConfigOpts) -> None:
    """Use ``conf`` (with brick_agent options registered) for connectors built without one."""
    global _DEFAULT_CONF
    _DEFAULT_CONF = conf


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator."""
    return [(GROUP, ALL_OPTS)]
