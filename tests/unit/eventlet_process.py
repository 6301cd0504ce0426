"""Run code in a new Python process patched by eventlet, as Cinder's services run."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_patched(body: str) -> str:
    """``body`` run after ``eventlet.monkey_patch()`` (what cinder-volume and cinder-backup
    do first) in a new interpreter; its stdout.  Skips when eventlet is not installed."""
    pytest.importorskip("eventlet")
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", "import eventlet\neventlet.monkey_patch()\n" + body],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
