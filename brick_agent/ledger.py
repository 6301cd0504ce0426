"""Attachment ledger: which volumes brick_agent attached on this host, and for whom.

File format (JSON, ``[brick_agent] ledger_path``, version 1)::

    {"version": 1,
     "volumes": {
       "ISCSI:36001405...": {
         "protocol": "ISCSI", "identity": "naa.6001405...",
         "lookup": ["iscsi:iqn.2010-10.org.x:vol1:1"],
         "device_info": {"type": "block", "path": "/dev/sdb", ...},
         "attachments": {"att-1": {"access_mode": "rw", "since": 1764160000.0}}}},
     "pending": [{"lookup": [...], "attachment_id": "att-2", "access_mode": "rw",
                  "since": ...}]}

* **Key**: ``<protocol>:<identity>``; identity is what the kernel reports for the
  returned device (SCSI WWID, dm map uuid without ``mpath-``, NVMe namespace
  wwid).  ``lookup`` holds keys derived from the connection properties
  (IQN+LUN, target WWPNs+LUN, NQN+namespace id) so a connect finds the entry
  *before* the WWID is known.  Connection properties are never stored (CHAP
  secrets); only the derived lookup keys, the access mode and ``device_info``.
* **Writes**: read-modify-write under the external file lock ``ledger``
  (:func:`brick_agent.locking.external_lock`, shared by every process); the
  file is replaced atomically (temp file in the same directory, ``fsync``,
  ``rename``, ``fsync`` of the directory), directory created ``0700``, file ``0600``.
* **Write-ahead intent**: a connect records a ``pending`` intent (lookup keys +
  attachment id) before any kernel action and replaces it with the attachment
  afterwards.  A crash in between leaves the intent, so the next call knows the
  device it finds belongs to that attachment (see the reconcile rule in
  :mod:`brick_agent.connectors.base`).

* **Attachment ids** come from ``attachment_id`` in the connection properties.
  Cinder's attachment API returns it in its flat ``connection_info``, but Nova
  drops it when it rebuilds ``connection_info['data']``
  (``nova/volume/cinder.py``, ``_translate_attachment_ref``). Nova instead decides
  itself whether to call ``disconnect_volume`` on a multiattach volume that
  another instance on the host still uses (the libvirt driver's
  ``_should_disconnect_target``). Under Nova every connect is therefore the one
  attachment ``default``: a repeated connect is idempotent, and the disconnect
  Nova makes removes the device.  Callers that pass ``attachment_id``
  (cinderlib-style or direct use) get per-attachment counting.

An unreadable (corrupt) file is moved aside to ``<path>.corrupt-<time>`` and the
ledger starts empty; the kernel reconcile then rebuilds what it can.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from brick_agent import locking
from brick_agent.errors import BrickError, InvalidArgument, LockTimeout
from brick_agent.host import sysfs
from brick_agent.host.block import BlockDevice, block_device_for_path, resolve_dev_path
from brick_agent.host.roots import HostRoots
from brick_agent.host.scsi import HCTL, same_wwid

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
LOCK_NAME = "ledger"
DEFAULT_ATTACHMENT = "default"
ACCESS_MODES = ("rw", "ro")
#: connection-property keys that may carry the attachment id (Cinder/Nova name first)
ATTACHMENT_ID_KEYS = ("attachment_id", "attachment")
MAX_ID = 255


class AccessModeConflict(InvalidArgument):
    """ro and rw attachments of one volume on one host cannot be mixed."""

    def __init__(self, volume: str, wanted: str, existing: Mapping[str, str]) -> None:
        self.volume = volume
        self.wanted = wanted
        self.existing = dict(existing)
        held = ", ".join(f"{a}={m}" for a, m in sorted(self.existing.items()))
        super().__init__(f"volume {volume} is attached on this host as {held}; an "
                         f"{wanted!r} attachment cannot be added (ro and rw attachments of "
                         "one volume cannot be mixed on one host)")


class LedgerError(BrickError):
    """The ledger file could not be written."""


def attachment_id(props: Mapping[str, Any], fallback: str | None = None) -> str:
    """The attachment id of ``props`` (``attachment_id``), else ``fallback``, else 'default'."""
    for key in ATTACHMENT_ID_KEYS:
        value = props.get(key)
        if value not in (None, ""):
            return _check_id(value, key)
    if fallback is not None:
        return _check_id(fallback, "attachment id")
    return DEFAULT_ATTACHMENT


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID or any(
            ord(c) < 32 for c in value):
        raise InvalidArgument(f"{what} must be a non-empty printable string of at most "
                              f"{MAX_ID} characters")
    return value


def access_mode(props: Mapping[str, Any]) -> str:
    """``access_mode`` of ``props`` ('rw' when absent)."""
    mode = props.get("access_mode", "rw")
    if mode in (None, ""):
        return "rw"
    if mode not in ACCESS_MODES:
        raise InvalidArgument(f"access_mode must be 'rw' or 'ro', got {mode!r}")
    return str(mode)


def identity_of(dev: BlockDevice | None) -> str | None:
    """A block device's volume identity: the WWID of a multipath map (from its dm uuid),
    else the device's own WWID/UUID."""
    if dev is None:
        return None
    if dev.dm_uuid and dev.dm_uuid.startswith("mpath-"):
        return dev.dm_uuid[len("mpath-"):]
    return dev.wwid


def device_identity(roots: HostRoots, path: str | None) -> str | None:
    """What the kernel says the device at ``path`` is (WWID / map wwid / NVMe wwid).

    None when the path does not resolve to a block device or it has no identity.
    Reads only the attributes that carry the identity (``dm/uuid``, ``wwid``,
    SCSI ``device/wwid``): it runs on every connect and disconnect.
    """
    if not path:
        return None
    final = resolve_dev_path(roots, path)
    # read through the class link (the kernel follows it: no lstat per component)
    real = None if final is None else roots.sysfs("class", "block", os.path.basename(final))
    if real is None or not os.path.isdir(real):
        # not a kernel name (a dm node made without udev...): the slow way
        return identity_of(block_device_for_path(roots, path))
    dm_uuid = sysfs.read_attr(os.path.join(real, "dm", "uuid"))
    if dm_uuid and dm_uuid.startswith("mpath-"):
        return dm_uuid[len("mpath-"):]
    wwid = sysfs.read_attr(os.path.join(real, "wwid"))
    if wwid:
        return wwid
    device = sysfs.resolve(os.path.join(real, "device"))
    if device is not None and HCTL.try_parse(os.path.basename(device)) is not None:
        return sysfs.read_attr(os.path.join(device, "wwid")) or None
    return None


def same_identity(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return a.strip().lower() == b.strip().lower() or same_wwid(a, b)


class AttachmentLedger:
    """The persisted ledger at ``path`` (see the module doc for the format)."""

    def __init__(self, path: str, *, lock_path: str | None = None,
                 lock_timeout: float | None = 60.0) -> None:
        if not path or not os.path.isabs(path):
            raise InvalidArgument(f"ledger path must be absolute: {path!r}")
        self.path = path
        self.lock_path = lock_path
        self.lock_timeout = lock_timeout

    @classmethod
    def from_conf(cls, conf: Any) -> AttachmentLedger | None:
        """The ledger of ``[brick_agent] ledger_path`` (None when the option is empty)."""
        opts = conf.brick_agent
        if not opts.ledger_path:
            return None
        return cls(opts.ledger_path, lock_path=opts.lock_path)

    # ------------------------------------------------------------ file
    def read(self) -> dict[str, Any]:
        """The current content (no lock; a consistent snapshot thanks to atomic renames)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return _empty()
        except (OSError, ValueError) as exc:
            LOG.error("attachment ledger %s unreadable (%s)", self.path, exc)
            return _empty()
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            LOG.error("attachment ledger %s has an unknown format", self.path)
            return _empty()
        data.setdefault("volumes", {})
        data.setdefault("pending", [])
        return data

    def _load_locked(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            if isinstance(data, dict) and data.get("version") == FORMAT_VERSION:
                data.setdefault("volumes", {})
                data.setdefault("pending", [])
                return data
            raise ValueError("unknown format")
        except FileNotFoundError:
            return _empty()
        except (OSError, ValueError) as exc:
            aside = f"{self.path}.corrupt-{int(time.time())}"
            LOG.error("attachment ledger %s unreadable (%s); moved to %s, starting empty",
                      self.path, exc, aside)
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return _empty()

    def _write_locked(self, data: Mapping[str, Any]) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(render(data))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Hold the ledger lock; yield the content; write it back if it was changed.

        Group commit: transactions of this process that arrive while another one
        holds the lock form one batch.  Its first member (the leader) takes the
        lock and loads the file once; each member's body then runs in turn, in its
        own thread, on that content; the leader writes once and every member
        returns only after that write (an error of the write is raised in each).
        A body that raises has its own changes rolled back and raises alone.  Under
        concurrent attaches this turns 2N lock/load/fsync rounds into a few.
        Transactions must not nest (as before: the lock is not reentrant).
        """
        me = _Member()
        with _BATCH_MUTEX:
            batch = _OPEN_BATCHES.get(self.path)
            leader = batch is None
            if batch is None:
                batch = _OPEN_BATCHES[self.path] = _Batch()
            batch.members.append(me)
        if leader:
            yield from self._lead(batch, me)
        else:
            yield from _follow(batch, me)

    def _lead(self, batch: "_Batch", me: "_Member") -> Iterator[dict[str, Any]]:
        name = locking.safe_lock_name(LOCK_NAME)
        own_error: BaseException | None = None
        try:
            with locking.external_lock(name, lock_path=self.lock_path,
                                       timeout=self.lock_timeout):
                with _BATCH_MUTEX:       # closed: later arrivals form the next batch
                    if _OPEN_BATCHES.get(self.path) is batch:
                        del _OPEN_BATCHES[self.path]
                    members = list(batch.members)
                data = self._load_locked()
                batch.data = data
                before = _canonical(data)   # C-encoded snapshot: cheaper than a deep copy
                for member in members:
                    if member is me:
                        snap = _canonical(data)
                        try:
                            yield data
                        except BaseException as exc:  # noqa: BLE001 - re-raised below
                            _restore(data, snap)
                            own_error = exc
                    else:
                        member.go.set()
                        member.done.wait()
                if len(members) > 1:
                    LOG.debug("ledger: %d transactions in one write", len(members))
                if _canonical(data) != before:
                    self._write_locked(data)
        except BaseException as exc:
            batch.error = exc
            raise
        finally:
            with _BATCH_MUTEX:
                if _OPEN_BATCHES.get(self.path) is batch:   # failed before closing it
                    del _OPEN_BATCHES[self.path]
            for member in batch.members:
                member.go.set()   # members not run yet see batch.error
            batch.finished.set()
        if own_error is not None:
            raise own_error

    # ------------------------------------------------------------ queries
    def entries(self) -> dict[str, dict[str, Any]]:
        return dict(self.read()["volumes"])

    def expected_volumes(self) -> list[dict[str, Any]]:
        """The audit's ``expected`` list: every volume the ledger holds."""
        out = []
        for key, entry in sorted(self.read()["volumes"].items()):
            proto = entry.get("protocol")
            ident = entry.get("identity")
            if not proto or not ident:
                continue
            item: dict[str, Any] = {"protocol": proto, "wwid": ident, "name": key}
            out.append(item)
        return out


class _Member:
    """One transaction of a batch: its turn to run, and the end of its body."""

    __slots__ = ("go", "done")

    def __init__(self) -> None:
        self.go = threading.Event()
        self.done = threading.Event()


class _Batch:
    """Transactions of one process that share one lock hold, load and write."""

    def __init__(self) -> None:
        self.members: list[_Member] = []
        self.data: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.finished = threading.Event()


_BATCH_MUTEX = threading.Lock()
_OPEN_BATCHES: dict[str, _Batch] = {}   # ledger path -> batch still taking members


def _follow(batch: _Batch, me: _Member) -> Iterator[dict[str, Any]]:
    """A non-leader member: run the body when the leader says so, wait for the write."""
    me.go.wait()
    try:
        if batch.error is not None or batch.data is None:
            raise _batch_failure(batch.error)
        data = batch.data
        snap = _canonical(data)
        try:
            yield data
        except BaseException:
            _restore(data, snap)
            raise
    finally:
        me.done.set()
    batch.finished.wait()
    if batch.error is not None:
        raise _batch_failure(batch.error)


def _batch_failure(error: BaseException | None) -> BaseException:
    """A fresh exception for a member when the leader failed (lock timeout, write)."""
    if isinstance(error, LockTimeout):
        return LockTimeout(str(error))
    return LedgerError(f"attachment ledger transaction failed: {error}")


def _restore(data: dict[str, Any], snapshot: str) -> None:
    data.clear()
    data.update(json.loads(snapshot))


def _empty() -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "volumes": {}, "pending": []}


def _canonical(value: Any) -> str:
    """Compact, key-sorted JSON (json's C encoder: it is not used when indenting)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def render(data: Mapping[str, Any]) -> str:
    """The file text: a JSON object with one line per volume and per pending intent.

    Still readable, but built by the C encoder (``json.dump`` with ``indent``
    runs the pure-Python one, which dominated a transaction's cost).
    """
    lines = ["{"]
    keys = sorted(data)
    for i, key in enumerate(keys):
        value = data[key]
        sep = "," if i < len(keys) - 1 else ""
        name = json.dumps(key)
        if isinstance(value, dict) and value:
            items = sorted(value.items())
            lines.append(f" {name}: {{")
            lines += [f"  {json.dumps(k)}: {_canonical(v)}" + ("," if j < len(items) - 1 else "")
                      for j, (k, v) in enumerate(items)]
            lines.append(f" }}{sep}")
        elif isinstance(value, list) and value:
            lines.append(f" {name}: [")
            lines += [f"  {_canonical(v)}" + ("," if j < len(value) - 1 else "")
                      for j, v in enumerate(value)]
            lines.append(f" ]{sep}")
        else:
            lines.append(f" {name}: {_canonical(value)}{sep}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------- content helpers
def volume_key(protocol: str, identity: str) -> str:
    return f"{protocol}:{identity.strip().lower()}"


def find_entry(data: Mapping[str, Any], lookup: Sequence[str]) -> tuple[str, dict] | None:
    """The entry whose lookup keys share one with ``lookup``."""
    wanted = set(lookup)
    for key, entry in data["volumes"].items():
        if wanted & set(entry.get("lookup", ())):
            return key, entry
    return None


def pending_for(data: Mapping[str, Any], lookup: Sequence[str]) -> list[dict[str, Any]]:
    wanted = set(lookup)
    return [p for p in data["pending"] if wanted & set(p.get("lookup", ()))]


def drop_pending(data: dict[str, Any], lookup: Sequence[str],
                 attachment: str | None = None) -> list[dict[str, Any]]:
    """Remove (and return) intents matching ``lookup`` (and ``attachment`` if given)."""
    wanted = set(lookup)
    keep, dropped = [], []
    for p in data["pending"]:
        if wanted & set(p.get("lookup", ())) and (attachment is None
                                                  or p.get("attachment_id") == attachment):
            dropped.append(p)
        else:
            keep.append(p)
    data["pending"] = keep
    return dropped


def modes_of(entry: Mapping[str, Any]) -> dict[str, str]:
    return {a: rec.get("access_mode", "rw") for a, rec in entry.get("attachments", {}).items()}


def lookup_keys(protocol: str, props: Mapping[str, Any], *,
                use_multipath: bool = False) -> list[str] | None:
    """Keys that find a volume's entry from its connection properties (validated here).

    iSCSI ``iscsi:<iqn>:<lun>`` and FC ``fc:<wwpn>:<lun>`` per target; NVMe-oF
    ``nvme:<nqn>:<uuid|nguid|nsid>``.  None when the ledger does not apply
    (replicated NVMe-oF: an md array over several namespaces).
    """
    if protocol == "ISCSI":
        from brick_agent.properties.iscsi import parse_iscsi
        p = parse_iscsi(props, use_multipath=use_multipath)
        return sorted({f"iscsi:{t.iqn}:{t.lun}" for t in p.targets})
    if protocol == "FIBRE_CHANNEL":
        from brick_agent.properties.fc import parse_fc
        f = parse_fc(props)
        return sorted({f"fc:{t.wwpn.lower()}:{t.lun}" for t in f.targets})
    if protocol == "NVMEOF":
        from brick_agent.properties.nvmeof import parse_nvmeof
        n = parse_nvmeof(props)
        if n.replicated or len(n.targets) != 1:
            return None
        t = n.targets[0]
        ns = t.uuid or t.nguid or (None if t.nsid is None else f"nsid{t.nsid}")
        return None if ns is None else [f"nvme:{t.nqn}:{str(ns).lower()}"]
    return None
