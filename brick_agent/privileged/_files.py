"""File writes done by entrypoints: existing attributes only, never outside a root."""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable

from brick_agent.errors import DeviceNotFound, InvalidArgument, KernelActionTimeout
from brick_agent.privileged._validate import path_under

LOG = logging.getLogger("brick_agent.privileged")


def write_attr(root: str, path: str, data: str, timeout: float | None = None) -> str:
    """Write ``data`` to the existing file ``path`` (a sysfs attribute) below ``root``.

    The file is never created; symlinks are resolved first and the target must
    stay under ``root``.  Returns the resolved path written.  With ``timeout``
    the write runs in a worker thread: a write the kernel keeps blocked (e.g.
    ``delete_controller`` of a controller whose target is gone) is abandoned after
    ``timeout`` seconds with :class:`KernelActionTimeout`, the kernel finishing it later.
    """
    if not os.path.lexists(path):
        raise DeviceNotFound(f"{path} does not exist")
    real = path_under(root, path)
    if timeout is None:
        _write_existing(path, real, data)
    else:
        bounded(lambda: _write_existing(path, real, data), timeout, f"write of {data!r} to {real}")
    LOG.debug("wrote %r to %s", data, real)
    return real


def _write_existing(path: str, real: str, data: str) -> None:
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


def bounded(action: Callable[[], None], timeout: float, what: str) -> None:
    """Run ``action`` in a daemon thread; its error, or KernelActionTimeout after ``timeout``
    (the thread, stuck in the kernel where it cannot be interrupted, is left to finish)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            outcome.append(exc)
            if abandoned.is_set():
                LOG.warning("abandoned %s failed later: %s", what, exc)
        else:
            if abandoned.is_set():
                LOG.info("abandoned %s completed late", what)

    abandoned = threading.Event()
    worker = threading.Thread(target=run, name="bounded-kernel-action", daemon=True)
    worker.start()
    worker.join(max(0.0, timeout))
    if not outcome:
        abandoned.set()
        raise KernelActionTimeout(
            f"{what} still blocked in the kernel after {timeout:.1f}s; "
            "abandoned (the kernel may complete it later)"
        )
    if outcome[0] is not None:
        raise outcome[0]


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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
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
