"""The host identifiers of the connector object: ``uuid`` and ``system uuid`` (os-brick's keys).

* ``system uuid`` — the DMI product UUID (``/sys/class/dmi/id/product_uuid``) as
  the firmware reports it.  Pure, Infinidat and RSD drivers read it.  The file is
  root-only on most kernels: a non-root caller on the real host asks the
  privileged reader.
* ``uuid`` — the UUID of the filesystem mounted at ``/`` (Kioxia, Toyou read
  it): the ``/`` entry of ``/proc/self/mountinfo`` names the device, udev's
  ``/dev/disk/by-uuid`` links (or its database's ``ID_FS_UUID``) name its UUID;
  a host without udev reports none (os-brick runs ``blkid`` as root for it).  None for a
  root that is not a block device (overlay, tmpfs, NFS) — the connector object then has
  no ``uuid``.

All paths come from injectable :class:`~brick_agent.host.roots.HostRoots` (and
the mountinfo path), so tests run on fake trees.  Used by
:func:`brick_agent.connector_properties.get_connector_properties` (and thus by
the os-brick compatibility layer).
"""

from __future__ import annotations

import logging
import os
import uuid as uuidlib
from collections.abc import Callable

from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)

DMI_PRODUCT_UUID = ("class", "dmi", "id", "product_uuid")
MOUNTINFO = "/proc/self/mountinfo"
BY_UUID = ("disk", "by-uuid")


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


def _privileged_dmi_uuid() -> str | None:
    from brick_agent.privileged import reads

    return reads.dmi_product_uuid()


def system_uuid(
    roots: HostRoots = DEFAULT_ROOTS, privileged_read: Callable[[], str | None] | None = None
) -> str | None:
    """The DMI product UUID, or None.

    An unreadable file (root-only) is read through ``privileged_read`` (default:
    the privileged entrypoint, only for the real host's roots).
    """
    try:
        with open(roots.sysfs(*DMI_PRODUCT_UUID), encoding="ascii") as fh:
            value = fh.read(64).strip()
    except PermissionError:
        if privileged_read is None and roots != DEFAULT_ROOTS:
            return None
        try:
            value = (privileged_read or _privileged_dmi_uuid)() or ""
        except Exception as exc:  # noqa: BLE001 - a connector object must not fail on this
            LOG.warning("cannot read the DMI product UUID: %s", exc)
            return None
    except (OSError, UnicodeDecodeError):
        return None
    return value if value and _is_uuid(value) else None


def root_source(mountinfo: str = MOUNTINFO) -> str | None:
    """The mount source of ``/`` (the last mount on ``/`` wins, as the kernel shows it)."""
    from brick_agent.host.usage import mount_entries

    try:
        entries = mount_entries(mountinfo)
    except OSError:
        return None
    sources = [source for _, point, source in entries if point == "/" and source]
    return sources[-1] if sources else None


def root_fs_uuid(roots: HostRoots = DEFAULT_ROOTS, mountinfo: str = MOUNTINFO) -> str | None:
    """UUID of the filesystem mounted at ``/`` (None when it is not a block device's)."""
    source = root_source(mountinfo)
    if not source or not source.startswith("/dev/"):
        return None
    device = os.path.realpath(roots.devfs(source[len("/dev/") :]))
    links = roots.devfs(*BY_UUID)
    try:
        names = sorted(os.listdir(links))
    except OSError:
        names = []
    for name in names:
        if os.path.realpath(os.path.join(links, name)) == device:
            return name
    from brick_agent.host.udev import udev_properties

    fs_uuid = (udev_properties(roots, os.path.basename(device)) or {}).get("ID_FS_UUID")
    return fs_uuid or None


def host_ids(
    roots: HostRoots = DEFAULT_ROOTS,
    mountinfo: str = MOUNTINFO,
    privileged_read: Callable[[], str | None] | None = None,
) -> dict[str, str]:
    """``{'uuid': ..., 'system uuid': ...}`` with the keys whose value is known."""
    out: dict[str, str] = {}
    fs_uuid = root_fs_uuid(roots, mountinfo)
    if fs_uuid:
        out["uuid"] = fs_uuid
    suuid = system_uuid(roots, privileged_read)
    if suuid:
        out["system uuid"] = suuid
    return out


__all__ = ["host_ids", "root_fs_uuid", "root_source", "system_uuid"]
