"""guard_connection tri-state, the manual-scan probe, lock names, SingleFlight, host limit
(threads)."""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import threading
import time
import types

import pytest

from brick_agent import locking
from brick_agent.errors import InvalidArgument, LockTimeout
from brick_agent.host import iscsiadm

SERVICE = "9f4c1b7e-2f43-4c4b-9d8e-4f1e0a6c2b11"


@pytest.fixture(autouse=True)
def _clean_scan_state():
    iscsiadm.set_manual_scan_override(None)
    iscsiadm.reset_manual_scan_cache()
    yield
    iscsiadm.set_manual_scan_override(None)
    iscsiadm.reset_manual_scan_cache()


@pytest.fixture
def lock_dir(tmp_path):
    return str(tmp_path / "locks")


def _lock_files(lock_dir):
    return sorted(os.listdir(lock_dir)) if os.path.isdir(lock_dir) else []


# ------------------------------------------------------------------ tri-state
@pytest.mark.parametrize(
    "volume, supported, locked",
    [
        ({"service_uuid": SERVICE}, False, False),  # missing
        ({"shared_targets": False, "service_uuid": SERVICE}, False, False),
        ({"shared_targets": False, "service_uuid": SERVICE}, True, False),
        ({"shared_targets": True, "service_uuid": SERVICE}, True, False),
        ({"shared_targets": True, "service_uuid": SERVICE}, False, True),
        ({"shared_targets": None, "service_uuid": SERVICE}, True, True),
        ({"shared_targets": None, "service_uuid": SERVICE}, False, True),
    ],
)
def test_tri_state(volume, supported, locked, lock_dir):
    with locking.guard_connection(
        volume, lock_path=lock_dir, manual_scan_supported=supported
    ) as held:
        assert held is locked
        assert bool(_lock_files(lock_dir)) is locked


def test_object_volume_and_callable_probe(lock_dir):
    calls = []

    def probe():
        calls.append(1)
        return False

    vol = types.SimpleNamespace(shared_targets=True, service_uuid=SERVICE)
    with locking.guard_connection(vol, lock_path=lock_dir, manual_scan_supported=probe) as held:
        assert held
    assert calls == [1]
    vol_none = types.SimpleNamespace(shared_targets=None, service_uuid=SERVICE)
    with locking.guard_connection(
        vol_none, lock_path=lock_dir, manual_scan_supported=probe
    ) as held:
        assert held
    assert calls == [1], "None must lock without asking about manual scans"


def test_object_without_attribute_means_no_lock(lock_dir):
    vol = types.SimpleNamespace(service_uuid=SERVICE)
    with locking.guard_connection(vol, lock_path=lock_dir, manual_scan_supported=False) as held:
        assert not held


def test_false_and_missing_never_probe(lock_dir):
    def probe():
        raise AssertionError("probed")

    for vol in ({"shared_targets": False}, {}):
        with locking.guard_connection(vol, lock_path=lock_dir, manual_scan_supported=probe) as held:
            assert not held


def test_true_uses_module_override_and_cached_probe(lock_dir):
    iscsiadm.set_manual_scan_override(True)
    with locking.guard_connection(
        {"shared_targets": True, "service_uuid": SERVICE}, lock_path=lock_dir
    ) as held:
        assert not held
    iscsiadm.set_manual_scan_override(False)
    with locking.guard_connection(
        {"shared_targets": True, "service_uuid": SERVICE}, lock_path=lock_dir
    ) as held:
        assert held


@pytest.mark.parametrize("value", ["True", "yes", 2, [], object()])
def test_bad_shared_targets_rejected(value, lock_dir):
    with pytest.raises(InvalidArgument):
        with locking.guard_connection(
            {"shared_targets": value, "service_uuid": SERVICE},
            lock_path=lock_dir,
            manual_scan_supported=False,
        ):
            pass


@pytest.mark.parametrize("uuid", [None, "", "   ", 5])
def test_locking_needs_service_uuid(uuid, lock_dir):
    vol = {"shared_targets": None}
    if uuid is not None:
        vol["service_uuid"] = uuid
    with pytest.raises(InvalidArgument):
        with locking.guard_connection(vol, lock_path=lock_dir):
            pass


def test_lock_name_is_a_safe_file_name(lock_dir):
    hostile = "../../etc/passwd\n; rm -rf /"
    with locking.guard_connection(
        {"shared_targets": None, "service_uuid": hostile}, lock_path=lock_dir
    ):
        files = _lock_files(lock_dir)
    assert len(files) == 1
    name = files[0]
    assert "/" not in name and "\n" not in name and " " not in name
    assert name.startswith("brick_agent-guard-")
    # distinct uuids that sanitise alike still get distinct locks
    assert locking.guard_lock_name("a/b") != locking.guard_lock_name("a_b")
    assert locking.guard_lock_name(SERVICE) == f"brick_agent-guard-{SERVICE}"


def test_guard_uses_configured_lock_path(tmp_path):
    from brick_agent import config

    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp_path / "cfg-locks"), group="brick_agent")
    locking.configure(conf)
    try:
        with locking.guard_connection({"shared_targets": None, "service_uuid": SERVICE}):
            assert os.listdir(tmp_path / "cfg-locks")
    finally:
        locking.set_default_lock_path(None)


def test_guard_timeout_and_threads_serialise(lock_dir):
    vol = {"shared_targets": None, "service_uuid": SERVICE}
    entered = threading.Event()
    release = threading.Event()

    def holder():
        with locking.guard_connection(vol, lock_path=lock_dir):
            entered.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    assert entered.wait(5)
    start = time.monotonic()
    with pytest.raises(LockTimeout):
        with locking.guard_connection(vol, lock_path=lock_dir, timeout=0.2):
            pass
    assert 0.15 < time.monotonic() - start < 2
    release.set()
    t.join(5)
    with locking.guard_connection(vol, lock_path=lock_dir, timeout=1) as held:
        assert held


def test_threads_without_timeout_wait_their_turn(lock_dir):
    vol = {"shared_targets": None, "service_uuid": SERVICE}
    intervals = []
    mu = threading.Lock()

    def worker():
        with locking.guard_connection(vol, lock_path=lock_dir) as held:
            assert held
            start = time.monotonic()
            time.sleep(0.05)
            with mu:
                intervals.append((start, time.monotonic()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert len(intervals) == 4
    intervals.sort()
    for (_, prev_end), (start, _) in itertools.pairwise(intervals):
        assert start >= prev_end


# ------------------------------------------------------------------ manual-scan probe
def _fake_iscsiadm(directory, script):
    directory.mkdir(exist_ok=True)
    path = directory / "iscsiadm"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.mark.parametrize(
    "script, expected",
    [
        ('echo "iscsiadm version 2.1.8"\n', True),
        ('echo "iscsiadm version 2.0.876"\n', True),
        ('echo "iscsiadm version 2.0.874"\n', False),
        ('echo "iscsiadm version 6.2.0.874-10"\n', False),  # Red Hat numbering
        ('echo "iscsiadm version 6.2.1.4-1"\n', True),
        ('echo "something else"\n', False),
        ('echo "iscsiadm version 2.1.8"; exit 1\n', False),
    ],
)
def test_probe_with_fake_iscsiadm_on_path(tmp_path, monkeypatch, script, expected):
    fake = _fake_iscsiadm(tmp_path / "bin", script + 'echo "$@" >> "$0.calls"\n')
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    assert iscsiadm.probe_manual_scan() is expected
    if "exit 1" not in script:
        assert (tmp_path / "bin" / "iscsiadm.calls").read_text() == "--version\n"


def test_probe_iscsiadm_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert iscsiadm.probe_manual_scan() is False
    # and guard_connection(True) therefore locks
    with locking.guard_connection(
        {"shared_targets": True, "service_uuid": SERVICE}, lock_path=str(tmp_path / "l")
    ) as held:
        assert held


def test_probe_hanging_iscsiadm_is_bounded(tmp_path, monkeypatch):
    fake = _fake_iscsiadm(tmp_path / "bin", "exec sleep 30\n")
    start = time.monotonic()
    assert iscsiadm.probe_manual_scan(iscsiadm=str(fake), timeout=0.3) is False
    assert time.monotonic() - start < 3


@pytest.mark.skipif(shutil.which("iscsiadm") is None, reason="no iscsiadm on this host")
def test_probe_real_iscsiadm_is_read_only():
    from brick_agent import commands

    out = commands.run(["iscsiadm", "--version"], timeout=10).stdout
    version = iscsiadm.parse_iscsiadm_version(out)
    assert version is not None
    assert iscsiadm.probe_manual_scan() is (version >= (2, 0, 876))


def test_probe_runs_once_per_process_and_is_thread_safe():
    calls = []
    gate = threading.Event()

    def slow_probe():
        calls.append(1)
        gate.wait(2)
        return True

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(iscsiadm.iscsi_manual_scan_supported(slow_probe))
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.05)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == [True] * 8
    assert calls == [1]
    assert iscsiadm.iscsi_manual_scan_supported(lambda: pytest.fail("re-probed")) is True


def test_probe_not_run_at_import():
    import importlib
    import subprocess
    import sys

    code = (
        "import subprocess\n"
        "def boom(*a, **k):\n"
        "    raise SystemExit('a command ran at import time')\n"
        "subprocess.Popen = boom\n"
        "import brick_agent.locking\n"
        "import brick_agent.host.iscsiadm as l\n"
        "assert l._scan_cached is None\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        timeout=20,
        env={**os.environ, "PATH": "/nonexistent"},
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    importlib.import_module("brick_agent.locking")


def test_note_result_overrides_probe():
    iscsiadm.iscsi_manual_scan_supported(lambda: False)
    iscsiadm.note_manual_scan_result(True)
    assert iscsiadm.iscsi_manual_scan_supported(lambda: pytest.fail("re-probed")) is True


def test_manual_scan_evidence_from_node_update():
    from brick_agent.errors import CommandFailed

    iscsiadm.iscsi_manual_scan_supported(lambda: True)
    # what iscsiadm 2.1.8 prints for a parameter it does not know (seen on this host)
    iscsiadm.note_manual_scan_update(
        CommandFailed(
            ["iscsiadm"],
            7,
            "iscsiadm: Cannot modify node.session.scan. Invalid param name.\n"
            "iscsiadm: Could not execute operation on all records: invalid parameter",
        )
    )
    assert iscsiadm.iscsi_manual_scan_supported() is False
    iscsiadm.note_manual_scan_update(CommandFailed(["iscsiadm"], 21, "No records found"))
    assert iscsiadm.iscsi_manual_scan_supported() is False
    iscsiadm.note_manual_scan_update(None)
    assert iscsiadm.iscsi_manual_scan_supported() is True


def test_host_limit_from_conf(tmp_path):
    from brick_agent import config

    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp_path), group="brick_agent")
    conf.set_override("max_concurrent_operations", 3, group="brick_agent")
    limit = locking.HostConcurrencyLimit.from_conf(conf)
    assert limit.n == 3
    with limit.slot(timeout=1):
        assert any(f.startswith("brick_agent-slot-") for f in os.listdir(tmp_path))


# ------------------------------------------------------------------ target/device locks
def test_target_lock_names():
    a = locking.target_lock_name(
        "iscsi", locking.iscsi_target_key("10.0.0.1:3260", "iqn.2003-01.org:a")
    )
    b = locking.target_lock_name(
        "iscsi", locking.iscsi_target_key("10.0.0.1:3260", "iqn.2003-01.org:b")
    )
    assert a != b and a.startswith("brick_agent-target-iscsi-10.0.0.1_3260")
    fc1 = locking.fc_target_key(["0x50:06:01:60:3b:a0:11:22", "500601613ba01122"])
    fc2 = locking.fc_target_key(["500601613BA01122", "50:06:01:60:3b:a0:11:22"])
    assert fc1 == fc2
    for bad in ("", "ISCSI", "../x", "a b"):
        with pytest.raises(InvalidArgument):
            locking.target_lock_name(bad, "k")


def test_device_lock_validates_name(lock_dir):
    with locking.device_lock("sdb", lock_path=lock_dir):
        assert _lock_files(lock_dir) == ["brick_agent-device-sdb"]
    assert _lock_files(lock_dir) == []  # removed once released and unused
    for bad in ("../sdb", "-sdb", "sdb;x", "", "sd b"):
        with pytest.raises(InvalidArgument):
            locking.device_lock(bad, lock_path=lock_dir)


def test_relative_lock_path_refused():
    with pytest.raises(InvalidArgument):
        with locking.target_lock("nvme", "nqn.x", lock_path="relative/dir"):
            pass


def test_different_targets_do_not_block_each_other_in_threads(lock_dir):
    held = threading.Event()
    release = threading.Event()

    def slow_a():
        with locking.target_lock("iscsi", "A", lock_path=lock_dir):
            held.set()
            release.wait(5)

    t = threading.Thread(target=slow_a)
    t.start()
    assert held.wait(5)
    start = time.monotonic()
    with locking.target_lock("iscsi", "B", lock_path=lock_dir, timeout=1):
        waited = time.monotonic() - start
    with pytest.raises(LockTimeout):
        with locking.target_lock("iscsi", "A", lock_path=lock_dir, timeout=0.1):
            pass
    release.set()
    t.join(5)
    assert waited < 0.1


# ------------------------------------------------------------------ host limit (threads)
def test_host_limit_bounds_threads(lock_dir):
    limit = locking.HostConcurrencyLimit(2, lock_dir)
    active = 0
    peak = 0
    mu = threading.Lock()

    def work():
        nonlocal active, peak
        with limit.slot(timeout=5):
            with mu:
                active += 1
                peak = max(peak, active)
            time.sleep(0.05)
            with mu:
                active -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak == 2


def test_host_limit_timeout_and_release(lock_dir):
    limit = locking.HostConcurrencyLimit(1, lock_dir)
    with limit.slot():
        with pytest.raises(LockTimeout):
            with limit.slot(timeout=0.1):
                pass
    with limit.slot(timeout=0.1):
        pass


@pytest.mark.parametrize("n", [0, -1, True, 1.5, "2"])
def test_host_limit_rejects_bad_n(n, lock_dir):
    with pytest.raises(InvalidArgument):
        locking.HostConcurrencyLimit(n, lock_dir)


# ------------------------------------------------------------------ single flight
def test_single_flight_merges_concurrent_calls():
    sf = locking.SingleFlight()
    calls = []
    started = threading.Event()
    finish = threading.Event()

    def login(portal):
        calls.append(portal)
        started.set()
        finish.wait(5)
        return f"session-{portal}"

    results = []

    def worker():
        results.append(sf.do_ex(("login", "10.0.0.1:3260"), login, "10.0.0.1:3260"))

    first = threading.Thread(target=worker)
    first.start()
    assert started.wait(5)
    others = [threading.Thread(target=worker) for _ in range(3)]
    for t in others:
        t.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with sf._lock:
            call = sf._calls.get(("login", "10.0.0.1:3260"))
            if call is not None and call.waiters == 3:
                break
        time.sleep(0.005)
    finish.set()
    for t in [first, *others]:
        t.join(5)
    assert calls == ["10.0.0.1:3260"]
    assert (
        sorted(results)
        == [("session-10.0.0.1:3260", False)] + [("session-10.0.0.1:3260", True)] * 3
    )
    # a later call runs again; other keys never wait
    assert sf.do(("login", "10.0.0.1:3260"), lambda: "again") == "again"
    assert not sf.in_flight(("login", "10.0.0.1:3260"))


def test_single_flight_shares_errors():
    sf = locking.SingleFlight()
    started = threading.Event()
    finish = threading.Event()
    errors = []

    def failing():
        started.set()
        finish.wait(5)
        raise RuntimeError("login failed")

    def worker():
        try:
            sf.do("k", failing)
        except RuntimeError as exc:
            errors.append(str(exc))

    t1 = threading.Thread(target=worker)
    t1.start()
    assert started.wait(5)
    t2 = threading.Thread(target=worker)
    t2.start()
    while not (sf._calls.get("k") and sf._calls["k"].waiters):
        time.sleep(0.005)
    finish.set()
    t1.join(5)
    t2.join(5)
    assert errors == ["login failed", "login failed"]
    assert not sf.in_flight("k")


def test_a_kept_lock_file_stays_and_a_remover_beside_it_still_excludes(lock_dir):
    """The ledger's lock (taken on every transaction) keeps its file; a taker that
    removes it (another version) leaves the next taker locking the file the name shows."""
    with locking.external_lock("brick_agent-ledger", lock_path=lock_dir, keep=True):
        pass
    path = os.path.join(lock_dir, "brick_agent-ledger")
    inode = os.stat(path).st_ino
    with locking.external_lock("brick_agent-ledger", lock_path=lock_dir, keep=True):
        assert os.stat(path).st_ino == inode  # the same file, not made again
    assert _lock_files(lock_dir) == ["brick_agent-ledger"]
    with locking.external_lock("brick_agent-ledger", lock_path=lock_dir):
        pass
    assert _lock_files(lock_dir) == []  # removed by the remover
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with locking.external_lock("brick_agent-ledger", lock_path=lock_dir, keep=True):
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    # an open-file-description lock conflicts with this process's own lockf lock
    fd = locking.lock_file(path, deadline=time.monotonic() + 0.2, kind="ofd")
    assert fd is None  # the kept file is the one locked
    release.set()
    holder.join(5)
    fd = locking.lock_file(path, deadline=time.monotonic() + 2, kind="ofd")
    assert fd is not None
    locking.unlock_file(fd, path, remove=True)
