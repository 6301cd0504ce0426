import pytest

from brick_agent.host import scsi
from brick_agent.host.scsi import Hctl

NAA = "naa.6001405c6b7f3d2e8a1b4c5d6e7f8091"
UDEV = "36001405c6b7f3d2e8a1b4c5d6e7f8091"


def test_hctl_parse_format_order():
    h = Hctl.parse("2:0:0:1")
    assert (h.host, h.channel, h.target, h.lun) == (2, 0, 0, 1)
    assert str(h) == "2:0:0:1"
    assert h.target_id == "2:0:0"
    assert Hctl.parse(" 10:0:3:255\n") == Hctl(10, 0, 3, 255)
    assert sorted([Hctl(2, 0, 0, 10), Hctl(2, 0, 0, 9)]) == [Hctl(2, 0, 0, 9), Hctl(2, 0, 0, 10)]
    for bad in ("2:0:0", "a:b:c:d", "target2:0:0", ""):
        with pytest.raises(ValueError):
            Hctl.parse(bad)
    assert Hctl.try_parse("block") is None
    assert Hctl.try_parse(None) is None


def test_wwid_udev_form():
    assert scsi.scsi_wwid_to_udev(NAA) == UDEV
    assert scsi.scsi_wwid_to_udev("NAA.6001405ABCDEF0123") == "36001405abcdef0123"
    assert scsi.scsi_wwid_to_udev("eui.0123456789abcdef") == "20123456789abcdef"
    assert scsi.scsi_wwid_to_udev("t10.LIO-ORG  vol1   disk") == "1LIO-ORG_vol1_disk"
    assert scsi.scsi_wwid_to_udev(UDEV) == UDEV


def test_wwid_candidates_cover_every_spelling():
    c = scsi.wwid_candidates(NAA)
    assert c[0] == NAA
    assert UDEV in c and NAA[4:] in c and "0x" + NAA[4:] in c
    # udev / multipath spelling leads to the same set
    assert set(scsi.wwid_candidates(UDEV)) == set(c)
    assert set(scsi.wwid_candidates("0x" + NAA[4:])) == set(c)
    eui = scsi.wwid_candidates("eui.0123456789abcdef")
    assert "20123456789abcdef" in eui and "0123456789abcdef" in eui
    assert scsi.wwid_candidates("") == ()


def test_same_wwid():
    assert scsi.same_wwid(NAA, UDEV)
    assert scsi.same_wwid(UDEV.upper(), NAA)
    assert not scsi.same_wwid(NAA, "36001405ffffffffffffffffffffffff")
    assert not scsi.same_wwid(None, NAA)
    assert scsi.same_wwid("t10.LIO-ORG vol", "1LIO-ORG_vol")


def _two_luns(fake):
    hdir = fake.scsi_host(2, "iscsi_tcp")
    fake.scsi_disk(f"{hdir}/session1", "2:0:0:1", "sdb", wwid=NAA)
    fake.scsi_disk(
        f"{hdir}/session1", "2:0:0:0", None, wwid_unreadable=True, vendor="LIO-ORG", model="ctrl"
    )
    h3 = fake.scsi_host(3, "scsi_debug")
    fake.scsi_disk(
        h3, "3:0:0:0", "sdc", wwid="naa.5000000000000001", vendor="Linux", model="scsi_debug"
    )
    return hdir


def test_scsi_hosts(fake):
    _two_luns(fake)
    hosts = scsi.scsi_hosts(fake.roots)
    assert [(h.number, h.proc_name) for h in hosts] == [(2, "iscsi_tcp"), (3, "scsi_debug")]
    assert hosts[0].scan_path == fake.roots.sysfs("class", "scsi_host", "host2", "scan")
    assert hosts[0].sysfs_path.endswith("/devices/platform/host2")
    assert scsi.scsi_host(fake.roots, 3).proc_name == "scsi_debug"
    assert scsi.scsi_host(fake.roots, 9) is None


def test_scsi_devices_read_kernel_attributes(fake):
    _two_luns(fake)
    devs = scsi.scsi_devices(fake.roots)
    assert [str(d.hctl) for d in devs] == ["2:0:0:0", "2:0:0:1", "3:0:0:0"]
    lun1 = devs[1]
    assert lun1.name == "sdb"
    assert lun1.wwid == NAA
    assert lun1.udev_wwid == UDEV
    assert lun1.vendor == "LIO-ORG" and lun1.model == "vol"  # padding stripped
    assert lun1.state == "running" and lun1.scsi_type == 0
    assert lun1.sysfs_path.endswith("/host2/session1/target2:0:0/2:0:0:1")
    lun0 = devs[0]
    assert lun0.name is None  # not bound to sd
    assert lun0.wwid is None  # unreadable wwid (ENXIO on LIO without VPD serial)
    assert lun0.wwid_candidates() == ()


def test_scsi_devices_host_filter_and_lookup(fake):
    _two_luns(fake)
    assert [str(d.hctl) for d in scsi.scsi_devices(fake.roots, host=3)] == ["3:0:0:0"]
    assert scsi.scsi_device(fake.roots, "2:0:0:1").name == "sdb"
    assert scsi.scsi_device(fake.roots, Hctl(3, 0, 0, 0)).name == "sdc"
    assert scsi.scsi_device(fake.roots, "4:0:0:0") is None
    assert scsi.scsi_device_by_name(fake.roots, "/dev/sdb").hctl == Hctl(2, 0, 0, 1)
    assert scsi.scsi_device_by_name(fake.roots, "sdz") is None


def test_class_view_only_tree(fake):
    """Trees that have /sys/class/scsi_device but no /sys/bus/scsi still work."""
    _two_luns(fake)
    import shutil

    shutil.rmtree(fake.p("sys/bus"))
    assert [str(d.hctl) for d in scsi.scsi_devices(fake.roots)] == ["2:0:0:0", "2:0:0:1", "3:0:0:0"]
    assert scsi.scsi_device(fake.roots, "2:0:0:1").wwid == NAA


def test_vanished_lun_is_skipped(fake):
    hdir = _two_luns(fake)
    import shutil

    shutil.rmtree(fake.p(f"{hdir}/session1/target2:0:0/2:0:0:1"))  # deleted mid-scan: links dangle
    assert [str(d.hctl) for d in scsi.scsi_devices(fake.roots)] == ["2:0:0:0", "3:0:0:0"]
    assert scsi.scsi_device(fake.roots, "2:0:0:1") is None


def test_hctl_of_path():
    assert scsi.hctl_of_path(
        "/sys/devices/platform/host2/session1/target2:0:0/2:0:0:1/block/sdb"
    ) == Hctl(2, 0, 0, 1)
    assert scsi.hctl_of_path("/sys/devices/virtual/block/dm-0") is None
    assert scsi.hctl_of_path(None) is None
