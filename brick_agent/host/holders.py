"""Which processes hold a block device open (read-only, from /proc/PID/fd).

Used to name the culprits when a detach is refused because a device is in use.
A descriptor matches when its link reads ``/dev/<name>`` or, on a real host,
when it is the same block device (``st_rdev``) as ``/dev/<name>``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from brick_agent.host.roots import HostRoots


def _rdev(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_rdev if stat.S_ISBLK(st.st_mode) else None


def _command(roots: HostRoots, pid: str) -> str:
    try:
        with open(roots.procfs(pid, "comm"), encoding="utf-8", errors="replace") as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def _holds(fd_dir: str, paths: set[str], rdevs: set[int]) -> bool | None:
    """Does the process of ``fd_dir`` hold one of the devices?  None: cannot tell."""
    try:
        fds = os.listdir(fd_dir)
    except FileNotFoundError:
        return False  # the process exited
    except OSError:
        return None  # not ours to read
    for fd in fds:
        link = os.path.join(fd_dir, fd)
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if target in paths or (rdevs and target.startswith("/") and _rdev(link) in rdevs):
            return True
    return False


def open_holders(
    roots: HostRoots, names: Iterable[str], *, unreadable: list[str] | None = None
) -> list[tuple[int, str]]:
    """``(pid, command)`` of every process with one of the block devices ``names`` open.

    ``unreadable``: when given, the pids whose descriptors could not be read are
    appended to it (callers deciding about removal count them as users).
    """
    names = list(names)
    paths = {f"/dev/{name}" for name in names} | {roots.devfs(name) for name in names}
    rdevs = {r for r in (_rdev(roots.devfs(name)) for name in names) if r is not None}
    try:
        pids = sorted((e for e in os.listdir(roots.proc) if e.isdigit()), key=int)
    except OSError:
        return []
    out = []
    for pid in pids:
        held = _holds(roots.procfs(pid, "fd"), paths, rdevs)
        if held:
            out.append((int(pid), _command(roots, pid)))
        elif held is None and unreadable is not None:
            unreadable.append(pid)
    return out
