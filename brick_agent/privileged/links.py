"""Privileged removal of one dangling ``/dev/disk/by-id`` or ``by-path`` link.

udev removes a disk's links when the disk goes; a link whose disk vanished while
udev was not running (or whose remove event was lost) stays and points to nothing.
This entrypoint removes exactly one such link and nothing else:

* the link lives directly in ``<dev>/disk/by-id`` or ``<dev>/disk/by-path`` (the
  directory itself no symlink), its name one path component of the kinds udev makes
  for fabric volumes (:data:`FABRIC_LINK_NAMES`);
* it is a symlink whose text is exactly the ``target`` the caller observed (so a link
  udev replaced in between is left alone), and that target does not exist: a link to
  a device that exists is never removed, whoever asks.
"""

from __future__ import annotations

import errno
import os
import re

from brick_agent.errors import DeviceNotFound, InvalidArgument, NotOwned
from brick_agent.host.disk_links import LINK_KINDS, is_fabric_link, target_exists
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint

_LINK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+@,=-]{0,254}$")
_TARGET = re.compile(r"^(?:\.\./)+[A-Za-z0-9][A-Za-z0-9._:+@,=/-]{0,254}$|^/dev/[A-Za-z0-9._/-]+$")


def _check(kind: object, name: object, target: object) -> tuple[str, str, str]:
    if kind not in LINK_KINDS:
        raise InvalidArgument(f"link kind must be one of {', '.join(LINK_KINDS)}: {kind!r}")
    name = v.matching(name, _LINK_NAME, "link name")
    target = v.matching(target, _TARGET, "link target", max_len=300)
    if "/./" in f"/{target}/" or "//" in target:
        raise InvalidArgument(f"link target is not a plain path: {target!r}")
    if not is_fabric_link(str(kind), name):
        raise NotOwned(f"/dev/disk/{kind}/{name}", "not a link udev makes for a fabric volume")
    return str(kind), name, target


def _open_dir(roots: HostRoots, kind: str) -> int:
    directory = roots.devfs("disk", kind)
    v.path_under(roots.dev, directory)
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DeviceNotFound(f"{directory} does not exist") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InvalidArgument(f"{directory} is not a directory") from None
        raise


def do_remove_dangling_link(roots: HostRoots, kind: str, name: str, target: str) -> str:
    """Remove ``<dev>/disk/KIND/NAME`` when it still reads ``target`` and that is missing.

    Returns the link's path.  Raises DeviceNotFound (no such link), NotOwned (not a
    fabric kind of link, or its target exists) or InvalidArgument (it changed: another
    target, not a symlink).
    """
    kind, name, target = _check(kind, name, target)
    shown = f"/dev/disk/{kind}/{name}"
    dfd = _open_dir(roots, kind)
    try:
        try:
            now = os.readlink(name, dir_fd=dfd)
        except FileNotFoundError:
            raise DeviceNotFound(f"{shown} does not exist") from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise InvalidArgument(f"{shown} is not a symlink") from None
            raise
        if now != target:
            raise InvalidArgument(f"{shown} now points to {now!r}, not {target!r}")
        if target_exists(roots, kind, target):
            raise NotOwned(shown, f"its target {target} exists")
        os.unlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)
    return roots.devfs("disk", kind, name)


@entrypoint
def remove_dangling_link(kind: str, name: str, target: str) -> str:
    return do_remove_dangling_link(DEFAULT_ROOTS, kind, name, target)
