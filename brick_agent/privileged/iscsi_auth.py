"""Node settings and CHAP secrets written into open-iscsi's records, with no argv and no exec.

``iscsiadm`` takes a record value only on its command line (``-v VALUE``),
where any local user reads it in ``/proc/PID/cmdline``; open-iscsi 2.1.8 has no
stdin or file input for values.  Its records, though, are plain text files that
iscsiadm and iscsid read back with the ``name = value`` parser of
``idbm_recinfo_config`` (usr/idbm.c, last line of a name wins), written by
iscsiadm under ``umask(0077)`` (root-only).  So the CHAP settings are written
into the record file itself: read, replace the ``*.auth.*`` lines, write a 0600
temporary file beside it, fsync, rename over — holding iscsiadm's own database
lock (``link(LOCK_FILE, LOCK_WRITE_FILE)`` in ``/run/lock/iscsi``) so no
iscsiadm read-modify-write interleaves.

A new node's other settings (manual scan, login attempts and timeouts) go the same way,
in the same write, instead of one more ``iscsiadm --op update`` (which, like every
``-m node`` call, reads every record of the host and waits for the node database):
only the lines ``--op new`` wrote are replaced, so a setting this iscsiadm does not
know (no line) is left to ``--op update``, whose refusal says so.

Record locations (usr/idbm.c ``idbm_rec_write``): ``--op new`` without a tpgt
writes ``nodes/<iqn>/<address>,<port>`` (a file); with a tpgt (discovery)
``nodes/<iqn>/<address>,<port>,<tpgt>/<iface>``.  SendTargets discovery
records are ``send_targets/<address>,<port>/st_config``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import tempfile

from brick_agent.errors import DeviceNotFound, InvalidArgument
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint
from brick_agent.privileged import iscsi as piscsi
from brick_agent.privileged.iscsi_records import LOCK_DIR, address_port, db_root, idbm_lock

LOG = logging.getLogger("brick_agent.privileged")


def _auth_items(settings: list, allowed: dict) -> list[tuple[str, str]]:
    """Validated ``(name, value)`` pairs, all ``*.auth.*`` parameters."""
    items = piscsi._settings(settings, allowed)
    for name, _value in items:
        if ".auth." not in name:
            raise InvalidArgument(f"only auth settings go into the record file: {name!r}")
    return items


def node_record_path(root: str, target_iqn: str, portal: str, iface: str) -> str:
    """The existing record file of one node (old or new layout)."""
    addr, port = address_port(portal)
    base = os.path.join(root, "nodes", v.iqn(target_iqn, "target IQN"), f"{addr},{port}")
    if os.path.isfile(base) and not os.path.islink(base):
        return base
    found = [
        p
        for p in glob.glob(glob.escape(base) + ",*/" + glob.escape(v.iface(iface)))
        if os.path.isfile(p) and not os.path.islink(p)
    ]
    if len(found) != 1:
        raise DeviceNotFound(
            f"node record of {target_iqn} {portal} {iface}: {len(found)} found (create it first)"
        )
    return found[0]


def discovery_record_path(root: str, portal: str) -> str:
    addr, port = address_port(portal)
    path = os.path.join(root, "send_targets", f"{addr},{port}", "st_config")
    if not os.path.isfile(path) or os.path.islink(path):
        raise DeviceNotFound(f"discovery record of {portal} not found (create it first)")
    return path


def _record_line_name(line: str) -> str:
    return line.split("=", 1)[0].strip()


def _record_lines(path: str) -> list[str]:
    """The lines of the record file ``path`` (never through a symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgument(f"{path} is a symlink") from None
        raise
    with os.fdopen(fd, encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read().splitlines()


def rewrite_record(path: str, items: list[tuple[str, str]]) -> None:
    """Replace ``items`` in the record file ``path``: 0600 temporary file, fsync, rename."""
    lines = _record_lines(path)
    names = {name for name, _ in items}
    kept = [line for line in lines if _record_line_name(line) not in names]
    text = "\n".join(kept + [f"{name} = {value}" for name, value in items]) + "\n"
    directory = os.path.dirname(path)
    tmp_fd, tmp = tempfile.mkstemp(prefix=".brick_agent-", dir=directory)  # 0600
    try:
        with os.fdopen(tmp_fd, "w", encoding="utf-8", errors="surrogateescape") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    LOG.debug("set %s in %s", ", ".join(sorted(names)), path)


def do_node_set_settings(
    target_iqn: str,
    portal: str,
    iface: str,
    settings: list,
    *,
    root: str | None = None,
    lock_dir: str = LOCK_DIR,
) -> dict:
    """Write node settings into the existing node record in one rewrite.

    A CHAP setting replaces its line or adds it (an empty one has none); any other
    replaces the line ``--op new`` wrote for it and is left out when there is none.
    ``{"set": names written, "absent": names left out}``.
    """
    items = piscsi._settings(settings, piscsi.NODE_PARAMS)
    with idbm_lock(lock_dir):
        path = node_record_path(root or db_root(), target_iqn, portal, iface)
        present = {_record_line_name(line) for line in _record_lines(path)}
        chosen = [(name, value) for name, value in items if ".auth." in name or name in present]
        if chosen:
            rewrite_record(path, chosen)
    written = [name for name, _ in chosen]
    return {"set": written, "absent": [name for name, _ in items if name not in written]}


def do_discovery_set_auth(
    portal: str, settings: list, *, root: str | None = None, lock_dir: str = LOCK_DIR
) -> dict:
    """Write SendTargets discovery CHAP settings into the existing discovery record."""
    items = _auth_items(settings, piscsi.DISCOVERY_PARAMS)
    with idbm_lock(lock_dir):
        rewrite_record(discovery_record_path(root or db_root(), portal), items)
    return {"set": [name for name, _ in items]}


@entrypoint
def node_set_settings(target_iqn: str, portal: str, iface: str, settings: list) -> dict:
    return do_node_set_settings(target_iqn, portal, iface, settings)


@entrypoint
def discovery_set_auth(portal: str, settings: list) -> dict:
    return do_discovery_set_auth(portal, settings)
