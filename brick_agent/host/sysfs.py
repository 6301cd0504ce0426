"""Race-tolerant primitives to read sysfs (and other pseudo filesystems).

Devices come and go while we read them: every helper here turns "it vanished"
or "the kernel refuses this attribute" into ``None`` / ``[]`` instead of an
exception, so readers can skip the device and carry on.  Nothing here writes.
"""

from __future__ import annotations

import errno
import os
import re

# errno values meaning "this attribute (or its device) is not readable now":
# ENOENT/ENOTDIR: gone (or never there); ENXIO: e.g. SCSI ``wwid`` without VPD
# page 0x83; ENODEV/EIO: device being torn down; EACCES/EPERM: write-only or
# root-only attribute; EINVAL/ENODATA/EAGAIN/EBUSY: driver cannot answer now;
# ENOTCONN/ESHUTDOWN/ECONNRESET: e.g. the current ``address``/``port`` of an
# iSCSI connection whose socket is down (logging in, recovering, portal dead).
_UNREADABLE = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.ENXIO,
        errno.EIO,
        errno.ENODEV,
        errno.EACCES,
        errno.EPERM,
        errno.EINVAL,
        errno.ENODATA,
        errno.EAGAIN,
        errno.EBUSY,
        errno.EISDIR,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
        errno.ECONNRESET,
    }
)

_MAX_LINK_HOPS = 40


def read_attr(path: str, limit: int | None = 65536) -> str | None:
    """Text of a sysfs attribute, stripped; ``None`` if it cannot be read now."""
    try:
        data = read_bytes(path, limit)
    except OSError as exc:
        if exc.errno in _UNREADABLE:
            return None
        raise
    return data.decode("utf-8", errors="replace").strip()


def read_bytes(path: str, limit: int | None = None) -> bytes:
    """The bytes of ``path`` (at most ``limit``): a descriptor and ``read`` until end of
    file, no file object (which costs an ``fstat``, and for a buffered one an ``ioctl``
    and two ``lseek``: listings read an attribute of every device, and an emulated
    machine pays for each system call).  A directory raises ``EISDIR``."""
    chunks, size = [], 0
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while limit is None or size < limit:
            chunk = os.read(fd, 65536 if limit is None else limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def read_int(path: str, base: int = 10) -> int | None:
    """Integer attribute (``base=0`` accepts ``0x`` prefixes); ``None`` if unreadable or not a
    number."""
    text = read_attr(path)
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def read_lines(path: str) -> list[str]:
    """Non-empty stripped lines of a file; ``[]`` if unreadable."""
    text = read_attr(path, limit=None)
    if not text:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def list_dir(
    path: str, pattern: str | re.Pattern[str] | None = None, *, sort: bool = True
) -> list[str]:
    """Entries of a directory (optionally full-matching ``pattern``), in natural order unless
    ``sort`` is false; ``[]`` if missing."""
    try:
        names = os.listdir(path)
    except OSError as exc:
        if exc.errno in _UNREADABLE:
            return []
        raise
    if pattern is not None:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        names = [n for n in names if rx.fullmatch(n)]
    return sorted(names, key=natural_key) if sort else names


#: What the kernel appends to a descriptor's path once its file is gone.
_DELETED = " (deleted)"


def resolve(path: str) -> str | None:
    """Canonical path with every symlink resolved; ``None`` if any part is missing.

    The kernel resolves it: an ``O_PATH`` descriptor (nothing is opened for I/O, a
    device node included) and its ``/proc/self/fd`` link, three system calls where
    ``os.path.realpath`` takes an ``lstat`` per component (ten or more for a sysfs
    device path).  Without ``/proc``, ``realpath``.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = None
    finally:
        os.close(fd)
    if real is None or not real.startswith("/"):
        try:
            return os.path.realpath(path, strict=True)
        except OSError:
            return None
    if real.endswith(_DELETED) and not os.path.exists(real):
        return None  # removed meanwhile
    return real


def link_name(path: str) -> str | None:
    """Last component of a symlink's target (e.g. ``holders/dm-0`` -> ``dm-0``); ``None`` if
    not a link."""
    try:
        return os.path.basename(os.readlink(path).rstrip("/"))
    except OSError:
        return None


def is_dir(path: str) -> bool:
    return os.path.isdir(path)


def exists(path: str) -> bool:
    return os.path.lexists(path)


def rebase(path: str, alias: str, base: str) -> str:
    """Map ``path`` written for the real host (under ``alias``, e.g. ``/dev``) onto ``base``.

    ``rebase('/dev/sdb', '/dev', '/tmp/t/dev')`` -> ``/tmp/t/dev/sdb``; paths already
    under ``base`` or outside ``alias`` are returned unchanged.
    """
    alias = alias.rstrip("/") or "/"
    base = base.rstrip("/") or "/"
    if alias == base:
        return path
    if path == base or path.startswith(base + "/"):
        return path
    if path == alias:
        return base
    if path.startswith(alias + "/"):
        return base + path[len(alias) :]
    return path


def resolve_within(path: str, alias: str, base: str) -> str | None:
    """Resolve symlinks of ``path`` inside a tree mounted at ``base`` that believes it is ``alias``.

    Relative link targets resolve normally; absolute targets under ``alias``
    (e.g. ``/dev/sdb`` in a fake /dev) are rebased onto ``base``.  Returns the
    final path, or ``None`` if it does not exist or links loop.  With
    ``alias == base`` this is ``realpath(strict=True)``.
    """
    if os.path.normpath(alias) == os.path.normpath(base):
        return resolve(rebase(path, alias, base))
    current = os.path.normpath(rebase(path, alias, base))
    for _ in range(_MAX_LINK_HOPS):
        # resolve the parent directories (they are plain directories in a fake tree)
        try:
            target = os.readlink(current)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not a symlink: done
                return current if os.path.exists(current) else None
            return None
        if os.path.isabs(target):
            target = rebase(os.path.normpath(target), alias, base)
        else:
            target = os.path.join(os.path.dirname(current), target)
        current = os.path.normpath(target)
    return None


_NUM = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key ordering numbers numerically: ``host2`` < ``host10``, ``2:0:0:9`` < ``2:0:0:10``."""
    parts = _NUM.split(name)
    return tuple(int(p) if p.isdigit() else p for p in parts)
