"""iSCSI checks: iscsid running (and the same release as iscsiadm), the initiator name
present and unchanged, manual-scan support."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

from brick_agent.commands import CommandResult
from brick_agent.errors import CommandFailed
from brick_agent.health import Check, Context, fail, ok, skip, warn
from brick_agent.host import iscsiadm, procs
from brick_agent.host.iscsi import initiator_name, iscsi_sessions

#: the abstract unix socket iscsiadm talks to (held by iscsid, or by systemd's iscsid.socket)
IPC_SOCKET = "@ISCSIADM_ABSTRACT_NAMESPACE"
INITIATOR_FILE = ("iscsi", "initiatorname.iscsi")
_NAME_FORMAT = re.compile(
    r"^(iqn\.\d{4}-\d{2}\.[^\s]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$"
)
_VERSION = re.compile(r"version\s+(\S+)")
START_ISCSID = "systemctl enable --now iscsid (or iscsid.socket)"


def _iscsid(ctx: Context) -> list[procs.Process]:
    return procs.processes(ctx.roots, {"iscsid"})


def check_iscsid(ctx: Context) -> Iterator[Check]:
    name = "iscsi.iscsid"
    running = _iscsid(ctx)
    if not running:
        if procs.unix_socket_listening(ctx.roots, IPC_SOCKET):
            yield ok(name, "not running; its socket is listening (starts at the first login)")
        else:
            yield fail(name, "iscsid is not running: every iSCSI login fails", START_ISCSID)
        return
    pids = ", ".join(str(p.pid) for p in running)
    replaced = [p for p in running if p.exe_deleted]
    if replaced:
        yield warn(
            name,
            f"running (pid {pids}) from a binary replaced on disk since it started "
            "(upgraded open-iscsi?): it may not speak the installed iscsiadm's protocol",
            "systemctl restart iscsid",
        )
    else:
        yield ok(name, f"running (pid {pids})")


def _version(run: Callable[..., CommandResult], argv: list[str], timeout: float) -> str | None:
    try:
        result = run(argv, timeout=timeout)
    except CommandFailed:
        return None
    m = _VERSION.search(result.stdout + "\n" + result.stderr)
    return m.group(1) if m else None


def check_versions(ctx: Context) -> Iterator[Check]:
    name = "iscsi.versions"
    run = ctx.run
    if run is None:
        yield skip(name, "commands are not run against a host tree")
        return
    adm = _version(run, ["iscsiadm", "--version"], ctx.timeout)
    if adm is None:
        yield fail(name, "iscsiadm is missing or does not answer --version", "install open-iscsi")
        return
    running = [p for p in _iscsid(ctx) if p.exe and not p.exe_deleted]
    binary = running[0].exe if running else "iscsid"
    daemon = _version(run, [binary or "iscsid", "--version"], ctx.timeout)
    if daemon is None:
        yield warn(
            name,
            f"iscsiadm {adm}; the version of iscsid ({binary}) is unknown",
            "install iscsid from the same open-iscsi package as iscsiadm",
        )
    elif daemon != adm:
        yield fail(
            name,
            f"iscsiadm {adm} but iscsid {daemon}: their IPC differs between releases",
            "install one open-iscsi release for both, then systemctl restart iscsid",
        )
    else:
        yield ok(name, f"iscsiadm and iscsid {adm}")


def _name_fix(ctx: Context) -> str:
    path = ctx.roots.etcfs(*INITIATOR_FILE)
    return f"echo InitiatorName=$(iscsi-iname) > {path}; systemctl restart iscsid"


def check_initiator_name(ctx: Context) -> Iterator[Check]:
    name = "iscsi.initiator_name"
    path = ctx.roots.etcfs(*INITIATOR_FILE)
    value = initiator_name(ctx.roots)
    if not os.path.exists(path):
        yield fail(name, f"{path} does not exist: the host has no iSCSI name", _name_fix(ctx))
    elif value is None:
        yield fail(name, f"{path} has no InitiatorName= line", _name_fix(ctx))
    elif not _NAME_FORMAT.match(value):
        yield fail(name, f"{value!r} in {path} is no iqn./eui./naa. name", _name_fix(ctx))
    else:
        yield ok(name, value)


def check_initiator_stable(ctx: Context) -> Iterator[Check]:
    """The name the arrays know (the file, reported to Cinder) is the one in use."""
    name = "iscsi.initiator_name_stable"
    current = initiator_name(ctx.roots)
    if current is None:
        yield skip(name, "no initiator name to compare")
        return
    others = sorted(
        {
            (s.initiator_name, s.name)
            for s in iscsi_sessions(ctx.roots)
            if s.initiator_name and s.initiator_name.lower() != current.lower()
        }
    )
    if others:
        shown = ", ".join(f"{sess} as {old}" for old, sess in others)
        yield fail(
            name,
            f"the initiator name changed: the file says {current}, logged in: {shown}",
            "restore the old name in initiatorname.iscsi, or move the volumes off, "
            "restart iscsid and have the arrays' host entries updated",
        )
        return
    yield _file_newer_than_iscsid(ctx, name, current)


def _file_newer_than_iscsid(ctx: Context, name: str, current: str) -> Check:
    try:
        changed = os.stat(ctx.roots.etcfs(*INITIATOR_FILE)).st_mtime
    except OSError:
        return skip(name, "initiator name file unreadable")
    stale = [p for p in _iscsid(ctx) if p.started is not None and p.started + 1 < changed]
    if stale:
        return warn(
            name,
            f"initiatorname.iscsi changed after iscsid (pid {stale[0].pid}) started: new "
            f"logins may still use the name iscsid read then, not {current}",
            "systemctl restart iscsid (when no session is logged in)",
        )
    return ok(name, f"{current}, the same as every session's")


def check_manual_scan(ctx: Context) -> Iterator[Check]:
    name = "iscsi.manual_scan"
    if ctx.run is None:
        yield skip(name, "commands are not run against a host tree")
    elif iscsiadm.probe_manual_scan(run=ctx.run, timeout=ctx.timeout):
        yield ok(name, "iscsiadm supports node.session.scan = manual (targeted LUN scans)")
    else:
        yield warn(
            name,
            "iscsiadm lacks manual scans (open-iscsi < 2.0.876): logins scan every LUN of "
            "the target and shared_targets volumes are serialised by a lock",
            "upgrade open-iscsi to 2.0.876 or later",
        )


CHECKS = (
    check_iscsid,
    check_versions,
    check_initiator_name,
    check_initiator_stable,
    check_manual_scan,
)
