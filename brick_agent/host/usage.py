"""Who uses a block device on this host: holders, mounts, swap, open file descriptors.

Read-only, through injectable roots (``/sys``, ``/proc``).  Used before removing a
device nobody asked us to remove (another namespace of a shared NVMe controller)
and by the audit.  Fail closed: what cannot be read counts as a user.

Usage::

    users = device_users(roots, "nvme0n2")
    if users:   # ['held by dm-3', 'open by pid 812 (dd)', ...]
        keep()
"""

from __future__ import annotations

import os

from brick_agent.host import sysfs
from brick_agent.host.roots import HostRoots


def _with_partitions(roots: HostRoots, name: str) -> list[str]:
    """``name`` and its partitions (``nvme0n1p1``...), as the kernel lists them."""
    base = roots.sysfs("class", "block", name)
    return [name] + [p for p in sysfs.list_dir(base)
                     if p.startswith(name) and os.path.exists(os.path.join(base, p, "partition"))]


def _holders(roots: HostRoots, names: list[str]) -> list[str]:
    return [f"{n} held by {h}" for n in names
            for h in sysfs.list_dir(roots.sysfs("class", "block", n, "holders"))]


def _listed_in(roots: HostRoots, table: str, names: list[str], what: str) -> list[str]:
    """``names`` found as the first field of ``/proc/<table>`` (mounts, swaps)."""
    paths = {roots.devfs(n): n for n in names} | {f"/dev/{n}": n for n in names}
    try:
        with open(roots.procfs(table), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"unknown ({what}: /proc/{table} unreadable: {exc.strerror})"]
    out = []
    for line in lines:
        fields = line.split()
        if fields and fields[0] in paths:
            out.append(f"{paths[fields[0]]} {what}" + (f" on {fields[1]}" if what == "mounted"
                                                         else ""))
    return out


def _open_by(roots: HostRoots, names: list[str]) -> list[str]:
    """Processes with one of ``names`` open (``/proc/PID/fd`` links to ``/dev/NAME``)."""
    paths = {roots.devfs(n): n for n in names} | {f"/dev/{n}": n for n in names}
    out = []
    for pid in sysfs.list_dir(roots.proc, r"\d+"):
        fd_dir = roots.procfs(pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except FileNotFoundError:
            continue            # the process exited
        except OSError as exc:
            out.append(f"unknown (/proc/{pid}/fd unreadable: {exc.strerror})")
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue        # closed meanwhile
            if target in paths:
                out.append(f"{paths[target]} open by pid {pid} ({_comm(roots, pid)})")
                break
    return out


def _comm(roots: HostRoots, pid: str) -> str:
    return sysfs.read_attr(roots.procfs(pid, "comm")) or "?"


def device_users(roots: HostRoots, name: str) -> list[str]:
    """Why block device ``name`` (or a partition of it) is in use, one reason per user;
    ``[]`` when nothing holds, mounts, swaps on or opens it.  A ``/proc`` entry this
    process may not read is reported as an ``unknown (...)`` user (fail closed)."""
    names = _with_partitions(roots, name)
    return (_holders(roots, names) + _listed_in(roots, "mounts", names, "mounted")
            + _listed_in(roots, "swaps", names, "swap") + _open_by(roots, names))


__all__ = ["device_users"]
