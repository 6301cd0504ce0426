"""Driver side of the worker protocol: spawn ``tools/bench/worker.py`` under a venv's python."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")


class WorkerTimeout(RuntimeError):
    """A request did not answer within its cap; the worker was killed."""


class Worker:
    """One long-lived worker process for one tool (restarted after a timeout)."""

    def __init__(
        self, tool: str, python: str, lock_path: str, daemon: bool = False, roots: str | None = None
    ) -> None:
        self.argv = [python, WORKER, "--tool", tool, "--lock-path", lock_path]
        if daemon:
            self.argv.append("--daemon")
        if roots:
            self.argv += ["--roots", roots]
        self.tool = tool
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(f"/tmp/bench-{self.tool}.log", "a"),
            text=True,
            bufsize=1,
        )
        ready = self._read(120.0)
        if not ready.get("ok"):
            raise RuntimeError(f"worker {self.tool} failed to start: {ready}")

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc and self.proc.stdout
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise WorkerTimeout(f"{self.tool}: no answer within {timeout:.0f}s")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"worker {self.tool} exited ({self.proc.wait()})")
                return json.loads(line)

    def call(self, req: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Send one request; on timeout kill and restart the worker, then re-raise."""
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        try:
            return self._read(timeout)
        except WorkerTimeout:
            self.kill()
            self.start()
            raise

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
