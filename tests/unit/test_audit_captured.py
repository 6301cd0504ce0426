"""Leftover audit on host trees captured from the lab kernel (tests/unit/data/*.tar.gz).

A healthy capture must audit clean (and list exactly the volumes its capture
note names); then orphans are planted the way the kernel leaves them after a
broken detach (LUNs deleted while links, maps, sessions and wwids entries stay)
and the audit must name each one.
"""

from __future__ import annotations

import os
import re
import shutil


from brick_agent import audit as A
from brick_agent.audit import ExpectedVolume, audit
from brick_agent.host import sysfs
from brick_agent.host.roots import HostRoots
from tests.unit.sysfs_trees import capture_note, extract_tree


def udev(wwid: str) -> str:
    return "3" + wwid[len("naa.") :]


def kernel_delete_lun(roots: HostRoots, hctl: str) -> list[str]:
    """Do to the tree what ``echo 1 > .../delete`` does to sysfs; /dev/disk links stay
    (a broken detach whose udev cleanup never ran).  Returns the removed disk names."""
    lun = sysfs.resolve(roots.sysfs("bus", "scsi", "devices", hctl))
    assert lun, hctl
    names = sysfs.list_dir(os.path.join(lun, "block"))
    for name in names:
        bdir = sysfs.resolve(roots.sysfs("class", "block", name))
        for holder in sysfs.list_dir(os.path.join(bdir, "holders")):
            slave = roots.sysfs("class", "block", holder, "slaves", name)
            if os.path.lexists(slave):
                os.unlink(slave)
        dev = sysfs.read_attr(os.path.join(bdir, "dev"))
        for link in (
            roots.sysfs("class", "block", name),
            roots.devfs(name),
            roots.sysfs("dev", "block", dev or "-"),
        ):
            if os.path.lexists(link):
                os.unlink(link)
    for cls in ("scsi_device", "scsi_disk", "scsi_generic", "bsg"):
        link = roots.sysfs("class", cls, hctl)
        if os.path.lexists(link):
            os.unlink(link)
    os.unlink(roots.sysfs("bus", "scsi", "devices", hctl))
    shutil.rmtree(lun)
    return names


def test_iscsi_single_is_clean(tmp_path):
    roots = extract_tree("iscsi-single", tmp_path)
    (wwid,) = re.findall(r"wwid (naa\.[0-9a-f]+)", capture_note(roots))
    report = audit(roots)
    assert report.clean, report.to_dict()
    assert [(v.protocol, v.wwid) for v in report.volumes] == [("ISCSI", udev(wwid))]
    assert audit(roots, [ExpectedVolume("ISCSI", wwid=wwid)]).clean
    assert [f.kind for f in audit(roots, []).findings] == [A.UNEXPECTED_VOLUME]


def test_iscsi_single_broken_detach(tmp_path):
    """LUN deleted, logout forgotten, udev never removed the links."""
    roots = extract_tree("iscsi-single", tmp_path)
    (wwid,) = re.findall(r"wwid (naa\.[0-9a-f]+)", capture_note(roots))
    (hctl,) = sysfs.list_dir(roots.sysfs("bus", "scsi", "devices"), r"\d+:\d+:\d+:\d+")
    (disk,) = kernel_delete_lun(roots, hctl)
    report = audit(roots, [])
    assert {f.kind for f in report.findings} == {A.ISCSI_SESSION_WITHOUT_LUNS, A.DANGLING_LINK}
    (session,) = report.of_kind(A.ISCSI_SESSION_WITHOUT_LUNS)
    assert "iqn.2003-01.org.brick-lab:single" in session.detail
    dangling = {f.name for f in report.of_kind(A.DANGLING_LINK)}
    assert f"/dev/disk/by-id/scsi-{udev(wwid)}" in dangling
    assert any(n.startswith("/dev/disk/by-path/ip-127.0.0.1:3260-iscsi-") for n in dangling)
    assert all(f"../../{disk}" in f.detail for f in report.of_kind(A.DANGLING_LINK))
    assert report.volumes == []


def test_iscsi_shared_multipath_is_clean(tmp_path):
    roots = extract_tree("iscsi-shared-multipath", tmp_path)
    wwids = re.findall(r"wwid (naa\.[0-9a-f]+)", capture_note(roots))
    report = audit(roots)
    assert report.clean, report.to_dict()
    assert report.counts["multipath_maps"] == 2 and report.counts["wwids_entries"] == 2
    assert sorted((v.wwid, len(v.devices)) for v in report.volumes) == sorted(
        (udev(w), 2) for w in wwids
    )
    assert audit(roots, [ExpectedVolume("ISCSI", wwid=w) for w in wwids]).clean


def test_iscsi_shared_multipath_one_lun_detached_badly(tmp_path):
    """LUN 1 deleted on both paths but its map, wwids entry and links left behind;
    LUN 0 (same sessions) untouched: sessions still carry a LUN, so no session finding."""
    roots = extract_tree("iscsi-shared-multipath", tmp_path)
    lun0, lun1 = re.findall(r"wwid (naa\.[0-9a-f]+)", capture_note(roots))
    removed = []
    for hctl in sysfs.list_dir(roots.sysfs("bus", "scsi", "devices"), r"\d+:\d+:\d+:1"):
        removed += kernel_delete_lun(roots, hctl)
    assert len(removed) == 2
    report = audit(roots, [ExpectedVolume("ISCSI", wwid=lun0)])
    maps = report.of_kind(A.MULTIPATH_MAP_WITHOUT_PATHS)
    assert len(maps) == 1 and udev(lun1) in maps[0].detail
    assert report.of_kind(A.ISCSI_SESSION_WITHOUT_LUNS) == []
    dangling = report.of_kind(A.DANGLING_LINK)
    assert sum("-lun-1" in f.name for f in dangling) == 2  # both by-path links of LUN 1
    assert {f.detail.split(" -> ../../")[1].split()[0] for f in dangling} == set(removed)
    assert report.of_kind(A.WWIDS_ENTRY_WITHOUT_DEVICE) == []  # the stale map still has it
    assert report.of_kind(A.UNEXPECTED_VOLUME) == report.of_kind(A.MISSING_VOLUME) == []
    # once the map is gone too, the wwids entry is the leftover
    dm = maps[0].detail.split("(")[1].split(",")[0]
    os.unlink(roots.sysfs("class", "block", dm))
    report = audit(roots)
    assert [f.name for f in report.of_kind(A.WWIDS_ENTRY_WITHOUT_DEVICE)] == [udev(lun1)]


def test_iscsi_shared_multipath_all_paths_failed(tmp_path):
    roots = extract_tree("iscsi-shared-multipath", tmp_path)
    for hctl in sysfs.list_dir(roots.sysfs("bus", "scsi", "devices"), r"\d+:\d+:\d+:0"):
        state = os.path.join(sysfs.resolve(roots.sysfs("bus", "scsi", "devices", hctl)), "state")
        with open(state, "w") as f:
            f.write("transport-offline\n")
    report = audit(roots)
    assert len(report.of_kind(A.MULTIPATH_MAP_ALL_PATHS_FAILED)) == 1
    assert len(report.of_kind(A.SCSI_DEVICE_NOT_RUNNING)) == 2


def test_fcoe_capture(tmp_path):
    """FC LUNs over FCoE rports are FIBRE_CHANNEL volumes.  This capture was taken in
    the VM run right after the multipath one, whose wwids entries stayed behind: the
    audit finds exactly that real leftover."""
    roots = extract_tree("fcoe", tmp_path)
    wwids = re.findall(r"wwid (naa\.[0-9a-f]+)", capture_note(roots))
    report = audit(roots, [ExpectedVolume("FC", wwid=w) for w in wwids])
    assert report.errors == []
    assert sorted(v.wwid for v in report.volumes) == sorted(udev(w) for w in wwids)
    assert {v.protocol for v in report.volumes} == {"FIBRE_CHANNEL"}
    stale = report.of_kind(A.WWIDS_ENTRY_WITHOUT_DEVICE)
    assert report.findings == stale
    assert {f.name for f in stale} == set(multipath_wwids(roots))
    assert not {f.name for f in stale} & {udev(w) for w in wwids}


def multipath_wwids(roots: HostRoots) -> list[str]:
    from brick_agent.host.multipath import wwids_file_entries

    return wwids_file_entries(roots)


def test_nvme_tcp_capture_is_clean(tmp_path):
    roots = extract_tree("nvme-tcp", tmp_path)
    report = audit(roots)
    assert report.errors == []
    assert not {f.kind for f in report.findings} & {
        A.NVME_CONTROLLER_NOT_LIVE,
        A.NVME_CONTROLLER_WITHOUT_NAMESPACES,
        A.NVME_NAMESPACE_WITHOUT_PATHS,
    }
    assert any(v.protocol == "NVMEOF" for v in report.volumes)
