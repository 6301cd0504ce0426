"""Privileged iscsiadm operations with validated arguments.

Only node records (create/update/login/logout/delete) and sendtargets
discovery are offered; parameter names come from an allow-list.  CHAP
passwords never go on an argv (``/proc/PID/cmdline`` is world-readable): they
are written into the record files by :mod:`brick_agent.privileged.iscsi_auth`.
Free-form values (usernames) are given to iscsiadm as ``--value=<value>`` so
they can never be parsed as an option, whatever they start with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from brick_agent import commands
from brick_agent.errors import InvalidArgument
from brick_agent.host.iscsiadm import ERR_NO_OBJS_FOUND, ERR_SESS_EXISTS
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _owned
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint

Runner = Callable[..., commands.CommandResult]

ISCSIADM = "iscsiadm"

_AUTH_METHODS = {"None", "CHAP"}
_STARTUP = {"manual", "automatic", "onboot"}
_SCAN = {"manual", "auto"}
_BOOL = {"Yes", "No"}


def _int_text(lo: int, hi: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return value.lstrip("-").isdigit() and lo <= int(value) <= hi

    return check


def _one_of(choices: set[str]) -> Callable[[str], bool]:
    return lambda value: value in choices


def _username(value: str) -> bool:
    return 0 < len(value) <= 255


#: Node parameters we may set, with a value check.  Secret ones are masked.
NODE_PARAMS: dict[str, Callable[[str], bool]] = {
    "node.session.scan": _one_of(_SCAN),
    "node.startup": _one_of(_STARTUP),
    "node.conn[0].startup": _one_of(_STARTUP),
    "node.session.auth.authmethod": _one_of(_AUTH_METHODS),
    "node.session.auth.username": _username,
    "node.session.auth.username_in": _username,
    "node.session.auth.password": _username,
    "node.session.auth.password_in": _username,
    "node.session.timeo.replacement_timeout": _int_text(0, 86400),
    "node.session.initial_login_retry_max": _int_text(0, 1000),
    "node.conn[0].timeo.login_timeout": _int_text(1, 3600),
    "node.conn[0].timeo.logout_timeout": _int_text(1, 3600),
    "node.conn[0].timeo.noop_out_interval": _int_text(0, 3600),
    "node.conn[0].timeo.noop_out_timeout": _int_text(0, 3600),
    "node.session.cmds_max": _int_text(2, 2048),
    "node.session.queue_depth": _int_text(1, 1024),
    "node.session.iscsi.FastAbort": _one_of(_BOOL),
}
DISCOVERY_PARAMS: dict[str, Callable[[str], bool]] = {
    "discovery.sendtargets.auth.authmethod": _one_of(_AUTH_METHODS),
    "discovery.sendtargets.auth.username": _username,
    "discovery.sendtargets.auth.username_in": _username,
    "discovery.sendtargets.auth.password": _username,
    "discovery.sendtargets.auth.password_in": _username,
}
SECRET_PARAMS = frozenset(
    n for n in (*NODE_PARAMS, *DISCOVERY_PARAMS) if n.endswith((".password", ".password_in"))
)
#: usernames may hold characters refused in plain arguments; they go as --value=.
_FREEFORM = frozenset(
    n for n in (*NODE_PARAMS, *DISCOVERY_PARAMS) if ".auth.username" in n or ".auth.password" in n
)


def _settings(
    settings: Mapping[str, str] | list, allowed: dict[str, Callable[[str], bool]]
) -> list[tuple[str, str]]:
    if not isinstance(settings, (Mapping, list, tuple)):
        raise InvalidArgument("settings must be a mapping or a list of (name, value) pairs")
    items = list(settings.items()) if isinstance(settings, Mapping) else list(settings)
    if not items:
        raise InvalidArgument("no settings given")
    out = []
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise InvalidArgument("settings must be (name, value) pairs")
        name, value = item
        if not isinstance(name, str) or name not in allowed:
            raise InvalidArgument(f"iscsiadm parameter not allowed: {name!r}")
        if name in _FREEFORM:
            value = v.secret_value(value, name)
        else:
            value = v.plain_str(value, name)
        if not allowed[name](value):
            shown = "***" if name in SECRET_PARAMS else repr(value)
            raise InvalidArgument(f"bad value {shown} for {name}")
        out.append((name, value))
    return out


def _node_argv(target_iqn: str, portal: str, iface: str) -> list[str]:
    return [
        ISCSIADM,
        "-m",
        "node",
        "-T",
        v.iqn(target_iqn, "target IQN"),
        "-p",
        v.portal(portal),
        "-I",
        v.iface(iface),
    ]


def _update_argv(base: list[str], items: list[tuple[str, str]]) -> list[str]:
    """``BASE --op update -n NAME -v VALUE [-n NAME -v VALUE ...]`` (free-form values as
    ``--value=``, so they are never parsed as options)."""
    argv = base + ["--op", "update"]
    for name, value in items:
        argv += ["-n", name, f"--value={value}"] if name in _FREEFORM else ["-n", name, "-v", value]
    return argv


def _result(res: commands.CommandResult) -> dict:
    return {
        "returncode": res.returncode,
        "stdout": res.stdout,
        "stderr": res.stderr,
        "duration": res.duration,
    }


def do_node_create(
    target_iqn: str,
    portal: str,
    iface: str = "default",
    *,
    timeout: float = 30.0,
    run: Runner = commands.run,
) -> dict:
    """``iscsiadm -m node -T IQN -p PORTAL -I IFACE --op new``."""
    argv = _node_argv(target_iqn, portal, iface) + ["--op", "new"]
    return _result(run(argv, timeout=v.timeout_arg(timeout)))


def do_node_update(
    target_iqn: str,
    portal: str,
    iface: str,
    settings: Mapping[str, str] | list,
    *,
    timeout: float = 30.0,
    run: Runner = commands.run,
) -> dict:
    """One ``--op update`` exec setting every allowed setting, in order (one ``-n``/``-v``
    pair each; iscsiadm 2.1.8 applies them all, verified in the lab)."""
    base = _node_argv(target_iqn, portal, iface)
    timeout = v.timeout_arg(timeout)
    items = _no_secrets(_settings(settings, NODE_PARAMS))
    return _result(run(_update_argv(base, items), timeout=timeout))


def _no_secrets(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Refuse secrets bound for an argv (they go into the record file, see iscsi_auth)."""
    for name, _value in items:
        if name in SECRET_PARAMS:
            raise InvalidArgument(
                f"{name} never goes on iscsiadm's command line "
                "(use node_set_settings / discovery_set_auth)"
            )
    return items


def do_node_login(
    target_iqn: str,
    portal: str,
    iface: str = "default",
    *,
    timeout: float = 30.0,
    run: Runner = commands.run,
) -> dict:
    """``--login``; an existing session (exit 15) counts as success."""
    argv = _node_argv(target_iqn, portal, iface) + ["--login"]
    return _result(run(argv, timeout=v.timeout_arg(timeout), ok_codes=(0, ERR_SESS_EXISTS)))


def _releasable_node_argv(roots: HostRoots, target_iqn: str, portal: str, iface: str) -> list[str]:
    """The node argv, once the record is known to be no boot target and to hold nothing
    the host uses (see :mod:`._owned`)."""
    argv = _node_argv(target_iqn, portal, iface)
    _owned.require_releasable_node(roots, v.iqn(target_iqn, "target IQN"), v.portal(portal))
    return argv


def do_node_logout(
    roots: HostRoots,
    target_iqn: str,
    portal: str,
    iface: str = "default",
    *,
    timeout: float = 30.0,
    run: Runner = commands.run,
) -> dict:
    """``--logout``; no session (exit 21) counts as success.  Never of a boot target or
    a session whose LUNs the host uses."""
    argv = _releasable_node_argv(roots, target_iqn, portal, iface) + ["--logout"]
    return _result(run(argv, timeout=v.timeout_arg(timeout), ok_codes=(0, ERR_NO_OBJS_FOUND)))


def do_node_delete(
    roots: HostRoots,
    target_iqn: str,
    portal: str,
    iface: str = "default",
    *,
    timeout: float = 30.0,
    run: Runner = commands.run,
    db_root: str | None = None,
    lock_dir: str | None = None,
) -> dict:
    """``--op delete``; no record (exit 21) counts as success.  Never of a boot target or
    a session whose LUNs the host uses.

    With the record database (``db_root``, its lock in ``lock_dir``), a static record
    and nothing else of that node, with no session to the target at that portal, is
    removed here without starting iscsiadm (:mod:`.iscsi_records`)."""
    argv = _releasable_node_argv(roots, target_iqn, portal, iface) + ["--op", "delete"]
    timeout = v.timeout_arg(timeout)
    if db_root is not None and lock_dir is not None:
        done = _remove_static_record(roots, target_iqn, portal, iface, db_root, lock_dir, timeout)
        if done is not None:
            return done
    return _result(run(argv, timeout=timeout, ok_codes=(0, ERR_NO_OBJS_FOUND)))


def _remove_static_record(
    roots: HostRoots,
    target_iqn: str,
    portal: str,
    iface: str,
    db_root: str,
    lock_dir: str,
    timeout: float,
) -> dict | None:
    """The result of removing the node's static record here; None: iscsiadm's case."""
    from brick_agent.host import iscsi as hiscsi
    from brick_agent.privileged import iscsi_records

    start = time.monotonic()
    addr, port = hiscsi.split_portal(v.portal(portal))
    with iscsi_records.idbm_lock(lock_dir, wait=min(timeout, iscsi_records.LOCK_WAIT)):
        if hiscsi.find_sessions(roots, target_iqn, addr, port):
            return None  # iscsiadm refuses while a session uses the record: its error
        path = iscsi_records.static_record(db_root, target_iqn, portal, iface)
        if path is None:
            return None
        iscsi_records.remove_static_record(path)
    return {
        "returncode": 0,
        "stdout": "",
        "stderr": "",
        "duration": time.monotonic() - start,
        "removed": path,
    }


def do_discover(
    portal: str,
    iface: str = "default",
    settings: Mapping[str, str] | list | None = None,
    *,
    timeout: float = 30.0,
    run: Runner = commands.run,
    set_auth: Callable[[str, list], object] | None = None,
) -> dict:
    """SendTargets discovery of ``portal``; returns iscsiadm's output for the caller to parse.

    Without ``settings``: ``iscsiadm -m discovery -t sendtargets``.  With
    discovery CHAP settings: a discoverydb record is created, the settings are
    written into its file (never on an argv), then ``--discover`` runs.
    """
    timeout = v.timeout_arg(timeout)
    base = [
        ISCSIADM,
        "-m",
        "discoverydb" if settings else "discovery",
        "-t",
        "sendtargets",
        "-p",
        v.portal(portal),
        "-I",
        v.iface(iface),
    ]
    if not settings:
        return _result(run(base, timeout=timeout))
    items = _settings(settings, DISCOVERY_PARAMS)
    if set_auth is None:
        from brick_agent.privileged.iscsi_auth import do_discovery_set_auth

        set_auth = do_discovery_set_auth
    secrets = [value for name, value in items if name in SECRET_PARAMS]
    run(base + ["--op", "new"], timeout=timeout)
    set_auth(portal, items)
    return _result(run(base + ["--discover"], timeout=timeout, secrets=secrets))


@entrypoint
def node_create(
    target_iqn: str, portal: str, iface: str = "default", timeout: float = 30.0
) -> dict:
    return do_node_create(target_iqn, portal, iface, timeout=timeout)


@entrypoint
def node_update(
    target_iqn: str, portal: str, iface: str, settings: list, timeout: float = 30.0
) -> dict:
    return do_node_update(target_iqn, portal, iface, settings, timeout=timeout)


@entrypoint
def node_login(target_iqn: str, portal: str, iface: str = "default", timeout: float = 30.0) -> dict:
    return do_node_login(target_iqn, portal, iface, timeout=timeout)


@entrypoint
def node_logout(
    target_iqn: str, portal: str, iface: str = "default", timeout: float = 30.0
) -> dict:
    return do_node_logout(DEFAULT_ROOTS, target_iqn, portal, iface, timeout=timeout)


@entrypoint
def node_delete(
    target_iqn: str, portal: str, iface: str = "default", timeout: float = 30.0
) -> dict:
    from brick_agent.errors import DeviceNotFound
    from brick_agent.privileged import iscsi_records

    try:
        root: str | None = iscsi_records.db_root()
    except DeviceNotFound:
        root = None  # no database where we know it: iscsiadm's
    return do_node_delete(
        DEFAULT_ROOTS,
        target_iqn,
        portal,
        iface,
        timeout=timeout,
        db_root=root,
        lock_dir=iscsi_records.LOCK_DIR,
    )


@entrypoint
def discover(
    portal: str, iface: str = "default", settings: list | None = None, timeout: float = 30.0
) -> dict:
    return do_discover(portal, iface, settings, timeout=timeout)
