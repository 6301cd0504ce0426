"""ISCSIConnector on a fake host tree mutated by a kernel-like fake (see test_iscsi_fakehost)."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time

import pytest

from brick_agent import config
from brick_agent.connectors import factory
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_agent.errors import (
    AuthenticationFailed,
    CommandFailed,
    DeviceBusy,
    DeviceNotFound,
    InvalidConnectionProperties,
    LeftoversRemain,
    NotSupported,
    TargetUnreachable,
    VolumeIdentityMismatch,
)
from brick_agent.host import multipath as host_mpath
from brick_agent.host.iscsi import initiator_name
from brick_agent.host.udev import DeviceWatch
from tests.unit.connectors.test_iscsi_fakehost import (
    IQN_A,
    IQN_B,
    P1,
    P2,
    FakeArray,
    FakeIscsi,
    FakeLun,
    udev_of,
    wwid_of,
)
from tests.unit.host.fakehost import FakeHost

SECRET = "s3cr3t-Pa55w0rd"
EMPTY = {"sessions": [], "devices": [], "maps": []}


@pytest.fixture
def conf(tmp_path):
    c = config.new_conf()
    c.set_override("lock_path", str(tmp_path / "locks"), group="brick_agent")
    c.set_override("device_wait_timeout", 1.0, group="brick_agent")
    c.set_override("device_removal_timeout", 1.0, group="brick_agent")
    c.set_override("multipath_wait_timeout", 1.0, group="brick_agent")
    c.set_override("flush_timeout", 0.5, group="brick_agent")
    return c


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path / "host")
    (tmp_path / "host" / "etc" / "iscsi").mkdir(parents=True)
    return h


@pytest.fixture
def array():
    a = FakeArray()
    a.add(
        IQN_A,
        [P1, P2],
        {
            0: FakeLun(wwid_of(1)),
            1: FakeLun(wwid_of(2)),
            2: FakeLun(wwid_of(3)),
            3: FakeLun(wwid_of(4)),
        },
    )
    a.add(IQN_B, [P1], {n: FakeLun(wwid_of(10 + n)) for n in range(4)})
    return a


@pytest.fixture
def fake(host, array):
    return FakeIscsi(host, array)


def make(conf, host, fake, **kw):
    def watch():
        return DeviceWatch(roots=host.roots, use_netlink=False, poll_interval=0.005)

    c = ISCSIConnector(conf=conf, roots=host.roots, actions=fake, watch_factory=watch, **kw)
    c.multipath_grace = 0.02
    return c


def props(lun=0, iqn=IQN_A, portal=P1, **extra):
    return {
        "target_portal": portal,
        "target_iqn": iqn,
        "target_lun": lun,
        "volume_id": "vol-1",
        **extra,
    }


def mp_props(lun=0, portals=(P1, P2), iqns=(IQN_A, IQN_A), **extra):
    return {
        "target_portals": list(portals),
        "target_iqns": list(iqns),
        "target_luns": [lun] * len(portals),
        **extra,
    }


# ---------------------------------------------------------------- single path
def test_single_path_attach_returns_the_scanned_lun_and_detach_leaves_nothing(conf, host, fake):
    c = make(conf, host, fake)
    info = c.connect_volume(props(lun=1))
    assert info == {"type": "block", "path": host.roots.devfs("sda"), "scsi_wwn": udev_of(2)}
    # manual scan: exactly one targeted scan, channel 0 target 0 LUN 1
    assert [e for e in fake.log if e[0] == "scan"] == [("scan", 10, 0, 0, 1)]
    assert fake.state()["devices"] == ["sda"]
    c.disconnect_volume(props(lun=1), info)
    assert fake.state() == EMPTY
    assert ("flush", "sda") in fake.log


def test_connect_does_not_mutate_the_callers_dict(conf, host, fake):
    p = props(lun=0)
    before = dict(p)
    make(conf, host, fake).connect_volume(p)
    assert p == before


def test_bad_properties_are_rejected_before_any_action(conf, host, fake):
    c = make(conf, host, fake)
    for bad in (
        {"target_portal": P1},
        {"target_portal": "nope", "target_iqn": IQN_A},
        props(lun=-1),
        {"target_portals": [P1, P2], "target_iqns": [IQN_A]},
    ):
        with pytest.raises(InvalidConnectionProperties):
            c.connect_volume(bad)
        with pytest.raises(InvalidConnectionProperties):
            c.disconnect_volume(bad, None)
    assert fake.log == []


def test_existing_session_is_reused_not_logged_in_twice(conf, host, fake):
    c = make(conf, host, fake)
    a = c.connect_volume(props(lun=0))
    b = c.connect_volume(props(lun=1))
    assert fake.count("login") == 1
    assert (a["scsi_wwn"], b["scsi_wwn"]) == (udev_of(1), udev_of(2))
    assert a["path"] != b["path"]


def test_shared_target_detach_keeps_session_and_other_volume(conf, host, fake):
    c = make(conf, host, fake)
    a = c.connect_volume(props(lun=0))
    b = c.connect_volume(props(lun=1))
    c.disconnect_volume(props(lun=0), a)
    state = fake.state()
    assert state["sessions"] == [(P1, IQN_A)]
    assert state["devices"] == [os.path.basename(b["path"])]
    assert fake.count("logout") == 0
    c.disconnect_volume(props(lun=1), b)
    assert fake.state() == EMPTY


def test_detach_deletes_only_this_volumes_device(conf, host, fake):
    c = make(conf, host, fake)
    infos = [c.connect_volume(props(lun=n)) for n in range(3)]
    c.disconnect_volume(props(lun=1), infos[1])
    deleted = [e[1] for e in fake.log if e[0] == "delete"]
    assert deleted == ["10:0:0:1"]
    assert fake.state()["devices"] == sorted(
        os.path.basename(i["path"]) for i in (infos[0], infos[2])
    )


def test_detach_refuses_a_device_whose_wwid_is_not_the_volumes(conf, host, fake, array):
    c = make(conf, host, fake)
    info = c.connect_volume(props(lun=0))
    # device_info says the volume had another WWID: LUN 0 now holds someone else's data
    stale_info = dict(info, scsi_wwn=udev_of(99))
    c.disconnect_volume(props(lun=0), stale_info)
    assert fake.count("delete") == 0 and fake.count("logout") == 0
    assert fake.state()["devices"] == ["sda"]


def test_detach_is_idempotent(conf, host, fake):
    c = make(conf, host, fake)
    info = c.connect_volume(props(lun=0))
    c.disconnect_volume(props(lun=0), info)
    c.disconnect_volume(props(lun=0), info)
    assert fake.state() == EMPTY


def test_detach_without_device_info_uses_current_wwid(conf, host, fake):
    c = make(conf, host, fake)
    c.connect_volume(props(lun=0))
    c.disconnect_volume(props(lun=0), None)
    assert fake.state() == EMPTY


# ---------------------------------------------------------------- failures
def test_missing_lun_fails_within_deadline_and_logs_out(conf, host, fake):
    conf.set_override("device_wait_timeout", 0.3, group="brick_agent")
    c = make(conf, host, fake)
    with pytest.raises(DeviceNotFound, match="LUN 7"):
        c.connect_volume(props(lun=7))
    assert fake.state() == EMPTY
    assert fake.count("logout") == 1


def test_missing_lun_on_shared_session_keeps_the_session(conf, host, fake):
    conf.set_override("device_wait_timeout", 0.3, group="brick_agent")
    c = make(conf, host, fake)
    c.connect_volume(props(lun=0))
    with pytest.raises(DeviceNotFound):
        c.connect_volume(props(lun=7))
    assert fake.state()["sessions"] == [(P1, IQN_A)] and fake.state()["devices"] == ["sda"]


def test_unreachable_portal_raises_target_unreachable_and_leaves_nothing(conf, host, fake, array):
    array.unreachable.add(P1)
    c = make(conf, host, fake)
    with pytest.raises(TargetUnreachable):
        c.connect_volume(props(lun=0))
    assert fake.state() == EMPTY


def test_single_path_fails_over_to_the_next_portal(conf, host, fake, array):
    array.unreachable.add(P1)
    c = make(conf, host, fake)
    info = c.connect_volume(dict(mp_props(lun=0), target_portal=P1, target_iqn=IQN_A))
    assert info["scsi_wwn"] == udev_of(1)
    assert fake.state()["sessions"] == [(P2, IQN_A)]


def test_chap_rejected_is_authentication_error_without_secret(conf, host, fake, array, caplog):
    array.targets[0].chap = ("user", "right-secret")
    c = make(conf, host, fake)
    caplog.set_level(logging.DEBUG)
    p = props(lun=0, auth_method="CHAP", auth_username="user", auth_password=SECRET)
    with pytest.raises(AuthenticationFailed) as err:
        c.connect_volume(p)
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)
    assert SECRET not in caplog.text
    assert fake.passwords_seen == [SECRET]  # it did reach the (fake) privileged side
    assert fake.state() == EMPTY


def test_chap_accepted_attaches_and_secret_never_logged(conf, host, fake, array, caplog):
    array.targets[0].chap = ("user", SECRET)
    caplog.set_level(logging.DEBUG)
    c = make(conf, host, fake)
    p = props(lun=0, auth_method="CHAP", auth_username="user", auth_password=SECRET)
    info = c.connect_volume(p)
    c.disconnect_volume(p, info)
    assert SECRET not in caplog.text
    assert fake.state() == EMPTY


# ---------------------------------------------------------------- LUN reuse
def _leave_stale_lun0(c, fake, array):
    """Attach LUN 0 (wwid 1), 'fail' the detach, then the array maps another volume at LUN 0."""
    info = c.connect_volume(props(lun=0))
    array.targets[0].luns[0] = FakeLun(wwid_of(50))
    return info


def test_lun_reuse_never_returns_the_stale_device(conf, host, fake, array):
    c = make(conf, host, fake)
    old = _leave_stale_lun0(c, fake, array)
    new = c.connect_volume(props(lun=0))
    assert new["scsi_wwn"] == udev_of(50)
    assert ("rescan", "10:0:0:0") in fake.log
    assert fake.count("delete") == 1  # the stale sd was removed, then rescanned
    assert new["path"] != old["path"]


def test_lun_reuse_fails_closed_when_the_stale_device_is_held(conf, host, fake, array):
    c = make(conf, host, fake)
    _leave_stale_lun0(c, fake, array)
    fake.multipath_add(udev_of(1), ["sda"])  # something still holds the old device
    with pytest.raises(VolumeIdentityMismatch, match="changed identity"):
        c.connect_volume(props(lun=0))
    assert fake.count("delete") == 0


def test_same_volume_attached_twice_keeps_its_device(conf, host, fake):
    c = make(conf, host, fake)
    a = c.connect_volume(props(lun=0))
    b = c.connect_volume(props(lun=0))
    assert a == b and fake.count("delete") == 0


# ---------------------------------------------------------------- multipath
def test_multipath_attach_builds_map_and_detach_removes_everything(conf, host, fake):
    c = make(conf, host, fake, use_multipath=True)
    info = c.connect_volume(mp_props(lun=1))
    m = host_mpath.map_for_wwid(host.roots, udev_of(2))
    assert info == {
        "type": "block",
        "path": host.roots.devfs(m.dm_name),
        "scsi_wwn": udev_of(2),
        "multipath_id": udev_of(2),
    }
    assert sorted(m.slaves) == ["sda", "sdb"]
    assert fake.count("login") == 2
    assert ("prepare_nodes", (P1, P2)) in fake.log  # records written once, logins in parallel
    c.disconnect_volume(mp_props(lun=1), info)
    assert fake.state() == EMPTY
    assert ("flush", m.dm_name) in fake.log
    assert ("multipath_forget", udev_of(2)) in fake.log


def test_multipath_paths_disagreeing_on_wwid_fail_closed(conf, host, fake, array):
    array.add("iqn.2003-01.org.linux-iscsi.lab:other", [P2], {1: FakeLun(wwid_of(77))})
    c = make(conf, host, fake, use_multipath=True)
    with pytest.raises(VolumeIdentityMismatch, match="disagree"):
        c.connect_volume(mp_props(lun=1, iqns=(IQN_A, "iqn.2003-01.org.linux-iscsi.lab:other")))
    assert fake.state() == EMPTY


def test_multipath_with_one_dead_portal_attaches_on_the_other(conf, host, fake, array):
    array.unreachable.add(P2)
    c = make(conf, host, fake, use_multipath=True)
    info = c.connect_volume(mp_props(lun=0))
    m = host_mpath.map_for_wwid(host.roots, udev_of(1))
    assert info["multipath_id"] == udev_of(1) and m.slaves == ("sda",)


def test_multipath_discovery_from_a_single_portal(conf, host, fake):
    c = make(conf, host, fake, use_multipath=True)
    info = c.connect_volume(props(lun=0))
    assert fake.count("discover") == 1
    m = host_mpath.map_for_wwid(host.roots, udev_of(1))
    assert sorted(m.slaves) == ["sda", "sdb"] and info["path"].endswith(m.dm_name)
    # detach without the discovered portals in the props still finds both paths (map slaves)
    c.disconnect_volume(props(lun=0), info)
    assert fake.state() == EMPTY


def test_multipath_without_multipathd_falls_back_or_enforces(conf, host, fake):
    fake.multipathd = False
    c = make(conf, host, fake, use_multipath=True)
    info = c.connect_volume(mp_props(lun=0))
    assert "multipath_id" not in info and info["path"].startswith(host.roots.devfs("sd"))
    c.disconnect_volume(mp_props(lun=0), info)
    with pytest.raises(NotSupported):
        c.connect_volume(mp_props(lun=0, enforce_multipath=True))
    assert fake.state() == EMPTY


# ---------------------------------------------------------------- force / leftovers
def test_flush_failure_without_force_touches_nothing(conf, host, fake):
    c = make(conf, host, fake)
    info = c.connect_volume(props(lun=0))
    fake.fail_flush.add("sda")
    with pytest.raises(DeviceBusy):
        c.disconnect_volume(props(lun=0), info)
    assert fake.state()["devices"] == ["sda"] and fake.count("delete") == 0


def test_force_keeps_going_and_reports_leftovers(conf, host, fake):
    c = make(conf, host, fake)
    info = c.connect_volume(props(lun=0))
    fake.fail_flush.add("sda")
    with pytest.raises(LeftoversRemain) as err:
        c.disconnect_volume(props(lun=0), info, force=True)
    assert any("sda" in item and "flush" in item for item in err.value.leftovers)
    assert fake.state() == EMPTY


def _target_dies(host, fake) -> None:
    """What the kernel shows after replacement_timeout on a dead target: the session FREE,
    its disk transport-offline (opening /dev/sdX fails, so no flush can happen)."""
    for cls in host.p("sys/class/iscsi_session").iterdir():
        (cls / "state").write_text("FREE\n")
    for dev in host.p("sys/class/scsi_device").iterdir():
        (dev / "device" / "state").write_text("transport-offline\n")
    fake.fail_flush.add("sda")


def test_nova_forced_detach_on_a_dead_target_removes_everything_and_says_what_it_skipped(
    conf, host, fake
):
    c = make(conf, host, fake)
    c.connect_volume(props(lun=0))
    _target_dies(host, fake)
    with pytest.raises(LeftoversRemain) as err:
        c.disconnect_volume(props(lun=0), None, force=True)  # as Nova calls it
    assert err.value.leftovers == [item for item in err.value.leftovers if "flush" in item]
    assert fake.state() == EMPTY


def test_detach_on_a_dead_target_without_force_keeps_the_device(conf, host, fake):
    c = make(conf, host, fake)
    c.connect_volume(props(lun=0))
    _target_dies(host, fake)
    with pytest.raises(DeviceBusy):
        c.disconnect_volume(props(lun=0), None)
    assert fake.state()["devices"] == ["sda"] and fake.count("delete") == 0


def test_detach_deletes_the_lun_before_logging_out(conf, host, fake):
    c = make(conf, host, fake)
    info = c.connect_volume(props(lun=0))
    c.disconnect_volume(props(lun=0), info)
    assert [e[0] for e in fake.log if e[0] in ("flush", "delete", "logout")] == [
        "flush",
        "delete",
        "logout",
    ]
    assert fake.state() == EMPTY


def test_logout_runs_while_udev_removes_the_links_and_detach_waits_for_both(conf, host, fake):
    fake.enable_udev(remove_delay=0.3)

    def watch():
        return DeviceWatch(roots=host.roots, monitor=fake.monitor(), poll_interval=30.0)

    c = ISCSIConnector(conf=conf, roots=host.roots, actions=fake, watch_factory=watch)
    info = c.connect_volume(props(lun=0))
    links_at_logout = []
    real_logout = fake.logout

    def logout(*args, **kwargs):
        links_at_logout.append(list(host.p("dev/disk/by-path").iterdir()))
        return real_logout(*args, **kwargs)

    fake.logout = logout
    c.disconnect_volume(props(lun=0), info)
    # the LUN was deleted, but the logout did not wait for udev to remove its link...
    assert fake.count("delete") == 1 and len(links_at_logout) == 1 and links_at_logout[0]
    # ...and the detach returned only once udev had removed it
    assert list(host.p("dev/disk/by-path").iterdir()) == [] and _dangling(host) == []
    assert fake.state() == EMPTY


def test_failed_logout_is_raised_after_the_lun_is_gone_and_a_retry_finishes(conf, host, fake):
    c = make(conf, host, fake)
    info = c.connect_volume(props(lun=0))
    fake.fail_logout.add(IQN_A)
    with pytest.raises(CommandFailed):
        c.disconnect_volume(props(lun=0), info)
    assert fake.state()["devices"] == [] and fake.state()["sessions"] == [(P1, IQN_A)]
    fake.fail_logout.clear()
    c.disconnect_volume(props(lun=0), info)
    assert fake.state() == EMPTY


def test_force_ignore_errors_reports_undeletable_device_without_raising(conf, host, fake, caplog):
    c = make(conf, host, fake)
    info = c.connect_volume(props(lun=0))
    fake.fail_delete.add("10:0:0:0")
    c.disconnect_volume(props(lun=0), info, force=True, ignore_errors=True)
    assert fake.state()["devices"] == ["sda"]
    assert fake.count("logout") == 0  # session still carries the LUN
    assert "left behind" in caplog.text


# ---------------------------------------------------------------- queries
def test_get_all_available_volumes_lists_iscsi_devices_only(conf, host, fake):
    host.scsi_host(0, "ata_piix")
    host.scsi_disk("sys/devices/platform/host0", "0:0:0:0", "vda", wwid="t10.ATA disk")
    c = make(conf, host, fake, use_multipath=True)
    info = c.connect_volume(mp_props(lun=2))
    vols = c.get_all_available_volumes()
    assert sorted(v["path"] for v in vols) == [host.roots.devfs("sda"), host.roots.devfs("sdb")]
    assert all(v["iqn"] == IQN_A and v["lun"] == 2 and v["wwid"] == udev_of(3) for v in vols)
    assert {v["portal"] for v in vols} == {P1, P2}
    assert {v["multipath"] for v in vols} == {info["path"]}
    assert not any(v["path"].endswith("vda") for v in vols)


def test_get_volume_paths_and_search_path(conf, host, fake):
    c = make(conf, host, fake)
    assert c.get_volume_paths(props(lun=0)) == []
    c.connect_volume(props(lun=0))
    assert c.get_volume_paths(props(lun=0)) == [host.roots.devfs("sda")]
    host.disk_link("by-path", f"ip-{P1}-iscsi-{IQN_A}-lun-0", "sda")
    assert c.get_volume_paths(props(lun=0)) == [
        host.roots.devfs("disk", "by-path", f"ip-{P1}-iscsi-{IQN_A}-lun-0")
    ]
    assert c.get_search_path() == host.roots.devfs("disk", "by-path")


def test_extend_single_and_multipath(conf, host, fake, array):
    c = make(conf, host, fake, use_multipath=True)
    info = c.connect_volume(mp_props(lun=0))
    array.targets[0].luns[0].sectors = 4096
    assert c.extend_volume(mp_props(lun=0)) == 4096 * 512
    m = host_mpath.map_for_wwid(host.roots, udev_of(1))
    assert m.size_bytes == 4096 * 512 and info["path"].endswith(m.dm_name)


def test_extend_refuses_paths_of_different_sizes(conf, host, fake, array):
    c = make(conf, host, fake, use_multipath=True)
    c.connect_volume(mp_props(lun=0))
    array.targets[0].luns[0].sectors = 4096
    real_rescan = fake.rescan_device
    fake.rescan_device = lambda hctl: real_rescan(hctl) if hctl.host == 10 else None
    with pytest.raises(Exception, match="disagree on the size"):
        c.extend_volume(mp_props(lun=0))


# ---------------------------------------------------------------- concurrency
def test_eight_volumes_from_two_targets_concurrently(conf, host, fake):
    c = make(conf, host, fake)
    jobs = [(IQN_A, n, udev_of(1 + n)) for n in range(4)] + [
        (IQN_B, n, udev_of(10 + n)) for n in range(4)
    ]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda j: c.connect_volume(props(lun=j[1], iqn=j[0])), jobs))
    assert [r["scsi_wwn"] for r in results] == [j[2] for j in jobs]
    assert len({r["path"] for r in results}) == 8
    assert fake.count("login") == 2
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda jr: c.disconnect_volume(props(lun=jr[0][1], iqn=jr[0][0]), jr[1]),
                zip(jobs, results, strict=True),
            )
        )
    assert fake.state() == EMPTY


def test_attaches_of_two_luns_of_one_target_scan_at_once(conf, host, fake):
    """The target lock is shared by attaches: the scan of one LUN does not wait for
    another LUN's (the kernel orders the scans of one SCSI host itself)."""
    import threading

    both_scanning = threading.Barrier(2, timeout=3)
    real_scan = fake.scan_lun

    def scan_lun(host_no, channel, target, lun):
        both_scanning.wait()  # broken (an error) unless the other scan runs meanwhile
        real_scan(host_no, channel, target, lun)

    fake.scan_lun = scan_lun
    c = make(conf, host, fake)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        infos = list(pool.map(lambda lun: c.connect_volume(props(lun=lun)), (0, 1)))
    assert [i["scsi_wwn"] for i in infos] == [udev_of(1), udev_of(2)]
    assert fake.count("login") == 1
    for lun, info in enumerate(infos):
        c.disconnect_volume(props(lun=lun), info)
    assert fake.state() == EMPTY


def test_a_logout_waits_for_an_attach_scanning_on_its_session(conf, host, fake):
    """The last detach of a session's LUN deletes it while another volume's attach scans
    on that session: the logout (exclusive) waits for the scan and then keeps the session."""
    import threading

    c = make(conf, host, fake)
    first = c.connect_volume(props(lun=0))
    deleted = threading.Event()
    real_delete, real_scan = fake.delete_device, fake.scan_lun

    def delete_device(hctl):
        real_delete(hctl)
        deleted.set()

    def scan_lun(host_no, channel, target, lun):
        deleted.wait(2)  # the detach gets as far as it can meanwhile
        time.sleep(0.2)
        real_scan(host_no, channel, target, lun)

    fake.delete_device, fake.scan_lun = delete_device, scan_lun
    attach = _run(lambda: c.connect_volume(props(lun=1)))
    c.disconnect_volume(props(lun=0), first)
    second = attach.result(5)
    assert fake.count("logout") == 0
    assert fake.state()["devices"] == [os.path.basename(second["path"])]
    c.disconnect_volume(props(lun=1), second)
    assert fake.count("logout") == 1 and fake.state() == EMPTY


def test_only_the_last_detach_of_a_session_takes_its_exclusive_lock(conf, host, fake):
    """Detaches that leave LUNs on the session do not queue for its exclusive lock (only
    to find it still in use): the one that empties it takes it, and logs out."""
    from brick_agent import locking

    c = make(conf, host, fake)
    infos = [c.connect_volume(props(lun=lun)) for lun in range(3)]
    lock = locking.target_rw_lock(
        "iscsi", locking.iscsi_target_key(P1, IQN_A), lock_path=conf.brick_agent.lock_path
    )
    before = lock.writes
    for lun in (0, 1):
        c.disconnect_volume(props(lun=lun), infos[lun])
    assert lock.writes == before and fake.count("logout") == 0
    c.disconnect_volume(props(lun=2), infos[2])
    assert lock.writes == before + 1 and fake.count("logout") == 1
    assert fake.state() == EMPTY


# ---------------------------------------------------------------- misc contract
def test_initiator_name(tmp_path):
    from brick_agent.host.roots import HostRoots

    roots = HostRoots.under(str(tmp_path))
    assert initiator_name(roots) is None
    (tmp_path / "etc" / "iscsi").mkdir(parents=True)
    (tmp_path / "etc" / "iscsi" / "initiatorname.iscsi").write_text(
        "## comment\n#InitiatorName=iqn.wrong\nInitiatorName=iqn.1993-08.org.debian:01:abc\n"
    )
    assert initiator_name(roots) == "iqn.1993-08.org.debian:01:abc"


def test_factory_builds_iscsi_and_iser(conf, host, fake):
    c = factory("ISCSI", None, conf=conf, roots=host.roots, actions=fake)
    assert isinstance(c, ISCSIConnector) and c.iface == "default"
    c = factory("ISER", None, conf=conf, roots=host.roots, actions=fake)
    assert c.iface == "iser"


def test_multipath_map_built_by_multipathd_needs_no_explicit_add(conf, host, fake):
    fake.auto_map = True  # multipathd reacts to the paths' uevents by itself
    c = make(conf, host, fake, use_multipath=True)
    info = c.connect_volume(mp_props(lun=0))
    assert info["multipath_id"] == udev_of(1)
    assert fake.count("multipath_add") == 0
    c.disconnect_volume(mp_props(lun=0), info)
    assert fake.state() == EMPTY


def test_a_session_whose_connection_is_down_does_not_break_attach(conf, host, fake, monkeypatch):
    """Reading a down connection's current 'address' fails with ENOTCONN on a real kernel."""
    import errno
    import os

    c = make(conf, host, fake)
    c.connect_volume(props(lun=0, iqn=IQN_B))  # another session, soon "down"
    real_read = os.read
    refused = []

    def kernel_read(fd, n):  # what the kernel does on reading those attributes
        path = os.readlink(f"/proc/self/fd/{fd}")
        if "connection1:0" in path and path.endswith(("/address", "/port")):
            refused.append(path)
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", kernel_read)
    info = c.connect_volume(props(lun=1))
    assert info["scsi_wwn"] == udev_of(2)
    assert len(c.get_all_available_volumes()) == 2
    assert refused  # the down connection's attributes were read, and refused


def test_map_briefly_in_use_is_retried_then_removed(conf, host, fake):
    c = make(conf, host, fake, use_multipath=True)
    info = c.connect_volume(mp_props(lun=0))
    fake.fail_map_remove = 2  # udev still probing the fresh map
    c.disconnect_volume(mp_props(lun=0), info)
    assert fake.count("multipath_remove") == 3
    assert fake.state() == EMPTY


def test_map_stuck_in_use_stops_detach_unless_forced(conf, host, fake):
    c = make(conf, host, fake, use_multipath=True)
    info = c.connect_volume(mp_props(lun=0))
    fake.fail_map_remove = -1
    with pytest.raises(Exception, match="map in use"):
        c.disconnect_volume(mp_props(lun=0), info)
    assert len(fake.state()["devices"]) == 2  # paths untouched without force
    with pytest.raises(LeftoversRemain) as err:
        c.disconnect_volume(mp_props(lun=0), info, force=True)
    assert any("map removal failed" in item for item in err.value.leftovers)


def test_portal_given_by_host_name_matches_the_sessions_ip(conf, host, fake, array):
    array.add(
        "iqn.2003-01.org.linux-iscsi.lab:named", ["127.0.0.1:3261"], {0: FakeLun(wwid_of(60))}
    )
    c = make(conf, host, fake)
    p = props(lun=0, iqn="iqn.2003-01.org.linux-iscsi.lab:named", portal="localhost:3261")
    fake_login = fake.login

    def login(node, prepared=False):  # iscsiadm resolves the name; the kernel shows the IP
        fake_login(type(node)(**{**node.__dict__, "portal": "127.0.0.1:3261"}))

    fake.login = login
    info = c.connect_volume(p)
    assert info["scsi_wwn"] == udev_of(60)
    c.connect_volume(p)
    assert fake.count("login") == 1


# ---------------------------------------------------------------- failure latency (issue 8)
class FakeClock:
    """Monotonic time that only moves when the code under test sleeps (or a fake acts)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def clocked(conf, host, fake, clock, **kw):
    def watch():
        return DeviceWatch(
            roots=host.roots, use_netlink=False, poll_interval=0.25, sleep=clock.sleep
        )

    return ISCSIConnector(
        conf=conf, roots=host.roots, actions=fake, watch_factory=watch, clock=clock, **kw
    )


def _slow_logouts(fake, clock, seconds: float) -> list[tuple[float, float | None]]:
    """Make every logout of ``fake`` take ``seconds`` of ``clock``; the (start, timeout)
    of each logout is recorded in the returned list."""
    logouts: list[tuple[float, float | None]] = []
    real_logout = fake.logout

    def slow_logout(portal, iqn, iface, timeout=None):
        logouts.append((clock.now, timeout))
        clock.now += seconds
        real_logout(portal, iqn, iface, timeout)

    fake.logout = slow_logout
    return logouts


def test_missing_lun_error_and_its_undo_end_within_the_configured_deadline(conf, host, fake):
    conf.set_override("device_wait_timeout", 30.0, group="brick_agent")
    clock = FakeClock()
    start = clock.now
    logouts = _slow_logouts(fake, clock, 2.0)  # the lab's logout, slowed down
    c = clocked(conf, host, fake, clock)
    with pytest.raises(DeviceNotFound, match="LUN 7"):
        c.connect_volume(props(lun=7))
    assert clock.now - start <= 30.0  # raised by the deadline, undo included
    assert fake.state() == EMPTY  # ... and the undo was done
    [(at, timeout)] = logouts
    assert timeout is not None and at + timeout <= start + 30.0


def test_the_privileged_daemons_first_start_is_not_charged_to_the_device_wait(conf, host, fake):
    """Nova as its service user starts the daemon through sudo and rootwrap: 15 s in the
    lab, inside an 18 s attach deadline (CI, 2026-12-07).  The start comes before the
    deadline: an attach whose own steps fit still succeeds."""
    conf.set_override("device_wait_timeout", 18.0, group="brick_agent")
    clock = FakeClock()

    def slow_start():
        fake.daemon_starts += 1
        clock.now += 30.0  # longer than the whole deadline

    fake.start_daemon = slow_start
    c = clocked(conf, host, fake, clock)
    info = c.connect_volume(props(lun=0))
    assert info["scsi_wwn"] == udev_of(1)
    assert fake.daemon_starts == 1
    c.disconnect_volume(props(lun=0), info)
    assert fake.daemon_starts == 2  # asked again: a no-op once it runs
    assert fake.state() == EMPTY


def test_a_hung_undo_is_cut_at_the_deadline(conf, host, fake):
    from brick_agent.errors import CommandFailed

    conf.set_override("device_wait_timeout", 30.0, group="brick_agent")
    clock = FakeClock()
    start = clock.now

    def hung_logout(portal, iqn, iface, timeout=None):  # iscsiadm killed at its timeout
        assert timeout is not None
        clock.now += timeout
        raise CommandFailed(["iscsiadm", "--logout"], -9, "timed out")

    fake.logout = hung_logout
    c = clocked(conf, host, fake, clock)
    with pytest.raises(DeviceNotFound, match="LUN 7"):  # the attach's error, not the undo's
        c.connect_volume(props(lun=7))
    assert clock.now - start <= 30.0


def test_short_deadline_keeps_enough_for_a_loaded_logout(conf, host, fake):
    """A 4 s deadline keeps 1.5 s for the undo (not 0.4 s): a logout slowed to 1 s by a
    loaded host still ends inside the deadline and leaves no session (seen in CI)."""
    conf.set_override("device_wait_timeout", 4.0, group="brick_agent")
    clock = FakeClock()
    start = clock.now
    logouts = _slow_logouts(fake, clock, 1.0)
    c = clocked(conf, host, fake, clock)
    with pytest.raises(DeviceNotFound, match="LUN 7"):
        c.connect_volume(props(lun=7))
    assert fake.state() == EMPTY
    assert clock.now - start <= 4.0
    assert all(timeout >= 1.0 for _, timeout in logouts)


def test_undo_logs_out_even_when_the_deadline_is_spent(conf, host, fake):
    """An undo that starts after the deadline still gets UNDO_LOGOUT_MIN to log out:
    a late error is better than a session left behind."""
    from brick_agent.connectors.iscsi.sessions import UNDO_LOGOUT_MIN

    conf.set_override("device_wait_timeout", 4.0, group="brick_agent")
    clock = FakeClock()
    timeouts = []
    real_logout, real_scan = fake.logout, fake.scan_lun

    def logout(portal, iqn, iface, timeout=None):
        timeouts.append(timeout)
        real_logout(portal, iqn, iface, timeout)

    def slow_scan(*a, **kw):  # the scan eats the whole deadline
        clock.now += 10.0
        return real_scan(*a, **kw)

    fake.logout, fake.scan_lun = logout, slow_scan
    c = clocked(conf, host, fake, clock)
    with pytest.raises(DeviceNotFound):
        c.connect_volume(props(lun=7))
    assert fake.state() == EMPTY
    assert timeouts and all(t >= UNDO_LOGOUT_MIN for t in timeouts)


# ---------------------------------------------------------------- concurrent attaches of one volume
def _run(fn):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(fn)
    pool.shutdown(wait=False)
    return fut


def test_failed_attach_keeps_the_device_a_concurrent_attach_returned(conf, host, fake):
    """A scans the LUN, B reuses it and returns it, then A fails: A's undo must not delete it."""
    import threading

    fake.multipathd = False
    a_found_device = threading.Event()
    b_returned = threading.Event()

    def multipathd_running():  # A, between its wait and its result
        a_found_device.set()
        assert b_returned.wait(5)
        return False

    fake.multipathd_running = multipathd_running
    a_conn = make(conf, host, fake, use_multipath=True)
    b_conn = make(conf, host, fake)
    a = _run(
        lambda: a_conn.connect_volume(
            mp_props(lun=0, portals=(P1,), iqns=(IQN_A,), enforce_multipath=True)
        )
    )
    assert a_found_device.wait(5)
    try:
        info = b_conn.connect_volume(props(lun=0))
    finally:
        b_returned.set()
    with pytest.raises(NotSupported):
        a.result(5)
    assert [e for e in fake.log if e[0] == "scan"] == [("scan", 10, 0, 0, 0)]  # A scanned
    assert fake.count("delete") == 0 and fake.count("logout") == 0
    assert os.path.exists(info["path"]) and fake.state()["devices"] == ["sda"]
    b_conn.disconnect_volume(props(lun=0), info)
    assert fake.state() == EMPTY


def test_failed_attach_keeps_the_device_a_concurrent_attach_is_still_using(conf, host, fake):
    """B found A's LUN and is waiting for it to be ready when A fails: B still gets it."""
    import threading

    fake.multipathd = False
    b_waiting = threading.Event()
    a_failed = threading.Event()

    class BlockedWatch(DeviceWatch):  # B, after it found (and claimed) the LUN A scanned
        def wait_for(self, predicate, deadline, what="device"):
            b_waiting.set()
            assert a_failed.wait(5)
            return super().wait_for(predicate, deadline, what)

    a_found_device = threading.Event()

    def multipathd_running():  # A, once B holds the LUN
        a_found_device.set()
        assert b_waiting.wait(5)
        return False

    fake.multipathd_running = multipathd_running
    a_conn = make(conf, host, fake, use_multipath=True)
    b_conn = ISCSIConnector(
        conf=conf,
        roots=host.roots,
        actions=fake,
        watch_factory=lambda: BlockedWatch(
            roots=host.roots, use_netlink=False, poll_interval=0.005
        ),
    )
    a = _run(
        lambda: a_conn.connect_volume(
            mp_props(lun=0, portals=(P1,), iqns=(IQN_A,), enforce_multipath=True)
        )
    )
    assert a_found_device.wait(5)
    b = _run(lambda: b_conn.connect_volume(props(lun=0)))
    try:
        with pytest.raises(NotSupported):
            a.result(5)
    finally:
        a_failed.set()
    info = b.result(5)
    assert fake.count("delete") == 0
    assert os.path.exists(info["path"]) and fake.state()["devices"] == ["sda"]
    b_conn.disconnect_volume(props(lun=0), info)
    assert fake.state() == EMPTY


def test_failed_attach_alone_still_deletes_what_it_scanned(conf, host, fake):
    fake.multipathd = False
    c = make(conf, host, fake, use_multipath=True)
    with pytest.raises(NotSupported):
        c.connect_volume(mp_props(lun=0, portals=(P1,), iqns=(IQN_A,), enforce_multipath=True))
    assert fake.count("delete") == 1 and fake.state() == EMPTY
    # a later failure of the same volume is not held back by the earlier attempt's claims
    with pytest.raises(NotSupported):
        c.connect_volume(mp_props(lun=0, portals=(P1,), iqns=(IQN_A,), enforce_multipath=True))
    assert fake.state() == EMPTY


# ---------------------------------------------------------------- detach waits for udev (issue 8)
def _dangling(host) -> list[str]:
    out = []
    for kind in ("by-path", "by-id"):
        d = host.p(f"dev/disk/{kind}")
        if d.is_dir():
            out += [p.name for p in d.iterdir() if p.is_symlink() and not p.exists()]
    return out


def test_concurrent_detaches_return_after_udev_removed_their_links(conf, host, fake):
    """udev removes a deleted disk's links late; detach waits for that on udev's "remove"
    events (the watch's polling safety net is far longer than the whole test)."""
    import time

    fake.enable_udev(remove_delay=0.15)

    def watch():
        return DeviceWatch(roots=host.roots, monitor=fake.monitor(), poll_interval=30.0)

    c = ISCSIConnector(conf=conf, roots=host.roots, actions=fake, watch_factory=watch)
    infos = [c.connect_volume(props(lun=n)) for n in range(4)]
    assert len(list(host.p("dev/disk/by-path").iterdir())) == 4
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: c.disconnect_volume(props(lun=n), infos[n]), range(4)))
    took = time.monotonic() - start
    assert _dangling(host) == []  # right after detach
    assert list(host.p("dev/disk/by-path").iterdir()) == []
    assert fake.state() == EMPTY
    assert took < 0.9, took  # woken by the events, not by the 1 s removal deadline


def test_failed_attach_undo_waits_for_udev_too(conf, host, fake):
    fake.enable_udev(remove_delay=0.1)
    fake.multipathd = False

    def watch():
        return DeviceWatch(roots=host.roots, monitor=fake.monitor(), poll_interval=30.0)

    c = ISCSIConnector(
        conf=conf, roots=host.roots, actions=fake, watch_factory=watch, use_multipath=True
    )
    with pytest.raises(NotSupported):
        c.connect_volume(mp_props(lun=0, portals=(P1,), iqns=(IQN_A,), enforce_multipath=True))
    assert _dangling(host) == [] and list(host.p("dev/disk/by-path").iterdir()) == []
