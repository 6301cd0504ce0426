"""Privileged reads for callers that are not root (the os-brick compat layer).

Each entrypoint returns the least it can: whether one block of a volume device
reads (never the data; only a fabric volume's device, see
:mod:`~brick_agent.privileged._owned`), who uses fabric volume devices (holders,
mounts, swap, the processes holding them open: another user's ``/proc/PID/fd`` is
unreadable to a service user), the DMI product UUID (validated), the iSCSI
initiator name (validated).  Files that are root-only on common distributions
(``/sys/class/dmi/id/product_uuid`` 0400, ``/etc/iscsi/initiatorname.iscsi``
0600) are why these exist.
"""

from __future__ import annotations

import os
import re
import stat

from brick_agent.errors import InvalidArgument, NotOwned
from brick_agent.host import sysfs
from brick_agent.host.iscsi import initiator_name
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.privileged import _owned
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint

#: bytes read by :func:`do_block_device_readable`
BLOCK = 4096
#: devices a volume can be: SCSI disks, NVMe namespaces, dm maps, md arrays (replicated NVMe)
VOLUME_DEVICE = re.compile(
    r"^(?:sd[a-z]{1,4}|nvme\d{1,4}(?:c\d{1,4})?n\d{1,5}|dm-\d{1,6}|"
    r"md\d{1,5})$"
)
DMI_PRODUCT_UUID = ("class", "dmi", "id", "product_uuid")


def do_block_device_readable(roots: HostRoots, name: str, size: int = BLOCK) -> bool:
    """True when the first ``size`` bytes of block device ``/dev/NAME`` (sd, nvme, dm, md) read."""
    name = v.device_name(name, VOLUME_DEVICE)
    size = v.int_arg(size, "size", minimum=1, maximum=1 << 20)
    if not os.path.isdir(roots.sysfs("block", name)):
        return False
    require_volume_device(roots, name)
    path = roots.devfs(name)
    v.path_under(roots.dev, path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            raise InvalidArgument(f"{path} is not a block device")
        os.pread(fd, size, 0)  # not os.read: see connectors.base.read_first_block
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


#: devices one users query may name (a subsystem's namespaces on one controller)
MAX_USERS_QUERY = 1024
#: the longest a users query waits for udev's probe to end
MAX_UDEV_GRACE = 10.0


def do_volume_devices_users(roots: HostRoots, names: object, udev_grace: object = 0.0) -> list[str]:
    """Who uses fabric volume devices ``names`` (:func:`~brick_agent.host.usage.devices_users`:
    holders, mounts, swap, open descriptors); ``[]`` when nobody.  A name the kernel no
    longer has is skipped; one that is no fabric volume's device is refused (NotOwned)."""
    from brick_agent.host.usage import devices_users

    if not isinstance(names, (list, tuple)) or not 1 <= len(names) <= MAX_USERS_QUERY:
        raise InvalidArgument(f"names must be a list of 1 to {MAX_USERS_QUERY} device names")
    checked = [v.device_name(n, VOLUME_DEVICE) for n in names]
    if isinstance(udev_grace, bool) or not isinstance(udev_grace, (int, float)):
        raise InvalidArgument("udev_grace must be a number of seconds")
    if not 0 <= udev_grace <= MAX_UDEV_GRACE:
        raise InvalidArgument(f"udev_grace must be in [0, {MAX_UDEV_GRACE}]")
    present = [n for n in checked if os.path.isdir(roots.sysfs("class", "block", n))]
    for name in present:
        require_volume_device(roots, name)
    return devices_users(roots, present, udev_grace=float(udev_grace)) if present else []


def require_volume_device(roots: HostRoots, name: str) -> None:
    """Refuse (NotOwned) a device that is not a fabric volume's: a SCSI LUN, NVMe namespace
    or multipath map over fabric paths, or an md array of such members."""
    if not name.startswith("md"):
        _owned.require_fabric_block(roots, name)
        return
    members = sysfs.list_dir(roots.sysfs("block", name, "slaves"))
    if not members:
        raise NotOwned(f"md array {name}", "it has no members")
    for member in members:
        try:
            _owned.require_fabric_block(roots, member)
        except NotOwned as exc:
            raise NotOwned(f"md array {name}", f"member {exc.obj}: {exc.reason}") from None


def do_dmi_product_uuid(roots: HostRoots) -> str | None:
    """The DMI product UUID as the firmware reports it (None: absent or not a UUID)."""
    try:
        with open(roots.sysfs(*DMI_PRODUCT_UUID), encoding="ascii") as fh:
            value = fh.read(64).strip()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        v.uuid_str(value)
    except InvalidArgument:
        return None
    return value


def do_iscsi_initiator_name(roots: HostRoots) -> str | None:
    """The IQN of /etc/iscsi/initiatorname.iscsi (None: absent or not an iSCSI name)."""
    name = initiator_name(roots)
    if name is None:
        return None
    try:
        return v.iqn(name, "initiator name")
    except InvalidArgument:
        return None


@entrypoint
def block_device_readable(name: str) -> bool:
    return do_block_device_readable(DEFAULT_ROOTS, name)


@entrypoint
def volume_devices_users(names: list[str], udev_grace: float = 0.0) -> list[str]:
    return do_volume_devices_users(DEFAULT_ROOTS, names, udev_grace)


@entrypoint
def dmi_product_uuid() -> str | None:
    return do_dmi_product_uuid(DEFAULT_ROOTS)


@entrypoint
def iscsi_initiator_name() -> str | None:
    return do_iscsi_initiator_name(DEFAULT_ROOTS)
