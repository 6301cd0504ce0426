import json
import os
import socket
import threading
import time

import pytest

from brick_agent.deadline import Deadline
from brick_agent.errors import DeviceNotFound
from brick_agent.host import udev
from brick_agent.host.udev import DeviceWatch
from tests.unit.eventlet_process import run_patched


class Ev:
    """A uevent as pyudev gives it (action, sys_name)."""

    def __init__(self, action, sys_name):
        self.action, self.sys_name = action, sys_name


class FakeMonitor:
    """Monitor-like: delivers queued events; ``on_event`` runs as each is delivered."""

    def __init__(self, events=(), on_event=None, fail=0):
        self.events = list(events)
        self.on_event = on_event
        self.fail = fail
        self.polls = []

    def poll(self, timeout=None):
        self.polls.append(timeout)
        if self.fail:
            self.fail -= 1
            raise OSError(105, "No buffer space available")
        if self.events:
            ev = self.events.pop(0)
            if self.on_event:
                self.on_event(ev)
            return ev
        if timeout:
            time.sleep(timeout)
        return None


def test_predicate_true_on_entry_needs_no_event():
    mon = FakeMonitor()
    with DeviceWatch(monitor=mon) as w:
        assert w.mode == "injected"
        assert w.wait_for(lambda: "sdb", Deadline.after(1)) == "sdb"
    assert mon.polls == [] and w.checks == 1


def test_event_triggers_recheck():
    state = {"present": False}

    def deliver(ev):
        if ev == "add sdb":
            state["present"] = True

    mon = FakeMonitor(events=["change sda", "add sdb"], on_event=deliver)
    w = DeviceWatch(monitor=mon, poll_interval=5)
    t0 = time.monotonic()
    assert (
        w.wait_for(lambda: "/dev/sdb" if state["present"] else None, Deadline.after(5))
        == "/dev/sdb"
    )
    assert time.monotonic() - t0 < 0.5  # driven by events, not by the 5 s poll interval
    assert w.events_seen == 2 and w.last_event == "add sdb"


def test_burst_is_coalesced_into_one_check():
    mon = FakeMonitor(events=[f"ev{i}" for i in range(10)])
    calls = []

    def pred():
        calls.append(1)
        return True if len(calls) >= 2 else None

    w = DeviceWatch(monitor=mon, poll_interval=1)
    assert w.wait_for(pred, Deadline.after(2)) is True
    assert len(calls) == 2 and w.events_seen == 10
    assert mon.polls[1:] == [0] * 10  # drained without blocking


def test_deadline_expiry_raises_device_not_found():
    w = DeviceWatch(monitor=FakeMonitor(), poll_interval=0.05)
    t0 = time.monotonic()
    with pytest.raises(DeviceNotFound) as exc:
        w.wait_for(lambda: None, Deadline.after(0.2), what="LUN 1 of iqn.x")
    took = time.monotonic() - t0
    assert 0.2 <= took < 0.5
    msg = str(exc.value)
    assert "LUN 1 of iqn.x" in msg and "mode=injected" in msg and "0.2s" in msg


def test_safety_net_poll_catches_missed_event():
    """No event ever arrives, the device appears anyway: found within ~poll_interval."""
    appear_at = time.monotonic() + 0.1
    w = DeviceWatch(monitor=FakeMonitor(), poll_interval=0.05)
    t0 = time.monotonic()
    assert w.wait_for(lambda: 1 if time.monotonic() >= appear_at else None, Deadline.after(2)) == 1
    assert time.monotonic() - t0 < 0.3


def test_pure_poll_mode():
    slept = []
    appear = iter([None, None, "dev"])
    w = DeviceWatch(use_netlink=False, poll_interval=0.25, sleep=slept.append)
    with w:
        assert w.mode == "poll"
        assert w.wait_for(lambda: next(appear), Deadline.after(10)) == "dev"
    assert slept == [0.25, 0.25]
    assert w.mode == "closed"


def test_poll_never_sleeps_past_deadline():
    slept = []
    w = DeviceWatch(
        use_netlink=False, poll_interval=10, sleep=lambda s: (slept.append(s), time.sleep(s))
    )
    with pytest.raises(DeviceNotFound):
        w.wait_for(lambda: None, Deadline.after(0.05))
    assert slept and all(s <= 0.05 for s in slept)


def test_monitor_errors_fall_back_to_polling():
    mon = FakeMonitor(fail=5)
    appear = iter([None, None, None, None, "x"])
    w = DeviceWatch(monitor=mon, poll_interval=0.01)
    assert w.wait_for(lambda: next(appear), Deadline.after(2)) == "x"
    assert w.mode == "poll"
    assert len(mon.polls) == 3  # gave up on the monitor after 3 errors


def test_a_monitor_that_cannot_wait_turns_the_watch_to_polling():
    class Broken(FakeMonitor):
        def poll(self, timeout=None):
            self.polls.append(timeout)
            raise AttributeError("module 'select' has no attribute 'poll'")

    mon = Broken()
    appear = iter([None, None, "x"])
    w = DeviceWatch(monitor=mon, poll_interval=0.01)
    assert w.wait_for(lambda: next(appear), Deadline.after(2)) == "x"
    assert w.mode == "poll" and len(mon.polls) == 1


class SocketMonitor:
    """pyudev's Monitor as monitor_poll sees it: a non-blocking socket and a receive."""

    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)

    def fileno(self):
        return self.sock.fileno()

    def _receive_device(self):
        try:
            return self.sock.recv(64).decode()
        except BlockingIOError:
            return None

    def poll(self, timeout=None):
        raise AssertionError("select.poll is not there to wait with")


def test_monitor_poll_without_select_poll_waits_on_the_socket():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        mon = SocketMonitor(ours)
        t0 = time.monotonic()
        assert udev.monitor_poll(mon, 0.1, select_has_poll=False) is None
        assert 0.09 <= time.monotonic() - t0 < 1
        assert udev.monitor_poll(mon, 0, select_has_poll=False) is None
        threading.Timer(0.05, lambda: theirs.send(b"add sdb")).start()
        assert udev.monitor_poll(mon, 5, select_has_poll=False) == "add sdb"


def test_monitor_poll_uses_pyudevs_poll_where_select_has_it():
    mon = FakeMonitor(events=["add sdb"])
    assert udev.monitor_poll(mon, 0.5, select_has_poll=True) == "add sdb"
    assert mon.polls == [0.5]


EVENTLET_WAIT = """
import json, os, threading, time
from brick_agent.deadline import Deadline
from brick_agent.errors import DeviceNotFound
from brick_agent.host.udev import DeviceWatch
TRIGGER = "/sys/class/mem/null/uevent"
start = time.monotonic()
ran = []
def other():
    time.sleep(0.1)
    ran.append(time.monotonic() - start)
    if os.access(TRIGGER, os.W_OK):
        with open(TRIGGER, "w") as f:
            f.write("change")
threading.Thread(target=other).start()
with DeviceWatch(subsystems=("mem",), source="kernel", poll_interval=5) as watch:
    mode = watch.mode
    try:
        event = watch.wait_for(lambda: watch.last_event if watch.events_seen else None,
                               Deadline.after(1.5))
        outcome = f"{event.action} {event.sys_name}"
    except DeviceNotFound:
        outcome = "not found"
    mode_after = watch.mode
print(json.dumps({"mode": mode, "mode_after": mode_after, "outcome": outcome,
                  "other_thread_ran_at": ran, "triggered": os.access(TRIGGER, os.W_OK)}))
"""


def test_the_netlink_wait_works_in_an_eventlet_patched_process():
    """Cinder's services run eventlet-patched, where select.poll is gone: the wait on the
    udev socket neither fails nor blocks the process's other green threads, and a uevent
    (a ``change`` written to /sys/class/mem/null, when this user may) wakes it."""
    out = json.loads(run_patched(EVENTLET_WAIT).splitlines()[-1])
    if not out["mode"].startswith("netlink"):
        pytest.skip(f"no netlink uevent socket here ({out['mode']})")
    assert out["mode_after"] == out["mode"], out  # the socket still served the watch
    assert out["other_thread_ran_at"] and out["other_thread_ran_at"][0] < 0.6, out
    if not out["triggered"]:
        assert out["outcome"] == "not found", out
    elif out["outcome"] == "not found":
        pytest.skip("uevents are not delivered in this environment (network namespace)")
    else:
        assert out["outcome"] == "change null", out


def test_wait_gone():
    present = {"sdb": True}
    mon = FakeMonitor(events=["remove sdb"], on_event=lambda ev: present.update(sdb=False))
    w = DeviceWatch(monitor=mon, poll_interval=1)
    assert w.wait_gone(lambda: present["sdb"], Deadline.after(2), what="sdb") is None
    w2 = DeviceWatch(monitor=FakeMonitor(), poll_interval=0.02)
    with pytest.raises(DeviceNotFound, match="sdb still present"):
        w2.wait_gone(lambda: True, Deadline.after(0.05), what="sdb")


def test_real_netlink_or_poll_open_and_wait():
    """Opening the real monitor works here (netlink) or degrades to polling; both answer."""
    with DeviceWatch(subsystems=("block", "scsi"), poll_interval=0.05) as w:
        assert w.mode in ("netlink-udev", "netlink-kernel", "poll")
        assert w.wait_for(lambda: "ok", Deadline.after(1)) == "ok"
        with pytest.raises(DeviceNotFound):
            w.wait_for(lambda: None, Deadline.after(0.1))


def test_one_shared_context_per_process(monkeypatch):
    """Every watch uses one pyudev Context (each new one costs an ldconfig exec)."""
    pyudev = pytest.importorskip("pyudev")
    made = []

    class CountingContext:
        def __init__(self):
            made.append(self)

    monitors = []

    class FakeMonitor:
        @classmethod
        def from_netlink(cls, context, source):
            monitors.append(context)
            return cls()

        def filter_by(self, subsystem):
            pass

        def start(self):
            pass

        def poll(self, timeout=None):
            time.sleep(timeout or 0)

    monkeypatch.setattr(udev, "_CONTEXT", None)
    monkeypatch.setattr(pyudev, "Context", CountingContext)
    monkeypatch.setattr(pyudev, "Monitor", FakeMonitor)

    def open_watch():
        with udev.DeviceWatch(source="kernel") as w:
            assert w.mode == "netlink-kernel"

    threads = [threading.Thread(target=open_watch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    open_watch()
    assert len(made) == 1 and 1 <= len(monitors) <= 9  # watches at once share a monitor
    assert all(c is made[0] for c in monitors) and udev.shared_context() is made[0]


class HubMonitor:
    """A pyudev Monitor stand-in: events put in a queue come out of poll()."""

    made: list = []

    def __init__(self):
        import queue

        self.q = queue.Queue()
        self.filters = []
        HubMonitor.made.append(self)

    @classmethod
    def from_netlink(cls, context, source):
        return cls()

    def filter_by(self, subsystem):
        self.filters.append(subsystem)

    def start(self):
        pass

    def poll(self, timeout=None):
        import queue

        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item


@pytest.fixture
def hub_monitors(monkeypatch):
    pyudev = pytest.importorskip("pyudev")
    HubMonitor.made = []
    monkeypatch.setattr(udev, "_CONTEXT", object())
    monkeypatch.setattr(pyudev, "Monitor", HubMonitor)
    monkeypatch.setattr(udev, "_HUB_POLL", 0.02)
    yield HubMonitor.made
    deadline = time.monotonic() + 2
    while udev._HUBS and time.monotonic() < deadline:  # the readers leave with their watches
        time.sleep(0.01)


def test_concurrent_watches_share_one_monitor_and_each_sees_every_event(hub_monitors):
    """16 attaches waiting at once: one socket, each event parsed once, queued to all."""
    watches = [udev.DeviceWatch(subsystems=("scsi", "block"), source="udev") for _ in range(16)]
    for w in watches:
        w.open()
    assert len(hub_monitors) == 1 and sorted(hub_monitors[0].filters) == ["block", "scsi"]
    assert {w.mode for w in watches} == {"netlink-udev"}
    for name in ("sdb", "sdc"):
        hub_monitors[0].q.put(Ev("remove", name))
    for w in watches:
        seen = w.wait_for(
            lambda w=w: True if w.removed == {"sdb", "sdc"} else None, Deadline.after(2)
        )
        assert seen and w.events_seen == 2
    for w in watches:
        w.close()
    deadline = time.monotonic() + 2
    while udev._HUBS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not udev._HUBS  # the last watch gone, the hub closed its socket
    with udev.DeviceWatch(subsystems=("block", "scsi"), source="udev") as again:
        assert again.mode == "netlink-udev"
    assert len(hub_monitors) == 2  # a new one for the next watch


class LibudevLikeEv:
    """A pyudev device whose getters note the thread that calls them (libudev's device
    objects fill fields lazily and are not thread-safe)."""

    def __init__(self, action, sys_name, readers):
        self._action, self._sys_name, self._readers = action, sys_name, readers

    @property
    def action(self):
        self._readers.append(("action", threading.current_thread().name))
        return self._action

    @property
    def sys_name(self):
        self._readers.append(("sys_name", threading.current_thread().name))
        if self._sys_name is None:  # a name libudev returned torn: pyudev's strict decode
            raise UnicodeDecodeError("utf-8", b"\xc0", 0, 1, "invalid start byte")
        return self._sys_name


def test_only_the_hub_reader_touches_an_event_and_watches_get_a_plain_copy(hub_monitors):
    """16 watches waiting on one hub: each event is read once, by the reader thread; the
    watches get a :class:`udev.UdevEvent`, so no two threads share a libudev device."""
    readers: list[tuple[str, str]] = []
    watches = [udev.DeviceWatch(source="udev") for _ in range(16)]
    for w in watches:
        w.open()
    for name in ("sdb", "sdc"):
        hub_monitors[0].q.put(LibudevLikeEv("remove", name, readers))
    for w in watches:
        assert w.wait_for(
            lambda w=w: True if w.removed == {"sdb", "sdc"} else None, Deadline.after(2)
        )
        assert w.last_event == udev.UdevEvent("remove", "sdc")
    for w in watches:
        w.close()
    # (``subsystem`` is read too; this event has none)
    assert sorted(readers) == sorted(
        [("action", "udev-event-hub"), ("sys_name", "udev-event-hub")] * 2
    )


def test_an_event_whose_name_cannot_be_read_still_wakes_the_watches(hub_monitors):
    readers: list[tuple[str, str]] = []
    with udev.DeviceWatch(source="udev") as w:
        hub_monitors[0].q.put(LibudevLikeEv("remove", None, readers))
        assert w.wait_for(lambda: True if w.events_seen else None, Deadline.after(2))
        assert w.last_event == udev.UdevEvent("remove", None) and w.removed == set()
        hub_monitors[0].q.put(LibudevLikeEv("remove", "sdd", readers))  # the reader goes on
        assert w.wait_for(lambda: True if w.removed == {"sdd"} else None, Deadline.after(2))


def test_a_watch_subscribed_later_gets_only_later_events(hub_monitors):
    first = udev.DeviceWatch(source="udev")
    first.open()
    hub_monitors[0].q.put(Ev("add", "sdb"))
    assert first.wait_for(lambda: first.last_event, Deadline.after(2)).sys_name == "sdb"
    second = udev.DeviceWatch(source="udev")
    second.open()
    assert len(hub_monitors) == 1
    hub_monitors[0].q.put(Ev("remove", "sdc"))
    second.wait_for(lambda: True if second.removed else None, Deadline.after(2))
    assert second.removed == {"sdc"} and second.events_seen == 1
    first.close()
    second.close()


def test_a_failing_socket_turns_every_watch_to_polling(hub_monitors):
    watches = [udev.DeviceWatch(source="kernel", poll_interval=0.02) for _ in range(3)]
    for w in watches:
        w.open()
    for _ in range(udev._MAX_MONITOR_ERRORS):
        hub_monitors[0].q.put(OSError(105, "No buffer space available"))
    for w in watches:
        with pytest.raises(DeviceNotFound):
            w.wait_for(lambda: None, Deadline.after(0.3))
        assert w.mode == "poll"
        w.close()


def test_a_broken_reader_does_not_leave_watches_waiting(hub_monitors):
    w = udev.DeviceWatch(source="kernel", poll_interval=0.02)
    w.open()
    hub_monitors[0].q.put(RuntimeError("libudev went away"))
    with pytest.raises(DeviceNotFound):
        w.wait_for(lambda: None, Deadline.after(0.3))
    assert w.mode == "poll" and not udev._HUBS
    w.close()


def test_invalid_poll_interval():
    with pytest.raises(ValueError):
        DeviceWatch(poll_interval=0)


# ---------------------------------------------------------------- udev database


def _disk(fake):
    hdir = fake.scsi_host(2, "iscsi_tcp")
    fake.scsi_disk(
        f"{hdir}/session1", "2:0:0:1", "sdb", wwid="naa.6001405c6b7f3d2e8a1b4c5d6e7f8091"
    )
    return fake.p("sys/class/block/sdb/dev").read_text().strip()


def test_udev_db_and_properties(fake):
    devnum = _disk(fake)
    assert udev.udev_db_path(fake.roots, "sdb") == fake.roots.runfs("udev", "data", f"b{devnum}")
    assert udev.udev_db_path(fake.roots, "sdz") is None
    assert udev.udev_properties(fake.roots, "sdb") is None
    fake.attr(
        f"run/udev/data/b{devnum}",
        "S:disk/by-id/scsi-36001405c6b7f3d2e8a1b4c5d6e7f8091\n"
        "S:disk/by-id/wwn-0x6001405c6b7f3d2e8a1b4c5d6e7f8091\n"
        "L:0\nI:123456\n"
        "E:ID_SERIAL=36001405c6b7f3d2e8a1b4c5d6e7f8091\n"
        "E:ID_WWN=0x6001405c6b7f3d2e\n"
        "E:ID_WWN_WITH_EXTENSION=0x6001405c6b7f3d2e8a1b4c5d6e7f8091\n"
        "E:DEVLINKS=/dev/disk/by-id/scsi-36001405c6b7f3d2e8a1b4c5d6e7f8091 "
        "/dev/disk/by-id/wwn-0x6001405c6b7f3d2e8a1b4c5d6e7f8091\n"
        "G:systemd\n",
    )
    props = udev.udev_properties(fake.roots, "sdb")
    assert props["ID_SERIAL"] == "36001405c6b7f3d2e8a1b4c5d6e7f8091"
    assert props["ID_WWN_WITH_EXTENSION"] == "0x6001405c6b7f3d2e8a1b4c5d6e7f8091"
    assert udev.udev_links(fake.roots, "/dev/sdb") == (
        fake.roots.devfs("disk/by-id/scsi-36001405c6b7f3d2e8a1b4c5d6e7f8091"),
        fake.roots.devfs("disk/by-id/wwn-0x6001405c6b7f3d2e8a1b4c5d6e7f8091"),
    )


def test_udev_settled_without_udev_returns_false(fake):
    _disk(fake)
    t0 = time.monotonic()
    assert udev.udev_settled_for(fake.roots, "sdb", Deadline.after(5)) is False
    assert time.monotonic() - t0 < 0.1
    assert udev.udev_running(fake.roots) is False


def test_udev_settled_waits_for_db_entry(fake):
    devnum = _disk(fake)
    fake.mkdir("run/udev/data")
    timer = threading.Timer(0.15, lambda: fake.attr(f"run/udev/data/b{devnum}", "E:ID_SERIAL=x"))
    timer.start()
    try:
        t0 = time.monotonic()
        assert udev.udev_settled_for(fake.roots, "sdb", Deadline.after(3)) is True
        assert 0.1 <= time.monotonic() - t0 < 0.6
    finally:
        timer.cancel()


def test_udev_settled_times_out(fake):
    _disk(fake)
    fake.mkdir("run/udev/data")
    with pytest.raises(DeviceNotFound, match="udev processing of sdb"):
        udev.udev_settled_for(fake.roots, "sdb", Deadline.after(0.1))
    w = DeviceWatch(monitor=FakeMonitor(), poll_interval=0.02)
    with pytest.raises(DeviceNotFound):
        udev.udev_settled_for(fake.roots, "sdb", Deadline.after(0.05), watch=w)


def test_real_kernel_uevent_wakes_the_watch():
    """A real uevent (``change`` on /sys/class/mem/null) reaches the pyudev monitor and
    triggers the re-check long before the poll interval."""
    trigger = "/sys/class/mem/null/uevent"
    if not os.access(trigger, os.W_OK):
        pytest.skip("cannot write uevent here (not root)")
    with DeviceWatch(subsystems=("mem",), source="kernel", poll_interval=5) as w:
        if not w.mode.startswith("netlink"):
            pytest.skip(f"no netlink uevent socket ({w.open_error})")
        timer = threading.Timer(0.05, lambda: open(trigger, "w").write("change"))
        timer.start()
        t0 = time.monotonic()
        try:
            seen = w.wait_for(lambda: w.last_event if w.events_seen else None, Deadline.after(3))
        except DeviceNotFound:
            pytest.skip("uevents are not delivered in this environment (network namespace)")
        finally:
            timer.cancel()
        assert time.monotonic() - t0 < 2
        assert seen.subsystem == "mem" and seen.action == "change" and seen.sys_name == "null"


def _removed_disk(tmp_path, links):
    """A host where block device ``sdf`` is gone (no sysfs entry, no udev database file)
    and ``links`` (relative to <dev>/disk) still point to it."""
    from brick_agent.host.roots import HostRoots

    roots = HostRoots.under(str(tmp_path))
    for link in links:
        path = roots.devfs("disk", link)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink("../../sdf", path)
    entry = udev.UdevEntry(
        "sdf", roots.runfs("udev", "data", "b8:80"), (roots.devfs("disk", "by-path", "ip-lun-3"),)
    )
    return roots, entry


def test_udev_forgot_waits_for_a_link_the_database_did_not_list(tmp_path):
    """udev removes the database file before the links; a link not captured from the
    database (by-diskseq) still pointing to the device means udev is not done."""
    roots, entry = _removed_disk(tmp_path, ["by-diskseq/38"])
    assert not udev.udev_forgot(roots, entry)
    assert udev.dangling_links_to(roots, "sdf") == [roots.devfs("disk", "by-diskseq", "38")]
    os.unlink(roots.devfs("disk", "by-diskseq", "38"))
    assert udev.udev_forgot(roots, entry)


def test_udev_forgot_waits_for_listed_links_and_accepts_a_reused_name(tmp_path):
    roots, entry = _removed_disk(tmp_path, ["by-path/ip-lun-3"])
    assert not udev.udev_forgot(roots, entry)
    os.makedirs(roots.sysfs("class", "block", "sdf"))  # a new disk got the name
    assert udev.udev_forgot(roots, entry)


def test_udev_entry_while_udev_rewrites_the_database_takes_links_from_dev(tmp_path):
    """Seen in the lab: during a 'change' re-processing the database file is absent
    while the links stay; the entry must still know them, so a detach waits for them."""
    from brick_agent.host.roots import HostRoots

    roots = HostRoots.under(str(tmp_path))
    os.makedirs(roots.runfs("udev"))
    open(roots.runfs("udev", "control"), "w").close()
    os.makedirs(roots.sysfs("class", "block", "sdf"))
    with open(roots.sysfs("class", "block", "sdf", "dev"), "w") as f:
        f.write("8:80\n")
    os.makedirs(roots.devfs("disk", "by-diskseq"))
    os.symlink("../../sdf", roots.devfs("disk", "by-diskseq", "38"))
    entry = udev.udev_entry(roots, "sdf")
    assert entry is not None and entry.links == (roots.devfs("disk", "by-diskseq", "38"),)
    import shutil

    shutil.rmtree(roots.sysfs("class", "block", "sdf"))  # the disk is deleted
    assert not udev.udev_forgot(roots, entry)  # its link is still there
    os.unlink(roots.devfs("disk", "by-diskseq", "38"))
    assert udev.udev_forgot(roots, entry)


class _Event:
    def __init__(self, action, sys_name):
        self.action, self.sys_name = action, sys_name


def test_watch_records_the_devices_whose_remove_event_arrived():
    mon = FakeMonitor(
        events=[_Event("add", "sdb"), _Event("remove", "sdc"), _Event("change", "sdd")]
    )
    with DeviceWatch(monitor=mon) as w:
        w.wait_gone(lambda: "sdc" not in w.removed, Deadline.after(2), what="sdc")
    assert w.removed == {"sdc"}


def test_udev_forgot_trusts_only_the_remove_event_of_a_udev_watch(tmp_path):
    """Seen in the lab: a detach right after an attach deletes a disk udev has not yet
    processed; no database file, no link yet -- the links appear later, dangling. Only
    udev's own "remove" event says udev is done with the device."""
    roots, entry = _removed_disk(tmp_path, [])  # nothing on disk says "not done"

    class UdevWatch:
        sees_udev_removals = True
        removed: set = set()

    watch = UdevWatch()
    assert udev.udev_forgot(roots, entry)  # files alone: looks done
    assert not udev.udev_forgot(roots, entry, watch)  # udev has not said so
    watch.removed = {"sdf"}
    assert udev.udev_forgot(roots, entry, watch)
