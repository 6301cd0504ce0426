"""ScsiVolumeOps (transport-neutral SCSI volume steps) on a fake tree with the kernel-like fake."""

from __future__ import annotations

import os
import threading
import time

import pytest

from brick_agent.connectors.scsi.volume import ScsiVolumeOps, udev_wwid, wwn_link_name
from brick_agent.deadline import Deadline
from brick_agent.errors import (
    CommandFailed,
    DeviceBusy,
    DeviceNotFound,
    NotSupported,
    VolumeIdentityMismatch,
)
from brick_agent.host.scsi import Hctl, scsi_device
from brick_agent.host import udev
from brick_agent.host.udev import DeviceWatch
from tests.unit.connectors.test_fibre_channel_fakehost import FakeFc, FakeLun, udev_of, wwid_of
from tests.unit.host.fakehost import FakeHost

TA, TB = "500a098100000a01", "500a098200000b01"


@pytest.fixture
def env(tmp_path):
    h = FakeHost(tmp_path)
    d1 = h.fc_host(1, "0x1000000000000001", "0x2000000000000001")
    d2 = h.fc_host(
        2, "0x1000000000000002", "0x2000000000000002", parent="sys/devices/pci0000:00/0000:00:06.0"
    )
    h.rport(d1, 1, 0, 0, "0x" + TA, "0x5000000000000000", scsi_target_id=0)
    h.rport(d2, 2, 0, 0, "0x" + TB, "0x5000000000000000", scsi_target_id=0)
    fake = FakeFc(
        h,
        {
            TA: {1: FakeLun(wwid_of(1)), 2: FakeLun(wwid_of(2))},
            TB: {1: FakeLun(wwid_of(1)), 2: FakeLun(wwid_of(3))},
        },
    )
    ops = ScsiVolumeOps(
        h.roots,
        fake,
        lambda: DeviceWatch(roots=h.roots, use_netlink=False, poll_interval=0.005),
        multipath_wait_timeout=0.5,
        device_removal_timeout=0.5,
        multipath_grace=0.02,
    )
    return h, fake, ops


def dev(h, text):
    return scsi_device(h.roots, Hctl.parse(text))


def test_wwn_link_names():
    assert wwn_link_name("naa.60014053f70c904d") == "wwn-0x60014053f70c904d"
    assert (
        wwn_link_name("36001405abcdef0123456789abcdef012")
        == "wwn-0x6001405abcdef0123456789abcdef012"
    )
    assert wwn_link_name("t10.LIO-ORG vol") is None


def test_readiness_waits_for_udev_when_it_runs(env):
    h, fake, ops = env
    fake.udev = False  # the kernel made the disk, udev has not run yet
    fake.scan_lun(1, 0, 0, 1)
    assert ops.ready_at(Hctl(1, 0, 0, 1)) is None
    fake._udev_add("sda", wwid_of(1), "1:0:0:1", TA, "x")
    assert ops.ready_at(Hctl(1, 0, 0, 1)).name == "sda"
    ops.wait_for_udev = False
    assert ops.disk_ready(dev(h, "1:0:0:1")) is not None


def test_common_wwid_accepts_one_identity_and_rejects_two(env):
    h, fake, ops = env
    for host in (1, 2):
        fake.scan_lun(host, 0, 0, 1)
        fake.scan_lun(host, 0, 0, 2)
    assert ops.common_wwid([dev(h, "1:0:0:1"), dev(h, "2:0:0:1")]) == udev_of(1)
    with pytest.raises(VolumeIdentityMismatch, match="disagree"):
        ops.common_wwid([dev(h, "1:0:0:2"), dev(h, "2:0:0:2")])
    with pytest.raises(DeviceNotFound):
        ops.common_wwid([])


def test_device_without_wwid_is_refused(env):
    h, fake, ops = env
    h.scsi_disk("sys/devices/platform/host1/rport-1:0-0", "1:0:0:5", "sdq", wwid=None)
    with pytest.raises(VolumeIdentityMismatch, match="no WWID"):
        ops.require_wwid(dev(h, "1:0:0:5"))


def test_stable_paths(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    assert ops.stable_disk_path(dev(h, "1:0:0:1")) == h.roots.devfs(
        "disk", "by-id", "wwn-0x" + wwid_of(1)[4:]
    )
    fake.udev = False
    fake.scan_lun(1, 0, 0, 2)
    assert ops.stable_disk_path(dev(h, "1:0:0:2")) == h.roots.devfs("sdb")


def test_device_info_with_and_without_multipathd(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    fake.scan_lun(2, 0, 0, 1)
    devs = [dev(h, "1:0:0:1"), dev(h, "2:0:0:1")]
    info = ops.device_info(
        devs, udev_of(1), use_multipath=True, enforce_multipath=False, deadline=Deadline.after(1)
    )
    assert info["multipath_id"] == udev_of(1)
    assert info["path"].endswith(f"dm-uuid-mpath-{udev_of(1)}")
    fake.multipathd = False
    with pytest.raises(NotSupported):
        ops.device_info(
            devs, udev_of(1), use_multipath=True, enforce_multipath=True, deadline=Deadline.after(1)
        )
    single = ops.device_info(
        devs, udev_of(1), use_multipath=True, enforce_multipath=False, deadline=Deadline.after(1)
    )
    assert "multipath_id" not in single


def test_device_info_kernel_names_when_stable_paths_are_off(env):
    """iSCSI's output (os-brick's): /dev/sdX for one path, /dev/dm-N for the map."""
    h, fake, ops = env
    ops.stable_paths = False
    fake.scan_lun(1, 0, 0, 1)
    fake.scan_lun(2, 0, 0, 1)
    devs = [dev(h, "1:0:0:1"), dev(h, "2:0:0:1")]
    info = ops.device_info(
        devs, udev_of(1), use_multipath=True, enforce_multipath=False, deadline=Deadline.after(1)
    )
    assert info == {
        "type": "block",
        "path": h.roots.devfs("dm-0"),
        "scsi_wwn": udev_of(1),
        "multipath_id": udev_of(1),
    }
    single = ops.device_info(
        devs, udev_of(1), use_multipath=False, enforce_multipath=False, deadline=Deadline.after(1)
    )
    assert single == {"type": "block", "path": h.roots.devfs("sda"), "scsi_wwn": udev_of(1)}


def _fail_first(fake, name: str, times: int) -> list[int]:
    """Make ``fake.<name>`` fail ``times`` times ("in use"), then act; returns the call count."""
    real, calls = getattr(fake, name), [0]

    def flaky(*args):
        calls[0] += 1
        if calls[0] <= times:
            raise CommandFailed([name], 1, "map in use")
        return real(*args)

    setattr(fake, name, flaky)
    return calls


def test_remove_volume_retries_a_map_still_in_use(env):
    h, fake, ops = env
    ops.map_removal_timeout = 2.0
    fake.scan_lun(1, 0, 0, 1)
    fake.scan_lun(2, 0, 0, 1)
    fake.multipath_add(udev_of(1), ["sda", "sdb"])
    calls = _fail_first(fake, "multipath_remove", 2)
    ours, _ = ops.confirmed([dev(h, "1:0:0:1"), dev(h, "2:0:0:1")], udev_of(1), force=False)
    assert ops.remove_volume(ours, udev_of(1), {}, force=False) == []
    assert calls[0] == 3 and fake.maps() == [] and fake.hctls() == []
    assert fake.ops("multipath_forget") == [(udev_of(1),)]  # the wwids entry goes too


def test_remove_volume_reports_a_map_that_stays_in_use(env):
    h, fake, ops = env
    ops.map_removal_timeout = 0.2
    fake.scan_lun(1, 0, 0, 1)
    fake.multipath_add(udev_of(1), ["sda"])
    _fail_first(fake, "multipath_remove", 10**6)
    ours = [dev(h, "1:0:0:1")]
    with pytest.raises(CommandFailed):
        ops.remove_volume(ours, udev_of(1), {}, force=False)
    left = ops.remove_volume(ours, udev_of(1), {}, force=True)
    assert any("map removal failed" in x for x in left)


def test_extend_retries_the_resize_until_multipathd_accepts(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    fake.scan_lun(2, 0, 0, 1)
    fake.multipath_add(udev_of(1), ["sda", "sdb"])
    fake.array[TA][1].sectors = fake.array[TB][1].sectors = 8192
    calls = _fail_first(fake, "multipath_resize", 1)
    assert ops.extend([dev(h, "1:0:0:1"), dev(h, "2:0:0:1")], "vol") == 8192 * 512
    assert calls[0] == 2 and ops.block_size("dm-0") == 8192 * 512


def test_map_holding_a_foreign_path_is_refused(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    fake.scan_lun(2, 0, 0, 2)  # another volume (wwid 3)
    fake.multipath_add(udev_of(1), ["sda"])
    m = fake.maps()[0]
    h.link(f"sys/devices/virtual/block/{m}/slaves/sdb", "sys/class/block/sdb")
    with pytest.raises(VolumeIdentityMismatch, match="holds sdb"):
        ops.wait_for_map(udev_of(1), ["sda"], Deadline.after(0.5))


def test_revalidate_keeps_same_identity_and_drops_stale(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    assert ops.revalidate(dev(h, "1:0:0:1")).wwid == wwid_of(1)
    fake.array[TA][1] = FakeLun(wwid_of(9))
    assert ops.revalidate(dev(h, "1:0:0:1")) is None
    assert dev(h, "1:0:0:1") is None


def test_delete_created_spares_devices_held_by_a_shared_map(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    fake.scan_lun(2, 0, 0, 1)
    fake.multipath_add(udev_of(1), ["sda", "sdb"])
    left = ops.delete_created([Hctl(2, 0, 0, 1)])
    assert left and "held by" in left[0] and dev(h, "2:0:0:1") is not None


def test_expected_wwid_sources(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    d = dev(h, "1:0:0:1")
    assert ops.expected_wwid({"scsi_wwn": "3abc"}, [d]) == "3abc"
    assert ops.expected_wwid({"path": h.roots.devfs("sda")}, []) == udev_of(1)
    assert ops.expected_wwid({}, [d]) == udev_of(1)
    fake.scan_lun(1, 0, 0, 2)
    with pytest.raises(VolumeIdentityMismatch, match="refusing to guess"):
        ops.expected_wwid({}, [d, dev(h, "1:0:0:2")])


def test_remove_volume_flushes_removes_map_deletes_and_waits(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    fake.scan_lun(2, 0, 0, 1)
    fake.scan_lun(1, 0, 0, 2)
    fake.multipath_add(udev_of(1), ["sda", "sdb"])
    ours, notes = ops.confirmed(
        [dev(h, "1:0:0:1"), dev(h, "2:0:0:1"), dev(h, "1:0:0:2")], udev_of(1), force=False
    )
    assert [d.name for d in ours] == ["sda", "sdb"] and notes == []
    left = ops.remove_volume(ours, udev_of(1), {"path": h.roots.devfs("dm-0")}, force=False)
    assert left == [] and fake.ops("flush") == [("dm-0",)] and fake.maps() == []
    assert fake.hctls() == ["1:0:0:2"]


def test_remove_volume_flush_failure(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    fake.fail_flush.add("sda")
    with pytest.raises(DeviceBusy):
        ops.remove_volume([dev(h, "1:0:0:1")], udev_of(1), {}, force=False)
    left = ops.remove_volume([dev(h, "1:0:0:1")], udev_of(1), {}, force=True)
    assert any("flush failed" in x for x in left) and fake.hctls() == []


def test_extend_requires_equal_sizes(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    fake.scan_lun(2, 0, 0, 1)
    fake.array[TA][1].sectors = 4096
    with pytest.raises(Exception, match="disagree on the size"):
        ops.extend([dev(h, "1:0:0:1"), dev(h, "2:0:0:1")], "vol")
    fake.array[TB][1].sectors = 4096
    assert ops.extend([dev(h, "1:0:0:1"), dev(h, "2:0:0:1")], "vol") == 4096 * 512


def test_udev_wwid_helper(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    assert udev_wwid(dev(h, "1:0:0:1")) == udev_of(1)


def test_production_actions_and_the_fake_implement_scsi_actions():
    """The connector's production adapter must keep ScsiActions' signatures (a drift broke
    multipath_remove once); so must the fake the unit tests rely on."""
    import inspect

    from brick_agent.connectors.iscsi.actions import PrivilegedIscsiActions
    from brick_agent.connectors.scsi.actions import PrivilegedScsiActions
    from brick_agent.connectors.scsi.actions import ScsiActions
    from tests.unit.connectors.test_iscsi_fakehost import FakeIscsi

    names = [n for n, v in vars(ScsiActions).items() if callable(v) and not n.startswith("_")]
    assert "multipath_forget" in names and "scan_lun" in names
    for impl in (PrivilegedScsiActions, PrivilegedIscsiActions, FakeFc, FakeIscsi):
        for n in names:
            want = list(inspect.signature(getattr(ScsiActions, n)).parameters)
            got = list(inspect.signature(getattr(impl, n)).parameters)
            assert got == want, (impl.__name__, n, got, want)


def test_delete_created_removes_a_map_made_only_of_its_devices(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    fake.scan_lun(2, 0, 0, 1)
    fake.multipath_add(udev_of(1), ["sda", "sdb"])
    assert ops.delete_created([Hctl(1, 0, 0, 1), Hctl(2, 0, 0, 1)]) == []
    assert fake.maps() == [] and fake.hctls() == []
    assert fake.ops("multipath_forget") == [(udev_of(1),)]


def claim(h, link_name: str, devnum: str, node: str) -> str:
    """udev's claim of ``/dev/disk/by-id/<link_name>`` by device ``devnum`` (as udev 252
    keeps it: ``/run/udev/links/disk\\x2fby-id\\x2f<name>/b<M>:<m> -> <prio>:<node>``)."""
    stack = h.p("run/udev/links/disk\\x2fby-id\\x2f" + link_name)
    stack.mkdir(parents=True, exist_ok=True)
    (stack / ".lock").touch()
    entry = stack / f"b{devnum}"
    os.symlink(f"0:/dev/{node}", entry)
    return str(entry)


def test_stable_path_waits_until_a_removed_claimant_is_processed(env):
    """An earlier path of the same LUN is gone from the kernel but udev has not processed
    its removal: the wwn link may still be re-pointed or removed; wait for that first."""
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    d = dev(h, "1:0:0:1")
    name = wwn_link_name(d.wwid)
    devnum = open(h.p(f"sys/class/block/{d.name}/dev")).read().strip()
    claim(h, name, devnum, d.name)
    gone = claim(h, name, "8:240", "sdp")  # no /sys/dev/block/8:240: removal queued
    threading.Timer(0.1, os.unlink, [gone]).start()
    start = time.monotonic()
    path = ops.stable_disk_path(d, Deadline.after(5))
    assert path == h.roots.devfs("disk", "by-id", name)
    assert time.monotonic() - start >= 0.09


def test_stable_path_falls_back_to_the_kernel_name_when_claims_stay_pending(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    d = dev(h, "1:0:0:1")
    claim(h, wwn_link_name(d.wwid), "8:241", "sdq")  # never processed
    assert ops.stable_disk_path(d, Deadline.after(0.2)) == h.roots.devfs(d.name)
    # without a deadline (no waiting) the pending claim gives the kernel name at once
    assert ops.stable_disk_path(d) == h.roots.devfs(d.name)


def test_link_claims_settled_reads_udevs_claims(env):
    h, fake, ops = env
    fake.scan_lun(1, 0, 0, 1)
    d = dev(h, "1:0:0:1")
    link = h.roots.devfs("disk", "by-id", wwn_link_name(d.wwid))
    assert udev.link_claims_settled(h.roots, link)  # udev keeps no claims
    devnum = open(h.p(f"sys/class/block/{d.name}/dev")).read().strip()
    claim(h, wwn_link_name(d.wwid), devnum, d.name)
    assert udev.link_claims_settled(h.roots, link)  # the one claim is live
    os.unlink(h.p(f"run/udev/data/b{devnum}"))
    assert not udev.link_claims_settled(h.roots, link)  # being processed
