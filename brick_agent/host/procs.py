"""Running processes, read from ``/proc`` under the host roots (no ps, no pgrep).

Layout read::

    /proc/<pid>/comm      the command name (15 characters at most): 'iscsid'
    /proc/<pid>/exe       link to the binary ('/usr/sbin/iscsid', '... (deleted)' once
                          the file was replaced, e.g. by a package upgrade)
    /proc/<pid>/stat      field 22: start time in clock ticks after boot
    /proc/stat            'btime <seconds since the epoch>' (boot time)
    /proc/net/unix        listening unix sockets ('@NAME' for abstract ones)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection

from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots


@dataclasses.dataclass(frozen=True)
class Process:
    pid: int
    comm: str
    exe: str | None  # the binary, None when the link cannot be read (another user's process)
    started: float | None  # Unix time it started, None when unknown

    @property
    def exe_deleted(self) -> bool:
        """The binary it runs was replaced on disk since it started."""
        return bool(self.exe and self.exe.endswith(" (deleted)"))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def boot_time(roots: HostRoots = DEFAULT_ROOTS) -> float | None:
    """When the host booted (``btime`` of /proc/stat), None when unknown."""
    for line in (_read(roots.procfs("stat")) or "").splitlines():
        if line.startswith("btime "):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def _started(roots: HostRoots, pid: int, booted: float | None) -> float | None:
    text = _read(roots.procfs(str(pid), "stat"))
    if not text or booted is None:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = text.rsplit(")", 1)[-1].split()
    try:
        return booted + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 overall
    except (IndexError, ValueError):
        return None


def _exe(roots: HostRoots, pid: int) -> str | None:
    try:
        return os.readlink(roots.procfs(str(pid), "exe"))
    except OSError:
        return None


def processes(roots: HostRoots = DEFAULT_ROOTS, names: Collection[str] = ()) -> list[Process]:
    """Processes whose command name is one of ``names`` (all when empty), by pid."""
    try:
        entries = os.listdir(roots.proc)
    except OSError:
        return []
    booted = boot_time(roots)
    out = []
    for entry in entries:
        if not entry.isdigit():
            continue
        comm = (_read(roots.procfs(entry, "comm")) or "").strip()
        if not comm or (names and comm not in names):
            continue
        pid = int(entry)
        out.append(Process(pid, comm, _exe(roots, pid), _started(roots, pid, booted)))
    return sorted(out, key=lambda p: p.pid)


def unix_socket_listening(roots: HostRoots, name: str) -> bool:
    """Whether a unix socket bound to ``name`` ('@NAME' for an abstract one) exists."""
    for line in (_read(roots.procfs("net", "unix")) or "").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8 and parts[7] == name:
            return True
    return False
