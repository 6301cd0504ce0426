import os

from brick_agent.host import multipath

WWID = "36001405c6b7f3d2e8a1b4c5d6e7f8091"


def _tree(fake):
    for host, sd in ((2, "sdb"), (3, "sdc"), (4, "sdd")):
        hdir = fake.scsi_host(host, "iscsi_tcp")
        fake.scsi_disk(f"{hdir}/session{host}", f"{host}:0:0:1", sd, wwid="naa." + WWID[1:])
    fake.dm(0, "mpatha", "mpath-" + WWID, ["sdb", "sdc"], sectors=4096, suspended=0)
    fake.dm(1, "vg-lv", "LVM-abcdef", ["sdd"])
    fake.dm(2, "mpatha1", "part1-mpath-" + WWID, [])


def test_maps_only_multipath(fake):
    _tree(fake)
    maps = multipath.multipath_maps(fake.roots)
    assert [m.dm_name for m in maps] == ["dm-0"]
    m = maps[0]
    assert m.name == "mpatha"
    assert m.uuid == "mpath-" + WWID and m.wwid == WWID
    assert m.slaves == ("sdb", "sdc")
    assert m.size_bytes == 4096 * 512
    assert m.suspended is False
    assert m.devpath == fake.roots.devfs("dm-0")
    assert m.mapper_path == fake.roots.devfs("mapper", "mpatha")


def test_lookups(fake):
    _tree(fake)
    r = fake.roots
    assert multipath.map_for_wwid(r, WWID).dm_name == "dm-0"
    assert multipath.map_for_wwid(r, "naa." + WWID[1:]).dm_name == "dm-0"
    assert multipath.map_for_wwid(r, "3600140500000000000000000000000ff") is None
    assert multipath.map_for_slave(r, "sdc").dm_name == "dm-0"
    assert multipath.map_for_slave(r, "/dev/sdb").dm_name == "dm-0"
    assert multipath.map_for_slave(r, "sdd") is None  # held by LVM, not multipath
    assert multipath.map_by_name(r, "mpatha").dm_name == "dm-0"
    assert multipath.map_by_name(r, "nope") is None


def test_wwids_file(fake):
    assert multipath.wwids_file_entries(fake.roots) == []
    fake.attr(
        "etc/multipath/wwids",
        "# Multipath wwids, Version : 1.0\n# NOTE: ...\n"
        f"/{WWID}/\n/3600140500000000000000000000000ff/\n",
    )
    assert multipath.wwids_file_entries(fake.roots) == [WWID, "3600140500000000000000000000000ff"]


def test_map_vanishing_mid_read(fake):
    _tree(fake)
    fake.remove_block("dm-0")
    assert multipath.multipath_maps(fake.roots) == []
    assert multipath.map_for_slave(fake.roots, "sdb") is None


def test_map_for_slave_trusts_the_holders_directory(fake, monkeypatch):
    """A path device whose (existing) holders directory names no map has none: the
    lookup must not list every dm device (that made discovery quadratic)."""
    _tree(fake)
    r = fake.roots
    holders = r.sysfs("class", "block", "sdb", "holders")
    for entry in os.listdir(holders):
        os.unlink(os.path.join(holders, entry))
    monkeypatch.setattr(
        multipath,
        "multipath_maps",
        lambda roots: (_ for _ in ()).throw(AssertionError("full scan")),
    )
    assert multipath.map_for_slave(r, "sdb") is None
    assert multipath.map_for_slave(r, "sdc").dm_name == "dm-0"
