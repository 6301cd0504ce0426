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
* **Journal** (a transaction's cost independent of the ledger's size): above
  :data:`JOURNAL_FROM` volumes the snapshot above is written only now and then
  (``"version": 2`` plus ``"journal": <gen>``, which a version-1 reader refuses:
  it fails closed) and each commit appends one checksummed record of what it
  changed to ``<path>.journal`` (``fsync``; format in
  :mod:`brick_agent.ledger.journal`).  Once the journal outgrows the snapshot
  (and :data:`COMPACT_MIN_BYTES`) a commit folds it into a new snapshot of a new
  gen under the lock; below ``JOURNAL_FROM / 2`` volumes the ledger goes back to
  version 1.  Each process keeps the content it read (with indexes by lookup key
  and identity, :mod:`brick_agent.ledger.state`) and reads only what was appended
  since; a replaced snapshot is read afresh.  Crash points: a torn last record was
  never acknowledged (skipped, and cut off under the lock); a new snapshot beside
  the journal of the previous gen is complete (that journal is ignored); a journal
  beside a version-1 snapshot is a leftover (removed).  A transaction body sees an
  overlay: entries are copied in as it reads them, and only those are compared.
  Below :data:`JOURNAL_FROM` the process keeps the content too, with the text it
  read or wrote: a read that finds exactly that text in the file uses it without
  parsing (the text, not the file's stat, says nothing changed: a rename can reuse
  an inode within one timestamp tick).
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

* **Fail closed.** A file that cannot be read (``EACCES``, ``EIO``, ``EMFILE``...),
  the journal included, raises :class:`LedgerUnreadable` and nothing is attached or
  detached.  Only malformed content is corruption (in the journal: any line but a
  torn last one that fails its checksum or shape): the file is moved aside to a unique
  ``<path>.corrupt-<time>-<pid>-<random>`` (the journal beside it, ``.journal``
  appended) and the ledger is rebuilt from what the
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
import dataclasses
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from brick_agent import locking
from brick_agent.errors import BrickError, InvalidArgument, LockTimeout
from brick_agent.host import sysfs
from brick_agent.host.block import BlockDevice, block_device_name
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.host.scsi import Hctl, same_wwid
from brick_agent.ledger import journal
from brick_agent.ledger.state import (
    UNKNOWN_ATTACHMENT,
    Overlay,
    State,
    canonical,
    copy_json,
    has_unknown_attachment,
    identity_forms,
    item_text_line,
    lookups_of,
    scope_forms,
    transaction_view,
)

LOG = logging.getLogger(__name__)

FORMAT_VERSION = 1
LOCK_NAME = "ledger"
DEFAULT_ATTACHMENT = "default"
ACCESS_MODES = ("rw", "ro")
#: connection-property keys that may carry the attachment id (Cinder/Nova name first)
ATTACHMENT_ID_KEYS = ("attachment_id", "attachment")
MAX_ID = 255
#: tombstones of replaced volumes kept at most (oldest dropped first)
MAX_REPLACED = 512
#: a journaled snapshot's format version (a version-1 reader refuses it: fails closed)
JOURNALED_VERSION = 2
#: above this many volumes the ledger is journaled (below, a whole snapshot costs little)
JOURNAL_FROM = 64
#: a journal is folded into a new snapshot once it is larger than this and the snapshot
COMPACT_MIN_BYTES = 256 * 1024


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
    name = block_device_name(roots, path)
    if name is None:
        return None
    # read through the class link (the kernel follows it: no lstat per component)
    real = roots.sysfs("class", "block", name)
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
    @property
    def journal_path(self) -> str:
        return self.path + journal.SUFFIX

    def read(self) -> dict[str, Any]:
        """The current content, a copy (no lock; consistent thanks to atomic renames and
        checksummed appends).

        Raise :class:`LedgerUnreadable` when a file cannot be read and
        :class:`LedgerCorrupt` when its content is malformed; a missing file is empty.
        """
        return self._state(locked=False).plain()

    def view(self) -> dict[str, Any]:
        """The current content for lookups (no lock): :func:`find_entry` and the other
        helpers answer from the indexes; entries are copied only when read."""
        return transaction_view(self._state(locked=False))

    def _state(self, locked: bool) -> State:
        """The current content: a cached journaled state caught up, else read afresh."""
        with _STATES_MUTEX:
            state = _STATES.get(self.path)
        try:
            if state is not None and self._catch_up(state, locked):
                return state
            state = self._read_state(locked)
        except BaseException:
            _forget_state(self.path)
            raise
        with _STATES_MUTEX:
            _STATES[self.path] = state
        return state

    def _catch_up(self, state: State, locked: bool) -> bool:
        """Apply what was appended to the journal since ``state`` was read; False when
        the snapshot or the journal was replaced (read afresh then).  An unjournaled
        state is current while the snapshot's text is the one it was read from."""
        with state.lock:
            files = state.files
            if files.gen is None:
                if _read_snapshot(self.path)[0] != files.text:
                    return False
                if locked and not files.swept:
                    self._drop_stale_journal()
                    files.swept = True
                return True
            if files.journal is None or _stat_key(self.path) != files.snapshot:
                return False
            ino, applied = files.journal
            got = _read_journal(self.journal_path, applied)
            if got is None or got[0] != ino or got[1] < applied:
                return False
            records, used = self._decode(got[2], applied, locked)
            for rec in records:
                _check(self.journal_path, rec)
                state.apply(rec)
            files.journal = (ino, applied + used)
            return True

    def _decode(self, buf: bytes, offset: int, locked: bool) -> tuple[list[dict[str, Any]], int]:
        """Records of journal bytes read from ``offset``; a torn last line is cut off
        under the lock (a writer that crashed) and skipped without it (one writing)."""
        try:
            records, used, torn = journal.decode(buf)
        except journal.JournalCorrupt as exc:
            raise LedgerCorrupt(f"attachment ledger journal {self.journal_path}: {exc}") from None
        if torn and locked:
            LOG.warning("%s: cutting off a record a crashed writer left", self.journal_path)
            _unreadable_on_error(self.journal_path, journal.truncate, offset + used)
        return records, used

    def _read_state(self, locked: bool) -> State:
        """Snapshot plus its journal.  Without the lock a compaction may replace both
        between the two reads: read again while the snapshot keeps changing."""
        state = None
        for _ in range(_READ_ATTEMPTS):
            text, key, size = _read_snapshot(self.path)
            data = _parse(self.path, text)
            gen = data.pop("journal", None)
            state = State(data)
            state.files = _Files(snapshot=key, snapshot_size=size, gen=gen)
            if gen is None:
                state.files.text = text
                if locked:
                    self._drop_stale_journal()
                    state.files.swept = True
                return state
            if self._replay(state, locked) or locked or _stat_key(self.path) == key:
                return state
        assert state is not None
        return state

    def _replay(self, state: State, locked: bool) -> bool:
        """Apply the journal of the state's gen; False when the journal is of another gen
        (left by a compaction: its records are in the snapshot) or missing."""
        got = _read_journal(self.journal_path, 0)
        if got is None:
            return False
        ino, _, buf = got
        records, used = self._decode(buf, 0, locked)
        try:
            gen = journal.gen_of(records[0]) if records else None
        except journal.JournalCorrupt as exc:
            raise LedgerCorrupt(f"attachment ledger journal {self.journal_path}: {exc}") from None
        if gen is None:
            raise LedgerCorrupt(f"attachment ledger journal {self.journal_path} has no header")
        if gen != state.files.gen:
            return False
        for rec in records[1:]:
            _check(self.journal_path, rec)
            state.apply(rec)
        state.files.journal = (ino, used)
        return True

    def _drop_stale_journal(self) -> None:
        """A journal beside an unjournaled snapshot is a leftover (under the lock)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)
            LOG.info("removed %s, left over from a journaled ledger", self.journal_path)

    def _load_locked(self) -> State:
        if not self._swept:
            self._sweep_temp_files()
        try:
            return self._state(locked=True)
        except LedgerCorrupt as exc:
            return self._recover(exc)

    def _recover(self, exc: LedgerCorrupt) -> State:
        """Move the corrupt files aside and rebuild: kernel volumes, attachments unknown."""
        aside = (
            f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-"
            f"{os.urandom(4).hex()}"
        )
        if os.path.lexists(self.path):
            os.replace(self.path, aside)  # an OSError here is raised: nothing is decided
        if os.path.lexists(self.journal_path):
            os.replace(self.journal_path, aside + journal.SUFFIX)
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
        text = self._write_locked(data)
        state = State(data)
        state.files = _Files(
            snapshot=_stat_key(self.path), snapshot_size=0, gen=None, text=text, swept=True
        )
        return state

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

    def _write_locked(self, data: Mapping[str, Any], state: State | None = None) -> str:
        """Replace the snapshot with ``data`` (unjournaled, format version 1); the text.
        ``state``: the committed state ``data`` was made from (its cached texts)."""
        text = render(data, state)
        self._write_text(text)
        return text

    def _write_text(self, text: str) -> None:
        journal.replace_durably(self.path, text.encode("utf-8"))

    # ------------------------------------------------------------ commit
    def _commit(self, state: State, data: dict[str, Any]) -> None:
        """Write what the batch changed: a journal record (journaled), else the whole
        snapshot; the state follows only once that is durable."""
        rec = _record_of(state, data)
        if rec is None:
            return
        with state.lock:
            try:
                if state.files.gen is not None:
                    self._append(state, rec)
                else:
                    self._rewrite(state, rec)
            except BaseException:
                _forget_state(self.path)
                raise
            if state.files.gen is not None and _wants_compaction(state):
                self._compact_quietly(state)

    def _append(self, state: State, rec: dict[str, Any]) -> None:
        files = state.files
        assert files.gen is not None
        if files.journal is None:  # new gen (or its journal never made it): start it
            files.journal = journal.create(self.journal_path, files.gen)
        ino, size = files.journal
        files.journal = (ino, journal.append(self.journal_path, journal.encode(rec), ino, size))
        state.apply(rec)

    def _rewrite(self, state: State, rec: dict[str, Any]) -> None:
        """An unjournaled ledger: the whole new content; journaled from now on when it
        holds more than :data:`JOURNAL_FROM` volumes.  (Under ``state.lock``.)"""
        content = state.content_with(rec)
        files = self._snapshot(content, state, journaled=len(content["volumes"]) > JOURNAL_FROM)
        state.apply(rec)
        state.files = files

    def _snapshot(self, content: Mapping[str, Any], state: State, journaled: bool) -> _Files:
        """Fold ``content`` (made from ``state``) into a new snapshot: with a new gen and
        an empty journal of it, or unjournaled (the journal removed); the files it is
        now in.  The snapshot's rename is the commit point."""
        gen = os.urandom(8).hex() if journaled else None
        if gen is None:
            text: str | None = self._write_locked(content, state)
        else:
            text = None
            self._write_text(
                render({**content, "version": JOURNALED_VERSION, "journal": gen}, state)
            )
        st = os.stat(self.path)
        files = _Files(snapshot=_key_of(st), snapshot_size=st.st_size, gen=gen, text=text)
        if gen is None:
            before = state.files
            if before is None or before.gen is not None or not before.swept:
                self._drop_stale_journal()
            files.swept = True
        else:
            files.journal = journal.create(self.journal_path, gen)
        return files

    def _compact_quietly(self, state: State) -> None:
        """Compaction after a durable commit (under ``state.lock``): a failure is
        logged, not the commit's."""
        try:
            state.files = self._snapshot(
                state.content_with(), state, journaled=len(state.volumes) > JOURNAL_FROM // 2
            )
        except OSError as exc:
            LOG.warning("attachment ledger %s: compaction failed (%s)", self.path, exc)
            _forget_state(self.path)

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
            with locking.external_lock(
                name, lock_path=self.lock_path, timeout=self.lock_timeout, keep=True
            ):
                with _BATCH_MUTEX:  # closed: later arrivals form the next batch
                    if _OPEN_BATCHES.get(self.path) is batch:
                        del _OPEN_BATCHES[self.path]
                    members = list(batch.members)
                state = self._load_locked()
                data = batch.data = transaction_view(state)
                for member in members:
                    if member is me:
                        _begin(data)
                        try:
                            yield data
                        except BaseException as exc:  # noqa: BLE001 - re-raised below
                            _rollback(data)
                            own_error = exc
                        else:
                            _end(data)
                    else:
                        member.go.set()
                        member.done.wait()
                if len(members) > 1:
                    LOG.debug("ledger: %d transactions in one write", len(members))
                self._commit(state, data)
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
        _begin(data)
        try:
            yield data
        except BaseException:
            _rollback(data)
            raise
        _end(data)
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


def _overlays(data: dict[str, Any]) -> list[Overlay]:
    vols = dict.get(data, "volumes")
    return [o for o in (data, vols) if isinstance(o, Overlay)]


def _begin(data: dict[str, Any]) -> None:
    for o in _overlays(data):
        o.begin()


def _rollback(data: dict[str, Any]) -> None:
    """Undo one member's changes (its body raised)."""
    if isinstance(data, Overlay):
        data.rollback()  # puts data["volumes"] back if the body replaced it
    vols = dict.get(data, "volumes")
    if isinstance(vols, Overlay):
        vols.rollback()


def _end(data: dict[str, Any]) -> None:
    for o in _overlays(data):
        o.end()


def _empty() -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "volumes": {}, "pending": []}


def _read_snapshot(path: str) -> tuple[str | None, tuple[int, ...] | None, int]:
    """(text, stat key, size) of the snapshot; (None, None, 0) when it does not exist;
    :class:`LedgerUnreadable` when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None, 0
    except OSError as exc:
        raise LedgerUnreadable(f"attachment ledger {path} cannot be read: {exc}") from exc
    try:
        st = os.fstat(fd)
        raw = _read_to_end(fd, st.st_size)
        key = _key_of(st)
    except OSError as exc:
        raise LedgerUnreadable(f"attachment ledger {path} cannot be read: {exc}") from exc
    finally:
        os.close(fd)
    try:
        return raw.decode("utf-8"), key, len(raw)
    except UnicodeDecodeError as exc:
        raise LedgerCorrupt(f"attachment ledger {path} is not UTF-8: {exc}") from None


def _read_to_end(fd: int, size: int) -> bytes:
    """The file's bytes, ``size`` of them expected: one ``read`` when that is all (a
    regular file reads short only at its end), more while it keeps giving."""
    chunks = []
    want = size + 1
    while True:
        chunk = os.read(fd, want)
        chunks.append(chunk)
        if len(chunk) < want:
            return b"".join(chunks)
        want = 65536


def _key_of(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _stat_key(path: str) -> tuple[int, ...] | None:
    """Which snapshot file is at ``path`` now (None: none); unreadable raises."""
    try:
        return _key_of(os.stat(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LedgerUnreadable(f"attachment ledger {path} cannot be read: {exc}") from exc


def _read_journal(path: str, offset: int) -> tuple[int, int, bytes] | None:
    try:
        return journal.read_from(path, offset)
    except OSError as exc:
        raise LedgerUnreadable(f"attachment ledger journal {path} cannot be read: {exc}") from exc


def _unreadable_on_error(path: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(path, *args)
    except OSError as exc:
        raise LedgerUnreadable(f"attachment ledger journal {path}: {exc}") from exc


def _check(path: str, rec: Mapping[str, Any]) -> None:
    try:
        journal.check_record(rec)
    except journal.JournalCorrupt as exc:
        raise LedgerCorrupt(f"attachment ledger journal {path}: {exc}") from None


def _parse(path: str, text: str | None) -> dict[str, Any]:
    """The ledger content of ``text``; :class:`LedgerCorrupt` when it is malformed.

    A journaled snapshot (version 2) keeps its journal's gen under ``journal``.
    """
    if text is None:
        return _empty()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise LedgerCorrupt(f"attachment ledger {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not _known_version(data):
        raise LedgerCorrupt(f"attachment ledger {path} has an unknown format")
    data["version"] = FORMAT_VERSION  # the content; the journal's gen says how it is stored
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


def _known_version(data: Mapping[str, Any]) -> bool:
    if data.get("version") == FORMAT_VERSION:
        return "journal" not in data
    gen = data.get("journal")
    return data.get("version") == JOURNALED_VERSION and isinstance(gen, str) and bool(gen)


@dataclasses.dataclass
class _Files:
    """Which files a :class:`State` was read from."""

    snapshot: tuple[int, ...] | None  # stat key of the snapshot (None: there was none)
    snapshot_size: int
    gen: str | None  # journaled: the gen the snapshot and its journal share
    journal: tuple[int, int] | None = None  # (inode, bytes applied) of that journal
    # unjournaled: the snapshot's text as read or written (None: there was none)
    text: str | None = None
    # unjournaled: a journal left beside it was looked for (and removed) under the lock
    swept: bool = False


_READ_ATTEMPTS = 5
_STATES_MUTEX = threading.Lock()
_STATES: dict[str, State] = {}  # ledger path -> content, caught up (or checked) per use


def _forget_state(path: str) -> None:
    with _STATES_MUTEX:
        _STATES.pop(path, None)


def _wants_compaction(state: State) -> bool:
    """The journal outgrew its snapshot, or the ledger shrank below journaling."""
    files = state.files
    journal_size = files.journal[1] if files.journal else 0
    return (
        journal_size > max(COMPACT_MIN_BYTES, files.snapshot_size)
        or len(state.volumes) <= JOURNAL_FROM // 2
    )


def _record_of(state: State, data: dict[str, Any]) -> dict[str, Any] | None:
    """The journal record of what a batch changed (fresh copies); None: nothing changed."""
    assert isinstance(data, Overlay)
    vols = dict.get(data, "volumes")
    top, top_removed = data.changes(skip=vols)
    if isinstance(vols, Overlay):
        changed, removed = vols.changes()
    else:  # the body replaced data["volumes"] (or removed it): every entry
        changed, removed = _replaced_volumes(state, top.pop("volumes", None))
        top_removed = [k for k in top_removed if k != "volumes"]
    rec = journal.record(copy_json(changed), removed, copy_json(top), top_removed)
    return rec or None


def _replaced_volumes(state: State, new: Any) -> tuple[dict[str, Any], list[str]]:
    new = {} if new is None else new
    if not isinstance(new, dict) or not all(isinstance(e, dict) for e in new.values()):
        raise LedgerError("a ledger transaction set 'volumes' to something else than entries")
    with state.lock:
        removed = sorted(k for k in state.volumes if k not in new)
    return dict(new), removed


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


def render(data: Mapping[str, Any], state: State | None = None) -> str:
    """The file text: a JSON object with one line per volume and per pending intent.

    Still readable, but built by the C encoder (``json.dump`` with ``indent``
    runs the pure-Python one, which dominated a transaction's cost).  ``state``:
    the committed state ``data`` was made from (:meth:`State.content_with`), whose
    cached texts stand for every entry and top-level value the batch did not change.
    """
    blocks = []
    for key in sorted(data):
        value = data[key]
        if state is None:
            blocks.append(_block(key, value))
        elif key == "volumes":
            blocks.append(_block(key, value, state.entry_line))
        else:
            blocks.append(state.block_texts.text(key, value, functools.partial(_block, key)))
    return "{\n" + ",\n".join(blocks) + "\n}\n" if blocks else "{\n}\n"


def _block(key: str, value: Any, item_line: Callable[[str, Any], str] | None = None) -> str:
    """One top-level key's lines (no trailing comma): a dict or list item per line."""
    name = json.dumps(key)
    if isinstance(value, dict) and value:
        make = item_line or item_text_line
        lines = ",\n".join(make(k, v) for k, v in sorted(value.items()))
        return f" {name}: {{\n{lines}\n }}"
    if isinstance(value, list) and value:
        lines = ",\n".join(f"  {canonical(v)}" for v in value)
        return f" {name}: [\n{lines}\n ]"
    return f" {name}: {canonical(value)}"


# -------------------------------------------------------------- content helpers
def volume_key(protocol: str, identity: str) -> str:
    return f"{protocol}:{identity.strip().lower()}"


def find_entry(data: Mapping[str, Any], lookup: Sequence[str]) -> tuple[str, dict] | None:
    """The entry whose lookup keys share one with ``lookup``.

    On a transaction's content or :meth:`AttachmentLedger.view` the index answers
    (the smallest matching key); on a plain dict the first match.
    """
    wanted = set(lookup)
    return _first(
        data, candidate_keys(data, "lookup", wanted), lambda e: bool(wanted & lookups_of(e))
    )


def find_by_identity(
    data: Mapping[str, Any], protocol: str, identity: str
) -> tuple[str, dict] | None:
    """The entry of ``protocol`` whose identity is ``identity`` (any WWID spelling)."""
    return _first(
        data,
        candidate_keys(data, "identity", identity_forms(identity)),
        lambda e: e.get("protocol") == protocol and same_identity(e.get("identity"), identity),
    )


def unknown_entries(data: Mapping[str, Any]) -> list[tuple[str, dict]]:
    """Entries whose attachments are unknown (the ledger was rebuilt)."""
    vols = data["volumes"]
    keys = candidate_keys(data, "unknown", ())
    if keys is None:
        return [(k, e) for k, e in vols.items() if has_unknown_attachment(e)]
    out = []
    for key in keys:
        entry = vols.get(key)
        if entry is not None and has_unknown_attachment(entry):
            out.append((key, entry))
    return out


def entries_named(data: Mapping[str, Any], names: Iterable[str]) -> list[tuple[str, dict]]:
    """Entries that may carry one of ``names`` (lowercase identities or lookup keys):
    from the indexes on indexed content, every entry on a plain dict.  The caller
    checks each entry it gets."""
    vols = data.get("volumes", {})
    wanted = set(names)
    keys = candidate_keys(data, "identity", wanted)
    if keys is None:
        return list(vols.items())
    keys = sorted(set(keys) | set(candidate_keys(data, "lookup", wanted) or ()))
    return [(k, vols[k]) for k in keys if k in vols]


def nvme_identity_uuid(identity: Any) -> str | None:
    """The namespace UUID of an NVMe wwid ``uuid.<uuid>`` (None for eui./nvme. forms)."""
    ident = str(identity or "").strip().lower()
    return ident[len("uuid.") :] if ident.startswith("uuid.") and len(ident) == 41 else None


def entries_of_scope(data: Mapping[str, Any], scope: str) -> list[tuple[str, dict]]:
    """Entries with a lookup key under ``scope`` (:func:`state.scope_forms`: an iSCSI or
    FC target, an NVMe subsystem ``nvme:<nqn>``), from the index on indexed content."""
    vols = data.get("volumes", {})
    wanted = scope.lower()
    keys = candidate_keys(data, "scope", {wanted})
    if keys is None:
        return [(k, e) for k, e in vols.items() if wanted in scope_forms(e)]
    return [(k, vols[k]) for k in keys if k in vols and wanted in scope_forms(vols[k])]


def _first(
    data: Mapping[str, Any], keys: list[str] | None, match: Callable[[dict], bool]
) -> tuple[str, dict] | None:
    vols = data["volumes"]
    if keys is None:
        return next(((k, e) for k, e in vols.items() if match(e)), None)
    for key in keys:
        entry = vols.get(key)
        if entry is not None and match(entry):
            return key, entry
    return None


def candidate_keys(data: Mapping[str, Any], index: str, wanted: Iterable[str]) -> list[str] | None:
    """Keys that may match, from the indexes of an indexed content (plus the entries this
    transaction read or wrote, checked directly); None for a plain dict."""
    vols = data["volumes"]
    state = vols.state if isinstance(vols, Overlay) else None
    if state is None:
        return None
    if index == "unknown":
        with state.lock:
            found = set(state.unknown)
    else:
        indexes = {"lookup": state.by_lookup, "scope": state.by_scope}
        found = state.candidates(indexes.get(index, state.by_identity), wanted)
    found |= set(vols.touched())
    return sorted(k for k in found if k in vols)


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
