"""open-iscsi's record database: its location and lock, and removing a static node
record without running iscsiadm.

A detach logs out of an emptied session and deletes its node record, so no boot or
``iscsiadm -m node --loginall`` logs in again.  ``iscsiadm --op delete`` is a whole
process for the unlink of one file (a tenth of a second per detach in the lab), so
the case a static ``--op new`` leaves behind is done here, the way iscsiadm does it
(usr/idbm.c ``idbm_delete_node``): holding its database lock, unlink
``nodes/<iqn>/<address>,<port>``, then remove ``nodes/<iqn>`` if that left it empty.

Everything else stays iscsiadm's (the caller falls back to it): a record made by
discovery (``nodes/<iqn>/<address>,<port>,<tpgt>/<iface>`` and its link from the
discovery record), a record of another iface or another discovery type, a portal
given by host name, a session still using the target at that portal, a record that
is not a regular file, one whose fields do not name exactly this node.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import logging
import os
import stat
import time
from collections.abc import Collection, Iterator

from brick_agent.errors import DeviceNotFound, LockTimeout
from brick_agent.host.iscsi import record_fields
from brick_agent.privileged import _validate as v

LOG = logging.getLogger("brick_agent.privileged")

#: The largest record file read (iscsiadm writes about 4 KiB).
_MAX_RECORD = 1 << 16

#: open-iscsi's database root (Debian/Ubuntu/SUSE; Red Hat builds use /var/lib/iscsi).
DB_ROOTS = ("/etc/iscsi", "/var/lib/iscsi")
LOCK_DIR = "/run/lock/iscsi"
LOCK_WAIT = 30.0  # what iscsiadm itself waits (3000 x 10 ms) before going ahead


def db_root(candidates: tuple[str, ...] = DB_ROOTS) -> str:
    """The first candidate holding a ``nodes`` or ``send_targets`` directory."""
    for root in candidates:
        if os.path.isdir(os.path.join(root, "nodes")) or os.path.isdir(
            os.path.join(root, "send_targets")
        ):
            return root
    raise DeviceNotFound(f"no open-iscsi database under {', '.join(candidates)}")


@contextlib.contextmanager
def idbm_lock(lock_dir: str = LOCK_DIR, wait: float = LOCK_WAIT) -> Iterator[None]:
    """iscsiadm's database lock: ``lock.write`` exists (a hard link of ``lock``) while held."""
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    lock, held = os.path.join(lock_dir, "lock"), os.path.join(lock_dir, "lock.write")
    os.close(os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
    deadline = time.monotonic() + wait
    while True:
        try:
            os.link(lock, held)
            break
        except FileExistsError:
            if time.monotonic() >= deadline:
                raise LockTimeout(f"iscsiadm database lock {held} held for {wait:g}s") from None
            time.sleep(0.01)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(held)


def address_port(portal: str) -> tuple[str, str]:
    """A validated portal's address (IPv6 without brackets) and port, as the record
    database names them (``<address>,<port>``)."""
    addr, _, port = v.portal(portal).rpartition(":")
    return addr.strip("[]"), port


def _fields(path: str, names: Collection[str]) -> dict[str, str] | None:
    """The fields ``names`` of the regular file ``path`` (:func:`record_fields`); None
    when it is not a regular file, or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        data = handle.read(_MAX_RECORD + 1)
    if len(data) > _MAX_RECORD:
        return None
    return record_fields(data.decode("utf-8", "surrogateescape").splitlines(), names)


def static_record(root: str, target_iqn: str, portal: str, iface: str) -> str | None:
    """The static record file of exactly this node, when that is the only record
    iscsiadm would delete for it; else None (the caller runs iscsiadm)."""
    iqn = v.iqn(target_iqn, "target IQN")
    addr, port = address_port(portal)
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return None  # iscsiadm matches host names its own way
    base = os.path.join(root, "nodes", iqn, f"{addr},{port}")
    if glob.glob(glob.escape(base) + ",*"):
        return None  # records of discovery: iscsiadm deletes them and their links
    expected = {
        "node.name": iqn,
        "node.conn[0].address": addr,
        "node.conn[0].port": port,
        "iface.iscsi_ifacename": v.iface(iface),
        "node.discovery_type": "static",
    }
    defaults = {"iface.iscsi_ifacename": "default", "node.discovery_type": "static"}
    fields = _fields(base, expected)
    if fields is None:
        return None
    for name, want in expected.items():
        if fields.get(name, defaults.get(name)) != want:
            LOG.debug("node record %s: %s is %r, not %r", base, name, fields.get(name), want)
            return None
    return base


def remove_static_record(path: str) -> None:
    """Unlink the record file ``path`` (held: iscsiadm's database lock) and its target
    directory if that left it empty."""
    os.unlink(path)
    with contextlib.suppress(OSError):  # not empty (other portals' records): kept
        os.rmdir(os.path.dirname(path))
    LOG.debug("removed node record %s", path)
