"""Checks every protocol needs: the lock directory, the attachment ledger and the
privileged helper."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from typing import Any

from brick_agent.health import Check, Context, fail, ok, skip, warn

CAP_SYS_ADMIN = 21


def _mode(st: os.stat_result) -> str:
    return oct(stat.S_IMODE(st.st_mode))


def check_lock_dir(ctx: Context) -> Iterator[Check]:
    name = "local.lock_path"
    path = ctx.conf.brick_agent.lock_path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        yield warn(
            name,
            f"{path} does not exist: the first process to lock creates it (0700, its own)",
            f"install -d -m 0700 -o <service user> {path}",
        )
        return
    except OSError as exc:
        yield fail(name, f"{path}: {exc.strerror}", f"make {path} reachable by the service user")
        return
    yield _lock_dir_state(path, st)


def _lock_dir_state(path: str, st: os.stat_result) -> Check:
    name = "local.lock_path"
    if not stat.S_ISDIR(st.st_mode):
        return fail(name, f"{path} is not a directory", f"rm {path}; install -d -m 0700 {path}")
    if st.st_mode & 0o002:
        return fail(
            name,
            f"{path} is writable by every user ({_mode(st)}): anyone could plant or remove "
            "lock files (brick_agent refuses it unless it owns it)",
            f"chmod 0700 {path}",
        )
    if not os.access(path, os.W_OK | os.X_OK):
        return fail(
            name,
            f"{path} ({_mode(st)}, uid {st.st_uid}) is not writable by uid {os.geteuid()}: "
            "no lock can be taken",
            f"chown <service user> {path}",
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        return warn(
            name,
            f"{path} is {_mode(st)}: its owner's next lock tightens it to 0700",
            f"chmod 0700 {path}",
        )
    return ok(name, f"{path} ({_mode(st)}, uid {st.st_uid})")


def check_ledger(ctx: Context) -> Iterator[Check]:
    name = "local.ledger"
    path = ctx.conf.brick_agent.ledger_path
    if not path:
        yield skip(name, "no ledger ([brick_agent] ledger_path is empty)")
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if os.stat(directory).st_mode & 0o002:
            yield fail(
                name,
                f"{directory} is writable by every user: anyone could replace the ledger",
                f"chmod 0700 {directory}",
            )
            return
    except FileNotFoundError:
        yield ok(name, f"{path} does not exist yet (created 0600 at the first attach)")
        return
    except OSError as exc:
        yield fail(name, f"{directory}: {exc.strerror}", f"make {directory} reachable")
        return
    yield _ledger_state(path)


def _ledger_state(path: str) -> Check:
    from brick_agent.ledger.store import AttachmentLedger, LedgerCorrupt, LedgerUnreadable

    name = "local.ledger"
    try:
        data = AttachmentLedger(os.path.abspath(path)).read()
    except LedgerUnreadable as exc:
        return fail(
            name,
            f"{exc}: no attach or detach can run (the ledger fails closed)",
            f"chown <service user> {path}; chmod 0600 {path}",
        )
    except LedgerCorrupt as exc:
        return warn(
            name,
            f"{exc}: the next attach moves it aside and rebuilds it, attachments unknown",
            "brick-agent audit --ledger, then detach with force what is no longer used",
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ok(name, f"{path} does not exist yet (created 0600 at the first attach)")
    volumes = len(data.get("volumes", {}))
    if stat.S_IMODE(st.st_mode) & 0o077:
        return warn(
            name,
            f"{path} is {_mode(st)}: other users can read what is attached",
            f"chmod 0600 {path}",
        )
    return ok(name, f"{path} readable, {volumes} volume(s), {_mode(st)}")


def start_privsep(conf: Any, timeout: float) -> dict[str, Any]:
    """Start the privsep daemon as the connectors would and call its harmless
    ``identity`` entrypoint; TimeoutError after ``timeout`` seconds."""
    from brick_agent import privileged
    from brick_agent.privileged import diag

    privileged.init(conf)
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = diag.identity()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=call, name="health-privsep", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f}s (a password prompt? a hung sudo?)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def check_privsep(ctx: Context) -> Iterator[Check]:
    name = "local.privsep"
    opts = ctx.conf.brick_agent
    if ctx.privsep_probe is None:
        yield skip(name, "not started against a host tree")
        return
    if opts.privsep_in_process:
        yield skip(name, "privsep_in_process = True: privileged calls run in the caller")
        return
    from brick_agent import privileged

    command = privileged.helper_command(ctx.conf) or "sudo privsep-helper (oslo.privsep default)"
    try:
        who = ctx.privsep_probe(ctx.timeout)
    except Exception as exc:  # whatever stops the helper is the finding
        yield fail(
            name,
            f"the privileged helper did not start ({command}): {type(exc).__name__}: {exc}",
            "check [brick_agent] privsep_helper_command, the sudoers/rootwrap rule for "
            "privsep-helper and that privsep-helper is on the helper's PATH",
        )
        return
    yield _privsep_identity(name, command, who)


def _privsep_identity(name: str, command: str, who: dict[str, Any]) -> Check:
    if who.get("uid") != 0 or not (int(who.get("cap_eff", 0)) >> CAP_SYS_ADMIN) & 1:
        return fail(
            name,
            f"the helper ({command}) runs as uid {who.get('uid')} without CAP_SYS_ADMIN",
            "start privsep-helper through sudo or rootwrap as root",
        )
    return ok(name, f"started ({command}), pid {who.get('pid')} as root with CAP_SYS_ADMIN")


CHECKS = (check_lock_dir, check_ledger, check_privsep)
