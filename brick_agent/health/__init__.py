"""``brick-agent health``: what the protocols on this host need, and what is wrong.

Usage::

    report = health.run(health.Context(conf=conf))          # every protocol found here
    report = health.run(ctx, protocols=["ISCSI"])            # only these
    report.healthy, [c.to_dict() for c in report.checks]

Each check reads the host through ``ctx.roots`` (so unit tests run on fake trees;
processes are found in ``/proc`` under the root) and gives a :class:`Check`: a name,
``ok``/``warn``/``fail``/``skip``, one line saying what it saw and, unless ok, the fix.
``fail`` means a configured protocol cannot work (``healthy`` is False: the CLI exits 7);
``warn`` means it works, slower or with a risk the message names.  Commands
(``iscsiadm --version``...) run through ``ctx.run``; None (a ``--host-root`` tree) skips
those checks, as does ``ctx.privsep_probe`` None for the privsep helper.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from brick_agent import commands
from brick_agent.errors import InvalidArgument
from brick_agent.host import fc as hostfc
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
PROTOCOLS = ("ISCSI", "NVMEOF", "FIBRE_CHANNEL")


@dataclasses.dataclass(frozen=True)
class Check:
    """One finding: ``name`` (dotted, e.g. ``iscsi.iscsid``), status, message, fix."""

    name: str
    status: str
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def ok(name: str, message: str) -> Check:
    return Check(name, OK, message)


def warn(name: str, message: str, fix: str) -> Check:
    return Check(name, WARN, message, fix)


def fail(name: str, message: str, fix: str) -> Check:
    return Check(name, FAIL, message, fix)


def skip(name: str, message: str) -> Check:
    return Check(name, SKIP, message)


@dataclasses.dataclass
class Context:
    """What checks read and run: the host tree, the configuration, a command runner
    (None: command checks skipped) and how to test the privsep helper (None: skipped)."""

    conf: Any
    roots: HostRoots = DEFAULT_ROOTS
    run: Callable[..., commands.CommandResult] | None = commands.run
    privsep_probe: Callable[[float], Any] | None = None
    multipath: bool = False  # --multipath: check multipathd even without configuration
    timeout: float = 20.0


@dataclasses.dataclass
class Report:
    protocols: list[str]
    checks: list[Check]

    @property
    def healthy(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "protocols": list(self.protocols),
            "checks": [c.to_dict() for c in self.checks],
        }

    def lines(self) -> list[str]:
        """One line per check: STATUS name: message (fix: ...)."""
        out = []
        for c in self.checks:
            fix = f" -- fix: {c.fix}" if c.fix else ""
            out.append(f"{c.status.upper():4s}  {c.name}: {c.message}{fix}")
        verdict = "healthy" if self.healthy else "NOT healthy"
        out.append(f"{verdict} ({', '.join(self.protocols) or 'no protocol'} checked)")
        return out


def detect_protocols(roots: HostRoots) -> list[str]:
    """The protocols this host is set up for: open-iscsi's /etc/iscsi, NVMe-oF's
    /etc/nvme or a loaded nvme_fabrics, an FC HBA."""
    found = []
    if os.path.isdir(roots.etcfs("iscsi")):
        found.append("ISCSI")
    if os.path.isdir(roots.etcfs("nvme")) or os.path.isdir(roots.sysfs("module", "nvme_fabrics")):
        found.append("NVMEOF")
    if hostfc.fc_hosts(roots):
        found.append("FIBRE_CHANNEL")
    return found


def _protocol_checks(protocol: str) -> Sequence[Callable[[Context], Iterable[Check]]]:
    from brick_agent.health import fc, iscsi, nvme

    return {
        "ISCSI": iscsi.CHECKS,
        "NVMEOF": nvme.CHECKS,
        "FIBRE_CHANNEL": fc.CHECKS,
    }[protocol]


def run(ctx: Context, protocols: Sequence[str] | None = None, only: Sequence[str] = ()) -> Report:
    """Run the checks of ``protocols`` (default: :func:`detect_protocols`), then those every
    protocol needs (multipath, lock directory, ledger, privsep helper).

    ``only``: report just the checks with these names or under these prefixes
    (``iscsi.iscsid``, ``local``), e.g. to look again at what was fixed; the privsep
    helper (a daemon start) is tried only when ``local.privsep`` is among them.  A name
    that selects no check is an InvalidArgument, never an empty healthy report.
    """
    from brick_agent.health import local, multipath

    def selects(wanted: str, name: str) -> bool:
        return name == wanted or name.startswith(wanted + ".")

    def kept(name: str) -> bool:
        return not only or any(selects(o, name) for o in only)

    if not kept("local.privsep"):
        ctx = dataclasses.replace(ctx, privsep_probe=None)
    chosen = list(protocols) if protocols else detect_protocols(ctx.roots)
    checks: list[Check] = []
    for protocol in chosen:
        for check in _protocol_checks(protocol):
            checks.extend(check(ctx))
    for check in (*multipath.CHECKS, *local.CHECKS):
        checks.extend(check(ctx))
    unknown = [o for o in only if not any(selects(o, c.name) for c in checks)]
    if unknown:
        raise InvalidArgument(
            f"no check named {', '.join(unknown)} for {', '.join(chosen) or 'no protocol'} "
            f"(checks: {', '.join(c.name for c in checks)})"
        )
    return Report(chosen, [c for c in checks if kept(c.name)])
