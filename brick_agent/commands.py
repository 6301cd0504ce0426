"""Run external commands: argument lists only, a timeout, secrets masked, duration logged.

Every command brick_agent runs goes through :func:`run`.  There is no shell:
``argv`` is executed directly.  On timeout the whole process group is killed
(commands such as ``iscsiadm`` or ``multipath`` may fork helpers).  The masked
argv, return code and duration are logged at debug on ``brick_agent.commands``;
secrets never reach logs or :class:`~brick_agent.errors.CommandFailed`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from brick_agent.errors import CommandFailed, InvalidArgument
from brick_agent.secrets import Secret, mask_argv, mask_text

LOG = logging.getLogger("brick_agent.commands")

#: Grace period between SIGTERM and SIGKILL of a timed-out process group.
KILL_GRACE = 0.5
#: Seconds a killed command gets to exit and close its output before it is abandoned
#: (a process blocked in the kernel, e.g. flushing to a map that queues I/O with no
#: path, cannot die; a detached grandchild may hold the pipes open).
KILL_WAIT = 5.0


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """Outcome of one command.  ``argv`` is already masked (safe to log)."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float


def _plain_argv(argv: Sequence[str | Secret]) -> list[str]:
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a sequence of arguments, not a string")
    if not argv:
        raise ValueError("argv is empty")
    plain = []
    for arg in argv:
        if isinstance(arg, Secret):
            plain.append(arg.reveal())
        elif isinstance(arg, str):
            plain.append(arg)
        else:
            raise TypeError(f"argument {arg!r} is not a string")
        if "\0" in plain[-1]:
            raise ValueError("argument contains a NUL byte")
    return plain


def _kill_group(proc: subprocess.Popen, kill_wait: float = KILL_WAIT) -> None:
    """SIGTERM then SIGKILL the process group led by ``proc`` (waits at most
    ``KILL_GRACE`` + ``kill_wait`` seconds for the leader to exit)."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, kill_wait)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            if sig == signal.SIGTERM:
                # leader gone; make sure stragglers of the group go too
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        except subprocess.TimeoutExpired:
            continue


def _abandon(proc: subprocess.Popen) -> None:
    """Stop waiting for ``proc``: close our ends of its pipes and reap it in the
    background whenever it finally exits (no zombie, no blocked caller)."""
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()


def _check_timeout(timeout: object) -> None:
    """A finite positive number of seconds, or :class:`InvalidArgument` (nothing runs)."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidArgument(
            f"timeout must be a finite positive number of seconds, got {timeout!r}"
        )


def run(
    argv: Sequence[str | Secret],
    *,
    timeout: float,
    secrets: Iterable[str | Secret] = (),
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    ok_codes: Iterable[int] = (0,),
    kill_wait: float = KILL_WAIT,
) -> CommandResult:
    """Run ``argv`` (no shell) and return its :class:`CommandResult`.

    ``secrets`` (and any :class:`Secret` inside ``argv``) are masked in the
    logged argv, the result's argv/stdout/stderr and in errors.  ``env``
    entries are added to the inherited environment.  Raises
    :class:`CommandFailed` when the command cannot be started, times out, or
    (with ``check``) exits with a code not in ``ok_codes``.  The call never takes
    much more than ``timeout`` + ``kill_wait``: a timed-out command that cannot be
    killed (blocked in the kernel) is abandoned, reaped in the background.
    """
    _check_timeout(timeout)
    plain = _plain_argv(argv)
    secret_values = [s.reveal() if isinstance(s, Secret) else s for s in secrets]
    secret_values += [a.reveal() for a in argv if isinstance(a, Secret)]
    secret_values = [s for s in secret_values if s]
    shown = mask_argv(plain, secret_values)
    ok = tuple(ok_codes)
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)

    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            plain,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        duration = time.monotonic() - start
        LOG.debug("command %s could not start after %.3fs: %s", shown, duration, exc.strerror)
        raise CommandFailed(
            shown, None, mask_text(str(exc.strerror or exc), secret_values)
        ) from None
    try:
        stdout, stderr = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc, kill_wait)
        try:
            stdout, stderr = proc.communicate(timeout=kill_wait)
        except subprocess.TimeoutExpired:
            _abandon(proc)
            duration = time.monotonic() - start
            LOG.warning(
                "command %s timed out after %.1fs and did not go away when killed "
                "(blocked in the kernel?): abandoned (pid %d)",
                shown,
                duration,
                proc.pid,
            )
            raise CommandFailed(
                shown,
                None,
                f"timed out after {timeout:.1f}s and could not "
                f"be killed (pid {proc.pid} abandoned)",
                timed_out=True,
            ) from None
        duration = time.monotonic() - start
        LOG.debug(
            "command %s timed out after %.3fs (limit %.1fs), process group killed",
            shown,
            duration,
            timeout,
        )
        raise CommandFailed(
            shown, proc.returncode, mask_text(stderr or "", secret_values), timed_out=True
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    duration = time.monotonic() - start
    stdout = mask_text(stdout or "", secret_values)
    stderr = mask_text(stderr or "", secret_values)
    LOG.debug("command %s exited %d in %.3fs", shown, proc.returncode, duration)
    if check and proc.returncode not in ok:
        raise CommandFailed(shown, proc.returncode, stderr)
    return CommandResult(
        argv=shown, returncode=proc.returncode, stdout=stdout, stderr=stderr, duration=duration
    )
