"""The stock initiator CLIs (iscsiadm, nvme) run directly, for lab tests and
scenarios that must not go through brick_agent."""

from __future__ import annotations

import subprocess

from brick_lab import NvmetPort


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command with text output captured; AssertionError if it fails and ``check``."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr}")
    return p


def iscsi_node(
    iqn: str, portal: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    """``iscsiadm -m node -T iqn -p portal ARGS``."""
    return sh("iscsiadm", "-m", "node", "-T", iqn, "-p", portal, *args, check=check)


def iscsi_login(iqn: str, portal: str) -> None:
    """SendTargets discovery on ``portal``, then log in to ``iqn`` there."""
    sh("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", portal)
    iscsi_node(iqn, portal, "--login")


def iscsi_logout(iqn: str, portal: str | None = None) -> None:
    """Log out of ``iqn`` (on ``portal``, or on every portal) and delete its node records;
    failures are ignored (cleanup)."""
    where = ("-p", portal) if portal else ()
    sh("iscsiadm", "-m", "node", "-T", iqn, *where, "--logout", check=False)
    sh("iscsiadm", "-m", "node", "-T", iqn, *where, "-o", "delete", check=False)


def nvme_connect(nqn: str, port: NvmetPort, *opts: str) -> None:
    """``nvme connect`` to subsystem ``nqn`` through TCP ``port`` (extra ``opts`` appended)."""
    sh("nvme", "connect", "-t", "tcp", "-a", port.traddr, "-s", port.trsvcid, "-n", nqn, *opts)


def nvme_disconnect(nqn: str) -> None:
    """Disconnect every controller of ``nqn``; failures are ignored (cleanup)."""
    sh("nvme", "disconnect", "-n", nqn, check=False)
