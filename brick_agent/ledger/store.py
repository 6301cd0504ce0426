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
  :mod:`brick_agent.ledger.reconcile`).

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

* **Fail closed.** A file that cannot be read (``EACCES``, ``EIO``, ``EMFILE``...)
  raises :class:`LedgerUnreadable` and nothing is attached or detached.  Only
  malformed content is corruption: the file is moved aside to a unique
  ``<path>.corrupt-<time>-<pid>-<random>`` and the ledger is rebuilt from what the
  kernel shows: every fabric volume present gets an entry whose attachments are
  unknown (:data:`UNKNOWN_ATTACHMENT`).  Such a device is kept by every detach
  unless forced (:class:`AttachmentsUnknown`): a live attachment is never dropped
  silently.  Temp files of a writer that crashed (``.ledger-*.tmp``) are removed
  by the first transaction of each process.
* **Replaced volumes.** When a connect finds that the array reused an address
  (target+LUN, NQN+NSID) for another volume, the old entry becomes a tombstone in
  ``replaced`` (identity, volume id, lookup keys).  A later detach that names the
  old volume (``volume_id``, ``device_info`` identity) removes nothing of the new
  one; one that names neither, on a reused address, keeps the device and says so.
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
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.host.scsi import Hctl, same_wwid

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
LOCK_NAME = "ledger"
DEFAULT_ATTACHMENT = "default"
ACCESS_MODES = ("rw", "ro")
#: connection-property keys that may carry the attachment id (Cinder/Nova name first)
ATTACHMENT_ID_KEYS = ("attachment_id", "attachment")
MAX_ID = 255
#: the attachments of a volume found on the kernel after the ledger was rebuilt
UNKNOWN_ATTACHMENT = "<unknown>"
#: tombstones of replaced volumes kept at most (oldest dropped first)
MAX_REPLACED = 512


class LedgerError(BrickError):
    """The ledger file could not be written, or a transaction failed."""


class LedgerUnreadable(LedgerError):
    """The ledger file exists but cannot be read (permissions, I/O): nothing is decided."""


class LedgerCorrupt(LedgerError):
    """The ledger file's content is malformed (a transaction rebuilds it from the kernel)."""


class AttachmentsUnknown(LedgerError):
    """A detach kept a device whose attachments are unknown (ledger rebuilt); force removes it."""


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
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_ID
        or any(ord(c) < 32 for c in value)
    ):
        raise InvalidArgument(
            f"{what} must be a non-empty printable string of at most {MAX_ID} characters"
        )
    if value == UNKNOWN_ATTACHMENT:
        raise InvalidArgument(f"{what} {value!r} is reserved")
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
        return dev.dm_uuid[len("mpath-") :]
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
        return dm_uuid[len("mpath-") :]
    wwid = sysfs.read_attr(os.path.join(real, "wwid"))
    if wwid:
        return wwid
    device = sysfs.resolve(os.path.join(real, "device"))
    if device is not None and Hctl.try_parse(os.path.basename(device)) is not None:
        return sysfs.read_attr(os.path.join(device, "wwid")) or None
    return None


def same_identity(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return a.strip().lower() == b.strip().lower() or same_wwid(a, b)


class AttachmentLedger:
    """The persisted ledger at ``path`` (see the module doc for the format)."""

    def __init__(
        self,
        path: str,
        *,
        lock_path: str | None = None,
        lock_timeout: float | None = 60.0,
        roots: HostRoots = DEFAULT_ROOTS,
    ) -> None:
        if not path or not os.path.isabs(path):
            raise InvalidArgument(f"ledger path must be absolute: {path!r}")
        self.path = path
        self.lock_path = lock_path
        self.lock_timeout = lock_timeout
        self.roots = roots  # the host a corrupt ledger is rebuilt from
        self._swept = False  # crashed writers' temp files removed (once per process)

    @classmethod
    def from_conf(cls, conf: Any) -> AttachmentLedger | None:
        """The ledger of ``[brick_agent] ledger_path`` (None when the option is empty)."""
        opts = conf.brick_agent
        if not opts.ledger_path:
            return None
        return cls(opts.ledger_path, lock_path=opts.lock_path)

    # ------------------------------------------------------------ file
    def read(self) -> dict[str, Any]:
        """The current content (no lock; a consistent snapshot thanks to atomic renames).

        Raise :class:`LedgerUnreadable` when the file cannot be read and
        :class:`LedgerCorrupt` when its content is malformed; a missing file is empty.
        """
        return _parse(self.path, _read_text(self.path))

    def _load_locked(self) -> dict[str, Any]:
        if not self._swept:
            self._sweep_temp_files()
        text = _read_text(self.path)
        try:
            return _parse(self.path, text)
        except LedgerCorrupt as exc:
            return self._recover(exc)

    def _recover(self, exc: LedgerCorrupt) -> dict[str, Any]:
        """Move the corrupt file aside and rebuild: kernel volumes, attachments unknown."""
        aside = (
            f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-"
            f"{os.urandom(4).hex()}"
        )
        os.replace(self.path, aside)  # an OSError here is raised: nothing is decided
        data = _empty()
        now = time.time()
        for vol in _kernel_volumes(self.roots):
            data["volumes"][volume_key(vol["protocol"], vol["identity"])] = {
                **vol,
                "lookup": [],
                "volume_id": None,
                "attachments": {UNKNOWN_ATTACHMENT: {"access_mode": "rw", "since": now}},
            }
        data["recovered"] = {"at": now, "aside": aside, "reason": str(exc)}
        LOG.error(
            "attachment ledger %s is corrupt (%s); moved to %s and rebuilt from the "
            "kernel: %d volume(s) present, their attachments unknown (a detach keeps "
            "them unless forced)",
            self.path,
            exc,
            aside,
            len(data["volumes"]),
        )
        self._write_locked(data)
        return data

    def _sweep_temp_files(self) -> None:
        """Remove temp files a crashed writer left (called under the ledger lock)."""
        directory = os.path.dirname(self.path)
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(directory):
                if name.startswith(".ledger-") and name.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(directory, name))
                        LOG.warning("removed %s, left by a writer that crashed", name)
        self._swept = True

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

    def _lead(self, batch: _Batch, me: _Member) -> Iterator[dict[str, Any]]:
        name = locking.safe_lock_name(LOCK_NAME)
        own_error: BaseException | None = None
        try:
            with locking.external_lock(name, lock_path=self.lock_path, timeout=self.lock_timeout):
                with _BATCH_MUTEX:  # closed: later arrivals form the next batch
                    if _OPEN_BATCHES.get(self.path) is batch:
                        del _OPEN_BATCHES[self.path]
                    members = list(batch.members)
                data = self._load_locked()
                batch.data = data
                before = _canonical(data)  # C-encoded snapshot: cheaper than a deep copy
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
                if _OPEN_BATCHES.get(self.path) is batch:  # failed before closing it
                    del _OPEN_BATCHES[self.path]
            for member in batch.members:
                member.go.set()  # members not run yet see batch.error
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

    def concerns(self) -> list[tuple[str, str, str]]:
        """What the audit should report about the ledger itself: (kind, name, detail).

        Volumes whose attachments are unknown (rebuilt after corruption) and devices
        a detach kept because the call could not tell whose they were.
        """
        data = self.read()
        out = []
        for key, entry in sorted(data["volumes"].items()):
            path = (entry.get("device_info") or {}).get("path")
            if UNKNOWN_ATTACHMENT in (entry.get("attachments") or {}):
                out.append(
                    (
                        "attachments_unknown",
                        key,
                        f"{path}: attachments unknown since the ledger was rebuilt "
                        f"({(data.get('recovered') or {}).get('aside', '?')}); detach with "
                        "force once no instance uses it",
                    )
                )
            kept = entry.get("detach_kept")
            if kept:
                out.append(("detach_kept", key, f"{path}: {kept.get('why', '?')}"))
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
_OPEN_BATCHES: dict[str, _Batch] = {}  # ledger path -> batch still taking members


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
    if isinstance(error, (LockTimeout, LedgerError)):
        return type(error)(str(error))
    return LedgerError(f"attachment ledger transaction failed: {error}")


def _restore(data: dict[str, Any], snapshot: str) -> None:
    data.clear()
    data.update(json.loads(snapshot))


def _empty() -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "volumes": {}, "pending": []}


def _read_text(path: str) -> str | None:
    """The file's text, None when it does not exist; :class:`LedgerUnreadable` otherwise."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LedgerUnreadable(f"attachment ledger {path} cannot be read: {exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LedgerCorrupt(f"attachment ledger {path} is not UTF-8: {exc}") from None


def _parse(path: str, text: str | None) -> dict[str, Any]:
    """The ledger content of ``text``; :class:`LedgerCorrupt` when it is malformed."""
    if text is None:
        return _empty()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise LedgerCorrupt(f"attachment ledger {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise LedgerCorrupt(f"attachment ledger {path} has an unknown format")
    data.setdefault("volumes", {})
    data.setdefault("pending", [])
    replaced = data.get("replaced", [])
    if not (
        isinstance(data["volumes"], dict)
        and isinstance(data["pending"], list)
        and isinstance(replaced, list)
        and all(isinstance(e, dict) for e in data["volumes"].values())
        and all(isinstance(p, dict) for p in data["pending"])
        and all(isinstance(r, dict) for r in replaced)
    ):
        raise LedgerCorrupt(f"attachment ledger {path} has malformed sections")
    return data


def _kernel_volumes(roots: HostRoots) -> list[dict[str, Any]]:
    """Every fabric volume the kernel shows: protocol, identity, device_info."""
    from brick_agent.audit import present_volumes

    out = []
    for vol in present_volumes(roots):
        ident = vol.wwid or vol.uuid or vol.nguid
        if ident and vol.devices:
            out.append(
                {
                    "protocol": vol.protocol,
                    "identity": ident,
                    "device_info": {"type": "block", "path": roots.devfs(vol.devices[0])},
                }
            )
    return out


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
            lines += [
                f"  {json.dumps(k)}: {_canonical(v)}" + ("," if j < len(items) - 1 else "")
                for j, (k, v) in enumerate(items)
            ]
            lines.append(f" }}{sep}")
        elif isinstance(value, list) and value:
            lines.append(f" {name}: [")
            lines += [
                f"  {_canonical(v)}" + ("," if j < len(value) - 1 else "")
                for j, v in enumerate(value)
            ]
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


def drop_pending(
    data: dict[str, Any], lookup: Sequence[str], attachment: str | None = None
) -> list[dict[str, Any]]:
    """Remove (and return) intents matching ``lookup`` (and ``attachment`` if given)."""
    wanted = set(lookup)
    keep, dropped = [], []
    for p in data["pending"]:
        if wanted & set(p.get("lookup", ())) and (
            attachment is None or p.get("attachment_id") == attachment
        ):
            dropped.append(p)
        else:
            keep.append(p)
    data["pending"] = keep
    return dropped


def modes_of(entry: Mapping[str, Any]) -> dict[str, str]:
    return {a: rec.get("access_mode", "rw") for a, rec in entry.get("attachments", {}).items()}


def lookup_keys(
    protocol: str, props: Mapping[str, Any], *, use_multipath: bool = False
) -> list[str] | None:
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
