"""Make a TCP portal unreachable in the lab VM (nftables set of ip . port)."""

from __future__ import annotations

import subprocess

from ._sys import LabError, run

TABLE = "brick_lab"

_RULESET = f"""
table inet {TABLE} {{
    set down {{ type ipv4_addr . inet_service; }}
    chain input {{
        type filter hook input priority -10; policy accept;
        ip daddr . tcp dport @down drop
        ip saddr . tcp sport @down drop
    }}
}}
"""


def _split(portal: str) -> tuple[str, str]:
    host, _, port = portal.rpartition(":")
    if not host or not port:
        raise LabError(f"portal {portal!r} is not ip:port")
    return host, port


def _ensure_table() -> None:
    if run(["nft", "list", "table", "inet", TABLE], check=False).returncode != 0:
        p = subprocess.run(["nft", "-f", "-"], input=_RULESET, capture_output=True, text=True)
        if p.returncode != 0:
            raise LabError(f"nft: cannot create table {TABLE}: {p.stderr.strip()}")


def block(portal: str) -> None:
    """Silently drop every packet to and from ``portal`` (ip:port), even established."""
    host, port = _split(portal)
    _ensure_table()
    run(["nft", "add", "element", "inet", TABLE, "down", f"{{ {host} . {port} }}"])


def unblock(portal: str) -> None:
    host, port = _split(portal)
    if run(["nft", "list", "table", "inet", TABLE], check=False).returncode != 0:
        return
    run(["nft", "delete", "element", "inet", TABLE, "down", f"{{ {host} . {port} }}"], check=False)
