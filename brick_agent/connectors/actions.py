"""The block-level host actions every connector shares, over the privileged side.

Protocol actions live in each protocol's ``actions`` module; these are the few
a connector needs whatever its protocol: configuring how the privileged daemon
starts, a yes/no read of a volume device and the users of volume devices for a
caller that is not root, the flush of a volume device, and a device's read-only
flag (access modes of the attachment ledger).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from oslo_config import cfg

from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)


def configure_privsep(conf: cfg.ConfigOpts, root_helper: Any = None) -> None:
    """Remember how the privileged daemon starts (applied at its first use)."""
    from brick_agent import privileged

    privileged.configure(conf, root_helper)


def volume_device_readable(path: str) -> bool:
    """Whether the first block of the fabric volume device at ``path`` reads, asked of
    the privileged side (which refuses anything but a volume's device: False)."""
    from brick_agent.errors import InvalidArgument
    from brick_agent.privileged import reads

    name = os.path.basename(os.path.realpath(path))
    if not reads.VOLUME_DEVICE.match(name):
        LOG.warning("check_valid_device: %s is not a volume device (%s)", path, name)
        return False
    try:
        return bool(reads.block_device_readable(name))
    except InvalidArgument as exc:  # NotOwned: not a fabric volume's device
        LOG.warning("check_valid_device: %s refused: %s", path, exc)
        return False


def reads_host_itself(roots: HostRoots) -> bool:
    """Whether this process reads the host's root-only state itself: it is root, or
    ``roots`` is a fake tree.  A service user on the real host asks the privileged side."""
    return os.geteuid() == 0 or roots != DEFAULT_ROOTS


def volume_devices_users(
    roots: HostRoots, names: Sequence[str], *, udev_grace: float = 0.0
) -> list[str]:
    """Who uses block devices ``names`` on the host (:func:`usage.devices_users`); ``[]``
    when nobody.

    A process that is not root cannot read other users' ``/proc/PID/fd``, and each
    unreadable one counts as a use (fail closed): as a service user (nova, cinder) a
    detach would keep every controller shared with another namespace.  On the real host
    such a caller asks the privileged side, which answers for fabric volume devices only.
    """
    from brick_agent.host.usage import devices_users

    if not names:
        return []
    if reads_host_itself(roots):
        return devices_users(roots, names, udev_grace=udev_grace)
    from brick_agent.privileged import reads

    return list(reads.volume_devices_users(list(names), udev_grace))


def flush_device(path: str, timeout: float) -> None:
    """The privileged flush of the fabric volume device at ``path`` (its /dev node or a
    link to it): ``BLKFLSBUF``, what os-brick's ``blockdev --flushbufs`` does, within
    ``timeout`` (:func:`brick_agent.privileged.block.flush_device`).  Never an ``fsync``
    of the caller's own: that is unbounded on a path whose target is gone, blocks every
    green thread of an eventlet-patched caller (Cinder's services), and would flush
    whatever the path names."""
    from brick_agent.privileged import block

    block.flush_block_device(os.path.basename(os.path.realpath(path)), timeout=timeout)


def set_read_only(name: str, read_only: bool) -> None:
    """``blockdev --setro`` / ``--setrw`` of block device ``name``."""
    from brick_agent.privileged import block

    block.set_block_device_read_only(name, read_only)
