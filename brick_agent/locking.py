"""Locks of brick_agent: guard_connection, per-target and per-device locks, a host limit.

* :func:`guard_connection` — the compute-service-facing lock around "map on the
  array + connect" and "disconnect + unmap", keyed by the backend's service
  uuid, with the tri-state ``shared_targets`` semantics of os-brick/Cinder.
* :func:`target_lock` / :func:`device_lock` — connector-internal external locks
  per target (portal+IQN, NQN, WWPN set) and per device operation.  There is
  deliberately no single host-wide lock around every attach.
* :func:`target_rw_lock` — the same per target, shared/exclusive
  (:class:`ReaderWriterLock`): readers of a target's state overlap, changes
  to it are exclusive.
* :class:`HostConcurrencyLimit` — at most N operations at once on the host,
  across processes (N slot files, ``flock``).
* :class:`SingleFlight` — concurrent identical operations in one process
  (e.g. two logins to one portal) run once; the others wait for its result.

External locks are an in-process lock per name plus a POSIX record lock
(``lockf``, the protocol of oslo.concurrency/fasteners file locks) on
``<lock_path>/<name>``, so threads and processes of the host agree.  Lock names
are built here and are always safe file names.

Lock files are private and bounded: the directory is 0700 and files 0600, opened
with ``O_NOFOLLOW`` (another local user can neither take a lock through a
read-only descriptor nor plant a symlink); every wait can be bounded
(:class:`LockTimeout`); a lock file is removed when its last holder in this
process releases it, while still locked.  A process that waited on the removed
file notices after acquiring that the path no longer names that inode (fstat vs
stat) and retries on the current file, so removal never breaks exclusion.  The
in-process caches drop entries nobody holds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import random
import re
import struct
import stat
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, TypeVar

from brick_agent.errors import InvalidArgument, LockTimeout
from brick_agent.host import iscsiadm

LOG = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_PREFIX = "brick_agent-"
#: Used when neither an explicit lock_path nor :func:`configure` gave one
#: (same default as the ``[brick_agent]/lock_path`` option).
FALLBACK_LOCK_PATH = "/var/lib/brick_agent/locks"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
_DEVICE = re.compile(
    r"^(sd[a-z]{1,4}|nvme\d{1,4}(c\d{1,4})?n\d{1,5}|dm-\d{1,6}|"
    r"nvme\d{1,4}|md\d{1,5}|[0-9a-f]{3,64}|mpath[a-z]{1,4})$"
)

_configured_lock_path: str | None = None


# --------------------------------------------------------------------------- config
def configure(conf: Any) -> None:
    """Take ``lock_path`` from a ConfigOpts with brick_agent's options registered."""
    set_default_lock_path(conf.brick_agent.lock_path)


def set_default_lock_path(path: str | None) -> None:
    """Lock directory used when a call gives no ``lock_path`` (None: fallback)."""
    global _configured_lock_path
    if path is not None and not os.path.isabs(path):
        raise InvalidArgument(f"lock_path must be absolute: {path!r}")
    _configured_lock_path = path


def _lock_path(lock_path: str | None) -> str:
    path = lock_path or _configured_lock_path or FALLBACK_LOCK_PATH
    if not os.path.isabs(path):
        raise InvalidArgument(f"lock_path must be absolute: {path!r}")
    return path


def safe_lock_name(*parts: str) -> str:
    """A file-name-safe lock name from ``parts`` with a readable prefix.

    Parts already safe are kept verbatim; otherwise a sanitised, truncated copy
    plus a hash of the exact value keeps names unique.
    """
    out = []
    for part in parts:
        if not isinstance(part, str) or not part:
            raise InvalidArgument(f"lock name part must be a non-empty string: {part!r}")
        if _SAFE_NAME.match(part):
            out.append(part)
        else:
            readable = _UNSAFE_CHARS.sub("_", part).strip("._-")[:40] or "x"
            digest = hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            out.append(f"{readable}-{digest}")
    return LOCK_PREFIX + "-".join(out)


# --------------------------------------------------------------------------- lock files
LOCK_DIR_MODE = 0o700
LOCK_FILE_MODE = 0o600
_BACKOFF_FIRST = 0.002
_BACKOFF_MAX = 0.05


def lock_directory(lock_path: str | None = None) -> str:
    """The lock directory, created 0700 (an existing one of ours is tightened to 0700).

    A directory of another owner is used as it is unless anyone may write to it.
    """
    path = _lock_path(lock_path)
    try:
        st = os.lstat(path)  # (one call: this runs for every lock taken)
    except FileNotFoundError:
        os.makedirs(path, mode=LOCK_DIR_MODE, exist_ok=True)
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"lock_path {path} is not a directory")
    if stat.S_IMODE(st.st_mode) & 0o077:
        if st.st_uid == os.geteuid():
            os.chmod(path, LOCK_DIR_MODE)
        elif st.st_mode & 0o002:
            raise InvalidArgument(f"lock_path {path} is writable by every user")
    return path


def open_lock_file(path: str) -> int:
    """Open (create 0600) the lock file ``path``: never through a symlink, never a
    non-regular file; an existing file of ours that is open to others is tightened."""
    return _open_lock_file(path)[0]


def _open_lock_file(path: str) -> tuple[int, os.stat_result]:
    """:func:`open_lock_file`, and the file's ``fstat`` (its inode: what the lock is on)."""
    try:
        fd = os.open(
            path,
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY,
            LOCK_FILE_MODE,
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgument(f"lock file {path} is a symlink") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"lock file {path} is not a regular file")
        if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, LOCK_FILE_MODE)
        if st.st_uid == 0 == os.geteuid():
            _give_to_directory_owner(fd, os.path.dirname(path))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _give_to_directory_owner(fd: int, directory: str) -> None:
    """A root process (an operator's CLI) locking in a service user's lock directory
    hands the file it may have created to that user, who could not open it otherwise."""
    owner = os.stat(directory)
    if owner.st_uid != 0:
        os.fchown(fd, owner.st_uid, owner.st_gid)


#: ``struct flock`` (x86-64/aarch64 layout) for ``F_OFD_SETLK``: type, whence, start, len, pid
_FLOCK = "hh4xqqi4x"

#: how a lock file is locked: ``lockf`` (POSIX record lock: oslo.concurrency/fasteners'
#: protocol), ``flock`` (whole-file BSD lock), ``ofd`` (open-file-description record lock:
#: conflicts with ``lockf`` locks, even of this process, and is released only with its
#: own descriptor)
LockKind = str


def _try_lock(fd: int, exclusive: bool, kind: LockKind = "lockf") -> bool:
    try:
        if kind == "ofd":
            ltype = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, ltype, os.SEEK_SET, 0, 0, 0))
        else:
            op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
            (fcntl.flock if kind == "flock" else fcntl.lockf)(fd, op)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _wait_lock(fd: int, exclusive: bool, deadline: float | None, kind: LockKind) -> bool:
    """Poll for the lock with capped backoff until ``deadline`` (None: for ever)."""
    delay = _BACKOFF_FIRST
    while not _try_lock(fd, exclusive, kind):
        left = _left(deadline)
        if left == 0.0:
            return False
        time.sleep(delay if left is None else min(delay, left))
        delay = min(delay * 2, _BACKOFF_MAX)
    return True


def _same_file(fd: int, path: str, held: os.stat_result | None = None) -> bool:
    """Whether ``path`` still names the file open on ``fd`` (``held``: its ``fstat``)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if held is None:
        held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def lock_file(
    path: str, *, exclusive: bool = True, deadline: float | None = None, kind: LockKind = "lockf"
) -> int | None:
    """Open and lock ``path``; the locked descriptor, or None at ``deadline``.

    Re-checked after locking that ``path`` still names the locked inode (a holder
    may have removed it meanwhile); if not, the current file is locked instead.
    """
    while True:
        fd, held = _open_lock_file(path)
        try:
            if not _wait_lock(fd, exclusive, deadline, kind):
                os.close(fd)
                return None
            if _same_file(fd, path, held):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def unlock_file(fd: int, path: str, *, remove: bool) -> None:
    """Release the lock on ``fd``; with ``remove``, first unlink ``path`` (still locked,
    and only if it names this file)."""
    try:
        if remove and _same_file(fd, path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def host_file_lock(
    name: str, *, lock_path: str | None = None, exclusive: bool = True, timeout: float | None = None
) -> Iterator[None]:
    """A host-wide ``flock`` on ``<lock_path>/<name>`` (kept: one file, whatever the load),
    shared or exclusive, per open descriptor (threads exclude each other too)."""
    if "/" in name or name in (".", "..") or not name:
        raise InvalidArgument(f"bad lock name {name!r}")
    path = os.path.join(lock_directory(lock_path), name)
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = lock_file(path, exclusive=exclusive, deadline=deadline, kind="flock")
    if fd is None:
        raise LockTimeout(f"lock {name} not acquired within {timeout}s")
    try:
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- external lock
class _NameSlot:
    """In-process lock of one lock file and how many threads use it (hold or wait)."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


#: path -> slot, only while some thread holds or waits for that lock
_name_slots: dict[str, _NameSlot] = {}
_name_slots_guard = threading.Lock()


@contextlib.contextmanager
def _name_slot(path: str) -> Iterator[_NameSlot]:
    with _name_slots_guard:
        slot = _name_slots.get(path)
        if slot is None:
            slot = _name_slots[path] = _NameSlot()
        slot.users += 1
    try:
        yield slot
    finally:
        with _name_slots_guard:
            slot.users -= 1
            if slot.users == 0:
                del _name_slots[path]


def _others_use(slot: _NameSlot) -> bool:
    with _name_slots_guard:
        return slot.users > 1


@contextlib.contextmanager
def external_lock(
    name: str, *, lock_path: str | None = None, timeout: float | None = None, keep: bool = False
) -> Iterator[None]:
    """Hold the external (file) lock ``name`` (already a safe name).

    Threads of this process serialise on a per-name lock, other processes on the
    lock file, which is removed on release unless another thread here waits for
    it, or ``keep`` (one fixed name taken on every call, like the ledger's: a file
    made and removed each time costs two namespace operations, and a holder that
    removes it still leaves every taker locking the file the name shows).
    ``timeout`` (seconds, None = wait forever) raises :class:`LockTimeout`.
    """
    if "/" in name or name in (".", "..") or not name:
        raise InvalidArgument(f"bad lock name {name!r}")
    path = os.path.join(lock_directory(lock_path), name)
    deadline = None if timeout is None else time.monotonic() + timeout
    start = time.monotonic()
    with _name_slot(path) as slot:
        left = _left(deadline)
        if not slot.lock.acquire(timeout=-1 if left is None else left):
            raise LockTimeout(f"lock {name} not acquired within {timeout}s (held in this process)")
        try:
            fd = lock_file(path, deadline=deadline)
            if fd is None:
                raise LockTimeout(
                    f"lock {name} not acquired within {timeout}s (held by another process)"
                )
            acquired = time.monotonic()
            LOG.debug("lock %s acquired after waiting %.3fs", name, acquired - start)
            try:
                yield
            finally:
                unlock_file(fd, path, remove=not keep and not _others_use(slot))
                LOG.debug("lock %s released after holding %.3fs", name, time.monotonic() - acquired)
        finally:
            slot.lock.release()


# --------------------------------------------------------------------------- guard_connection
_MISSING = object()


def _field(volume: Any, key: str) -> Any:
    if isinstance(volume, dict):
        return volume.get(key, _MISSING)
    getter = getattr(volume, "get", None)
    if callable(getter) and not hasattr(volume, key):
        try:
            return getter(key, _MISSING)
        except TypeError:
            pass
    return getattr(volume, key, _MISSING)


def guard_lock_name(service_uuid: Any) -> str:
    """Lock name of guard_connection for a backend's service uuid."""
    if not isinstance(service_uuid, str) or not service_uuid.strip():
        raise InvalidArgument(
            f"guard_connection needs the volume's service_uuid to lock, got {service_uuid!r}"
        )
    return safe_lock_name("guard", service_uuid.strip())


def needs_guard_lock(
    shared_targets: Any, manual_scan_supported: Callable[[], bool] | bool | None = None
) -> bool:
    """The tri-state decision: False → no lock, True → lock unless manual scans, None → lock.

    Manual-scan support is :func:`brick_agent.host.iscsiadm.iscsi_manual_scan_supported`
    unless ``manual_scan_supported`` says otherwise.
    """
    if shared_targets is _MISSING or shared_targets is False:
        return False
    if shared_targets is None:
        return True
    if shared_targets is True:
        if isinstance(manual_scan_supported, bool):
            supported = manual_scan_supported
        elif callable(manual_scan_supported):
            supported = bool(manual_scan_supported())
        else:
            supported = iscsiadm.iscsi_manual_scan_supported()
        return not supported
    raise InvalidArgument(f"shared_targets must be True, False or None, got {shared_targets!r}")


@contextlib.contextmanager
def guard_connection(
    volume: Any,
    *,
    lock_path: str | None = None,
    manual_scan_supported: Callable[[], bool] | bool | None = None,
    timeout: float | None = None,
) -> Iterator[bool]:
    """Serialise connect/disconnect of volumes of one backend when targets are shared.

    ``volume`` is a dict or an object with ``shared_targets`` and
    ``service_uuid``.  ``shared_targets`` False or missing: no lock; True: lock
    only when the iSCSI initiator lacks manual scans; None: always lock.
    Yields whether a lock is held.
    """
    if not needs_guard_lock(_field(volume, "shared_targets"), manual_scan_supported):
        yield False
        return
    name = guard_lock_name(_field(volume, "service_uuid"))
    with external_lock(name, lock_path=lock_path, timeout=timeout):
        yield True


# --------------------------------------------------------------------------- connector locks
def iscsi_target_key(portal: str, iqn: str) -> str:
    return f"{portal.strip().lower()}|{iqn.strip()}"


def fc_target_key(wwpns: Iterable[str]) -> str:
    norm = sorted({w.strip().lower().replace(":", "").removeprefix("0x") for w in wwpns})
    if not norm:
        raise InvalidArgument("empty WWPN set")
    return ",".join(norm)


def target_lock_name(kind: str, key: str) -> str:
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise InvalidArgument(f"bad lock kind {kind!r}")
    if not isinstance(key, str) or not key:
        raise InvalidArgument("target lock key must be a non-empty string")
    readable = _UNSAFE_CHARS.sub("_", key).strip("._-")[:40] or "x"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{LOCK_PREFIX}target-{kind}-{readable}-{digest}"


def target_lock(
    kind: str, key: str, *, lock_path: str | None = None, timeout: float | None = None
) -> contextlib.AbstractContextManager[None]:
    """External lock of one target: ``kind`` 'iscsi'/'nvme'/'fc', ``key`` its identity.

    Use :func:`iscsi_target_key` / :func:`fc_target_key` (NVMe: the subsystem
    NQN) to build keys so equal targets always map to the same lock.
    """
    return external_lock(target_lock_name(kind, key), lock_path=lock_path, timeout=timeout)


class ReaderWriterLock:
    """A shared/exclusive lock across threads and processes (one per lock file).

    In this process a Condition tracks readers and writers; writers are
    preferred (a waiting writer holds back new readers, so it is not starved).
    Across processes a POSIX ``lockf`` record lock holds the lock file shared
    while this process has readers, exclusive while it has a writer.  ``lockf`` locks belong to the
    process, so only one thread at a time touches the file: the first reader
    takes it shared for all of them, the last one releases it.  A second
    "gate" file, held exclusively by a process while it waits for the write
    lock and briefly by a process taking the read lock, keeps a waiting writer
    of another process from being starved by overlapping readers.

    Obtain instances through :func:`rw_lock` (one object per file per process).
    """

    _DELAY = 0.002
    _MAX_DELAY = 0.05

    def __init__(self, path: str) -> None:
        self.path = path
        self._gate_path = path + ".gate"
        self._fd: int | None = None  # the locked lock file while this process holds it
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._busy = False  # a thread is taking the file lock for the readers
        #: exclusive sections finished in this process (tests, callers that wait)
        self.writes = 0

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _left(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _wait(self, predicate: Callable[[], bool], deadline: float | None, what: str) -> None:
        if not self._cond.wait_for(predicate, self._left(deadline)):
            raise LockTimeout(
                f"{what} lock {os.path.basename(self.path)} not acquired "
                f"in time (held in this process)"
            )

    def _take_file(self, exclusive: bool, deadline: float | None) -> None:
        """Take the lock file (cond not held; this thread alone touches the files)."""
        what = "exclusive" if exclusive else "shared"
        gate = lock_file(self._gate_path, deadline=deadline)
        if gate is None:
            raise LockTimeout(
                f"{what} lock {os.path.basename(self.path)} not acquired "
                f"in time (a writer of another process waits)"
            )
        try:
            fd = lock_file(self.path, exclusive=exclusive, deadline=deadline)
            if fd is None:
                raise LockTimeout(
                    f"{what} lock {os.path.basename(self.path)} not acquired "
                    f"in time (held by another process)"
                )
            self._fd = fd
        finally:
            unlock_file(gate, self._gate_path, remove=True)

    def _drop_file(self) -> None:
        """Release the lock file (cond held); remove it when no one else uses it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        idle = not self._writers_waiting and not self._busy
        # upgrading to exclusive succeeds only if no other process holds the file
        unlock_file(fd, self.path, remove=idle and _try_lock(fd, True, "lockf"))

    # -------------------------------------------------------------- shared
    def acquire_shared(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._wait(
                lambda: not self._writer and not self._writers_waiting and not self._busy,
                deadline,
                "shared",
            )
            if self._readers == 0:
                self._busy = True
                self._cond.release()
                try:
                    self._take_file(False, deadline)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
            self._readers += 1

    def release_shared(self) -> None:
        with self._cond:
            if self._readers <= 0:
                raise RuntimeError("release of a shared lock not held")
            self._readers -= 1
            if self._readers == 0:
                self._drop_file()
                self._cond.notify_all()

    # -------------------------------------------------------------- exclusive
    def acquire_exclusive(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._writers_waiting += 1
            try:
                self._wait(
                    lambda: not self._writer and not self._readers and not self._busy,
                    deadline,
                    "exclusive",
                )
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            self._take_file(True, deadline)
        except BaseException:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
            raise

    def release_exclusive(self) -> None:
        with self._cond:
            if not self._writer:
                raise RuntimeError("release of an exclusive lock not held")
            self._drop_file()
            self._writer = False
            self.writes += 1
            self._cond.notify_all()

    def wait_for_writers(self, timeout: float | None = None) -> bool:
        """If a thread of this process holds or awaits the exclusive lock, wait until
        none does and return True (the protected state may have changed); else False."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if not self._writer and not self._writers_waiting:
                return False
            self._wait(
                lambda: not self._writer and not self._writers_waiting,
                deadline,
                "wait for writers of",
            )
            return True

    @contextlib.contextmanager
    def shared(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock shared (:class:`LockTimeout` after ``timeout``)."""
        start = time.monotonic()
        self.acquire_shared(timeout)
        LOG.debug("shared lock %s acquired after %.3fs", self.path, time.monotonic() - start)
        try:
            yield
        finally:
            self.release_shared()

    @contextlib.contextmanager
    def exclusive(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock exclusive (:class:`LockTimeout` after ``timeout``)."""
        start = time.monotonic()
        self.acquire_exclusive(timeout)
        LOG.debug("exclusive lock %s acquired after %.3fs", self.path, time.monotonic() - start)
        try:
            yield
        finally:
            self.release_exclusive()


#: path -> lock, while anyone holds a reference (no two objects per file in a process)
_rw_locks: weakref.WeakValueDictionary[str, ReaderWriterLock] = weakref.WeakValueDictionary()
_rw_locks_guard = threading.Lock()


def rw_lock(name: str, *, lock_path: str | None = None) -> ReaderWriterLock:
    """The process-wide reader/writer lock ``<lock_path>/<name>`` (a safe name)."""
    if "/" in name or name in (".", "..") or not name:
        raise InvalidArgument(f"bad lock name {name!r}")
    path = os.path.join(lock_directory(lock_path), name)
    with _rw_locks_guard:
        lock = _rw_locks.get(path)
        if lock is None:
            lock = ReaderWriterLock(path)
            _rw_locks[path] = lock
        return lock


def target_rw_lock(kind: str, key: str, *, lock_path: str | None = None) -> ReaderWriterLock:
    """Reader/writer lock of one target (its own file, distinct from :func:`target_lock`'s:
    the two must not be mixed for one target)."""
    return rw_lock(target_lock_name(kind, key) + "-rw", lock_path=lock_path)


def device_lock(
    name: str, *, lock_path: str | None = None, timeout: float | None = None
) -> contextlib.AbstractContextManager[None]:
    """External lock of one device operation (``sdb``, ``nvme0n1``, ``dm-3``, a WWID...)."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise InvalidArgument(f"bad device name for a lock: {name!r}")
    return external_lock(f"{LOCK_PREFIX}device-{name}", lock_path=lock_path, timeout=timeout)


# --------------------------------------------------------------------------- host limit
class HostConcurrencyLimit:
    """At most ``n`` holders at once on the host, across threads and processes.

    ``n`` slot files ``<lock_path>/brick_agent-slot-<i>``; a holder owns one by
    ``flock`` on its own open file (flock locks belong to the open file, so
    threads of one process exclude each other too).  All processes must use
    the same ``n`` and ``lock_path``.  Waiting polls with capped backoff.
    """

    def __init__(
        self, n: int, lock_path: str | None = None, *, name: str = "slot", max_backoff: float = 0.05
    ) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidArgument(f"concurrency limit must be a positive int, got {n!r}")
        if not _SAFE_NAME.match(name):
            raise InvalidArgument(f"bad limit name {name!r}")
        self.n = n
        self._lock_path = lock_path
        self._name = name
        self._max_backoff = max_backoff

    @classmethod
    def from_conf(cls, conf: Any) -> HostConcurrencyLimit:
        """The limit of ``[brick_agent]/max_concurrent_operations`` in its lock_path."""
        return cls(conf.brick_agent.max_concurrent_operations, conf.brick_agent.lock_path)

    def _slot_path(self, i: int) -> str:
        return os.path.join(_lock_path(self._lock_path), f"{LOCK_PREFIX}{self._name}-{i}")

    def _try_once(self) -> int | None:
        lock_directory(self._lock_path)
        first = random.randrange(self.n)
        for j in range(self.n):
            i = (first + j) % self.n
            fd = open_lock_file(self._slot_path(i))
            try:
                if _try_lock(fd, True, "flock"):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        return None

    @contextlib.contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[None]:
        """Hold one slot for the ``with`` body; :class:`LockTimeout` after ``timeout``."""
        start = time.monotonic()
        delay = 0.002
        while True:
            fd = self._try_once()
            if fd is not None:
                break
            if timeout is not None and time.monotonic() - start >= timeout:
                raise LockTimeout(f"no free slot of {self.n} within {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, self._max_backoff)
        LOG.debug("host slot acquired after %.3fs", time.monotonic() - start)
        try:
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the flock


# --------------------------------------------------------------------------- single flight
class _Call:
    __slots__ = ("done", "result", "error", "waiters")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.waiters = 0


class SingleFlight:
    """Merge concurrent identical operations in one process.

    ``do(key, fn)``: the first caller for ``key`` runs ``fn``; callers arriving
    while it runs wait and get the same result (or the same exception).  A call
    after it finished runs ``fn`` again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}

    def do(
        self,
        key: Hashable,
        fn: Callable[..., T],
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        result, _shared = self.do_ex(key, fn, *args, timeout=timeout, **kwargs)
        return result

    def do_ex(
        self,
        key: Hashable,
        fn: Callable[..., T],
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> tuple[T, bool]:
        """Like :meth:`do`; also returns whether the result came from another caller."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
            else:
                call.waiters += 1
        if not leader:
            if not call.done.wait(timeout):
                raise LockTimeout(f"merged operation {key!r} did not finish in {timeout}s")
            if call.error is not None:
                raise call.error
            return call.result, True
        try:
            call.result = fn(*args, **kwargs)
            return call.result, False
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()

    def in_flight(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._calls
