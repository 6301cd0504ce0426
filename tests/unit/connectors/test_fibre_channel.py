"""FibreChannelConnector on fake host trees mutated by a kernel-like fake
(test_fibre_channel_fakehost).

Two kinds of trees:

* the FCoE tree captured from the lab kernel (tests/unit/data/fcoe.tar.gz): a
  virtual HBA (no PCI parent, no by-path links), its target's own fc_host,
  LUNs 0 and 1 of one tcm_fc target;
* hand-built multi-HBA layouts: two PCI HBAs on two fabrics, an unrelated
  array sharing a fabric, real-HBA-like by-path names.
"""

from __future__ import annotations

import json
import os
import tarfile
import threading
from pathlib import Path

import pytest

from brick_agent import config
from brick_agent.connectors import factory
from brick_agent.connectors.fc.connector import FibreChannelConnector
from brick_agent.errors import (
    DeviceBusy,
    DeviceNotFound,
    InvalidConnectionProperties,
    LeftoversRemain,
    NotSupported,
    TargetUnreachable,
    VolumeIdentityMismatch,
)
from brick_agent.host.scsi import Hctl
from brick_agent.host.udev import DeviceWatch
from tests.unit.connectors.test_fibre_channel_fakehost import FakeFc, FakeLun, udev_of, wwid_of
from tests.unit.host.fakehost import FakeHost

DATA = Path(__file__).resolve().parents[1] / "data" / "fcoe.tar.gz"

# captured FCoE tree
CAP_INIT = "200002b1c9530002"  # host1, the initiator lport
CAP_TGT = "200002b1c9530001"  # the tcm_fc target port (host0 is its own lport)
CAP_LUN0 = "naa.60014053f70c904d8040712f93fd0598"
CAP_LUN1 = "naa.60014056b5b514820724c8142aac1d0b"

# hand-built layout
HBA5, HBA6 = "10000090fa000005", "10000090fa000006"
TA, TB, TX = "500a098100000a01", "500a098200000b01", "50060e8000000c01"


@pytest.fixture
def conf(tmp_path):
    c = config.new_conf()
    c.set_override("lock_path", str(tmp_path / "locks"), group="brick_agent")
    c.set_override("device_wait_timeout", 1.0, group="brick_agent")
    c.set_override("device_removal_timeout", 1.0, group="brick_agent")
    c.set_override("multipath_wait_timeout", 1.0, group="brick_agent")
    return c


def make(conf, host: FakeHost, fake: FakeFc, **kw) -> FibreChannelConnector:
    def watch():
        return DeviceWatch(roots=host.roots, use_netlink=False, poll_interval=0.005)

    conn = FibreChannelConnector(
        conf=conf, roots=host.roots, actions=fake, watch_factory=watch, **kw
    )
    conn.multipath_grace = 0.02
    return conn


# ---------------------------------------------------------------- captured FCoE tree
@pytest.fixture
def captured(tmp_path):
    base = tmp_path / "fcoe"
    with tarfile.open(DATA) as tar:
        tar.extractall(base, filter="tar")
    host = FakeHost(base)
    host._minor = 4096  # new device numbers must not collide with sda/sdb
    fake = FakeFc(
        host, {CAP_TGT: {0: FakeLun(CAP_LUN0, 65536), 1: FakeLun(CAP_LUN1, 65536)}}, udev=False
    )
    return host, fake


def cap_props(lun: int = 1, **extra) -> dict:
    return {"target_wwn": CAP_TGT, "target_lun": lun, **extra}


def test_captured_tree_is_what_the_tests_expect():
    with tarfile.open(DATA) as tar:
        meta = json.load(tar.extractfile("capture.json"))
    assert CAP_INIT in meta["note"] and CAP_TGT in meta["note"] and CAP_LUN1 in meta["note"]


def test_captured_available_volumes_are_fc_luns_with_identity(conf, captured):
    host, fake = captured
    vols = make(conf, host, fake).get_all_available_volumes()
    assert [
        (v["hba"], v["hba_wwpn"], v["target_wwpn"], v["lun"], v["hctl"], v["wwid"]) for v in vols
    ] == [
        ("host1", CAP_INIT, CAP_TGT, 0, "1:0:0:0", "3" + CAP_LUN0[4:]),
        ("host1", CAP_INIT, CAP_TGT, 1, "1:0:0:1", "3" + CAP_LUN1[4:]),
    ]
    assert [v["path"] for v in vols] == [host.roots.devfs("sda"), host.roots.devfs("sdb")]
    assert make(conf, host, fake).get_all_available_volumes(cap_props(target_wwn="5" * 16)) == []


def test_captured_attach_scans_exactly_that_lun_on_the_initiator_hba(conf, captured):
    host, fake = captured
    fake.delete_device(Hctl(1, 0, 0, 1))
    fake.log.clear()
    info = make(conf, host, fake).connect_volume(cap_props(1))
    assert fake.scans() == [(1, 0, 0, 1)]  # host1 only, c t l from the rport; no wildcard
    assert fake.hctls() == ["1:0:0:0", "1:0:0:1"]
    assert info["type"] == "block" and info["scsi_wwn"] == "3" + CAP_LUN1[4:]
    assert "multipath_id" not in info
    name = os.path.basename(info["path"])
    assert name == "sdb" and info["path"] == host.roots.devfs("sdb")  # no udev: the node


def test_captured_attach_of_present_lun_revalidates_instead_of_scanning(conf, captured):
    host, fake = captured
    info = make(conf, host, fake).connect_volume(cap_props(1))
    assert fake.scans() == [] and fake.ops("rescan") == [("1:0:0:1",)]
    # the captured tree has udev's by-id link: it is the stable path returned
    assert info["path"] == host.roots.devfs("disk", "by-id", "wwn-0x" + CAP_LUN1[4:])


def test_captured_detach_deletes_only_that_volume(conf, captured):
    host, fake = captured
    conn = make(conf, host, fake)
    info = {"type": "block", "path": host.roots.devfs("sdb"), "scsi_wwn": "3" + CAP_LUN1[4:]}
    conn.disconnect_volume(cap_props(1), info)
    assert fake.ops("delete") == [("1:0:0:1",)] and fake.ops("flush") == [("sdb",)]
    assert fake.hctls() == ["1:0:0:0"] and fake.devices() == ["sda"]
    conn.disconnect_volume(cap_props(1), info)  # idempotent
    assert fake.hctls() == ["1:0:0:0"]


def test_captured_wrong_wwpn_fails_within_deadline_and_leaves_nothing(conf, captured):
    conf.set_override("device_wait_timeout", 0.3, group="brick_agent")
    host, fake = captured
    fake.delete_device(Hctl(1, 0, 0, 1))
    before = fake.hctls()
    fake.log.clear()
    with pytest.raises(TargetUnreachable, match="2000aaaaaaaaaaaa"):
        make(conf, host, fake).connect_volume(cap_props(1, target_wwn="2000aaaaaaaaaaaa"))
    # target unknown everywhere: wildcard on both lports; what it pulled in is deleted again
    assert sorted(fake.scans()) == [(0, None, None, 1), (1, None, None, 1)]
    assert ("1:0:0:1",) in fake.ops("delete")
    assert fake.hctls() == before


def test_captured_wrong_wwpn_without_wildcard_scans_nothing(conf, captured):
    conf.set_override("device_wait_timeout", 0.3, group="brick_agent")
    host, fake = captured
    with pytest.raises(TargetUnreachable):
        make(conf, host, fake).connect_volume(
            cap_props(1, target_wwn="2000aaaaaaaaaaaa", enable_wildcard_scan=False)
        )
    assert fake.scans() == [] and fake.hctls() == ["1:0:0:0", "1:0:0:1"]


def test_captured_initiator_target_map_restricts_hbas(conf, captured):
    host, fake = captured
    fake.delete_device(Hctl(1, 0, 0, 1))
    conn = make(conf, host, fake)
    info = conn.connect_volume(cap_props(1, initiator_target_map={CAP_INIT: [CAP_TGT]}))
    assert info["scsi_wwn"] == "3" + CAP_LUN1[4:] and fake.scans() == [(1, 0, 0, 1)]
    with pytest.raises(TargetUnreachable, match="initiator_target_map"):
        conn.connect_volume(cap_props(1, initiator_target_map={"10000000c9000001": [CAP_TGT]}))


def test_captured_missing_lun_fails_and_leaves_nothing(conf, captured):
    conf.set_override("device_wait_timeout", 0.3, group="brick_agent")
    host, fake = captured
    with pytest.raises(DeviceNotFound):
        make(conf, host, fake).connect_volume(cap_props(7))
    assert fake.scans() == [(1, 0, 0, 7)] and fake.hctls() == ["1:0:0:0", "1:0:0:1"]


def test_captured_volume_paths_without_by_path_links(conf, captured):
    host, fake = captured
    assert make(conf, host, fake).get_volume_paths(cap_props(0)) == [host.roots.devfs("sda")]


# ---------------------------------------------------------------- hand-built multi-HBA layouts
@pytest.fixture
def fabrics(tmp_path):
    """host5 (PCI 0000:05:00.0) sees TA (target id 0) and TX (1); host6 (0000:06:00.0) sees
    TB (3)."""
    h = FakeHost(tmp_path / "host")
    d5 = h.fc_host(
        5,
        "0x" + HBA5,
        "0x20000090fa000005",
        parent="sys/devices/pci0000:00/0000:00:03.0/0000:05:00.0",
    )
    d6 = h.fc_host(
        6,
        "0x" + HBA6,
        "0x20000090fa000006",
        parent="sys/devices/pci0000:00/0000:00:04.0/0000:06:00.0",
    )
    h.rport(d5, 5, 0, 2, "0x" + TA, "0x500a098000000a00", scsi_target_id=0)
    h.rport(d5, 5, 0, 3, "0x" + TX, "0x50060e8000000c00", scsi_target_id=1)
    h.rport(
        d5,
        5,
        0,
        4,
        "0x21000024ff000009",
        "0x20000024ff000009",
        roles="FCP Initiator",
        scsi_target_id=-1,
    )
    h.rport(d6, 6, 0, 1, "0x" + TB, "0x500a098000000a00", scsi_target_id=3)
    array = {
        TA: {1: FakeLun(wwid_of(1)), 2: FakeLun(wwid_of(2))},
        TB: {1: FakeLun(wwid_of(1)), 2: FakeLun(wwid_of(2))},
        TX: {1: FakeLun(wwid_of(9))},
    }
    return h, FakeFc(h, array)


def two(lun: int = 1, **extra) -> dict:
    return {"target_wwns": [TA, TB], "target_lun": lun, **extra}


def test_multipath_attach_scans_each_fabric_narrowly_and_builds_one_map(conf, fabrics):
    h, fake = fabrics
    fake.scan_lun(5, 0, 1, 1)  # the other array's LUN 1 is already there
    fake.log.clear()
    conn = make(conf, h, fake, use_multipath=True)
    info = conn.connect_volume(two(1))
    assert sorted(fake.scans()) == [(5, 0, 0, 1), (6, 0, 3, 1)]
    [m] = fake.maps()
    assert info == {
        "type": "block",
        "scsi_wwn": udev_of(1),
        "multipath_id": udev_of(1),
        "path": h.roots.devfs("disk", "by-id", f"dm-uuid-mpath-{udev_of(1)}"),
    }
    assert sorted(fake.ops("multipath_add")[0][1]) == ["sdb", "sdc"]
    assert sorted(conn.get_volume_paths(two(1))) == [
        h.roots.devfs("disk", "by-path", f"pci-0000:05:00.0-fc-0x{TA}-lun-1"),
        h.roots.devfs("disk", "by-path", f"pci-0000:06:00.0-fc-0x{TB}-lun-1"),
    ]
    conn.disconnect_volume(two(1), info)
    assert fake.maps() == [] and fake.hctls() == ["5:0:1:1"]  # TX's LUN untouched
    assert fake.ops("flush") == [("dm-0",)] and fake.ops("multipath_forget") == [(udev_of(1),)]


def test_single_path_attach_returns_the_wwn_link(conf, fabrics):
    h, fake = fabrics
    info = make(conf, h, fake).connect_volume({"target_wwn": TA, "target_lun": 2})
    assert fake.scans() == [(5, 0, 0, 2)]
    assert info == {
        "type": "block",
        "scsi_wwn": udev_of(2),
        "path": h.roots.devfs("disk", "by-id", "wwn-0x" + wwid_of(2)[4:]),
    }


def test_initiator_target_map_scans_only_the_mapped_hba(conf, fabrics):
    h, fake = fabrics
    info = make(conf, h, fake).connect_volume(two(1, initiator_target_map={HBA5: [TA]}))
    assert fake.scans() == [(5, 0, 0, 1)] and info["scsi_wwn"] == udev_of(1)
    assert fake.hctls() == ["5:0:0:1"]


def test_paths_with_different_wwids_are_rejected_and_undone(conf, fabrics):
    h, fake = fabrics
    fake.array[TB][1] = FakeLun(wwid_of(77))  # fabric B exports another volume at LUN 1
    with pytest.raises(VolumeIdentityMismatch):
        make(conf, h, fake, use_multipath=True).connect_volume(two(1))
    assert fake.hctls() == [] and fake.maps() == []


def test_no_wildcard_when_one_target_is_known(conf, fabrics):
    h, fake = fabrics
    props = {"target_wwns": [TA, "500a0981ffffffff"], "target_lun": 1}
    info = make(conf, h, fake).connect_volume(props)
    assert fake.scans() == [(5, 0, 0, 1)] and info["scsi_wwn"] == udev_of(1)


def test_wildcard_keeps_our_lun_and_deletes_other_arrays_luns(conf, fabrics):
    h, fake = fabrics
    # TA is logged in but the transport has no scsi_target_id yet when the plan is made
    rport = h.p("sys/class/fc_remote_ports/rport-5:0-2/scsi_target_id")
    rport.write_text("-1\n")
    os.unlink(h.p("sys/class/fc_transport/target5:0:0"))
    orig = fake.scan_lun

    def scan(host, c, t, lun):
        rport.write_text("0\n")  # roles settle before the scan runs
        orig(host, c, t, lun)

    fake.scan_lun = scan
    info = make(conf, h, fake).connect_volume({"target_wwn": TA, "target_lun": 1})
    assert (5, None, None, 1) in fake.scans()
    assert info["scsi_wwn"] == udev_of(1)
    assert fake.hctls() == ["5:0:0:1"]  # TX's LUN 1 (5:0:1:1) pulled in, then deleted


def test_rport_logging_in_during_the_wait_is_scanned(conf, fabrics):
    h, fake = fabrics
    late = "500a0983000000d1"
    fake.array[late] = {4: FakeLun(wwid_of(4))}

    def login():
        h.rport(
            h.p("sys/class/fc_host/host6").resolve().parents[1].relative_to(h.base).as_posix(),
            6,
            0,
            7,
            "0x" + late,
            "0x500a098300000000",
            scsi_target_id=5,
        )

    timer = threading.Timer(0.1, login)
    timer.start()
    try:
        info = make(conf, h, fake).connect_volume(
            {"target_wwn": late, "target_lun": 4, "enable_wildcard_scan": False}
        )
    finally:
        timer.join()
    assert fake.scans() == [(6, 0, 5, 4)] and info["scsi_wwn"] == udev_of(4)


def test_reused_lun_with_new_identity_is_replaced(conf, fabrics):
    h, fake = fabrics
    fake.scan_lun(5, 0, 0, 1)
    fake.array[TA][1] = FakeLun(wwid_of(55))  # LUN 1 now carries another volume
    fake.log.clear()
    info = make(conf, h, fake).connect_volume({"target_wwn": TA, "target_lun": 1})
    assert info["scsi_wwn"] == udev_of(55)
    assert fake.ops("delete") == [("5:0:0:1",)] and fake.scans() == [(5, 0, 0, 1)]


def test_sam2_addressing_scans_the_flat_lun(conf, fabrics):
    h, fake = fabrics
    from brick_agent.properties.common import scsi_lun

    want = scsi_lun(300, "SAM2")
    fake.array[TA][want] = FakeLun(wwid_of(30))
    info = make(conf, h, fake).connect_volume(
        {"target_wwn": TA, "target_lun": 300, "addressing_mode": "SAM2"}
    )
    assert fake.scans() == [(5, 0, 0, want)] and info["scsi_wwn"] == udev_of(30)


def test_enforced_multipath_without_multipathd_fails_and_undoes(conf, fabrics):
    h, fake = fabrics
    fake.multipathd = False
    conn = make(conf, h, fake, use_multipath=True)
    with pytest.raises(NotSupported):
        conn.connect_volume(two(1, enforce_multipath=True))
    assert fake.hctls() == []
    info = conn.connect_volume(two(1))  # not enforced: one path, no map
    assert "multipath_id" not in info and fake.maps() == []


def test_detach_leaves_a_device_whose_wwid_is_not_the_volumes(conf, fabrics):
    h, fake = fabrics
    conn = make(conf, h, fake)
    info = conn.connect_volume({"target_wwn": TA, "target_lun": 1})
    # the address now holds another volume than the one device_info names
    conn.disconnect_volume({"target_wwn": TA, "target_lun": 1}, dict(info, scsi_wwn=udev_of(99)))
    assert fake.hctls() == ["5:0:0:1"] and fake.ops("delete") == [] and fake.ops("flush") == []


def test_detach_flush_failure_busy_or_forced_leftovers(conf, fabrics):
    h, fake = fabrics
    conn = make(conf, h, fake)
    props = {"target_wwn": TA, "target_lun": 1}
    info = conn.connect_volume(props)
    name = os.path.basename(os.path.realpath(info["path"]))
    fake.fail_flush.add(name)
    with pytest.raises(DeviceBusy):
        conn.disconnect_volume(props, info)
    assert fake.hctls() == ["5:0:0:1"]
    with pytest.raises(LeftoversRemain) as err:
        conn.disconnect_volume(props, info, force=True)
    assert "flush failed" in str(err.value) and fake.hctls() == []
    conn.disconnect_volume(props, info, force=True, ignore_errors=True)


def test_extend_rescans_paths_and_resizes_the_map(conf, fabrics):
    h, fake = fabrics
    conn = make(conf, h, fake, use_multipath=True)
    conn.connect_volume(two(1))
    fake.array[TA][1].sectors = fake.array[TB][1].sectors = 8192
    assert conn.extend_volume(two(1)) == 8192 * 512
    assert sorted(fake.ops("rescan")) == [("5:0:0:1",), ("6:0:3:1",)]
    assert fake.ops("multipath_resize")


def test_available_volumes_are_fc_only(conf, fabrics):
    h, fake = fabrics
    h.scsi_host(2, "iscsi_tcp")
    h.scsi_disk("sys/devices/platform/host2/session1", "2:0:0:0", "sdz", wwid=wwid_of(40))
    conn = make(conf, h, fake)
    conn.connect_volume({"target_wwn": TB, "target_lun": 2})
    vols = conn.get_all_available_volumes()
    assert [(v["hba_wwpn"], v["target_wwpn"], v["lun"], v["wwid"]) for v in vols] == [
        (HBA6, TB, 2, udev_of(2))
    ]


def test_offline_hba_is_not_used(conf, fabrics):
    h, fake = fabrics
    h.p("sys/class/fc_host/host6/port_state").write_text("Linkdown\n")
    info = make(conf, h, fake, use_multipath=True).connect_volume(two(1))
    assert fake.scans() == [(5, 0, 0, 1)] and info["multipath_id"] == udev_of(1)


def test_invalid_properties_run_nothing(conf, fabrics):
    h, fake = fabrics
    with pytest.raises(InvalidConnectionProperties):
        make(conf, h, fake).connect_volume({"target_wwn": "nope", "target_lun": 1})
    assert fake.log == []


def test_factory_and_caller_dict_untouched(conf, fabrics):
    h, fake = fabrics
    assert isinstance(factory("FC", conf=conf, roots=h.roots), FibreChannelConnector)
    props = {"target_wwn": TA.upper(), "target_lun": 1}
    snapshot = json.dumps(props, sort_keys=True)
    make(conf, h, fake).connect_volume(props)
    assert json.dumps(props, sort_keys=True) == snapshot


def test_concurrent_attaches_of_two_luns(conf, fabrics):
    import concurrent.futures

    h, fake = fabrics
    conn = make(conf, h, fake)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(conn.connect_volume, [{"target_wwn": TA, "target_lun": n} for n in (1, 2)])
    assert {a["scsi_wwn"], b["scsi_wwn"]} == {udev_of(1), udev_of(2)}
    assert fake.hctls() == ["5:0:0:1", "5:0:0:2"]


def test_map_built_by_multipathd_itself_is_used_without_poking_it(conf, fabrics):
    h, fake = fabrics
    fake.auto_map = True
    info = make(conf, h, fake, use_multipath=True).connect_volume(two(1))
    assert info["multipath_id"] == udev_of(1) and len(fake.maps()) == 1
    assert fake.ops("multipath_add") == []


def test_failed_attach_logs_what_the_host_saw(conf, captured, caplog):
    import logging

    host, fake = captured
    conf.set_override("device_wait_timeout", 0.2, group="brick_agent")
    caplog.set_level(logging.WARNING, logger="brick_agent")
    with pytest.raises(DeviceNotFound):
        make(conf, host, fake).connect_volume(cap_props(7))
    text = caplog.text
    assert "1:0:0:7" in text and CAP_TGT in text and "remote_ports" in text


def test_lean_target_lookup_agrees_with_the_host_view(conf, captured, fabrics):
    from brick_agent.connectors.fc import view as fc_view
    from brick_agent.host.fc import fc_targets_for

    host, _ = captured
    for h in (0, 1):
        for w in (CAP_TGT, CAP_INIT, "2000aaaaaaaaaaaa"):
            assert fc_view.target_ids(host.roots, h, w) == fc_targets_for(host.roots, h, w)
    h, _ = fabrics
    # a target only in fc_transport (rport lost its id) and one only as an rport
    h.p("sys/class/fc_remote_ports/rport-5:0-2/scsi_target_id").write_text("-1\n")
    os.unlink(h.p("sys/class/fc_transport/target6:0:3"))
    for n in (5, 6):
        for w in (TA, TB, TX):
            assert fc_view.target_ids(h.roots, n, w) == fc_targets_for(h.roots, n, w)
    assert fc_view.target_ids(h.roots, 5, TA) == [(0, 0)]
    assert fc_view.target_ids(h.roots, 6, TB) == [(0, 3)]


def test_map_holding_a_foreign_path_fails_the_attach_and_touches_no_foreign_device(
    conf, fabrics, caplog
):
    h, fake = fabrics
    fake.scan_lun(5, 0, 1, 1)  # TX's LUN 1: another volume
    orig = fake.multipath_add

    def add(wwid, devices):  # multipathd mixes in the wrong path
        orig(wwid, devices)
        m = fake.maps()[0]
        h.link(f"sys/devices/virtual/block/{m}/slaves/sda", "sys/class/block/sda")

    fake.multipath_add = add
    with pytest.raises(VolumeIdentityMismatch, match="holds sda"):
        make(conf, h, fake, use_multipath=True).connect_volume(two(1))
    # fail closed: the other volume's device stays; the mixed map (and the paths it holds)
    # is not torn down blindly but reported
    assert "5:0:1:1" in fake.hctls() and ("5:0:1:1",) not in fake.ops("delete")
    assert fake.ops("multipath_remove") == []
    assert "held by dm-0" in caplog.text
