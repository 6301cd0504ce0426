import os

from brick_agent.host import block
from brick_agent.host.scsi import Hctl

NAA = "naa.6001405c6b7f3d2e8a1b4c5d6e7f8091"


def _tree(fake):
    hdir = fake.scsi_host(2, "iscsi_tcp")
    fake.scsi_disk(f"{hdir}/session1", "2:0:0:1", "sdb", wwid=NAA, sectors=2097152)
    h3 = fake.scsi_host(3, "iscsi_tcp")
    fake.scsi_disk(f"{h3}/session2", "3:0:0:1", "sdc", wwid=NAA, sectors=2097152)
    fake.dm(0, "mpatha", "mpath-36001405c6b7f3d2e8a1b4c5d6e7f8091", ["sdb", "sdc"], sectors=2097152)
    fake.disk_link("by-id", "scsi-36001405c6b7f3d2e8a1b4c5d6e7f8091", "dm-0")
    fake.disk_link("by-id", "dm-uuid-mpath-36001405c6b7f3d2e8a1b4c5d6e7f8091", "dm-0")
    fake.disk_link("by-path", "ip-127.0.0.1:3260-iscsi-iqn.2003-01.org.linux-iscsi:t1-lun-1", "sdb")
    fake.disk_link("by-path", "ip-127.0.0.2:3260-iscsi-iqn.2003-01.org.linux-iscsi:t1-lun-1", "sdc")
    fake.disk_link("by-id", "wwn-0x6001405c6b7f3d2e8a1b4c5d6e7f8091", "dm-0")
    fake.disk_link("by-id", "scsi-gone", "sdz")  # dangling: device removed, link left behind


def test_scsi_disk(fake):
    _tree(fake)
    sdb = block.block_device(fake.roots, "sdb")
    assert sdb.devpath == fake.roots.devfs("sdb")
    assert sdb.size_bytes == 2097152 * 512
    assert sdb.ro is False
    assert sdb.hctl == Hctl(2, 0, 0, 1)
    assert sdb.wwid == NAA
    assert sdb.holders == ("dm-0",)
    assert sdb.slaves == ()
    assert sdb.dm_uuid is None and sdb.dm_name is None
    assert sdb.major_minor is not None and sdb.major_minor[0] == 8
    assert not sdb.is_dm
    assert block.block_device(fake.roots, "/dev/sdb") == sdb


def test_dm_device(fake):
    _tree(fake)
    dm = block.block_device(fake.roots, "dm-0")
    assert dm.is_dm
    assert dm.dm_name == "mpatha"
    assert dm.dm_uuid == "mpath-36001405c6b7f3d2e8a1b4c5d6e7f8091"
    assert dm.slaves == ("sdb", "sdc")
    assert dm.hctl is None and dm.wwid is None


def test_nvme_namespace_wwid_is_own_attribute(fake):
    sdir = fake.nvme_subsystem(0, "nqn.2014-08.org.example:vol")
    fake.nvme_ns(sdir, "nvme0n1", 1, wwid="uuid.0b0c9c3a-6c2e-4b6a-9f0e-5b1f0d9a2c11")
    dev = block.block_device(fake.roots, "nvme0n1")
    assert dev.wwid == "uuid.0b0c9c3a-6c2e-4b6a-9f0e-5b1f0d9a2c11"
    assert dev.hctl is None


def test_missing_and_vanished(fake):
    _tree(fake)
    assert block.block_device(fake.roots, "sdz") is None
    fake.remove_block("sdc")
    names = [d.name for d in block.block_devices(fake.roots)]
    assert "sdc" not in names and "sdb" in names and "dm-0" in names


def test_block_device_for_path(fake):
    _tree(fake)
    r = fake.roots
    assert (
        block.block_device_for_path(
            r, "/dev/disk/by-id/dm-uuid-mpath-36001405c6b7f3d2e8a1b4c5d6e7f8091"
        ).name
        == "dm-0"
    )
    assert block.block_device_for_path(r, "/dev/mapper/mpatha").name == "dm-0"
    by_path = r.devfs(
        "disk", "by-path", "ip-127.0.0.2:3260-iscsi-iqn.2003-01.org.linux-iscsi:t1-lun-1"
    )
    assert block.block_device_for_path(r, by_path).name == "sdc"
    assert block.block_device_for_path(r, "/dev/sdb").name == "sdb"
    assert block.block_device_for_path(r, "/dev/disk/by-id/scsi-gone") is None
    assert block.block_device_for_path(r, "/dev/nothing") is None


def test_block_device_for_path_absolute_link(fake):
    _tree(fake)
    os.symlink("/dev/sdb", fake.p("dev/abs-link"))
    assert block.block_device_for_path(fake.roots, "/dev/abs-link").name == "sdb"


def test_disk_links(fake):
    _tree(fake)
    links = block.disk_links(fake.roots)
    assert set(links) == {"dm-0", "sdb", "sdc"}
    assert sorted(os.path.basename(p) for p in links["dm-0"]) == [
        "dm-uuid-mpath-36001405c6b7f3d2e8a1b4c5d6e7f8091",
        "scsi-36001405c6b7f3d2e8a1b4c5d6e7f8091",
        "wwn-0x6001405c6b7f3d2e8a1b4c5d6e7f8091",
    ]
    assert links["sdb"] == (
        fake.roots.devfs(
            "disk", "by-path", "ip-127.0.0.1:3260-iscsi-iqn.2003-01.org.linux-iscsi:t1-lun-1"
        ),
    )
    assert block.links_for(fake.roots, "/dev/sdc")[0].endswith(
        "ip-127.0.0.2:3260-iscsi-iqn.2003-01.org.linux-iscsi:t1-lun-1"
    )
    assert block.disk_links(fake.roots, kinds=("by-path",)).keys() == {"sdb", "sdc"}


def test_name_for_devnum_and_holders(fake):
    _tree(fake)
    sdb = block.block_device(fake.roots, "sdb")
    assert block.name_for_devnum(fake.roots, *sdb.major_minor) == "sdb"
    assert block.name_for_devnum(fake.roots, 1, 999) is None
    assert block.holders_recursive(fake.roots, "sdb") == ("dm-0",)
