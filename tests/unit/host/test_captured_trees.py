"""Host views on sysfs/dev trees captured from the lab kernel (tests/unit/data/*.tar.gz).

Expected values come from each capture's ``capture.json`` note, which the
capture tool writes from what the *target* was configured with (IQN, portals,
the LUN WWIDs LIO derives from its serials, NVMe uuid/nguid, FCoE WWPNs), not
from sysfs: so these tests check our readers against an independent source.
"""

from __future__ import annotations

import os
import re


from brick_agent.host import block, fc, iscsi, multipath, nvme, scsi
from tests.unit.sysfs_trees import capture_note, extract_tree


def _wwids(note: str) -> list[str]:
    return re.findall(r"wwid (naa\.[0-9a-f]+)", note)


def test_iscsi_single(tmp_path):
    r = extract_tree("iscsi-single", tmp_path)
    note = capture_note(r)
    iqn = re.search(r"to (iqn\S+) at", note).group(1)
    (wwid,) = _wwids(note)
    size = int(re.search(r"\((\d+) bytes\)", note).group(1))

    (s,) = iscsi.iscsi_sessions(r)
    assert (s.target_iqn, s.portal_address, s.portal_port, s.tpgt) == (iqn, "127.0.0.1", 3260, 1)
    assert s.state == "LOGGED_IN" and s.connection_state == "up" and s.iface_name == "default"
    assert iscsi.find_session(r, iqn, "127.0.0.1", 3260) == s
    assert scsi.scsi_host(r, s.host_number).proc_name == "iscsi_tcp"
    (lun,) = iscsi.session_devices(r, s)
    assert lun.wwid == wwid and lun.hctl.lun == 0 and lun.hctl.host == s.host_number
    assert (lun.vendor, lun.model, lun.state) == ("LIO-ORG", "FILEIO", "running")
    bdev = block.block_device(r, lun.name)
    assert bdev.size_bytes == size and bdev.wwid == wwid and bdev.holders == ()
    by_path = f"/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-{iqn}-lun-0"
    assert block.block_device_for_path(r, by_path).name == lun.name
    # udev named the by-id links after the udev/multipath WWID form we derive
    links = {os.path.basename(p) for p in block.links_for(r, lun.name)}
    assert f"scsi-{lun.udev_wwid}" in links
    assert f"wwn-0x{wwid[4:]}" in links
    t10 = next(x for x in links if x.startswith("scsi-1"))
    assert scsi.same_wwid(t10[len("scsi-") :], "t10." + t10[len("scsi-1") :].replace("_", " "))
    assert multipath.multipath_maps(r) == []


def test_iscsi_shared_multipath(tmp_path):
    r = extract_tree("iscsi-shared-multipath", tmp_path)
    note = capture_note(r)
    iqn = re.search(r"target (iqn\S+) with", note).group(1)
    wwids = _wwids(note)
    dm_of = dict(re.findall(r"wwid (naa\.[0-9a-f]+) -> (dm-\d+)", note))
    assert len(wwids) == 2

    sessions = iscsi.find_sessions(r, iqn)
    assert sorted(s.portal_address for s in sessions) == ["127.0.0.1", "127.0.0.2"]
    assert len({s.host_number for s in sessions}) == 2
    for s in sessions:
        assert sorted(d.wwid for d in iscsi.session_devices(r, s)) == sorted(wwids)
    maps = multipath.multipath_maps(r)
    assert len(maps) == 2
    for wwid in wwids:
        m = multipath.map_for_wwid(r, wwid)
        assert m.dm_name == dm_of[wwid]
        assert m.wwid == scsi.scsi_wwid_to_udev(wwid) == m.uuid[len("mpath-") :]
        paths = [d for s in sessions for d in iscsi.session_devices(r, s) if d.wwid == wwid]
        assert sorted(m.slaves) == sorted(d.name for d in paths)
        for d in paths:
            assert multipath.map_for_slave(r, d.name) == m
            assert block.block_device(r, d.name).holders == (m.dm_name,)
        assert m.suspended is False
        assert m.size_bytes == block.block_device(r, paths[0].name).size_bytes
        assert (
            block.block_device_for_path(r, f"/dev/disk/by-id/dm-uuid-mpath-{m.wwid}").name
            == m.dm_name
        )
        assert m.wwid in multipath.wwids_file_entries(r)


def test_nvme_tcp_native_multipath(tmp_path):
    r = extract_tree("nvme-tcp", tmp_path)
    note = capture_note(r)
    nqn = re.search(r"subsystem (nqn\S+),", note).group(1)
    expected = {
        int(n): (u, g)
        for n, u, g in re.findall(r"nsid (\d+) uuid ([0-9a-f-]+) nguid ([0-9a-f-]+)", note)
    }
    assert nvme.native_multipath_enabled(r)
    ctrls = nvme.find_controllers(r, nqn=nqn)
    assert sorted(c.traddr for c in ctrls) == ["127.0.0.1", "127.0.0.2"]
    assert all(c.transport == "tcp" and c.trsvcid == "4420" and c.state == "live" for c in ctrls)
    assert len({c.subsystem_name for c in ctrls}) == 1
    nss = nvme.find_namespaces(r, nqn=nqn)
    assert sorted(n.nsid for n in nss) == sorted(expected)
    for ns in nss:
        u, g = expected[ns.nsid]
        assert ns.native_multipath
        assert ns.uuid == nvme.canonical_uuid(u) and ns.wwid == f"uuid.{ns.uuid}"
        assert ns.nguid == nvme.canonical_nguid(g)
        assert len(ns.paths) == 2 and sorted(ns.controllers) == sorted(c.name for c in ctrls)
        assert nvme.find_namespaces(r, uuid=u) == [ns]
        assert nvme.find_namespaces(r, nguid=g.upper()) == [ns]


def test_fcoe(tmp_path):
    r = extract_tree("fcoe", tmp_path)
    note = capture_note(r)
    host_number = int(re.search(r"initiator host(\d+)", note).group(1))
    init_wwpn = re.search(r"initiator host\d+ wwpn ([0-9a-f]+)", note).group(1)
    tgt_wwpn = re.search(r"target wwpn ([0-9a-f]+)", note).group(1)
    wwids = _wwids(note)

    hosts = {h.host_number: h for h in fc.fc_hosts(r)}
    h = hosts[host_number]
    assert h.port_name == init_wwpn and h.online
    assert "/net/" in h.device_path  # FCoE: parent is a net device, not PCI
    # the target side's own fc_host is in the tree too
    assert tgt_wwpn in {x.port_name for x in hosts.values()}
    (rp,) = [x for x in fc.fc_remote_ports(r, host_number) if x.port_name == tgt_wwpn]
    assert rp.is_fcp_target and rp.port_state == "Online" and rp.scsi_target_id is not None
    assert fc.fc_targets_for(r, host_number, tgt_wwpn) == [(rp.channel, rp.scsi_target_id)]
    assert fc.fc_targets_for(r, host_number, init_wwpn) == []
    luns = scsi.scsi_devices(r, host=host_number)
    assert sorted(d.wwid for d in luns) == sorted(wwids)
    for d in luns:
        assert (d.hctl.channel, d.hctl.target) == (rp.channel, rp.scsi_target_id)
        assert f"/{rp.name}/" in d.sysfs_path
        assert block.block_device_for_path(r, f"/dev/disk/by-id/wwn-0x{d.wwid[4:]}").name == d.name
