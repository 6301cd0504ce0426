"""Event-driven waits for devices, with a sysfs re-check and a bounded polling safety net.

Usage: open the watch *before* the action that makes the device appear, so
no event can be missed, then wait on a cheap sysfs predicate::

    with DeviceWatch(subsystems=("block",)) as watch:
        privileged.scan(...)
        dev = watch.wait_for(lambda: find_my_disk(roots), Deadline.after(20), what="LUN 1")

The predicate runs on entry, after every udev event and at least every
``poll_interval`` seconds (so a lost event, or a host without udev, never
stalls the wait beyond that), until the deadline; then :class:`DeviceNotFound`.

Event sources, in order (``watch.mode`` records which one was used, for logs):

* ``injected``: a monitor-like object given by the caller (tests, shared monitors):
  anything with ``poll(timeout) -> event | None``;
* ``netlink-udev``: pyudev monitor on udev's netlink group (events after udev
  processed the device: links and properties exist). Used when udevd runs
  (``/run/udev/control`` exists under roots.run);
* ``netlink-kernel``: pyudev monitor on raw kernel uevents (no udevd on the host);
* ``poll``: no netlink socket available: sleep ``poll_interval`` between checks.

The netlink watches of one kind share the process's monitor (:class:`_EventHub`: one
socket, one reader thread that parses each event once for every watch).  In an
eventlet-patched process (Cinder's services) the socket is waited on through
``selectors`` (:func:`monitor_poll`).

Nothing here acts on devices; pyudev is only used to listen.

Removal: :func:`udev_entry` (read before a device is deleted) and
:func:`udev_forgot` tell when udev has processed the device's "remove" event
(database entry and /dev links gone), so a detach can wait on udev's events
until nothing it deleted is left in ``/dev/disk``.  With a ``netlink-udev``
watch the answer is the "remove" event itself (udev sends it once its rules
ran); the database file and links are only a fallback: udev drops the file while
it re-processes a device, and may still be processing the "add" of a device a
quick detach deletes (its links then appear after the deletion).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import selectors
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from brick_agent.deadline import Deadline
from brick_agent.errors import DeviceNotFound
from brick_agent.host import sysfs
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_POLL_INTERVAL = 0.5
_MAX_DRAIN = 256  # events coalesced into one re-check
_MAX_MONITOR_ERRORS = 3  # then fall back to polling


_CONTEXT: Any = None
_CONTEXT_LOCK = threading.Lock()


def monitor_poll(monitor: Any, timeout: float, *, select_has_poll: bool | None = None) -> Any:
    """``monitor.poll(timeout)``: the next event, or ``None`` after ``timeout`` seconds.

    pyudev waits with ``select.poll``, which eventlet's monkey patching deletes: in
    Cinder's services (cinder-volume, cinder-backup run eventlet-patched) every
    ``Monitor.poll`` raises ``AttributeError``.  There the socket is waited on through
    ``selectors``, which eventlet replaces with a green version (other green threads run
    meanwhile), and the event is received without blocking (pyudev puts the socket in
    non-blocking mode when the monitor starts)."""
    if select_has_poll is None:
        select_has_poll = hasattr(select, "poll")
    receive = getattr(monitor, "_receive_device", None)
    if select_has_poll or receive is None:
        return monitor.poll(timeout=timeout)
    with selectors.DefaultSelector() as selector:
        selector.register(monitor.fileno(), selectors.EVENT_READ)
        if not selector.select(timeout):
            return None
    return receive()


def shared_context() -> Any:
    """This process's pyudev ``Context``, created on first use (thread-safe).

    Creating a Context loads libudev through ctypes' ``find_library``, which
    execs ``ldconfig -p`` every time (35-60 ms in the lab); one per process
    serves every watch.  Raises what pyudev raises (ImportError, OSError) when
    libudev is unavailable; a failure is not cached.
    """
    global _CONTEXT
    ctx = _CONTEXT
    if ctx is None:
        with _CONTEXT_LOCK:
            if _CONTEXT is None:
                import pyudev  # local import: no import-time side effects, optional at runtime

                _CONTEXT = pyudev.Context()
            ctx = _CONTEXT
    return ctx


class MonitorLike(Protocol):
    def poll(self, timeout: float | None = None) -> Any: ...


@dataclasses.dataclass(frozen=True)
class UdevEvent:
    """What a watch needs of a uevent, read once by the thread that received it.

    libudev's device objects are not thread-safe: their getters fill fields lazily
    (``udev_device_get_sysname`` sets and replaces the name it returns), so two threads
    reading one device can each free the string the other is reading.  A hub therefore
    hands its subscribers this plain copy, never pyudev's device."""

    action: str | None
    sys_name: str | None
    subsystem: str | None = None

    @classmethod
    def of(cls, device: Any) -> UdevEvent:
        """The copy of pyudev ``device``; a field it cannot give (a name that is not
        UTF-8) is None: the event still wakes every watch to re-check."""
        return cls(
            _field(device, "action"), _field(device, "sys_name"), _field(device, "subsystem")
        )


def _field(device: Any, name: str) -> str | None:
    try:
        value = getattr(device, name, None)
    except Exception:  # noqa: BLE001 - a malformed event must not stop the reader
        return None
    return value if isinstance(value, str) else None


#: How long a hub's reader blocks on its socket before it looks whether it is still needed.
_HUB_POLL = 0.2


class _Subscription:
    """One watch's queue of the events a hub received since the watch subscribed."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.events: list[Any] = []
        self.errors = 0

    def put(self, event: Any) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify()

    def fail(self) -> None:
        with self.cond:
            self.errors += 1
            self.cond.notify()

    def take(self, timeout: float) -> tuple[list[Any], int]:
        """The events (and socket errors) queued, waiting up to ``timeout`` for the first."""
        with self.cond:
            if not self.events and not self.errors and timeout > 0:
                self.cond.wait(timeout)
            events, errors = self.events, self.errors
            self.events, self.errors = [], 0
        return events, errors


class _EventHub:
    """One netlink monitor of the process for a (source, subsystems), read by one thread.

    Every uevent reaches each netlink socket listening for it and is parsed by each
    reader: 16 concurrent attaches with a monitor each parsed every event 16 times (their
    CPU grew with the square of the concurrency).  Watches of the same kind instead
    subscribe to one hub; its reader parses each event once and queues a plain copy of
    it (:class:`UdevEvent`) to every subscriber.  The hub's monitor is started before
    its first subscriber returns from ``open``; an event is queued to every watch
    subscribed when the reader dispatches it (one that arrived just before a watch
    subscribed only adds a re-check).  The hub closes its socket when its last
    subscriber leaves.
    """

    def __init__(self, monitor: Any, key: tuple[Any, ...], first: _Subscription) -> None:
        self.monitor = monitor
        self.key = key
        self.pid = os.getpid()
        self.subscribers: set[_Subscription] = {first}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, name="udev-event-hub", daemon=True)

    def _read(self) -> None:
        errors = 0
        while True:
            with self.lock:
                subscribers = list(self.subscribers)
            if not subscribers and self._closed_if_unused():
                return
            try:
                event = monitor_poll(self.monitor, _HUB_POLL)
            except (OSError, ValueError) as exc:  # ENOBUFS after a storm: everyone re-checks
                errors += 1
                LOG.debug("udev monitor error %s (%d)", exc, errors)
                if errors >= _MAX_MONITOR_ERRORS:
                    self._give_up()
                    return
                for sub in subscribers:
                    sub.fail()
                continue
            except Exception:  # noqa: BLE001 - never leave watches waiting on a dead reader
                LOG.exception("udev event reader failed; the watches poll instead")
                self._give_up()
                return
            if event is None:
                continue
            copy = UdevEvent.of(event)  # libudev's object stays in this thread
            with self.lock:
                subscribers = list(self.subscribers)
            for sub in subscribers:
                sub.put(copy)

    def _closed_if_unused(self) -> bool:
        """Leave the process's hubs when nobody subscribed meanwhile (lock order: the
        registry's, then the hub's, as in :func:`_subscribe`)."""
        with _HUBS_LOCK, self.lock:
            if self.subscribers:
                return False
            if _HUBS.get(self.key) is self:
                del _HUBS[self.key]
            return True

    def _give_up(self) -> None:
        """A socket that keeps failing: the hub leaves and its watches poll instead."""
        with _HUBS_LOCK, self.lock:
            if _HUBS.get(self.key) is self:
                del _HUBS[self.key]
            for sub in self.subscribers:
                with sub.cond:
                    sub.errors = _MAX_MONITOR_ERRORS
                    sub.cond.notify()


#: The process's hubs by (context, source, subsystems), under _HUBS_LOCK.
_HUBS: dict[tuple[Any, ...], _EventHub] = {}
_HUBS_LOCK = threading.Lock()


def _subscribe(
    context: Any, source: str, subsystems: tuple[str, ...]
) -> tuple[_EventHub, _Subscription]:
    """A subscription to the process's hub for ``source`` and ``subsystems`` (created, its
    monitor started, when there is none).  Raises what pyudev raises."""
    import pyudev  # local import: no import-time side effects, optional at runtime

    key = (id(context), source, subsystems)
    sub = _Subscription()
    with _HUBS_LOCK:
        hub = _HUBS.get(key)
        if hub is not None and (hub.pid != os.getpid() or not hub.thread.is_alive()):
            del _HUBS[key]  # a forked child's copy, or a reader that ended: a new one
            hub = None
        if hub is not None:
            with hub.lock:
                hub.subscribers.add(sub)
            return hub, sub
        with _CONTEXT_LOCK:  # libudev objects are not thread-safe: one creation at a time
            monitor = pyudev.Monitor.from_netlink(context, source=source)
        for subsystem in subsystems:
            monitor.filter_by(subsystem)
        monitor.start()
        hub = _EventHub(monitor, key, sub)
        _HUBS[key] = hub
        hub.thread.start()
    return hub, sub


def _unsubscribe(hub: _EventHub, sub: _Subscription) -> None:
    with hub.lock:
        hub.subscribers.discard(sub)


class DeviceWatch:
    """Listen for device events while waiting on a predicate (see module doc)."""

    def __init__(
        self,
        subsystems: Iterable[str] = ("block",),
        context: Any = None,
        monitor: MonitorLike | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        roots: HostRoots = DEFAULT_ROOTS,
        source: str | None = None,
        use_netlink: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.subsystems = tuple(subsystems)
        self.poll_interval = poll_interval
        self.roots = roots
        self._context = context
        self._monitor: Any = monitor
        self._injected = monitor is not None
        self._source = source
        self._use_netlink = use_netlink
        self._sleep = sleep
        self._errors = 0
        self.mode = "closed"
        self.events_seen = 0
        self.checks = 0
        self.last_event: Any = None
        self.open_error: str | None = None
        #: kernel names of devices whose "remove" event this watch received
        self.removed: set[str] = set()
        self._hub: _EventHub | None = None
        self._sub: _Subscription | None = None

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> DeviceWatch:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Start listening (idempotent). Falls back to polling if netlink is unavailable."""
        if self.mode != "closed":
            return
        if self._injected:
            self.mode = "injected"
            return
        if not self._use_netlink:
            self.mode = "poll"
            return
        source = self._source or ("udev" if udev_running(self.roots) else "kernel")
        try:
            context = self._context or shared_context()
            self._hub, self._sub = _subscribe(context, source, tuple(sorted(self.subsystems)))
        except Exception as exc:  # ImportError, OSError (no netlink in a container), ...
            self.open_error = f"{type(exc).__name__}: {exc}"
            LOG.debug(
                "udev monitor unavailable (%s); polling every %.2fs",
                self.open_error,
                self.poll_interval,
            )
            self._monitor = None
            self.mode = "poll"
            return
        self.mode = f"netlink-{source}"

    def close(self) -> None:
        if self._hub is not None and self._sub is not None:
            _unsubscribe(self._hub, self._sub)
        self._hub = self._sub = None
        if not self._injected:
            self._monitor = None
        self.mode = "closed"

    # ------------------------------------------------------------ waiting
    def _wait_event(self, timeout: float) -> bool:
        """Block up to ``timeout`` for an event; True if one (or more) arrived."""
        if self._sub is not None and self.mode != "poll":
            return self._wait_hub(self._sub, timeout)
        if self._monitor is None or self.mode == "poll":
            if timeout > 0:
                self._sleep(timeout)
            return False
        return self._wait_monitor(self._monitor, timeout)

    def _wait_monitor(self, monitor: MonitorLike, timeout: float) -> bool:
        """:meth:`_wait_event` on a monitor of this watch's own (an injected one)."""
        try:  # pyudev rounds to whole milliseconds: never ask for a 0 ms (busy) wait
            event = monitor_poll(monitor, max(timeout, 0.001))
        except (OSError, ValueError) as exc:  # e.g. ENOBUFS after an event storm: re-check anyway
            self._errors += 1
            LOG.debug("udev monitor error %s (%d)", exc, self._errors)
            if self._errors >= _MAX_MONITOR_ERRORS:
                LOG.debug("too many udev monitor errors; switching to polling")
                self.mode = "poll"
            return True
        except Exception:  # a monitor that cannot wait here at all: the sysfs re-checks go on
            LOG.warning(
                "udev monitor failed; polling every %.2fs", self.poll_interval, exc_info=True
            )
            self.mode = "poll"
            return True
        if event is None:
            return False
        self._note(event)
        for _ in range(_MAX_DRAIN):  # coalesce a burst into one re-check
            try:
                more = monitor_poll(monitor, 0)
            except (OSError, ValueError):
                break
            if more is None:
                break
            self._note(more)
        return True

    def _wait_hub(self, sub: _Subscription, timeout: float) -> bool:
        """:meth:`_wait_event` on the process's hub: what it queued for this watch."""
        events, errors = sub.take(timeout)
        for event in events:
            self._note(event)
        if errors:
            self._errors += errors
            if self._errors >= _MAX_MONITOR_ERRORS:
                LOG.debug("too many udev monitor errors; switching to polling")
                self.mode = "poll"
        return bool(events or errors)

    def _note(self, event: Any) -> None:
        self.events_seen += 1
        self.last_event = event
        if getattr(event, "action", None) == "remove":
            name = getattr(event, "sys_name", None)
            if name:
                self.removed.add(name)

    @property
    def sees_udev_removals(self) -> bool:
        """True when this watch receives udev's own events (sent after udev processed
        a device), so a "remove" event means the device's links are gone."""
        return self.mode == "netlink-udev"

    def wait_for(
        self, predicate: Callable[[], T | None], deadline: Deadline, what: str = "device"
    ) -> T:
        """Return the first non-``None`` result of ``predicate``; :class:`DeviceNotFound` at the
        deadline."""
        if self.mode == "closed":
            self.open()
        started = time.monotonic()
        events_before, checks_before = self.events_seen, self.checks
        while True:
            self.checks += 1
            result = predicate()
            if result is not None:
                LOG.debug(
                    "%s found after %.3fs (mode=%s, events=%d, checks=%d)",
                    what,
                    time.monotonic() - started,
                    self.mode,
                    self.events_seen - events_before,
                    self.checks - checks_before,
                )
                return result
            left = deadline.remaining()
            if left <= 0:
                raise DeviceNotFound(
                    f"{what} not found within {deadline.budget:.1f}s "
                    f"(waited {time.monotonic() - started:.1f}s, mode={self.mode}, "
                    f"events={self.events_seen - events_before}, "
                    f"checks={self.checks - checks_before})"
                )
            self._wait_event(min(self.poll_interval, left))

    def wait_gone(
        self, present: Callable[[], object], deadline: Deadline, what: str = "device"
    ) -> None:
        """Wait until ``present()`` is falsy (device removed); :class:`DeviceNotFound` if it
        stays."""
        try:
            self.wait_for(
                lambda: True if not present() else None, deadline, what=f"removal of {what}"
            )
        except DeviceNotFound as exc:
            raise DeviceNotFound(f"{what} still present: {exc}") from None


# ---------------------------------------------------------------- udev database


def udev_running(roots: HostRoots = DEFAULT_ROOTS) -> bool:
    """True if a udev daemon serves this host (its control socket exists)."""
    return os.path.exists(roots.runfs("udev", "control"))


def udev_db_path(roots: HostRoots, name: str) -> str | None:
    """/run/udev/data/b<M>:<m> for block device ``name``; ``None`` if its dev number is unknown."""
    devnum = sysfs.read_attr(roots.sysfs("class", "block", os.path.basename(name), "dev"))
    if not devnum or ":" not in devnum:
        return None
    return roots.runfs("udev", "data", f"b{devnum}")


def _read_db(roots: HostRoots, name: str) -> list[str] | None:
    path = udev_db_path(roots, name)
    if path is None or not os.path.exists(path):
        return None
    return sysfs.read_lines(path)


def udev_properties(roots: HostRoots, name: str) -> dict[str, str] | None:
    """udev's properties for a block device (ID_SERIAL, ID_WWN, DM_UUID, ...) from its database
    entry; ``None`` if udev has not processed it (or there is no udev)."""
    lines = _read_db(roots, name)
    if lines is None:
        return None
    props = {}
    for line in lines:
        if line.startswith("E:"):
            key, _, value = line[2:].partition("=")
            props[key] = value
    return props


def udev_links(roots: HostRoots, name: str) -> tuple[str, ...]:
    """The /dev symlinks udev made for a block device (under roots.dev), from its database entry."""
    lines = _read_db(roots, name) or []
    return tuple(roots.devfs(line[2:]) for line in lines if line.startswith("S:"))


@dataclasses.dataclass(frozen=True)
class UdevEntry:
    """What udev made for a block device: its database file and its /dev links."""

    name: str  # kernel name ('sdb', 'dm-3')
    db_path: str  # /run/udev/data/b<M>:<m>
    links: tuple[str, ...]  # absolute paths under roots.dev


def udev_entry(roots: HostRoots, name: str) -> UdevEntry | None:
    """udev's view of block device ``name`` now (read it *before* deleting the device);
    ``None`` without udev or when the device is unknown.  Links come from udev's
    database, or from ``/dev/disk`` while udev has no database file for it."""
    if not udev_running(roots):
        return None
    name = os.path.basename(name)
    path = udev_db_path(roots, name)
    if path is None:
        return None
    links = udev_links(roots, name) if os.path.exists(path) else ()
    return UdevEntry(name, path, links or tuple(dangling_links_to(roots, name)))


def udev_forgot(roots: HostRoots, entry: UdevEntry, watch: DeviceWatch | None = None) -> bool:
    """True once udev has processed the removal of ``entry``'s device.

    With a watch on udev's events (opened before the device was deleted) that is its
    "remove" event.  Otherwise: the database file is gone and no link points to the
    device any more.  A new device under the same name (the kernel reuses sd names)
    ends the wait too: the links are then the new device's business, not dangling.
    """
    if watch is not None and watch.sees_udev_removals:
        return entry.name in watch.removed
    if os.path.exists(roots.sysfs("class", "block", entry.name)):
        return True
    if os.path.exists(entry.db_path):
        return False
    return not any(_points_to(link, entry.name) for link in entry.links) and not dangling_links_to(
        roots, entry.name
    )


def _points_to(link: str, name: str) -> bool:
    try:
        return os.path.basename(os.readlink(link)) == name
    except OSError:
        return False


def dangling_links_to(roots: HostRoots, name: str) -> list[str]:
    """Links under ``<dev>/disk/*/`` that point to block device ``name`` (dangling once
    the device is gone: udev may remove a link its database did not list)."""
    found: list[str] = []
    base = roots.devfs("disk")
    try:
        kinds = os.listdir(base)
    except OSError:
        return found
    for kind in kinds:
        try:
            links = os.listdir(os.path.join(base, kind))
        except OSError:
            continue
        found += [
            os.path.join(base, kind, link)
            for link in links
            if _points_to(os.path.join(base, kind, link), name)
        ]
    return found


def _link_stack_dir(roots: HostRoots, link: str) -> str | None:
    """udev's claim directory for a /dev link (``/run/udev/links/<escaped path>``)."""
    rel = os.path.relpath(link, roots.dev)
    if rel.startswith(".."):
        return None
    escaped = rel.replace("\\", "\\x5c").replace("/", "\\x2f")
    return roots.runfs("udev", "links", escaped)


def link_claims_settled(roots: HostRoots, link: str) -> bool:
    """False while a device that claims ``link`` is gone or not yet processed by udev.

    Several devices may claim one link (every path of a LUN claims its
    ``wwn-0x...`` link); udev keeps their claims in ``/run/udev/links/<link>/``
    (entries ``b<M>:<m>``) and re-points or briefly removes the link while it
    processes one of them coming or going.  True when every claimant is a present
    device with a udev database entry, or when udev keeps no claims (older
    udev, no udev): nothing is known to be pending.
    """
    stack = _link_stack_dir(roots, link)
    if stack is None:
        return True
    for entry in sysfs.list_dir(stack):
        if entry.startswith("."):
            continue
        devnum = entry[1:] if entry[:1] in ("b", "c") else entry
        if ":" not in devnum:
            continue
        if not os.path.exists(roots.sysfs("dev", "block", devnum)):
            return False  # its removal is queued in udev
        if not os.path.exists(roots.runfs("udev", "data", "b" + devnum)):
            return False  # udev is still processing it
    return True


def udev_settled_for(
    roots: HostRoots, name: str, deadline: Deadline, watch: DeviceWatch | None = None
) -> bool:
    """Wait until udev has processed block device ``name`` (its database entry exists,
    so its /dev/disk links are in place).

    Returns False at once when the host has no udev (nothing will ever settle),
    True when settled; raises :class:`DeviceNotFound` at the deadline.  Never
    runs a host-wide ``udevadm settle``.
    """
    if not os.path.isdir(roots.runfs("udev")):
        LOG.debug("no udev database under %s; not waiting for %s", roots.run, name)
        return False

    def settled() -> bool | None:
        path = udev_db_path(roots, name)
        return True if path is not None and os.path.exists(path) else None

    if watch is not None:
        return watch.wait_for(settled, deadline, what=f"udev processing of {name}")
    with DeviceWatch(roots=roots, use_netlink=False, poll_interval=0.1) as poller:
        return poller.wait_for(settled, deadline, what=f"udev processing of {name}")
