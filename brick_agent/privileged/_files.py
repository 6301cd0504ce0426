"""File writes done by entrypoints: existing attributes only, never outside a root."""

from __future__ import annotations

import errno
import logging
import os

from brick_agent.errors import DeviceNotFound, InvalidArgument
from brick_agent.privileged._validate import path_under

LOG = logging.getLogger("brick_agent.privileged")


def write_attr(root: str, path: str, data: str) -> str:
    """Write ``data`` to the existing file ``path`` (a sysfs attribute) below ``root``.

    The file is never created; symlinks are resolved first and the target must
    stay under ``root``.  Returns the resolved path written.
    """
    if not os.path.lexists(path):
        raise DeviceNotFound(f"{path} does not exist")
    real = path_under(root, path)
    try:
        fd = os.open(real, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY)
    except FileNotFoundError:
        raise DeviceNotFound(f"{path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgument(f"{path} is a symlink") from None
        raise
    try:
        os.write(fd, data.encode("ascii"))
    finally:
        os.close(fd)
    LOG.debug("wrote %r to %s", data, real)
    return real


def create_file_if_missing(root: str, path: str, data: str, mode: int = 0o644) -> bool:
    """Create ``path`` (below ``root``) with ``data`` unless it exists; True if written.

    Written to a temporary name and linked into place, so readers never see a
    partial file and an existing file is never replaced.
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path_under(root, directory)
    if os.path.lexists(path):
        return False
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                 mode)
    try:
        os.write(fd, data.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
