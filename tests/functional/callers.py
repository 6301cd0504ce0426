"""The os-brick callers of Nova and Cinder as processes (tests/functional/compat_driver.py
in ``.venv-nova`` / ``.venv-cinder``), shared by the compat and the live-migration lab tests."""

from __future__ import annotations

import glob
import json
import os
import pathlib
import select
import subprocess
import time
from typing import Any

from brick_lab import ServiceUser
from brick_lab.rawhost import read

REPO = pathlib.Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "functional" / "compat_driver.py"
NOVA_PY = REPO / ".venv-nova" / "bin" / "python"
CINDER_PY = REPO / ".venv-cinder" / "bin" / "python"
#: one reply (a connect under TCG included) must come within this
REPLY_TIMEOUT = 180.0


# ------------------------------------------------------------------ the caller processes


class Caller:
    """A compat_driver.py process: one JSON command per line, one reply per line.

    ``user``: run it as that service user (sudo + the service's rootwrap, see
    :class:`ServiceUser`) instead of root.  ``state``: the service's state directory (its
    locks and brick_agent's ledger; default ``workdir``, or the user's); ``extra_conf``:
    more of its config file (e.g. ``[libvirt] volume_use_multipath``); ``name``: of its
    files in ``workdir`` (default ``flow``).
    """

    def __init__(
        self,
        python: pathlib.Path,
        flow: str,
        workdir: pathlib.Path,
        user: ServiceUser | None = None,
        *,
        state: pathlib.Path | None = None,
        extra_conf: str = "",
        name: str | None = None,
    ) -> None:
        self.flow = flow
        self.user = user
        conf_name = name
        name = name or flow
        state = state or (user.state if user else workdir)
        # what an operator's nova.conf / cinder.conf holds for this; root: no rootwrap
        # (brick_agent's daemon then starts <venv>/bin/privsep-helper itself); a service
        # user: the service's default root helper, sudo <service>-rootwrap rootwrap.conf
        text = (
            "[DEFAULT]\n"
            f"host = lab-{flow}\n"
            f"state_path = {state}\n"
            + (
                "[workarounds]\ndisable_rootwrap = True\n"
                if flow == "nova" and user is None
                else ""
            )
            + "[oslo_concurrency]\n"
            f"lock_path = {state / 'locks'}\n"
            "[brick_agent]\n"
            f"lock_path = {state / 'brick-locks'}\n"
            f"ledger_path = {state / 'ledger'}\n"
            "device_wait_timeout = 20\n" + extra_conf
        )
        if user:
            self.conf_file = user.write_conf(text, conf_name)
        else:
            self.conf_file = workdir / f"{name}.conf"
            self.conf_file.write_text(text)
        self.stderr_path = workdir / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        start = time.monotonic()
        argv = [str(python), str(DRIVER)]
        self.proc = subprocess.Popen(
            user.command(argv) if user else argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=str(user.home if user else workdir),
            env=user.environment() if user else None,
        )
        self._start = start
        self._send({"flow": flow, "driver": "iscsi", "config_file": str(self.conf_file)})
        self.setup: dict[str, Any] | None = None
        self.startup_seconds = 0.0
        #: how brick_agent's privsep daemon must have been started (checked after connects)
        self.helper_command = ""

    def uid(self) -> int:
        """The real uid of the caller process (from /proc)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
        raise AssertionError("no Uid line")

    def ready(self) -> Caller:
        """Wait for the set-up reply."""
        if self.setup is None:
            self.setup = self._reply({"op": "setup"})
            self.startup_seconds = time.monotonic() - self._start
        return self

    def _send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def _call(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.ready()
        self._send(obj)
        return self._reply(obj)

    def _reply(self, obj: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], REPLY_TIMEOUT)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(
                f"{self.flow}: no reply to {obj.get('op', 'setup')} within "
                f"{REPLY_TIMEOUT:.0f}s (exit {self.proc.poll()}); stderr:\n" + self.stderr_tail()
            )
        reply = json.loads(line)
        if not reply["ok"]:
            raise AssertionError(
                f"{self.flow} {obj.get('op', 'setup')} failed: "
                f"{reply['error']}: {reply['message']}\n{reply['traceback']}"
                f"\nstderr:\n{self.stderr_tail()}\n{chap_state()}"
            )
        return reply

    def call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        return self._call({"op": op, **kwargs})

    def stderr_tail(self, n: int = 40) -> str:
        self._stderr.flush()
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def chap_state() -> str:
    """For a failed iSCSI login: which CHAP settings the node records and the LIO ACLs hold
    (names and whether set, never the values) and the initiator name, to tell which side
    lost what."""
    out = ["CHAP state:"]
    try:
        names = read("/etc/iscsi/initiatorname.iscsi").splitlines()
        out += ["  " + ln for ln in names if ln.startswith("InitiatorName=")]
    except OSError as exc:
        out.append(f"  initiatorname: {exc}")
    for rec in sorted(glob.glob("/etc/iscsi/nodes/**", recursive=True)):
        if not os.path.isfile(rec):
            continue
        with open(rec) as f:
            auth = [ln.split("=", 1) for ln in f if ".auth." in ln and "=" in ln]
        out.append(
            f"  record {rec}: "
            + ", ".join(f"{k.strip()}={'set' if v.strip() else 'empty'}" for k, v in auth)
        )
    for acl in sorted(glob.glob("/sys/kernel/config/target/iscsi/*/tpgt_*/acls/*")):
        user = read(os.path.join(acl, "auth", "userid")) or ""
        out.append(f"  LIO ACL {acl}: userid {'set' if user.strip() else 'empty'}")
    return "\n".join(out)
