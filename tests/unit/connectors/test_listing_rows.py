"""The lean listing (get_all_available_volumes) returns the rows the full device reading gave.

Issue 17 §4: the listing reads two attributes per LUN and the maps once instead of a
full :class:`ScsiDevice` and a holders walk per disk.  These tests build hosts with
multipath maps, LUNs without a disk, unreadable WWIDs, partitions and an LVM holder,
and compare every row with the one built the old way (the reference below).
"""

from __future__ import annotations

from typing import Any

import pytest

from brick_agent import config
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_agent.host.iscsi import iscsi_sessions, session_devices
from brick_agent.host.multipath import map_for_slave
from brick_agent.host.scsi import disks_by_hctl, scsi_wwid_to_udev
from tests.unit.host.fakehost import FakeHost, sd_name


def _reference_rows(conn: ISCSIConnector, iqns: set[str] | None = None) -> list[dict[str, Any]]:
    """The rows as the full reading built them (ScsiDevice + map_for_slave per disk)."""
    roots = conn.roots
    out = []
    for s in iscsi_sessions(roots):
        if iqns is not None and s.target_iqn not in iqns:
            continue
        for d in session_devices(roots, s):
            mpath = map_for_slave(roots, d.name) if d.name else None
            out.append(
                {
                    "portal": s.portal,
                    "iqn": s.target_iqn,
                    "lun": d.hctl.lun,
                    "hctl": str(d.hctl),
                    "session": s.sid,
                    "wwid": scsi_wwid_to_udev(d.wwid) if d.wwid else None,
                    "path": roots.devfs(d.name) if d.name else None,
                    "multipath": roots.devfs(mpath.dm_name) if mpath else None,
                }
            )
    return out


def _iqn(i: int) -> str:
    return f"iqn.2010-10.org.test:t{i}"


def _busy_host(base) -> FakeHost:
    """3 sessions x 12 LUNs (LUN numbers not in name order), 2 multipath maps over 2
    sessions, an LVM map on a disk, a LUN without a disk, an unreadable WWID, partitions."""
    h = FakeHost(base)
    disk = 0
    for sess in range(3):
        sdir = h.iscsi_session(sess + 1, sess + 2, _iqn(sess % 2), f"192.0.2.{sess + 1}")
        for lun in (0, 1, 2, 3, 9, 10, 11, 100, 255, 256, 1000, 4):
            if lun == 4 and sess == 2:
                continue
            hctl = f"{sess + 2}:0:0:{lun}"
            if sess == 1 and lun == 9:  # a LUN not bound to sd: no disk
                h.scsi_disk(sdir, hctl, None, wwid=f"naa.6001405{lun:025x}")
                continue
            name = sd_name(disk)
            disk += 1
            ldir = h.scsi_disk(
                sdir,
                hctl,
                name,
                wwid=f"naa.6001405{lun:025x}",
                wwid_unreadable=(sess == 2 and lun == 10),
            )
            if lun == 11:
                h.block(f"{ldir}/block/{name}/{name}1")  # a partition: not a disk
    # sessions 1 and 2 reach the same target: LUNs 0 and 1 are multipath maps
    for number, lun in ((0, 0), (1, 1)):
        names = [sd_name(lun), sd_name(12 + lun)]
        h.dm(number, f"mpath{lun}", f"mpath-36001405{lun:025x}", names)
    h.dm(2, "vg-lv", "LVM-abc", [sd_name(2)])  # not a multipath map
    return h


@pytest.fixture
def conn(tmp_path):
    h = _busy_host(tmp_path / "h")
    conf = config.new_conf(overrides={"lock_path": str(tmp_path / "locks")})
    return ISCSIConnector(None, None, conf=conf, roots=h.roots)


def test_listing_has_the_rows_of_the_full_reading(conn):
    rows = conn.get_all_available_volumes()
    assert rows == _reference_rows(conn)
    assert len(rows) == 35
    assert sum(r["multipath"] is not None for r in rows) == 4  # 2 maps x 2 paths
    assert sum(r["path"] is None for r in rows) == 1  # the LUN without a disk
    assert sum(r["wwid"] is None for r in rows) == 1  # the unreadable WWID
    assert [r["lun"] for r in rows[:12]] == [0, 1, 2, 3, 4, 9, 10, 11, 100, 255, 256, 1000]


def test_listing_filtered_by_target_has_the_same_rows(conn):
    props = {"target_portal": "192.0.2.2:3260", "target_iqn": _iqn(1), "target_lun": 0}
    assert conn.get_all_available_volumes(props) == _reference_rows(conn, {_iqn(1)})
    assert {r["iqn"] for r in conn.get_all_available_volumes(props)} == {_iqn(1)}


def test_disks_by_hctl_names_each_disk_and_skips_partitions_and_maps(conn):
    disks = disks_by_hctl(conn.roots)
    assert disks["2:0:0:0"] == "sda" and "3:0:0:9" not in disks
    assert all(name.startswith("sd") and name[-1].isalpha() for name in disks.values())
    assert len(disks) == 34


def test_listing_skips_a_lun_that_vanished_during_the_walk(conn, monkeypatch):
    from brick_agent.host import scsi

    real = scsi.list_lun
    gone = "3:0:0:10"

    def vanishing(lun_dir, hctl, disks=None):
        if str(hctl) == gone:
            return real(lun_dir + "-removed", hctl, None)
        return real(lun_dir, hctl, disks)

    monkeypatch.setattr("brick_agent.host.iscsi.list_lun", vanishing)
    rows = conn.get_all_available_volumes()
    assert gone not in [r["hctl"] for r in rows] and len(rows) == 34
