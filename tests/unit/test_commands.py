"""commands.run: no shell, timeouts kill the process group, secrets masked, duration logged."""

from __future__ import annotations

import logging
import os
import time

import pytest

from brick_agent import commands
from brick_agent.errors import CommandFailed, InvalidArgument
from brick_agent.secrets import Secret

PW = "hunter2-S3cret"


def test_success_returns_result():
    res = commands.run(["sh", "-c", "echo out; echo err >&2"], timeout=5)
    assert res.returncode == 0
    assert res.stdout == "out\n"
    assert res.stderr == "err\n"
    assert res.argv == ["sh", "-c", "echo out; echo err >&2"]
    assert 0 < res.duration < 5


def test_no_shell_metacharacters_are_literal(tmp_path):
    marker = tmp_path / "pwned"
    res = commands.run(["echo", f"x; touch {marker}", "$(id)"], timeout=5)
    assert res.stdout == f"x; touch {marker} $(id)\n"
    assert not marker.exists()


def test_string_argv_refused():
    with pytest.raises(TypeError):
        commands.run("echo hi", timeout=5)


def test_timeout_required_positive():
    with pytest.raises(ValueError):
        commands.run(["true"], timeout=0)


def test_nonzero_exit_raises_with_code_and_stderr():
    with pytest.raises(CommandFailed) as ei:
        commands.run(["sh", "-c", "echo boom >&2; exit 3"], timeout=5)
    assert ei.value.returncode == 3
    assert "boom" in ei.value.stderr
    assert not ei.value.timed_out


def test_ok_codes_and_check_false():
    assert commands.run(["sh", "-c", "exit 21"], timeout=5, ok_codes=(0, 21)).returncode == 21
    assert commands.run(["sh", "-c", "exit 4"], timeout=5, check=False).returncode == 4


def test_missing_binary_raises_command_failed():
    with pytest.raises(CommandFailed) as ei:
        commands.run(["/nonexistent/brick-agent-tool"], timeout=5)
    assert ei.value.returncode is None


def test_input_and_env():
    res = commands.run(
        ["sh", "-c", 'read x; echo "$x-$BRICK_T"'],
        timeout=5,
        input="hello\n",
        env={"BRICK_T": "env"},
    )
    assert res.stdout == "hello-env\n"


def test_timeout_kills_whole_process_group(tmp_path):
    pidfile = tmp_path / "bg.pid"
    start = time.monotonic()
    with pytest.raises(CommandFailed) as ei:
        commands.run(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.3)
    elapsed = time.monotonic() - start
    assert ei.value.timed_out
    assert elapsed < 3
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{pid}/stat") as f:  # a zombie awaiting reaping also counts
            if f.read().split(") ", 1)[1].startswith("Z"):
                break
        time.sleep(0.02)
    else:
        pytest.fail(f"background child {pid} of the timed-out command survived")


def test_timeout_ignoring_sigterm_gets_sigkill():
    start = time.monotonic()
    with pytest.raises(CommandFailed) as ei:
        commands.run(["sh", "-c", "trap '' TERM; sleep 30"], timeout=0.2)
    assert ei.value.timed_out
    assert time.monotonic() - start < 3


def test_timed_out_command_that_cannot_be_reaped_is_abandoned_in_bounded_time(tmp_path):
    """A killed command whose output stays open (here a grandchild in its own session,
    like a process blocked in the kernel that cannot die) must not block the caller."""
    pidfile = tmp_path / "escaped.pid"
    start = time.monotonic()
    try:
        with pytest.raises(CommandFailed, match="could not be killed") as ei:
            commands.run(
                ["sh", "-c", f"setsid sleep 30 & echo $! > {pidfile}; sleep 30"],
                timeout=0.2,
                kill_wait=0.3,
            )
        assert ei.value.timed_out
        assert time.monotonic() - start < 3
    finally:
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), 9)
            except ProcessLookupError:
                pass


def test_secrets_masked_in_error_and_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="brick_agent.commands")
    with pytest.raises(CommandFailed) as ei:
        commands.run(
            ["sh", "-c", 'echo "bad password $1" >&2; exit 2', "sh", PW], timeout=5, secrets=[PW]
        )
    err = ei.value
    assert PW not in str(err) and PW not in err.stderr and PW not in " ".join(err.argv)
    assert "***" in err.stderr and "***" in err.argv
    assert caplog.records, "command not logged"
    for rec in caplog.records:
        assert PW not in rec.getMessage()
    assert any("exited 2" in r.getMessage() for r in caplog.records)


def test_secret_objects_in_argv_are_revealed_to_the_command_only(caplog):
    caplog.set_level(logging.DEBUG, logger="brick_agent.commands")
    res = commands.run(
        ["sh", "-c", 'test "$1" = "$2" && echo same', "sh", Secret(PW), PW], timeout=5
    )
    assert res.stdout == "same\n"
    assert PW not in " ".join(res.argv)
    assert all(PW not in r.getMessage() for r in caplog.records)


def test_secret_masked_in_stdout_and_timeout_error(caplog):
    caplog.set_level(logging.DEBUG, logger="brick_agent.commands")
    res = commands.run(["echo", Secret(PW)], timeout=5)
    assert res.stdout == "***\n"
    with pytest.raises(CommandFailed) as ei:
        commands.run(["sh", "-c", "sleep 5", Secret(PW)], timeout=0.2)
    assert PW not in str(ei.value)
    assert all(PW not in r.getMessage() for r in caplog.records)


def test_duration_and_argv_logged_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="brick_agent.commands")
    commands.run(["sh", "-c", "sleep 0.05"], timeout=5)
    recs = [r for r in caplog.records if r.name == "brick_agent.commands"]
    assert len(recs) == 1
    rec = recs[0]
    assert rec.levelno == logging.DEBUG
    msg = rec.getMessage()
    assert "'sh', '-c', 'sleep 0.05'" in msg and "exited 0" in msg
    duration = float(msg.rsplit(" in ", 1)[1].rstrip("s"))
    assert 0.04 < duration < 5


@pytest.mark.parametrize(
    "timeout", [float("nan"), float("inf"), -float("inf"), -1, -0.5, 0, True, "5", None]
)
def test_bad_timeouts_are_refused_before_anything_runs(tmp_path, timeout):
    marker = tmp_path / "ran"
    with pytest.raises(InvalidArgument, match="timeout"):
        commands.run(["touch", str(marker)], timeout=timeout)
    assert not marker.exists()
