"""Stay out of os-brick's way on a host where os-brick still runs.

os-brick runs every connect and disconnect of a host under one external lock,
``os-brick-connect_volume``, and every extend under ``os-brick-extend_volume``,
in its lock directory (``[os_brick]lock_path``, else
``[oslo_concurrency]lock_path``).  Where os-brick still serves something on the
host — iSER or another protocol in this very process, a service not switched
to brick_agent yet — one of its operations may be half done: a login whose LUN
is not scanned yet, a session it is about to log out because it sees no device
left.  brick_agent must not run into the middle of it, nor os-brick into ours.

So the compat connectors hold the same lock file *shared* around each
operation: they exclude os-brick's exclusive holders in any process (this one
included) but not each other, and brick_agent keeps its per-target
concurrency.  The lock is an open-file-description (OFD) read lock: it
conflicts with the POSIX record locks fasteners takes for oslo.concurrency,
even those of this process, and is not dropped when other code closes its own
descriptor of the file (a POSIX lock would be).

A host with no configured lock directory has no os-brick external lock to
respect: nothing is taken.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

from brick_agent import locking
from brick_agent.errors import LockTimeout

LOG = logging.getLogger(__name__)

#: os-brick's lock names (os_brick.initiator.connectors.*: ``@synchronized(name, external=True)``)
CONNECT = "connect_volume"
EXTEND = "extend_volume"
#: os-brick's lock file prefix (``base.synchronized``)
PREFIX = "os-brick-"


def os_brick_lock_dir() -> str | None:
    """The directory os-brick's external locks live in (as its ``synchronized`` finds it)."""
    from oslo_config import cfg

    for group in ("os_brick", "oslo_concurrency"):
        try:
            path = getattr(cfg.CONF, group).lock_path
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError, AttributeError):
            continue
        if path:
            return str(path)
    return None


@contextlib.contextmanager
def shared_with_os_brick(name: str, timeout: float) -> Iterator[None]:
    """Hold os-brick's ``os-brick-<name>`` lock file shared (see the module doc).

    :class:`LockTimeout` when an os-brick operation keeps it longer than ``timeout`` s.
    """
    directory = os_brick_lock_dir()
    if directory is None:
        yield
        return
    os.makedirs(directory, exist_ok=True)  # as oslo.concurrency does on first use
    path = os.path.join(directory, PREFIX + name)
    start = time.monotonic()
    fd = locking.lock_file(path, exclusive=False, deadline=start + timeout, kind="ofd")
    if fd is None:
        raise LockTimeout(
            f"os-brick's lock {path} still held after {timeout:.0f}s "
            "(an os-brick operation on this host)"
        )
    waited = time.monotonic() - start
    if waited > 0.5:
        LOG.info("waited %.1fs for os-brick's %s", waited, path)
    try:
        yield
    finally:
        os.close(fd)
