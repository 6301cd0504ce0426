"""The captured lab trees unpack into host trees whose links resolve inside them."""

from __future__ import annotations

import os

import pytest

from tests.unit.sysfs_trees import TREES, extract_tree, tree_meta


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


@pytest.mark.parametrize("name", TREES)
def test_tree_block_links_resolve_inside(name: str, tmp_path) -> None:
    roots = extract_tree(name, tmp_path)
    base = os.path.realpath(str(tmp_path / name))
    disks = os.listdir(roots.sysfs("block"))
    assert disks
    for disk in disks:
        real = os.path.realpath(roots.sysfs("block", disk))
        assert real.startswith(base + os.sep)
        assert os.path.isfile(os.path.join(real, "size"))
    assert tree_meta(name)["kernel"].startswith("6.")


def test_iscsi_single_session_and_disk(tmp_path) -> None:
    roots = extract_tree("iscsi-single", tmp_path)
    (session,) = os.listdir(roots.sysfs("class", "iscsi_session"))
    assert _read(roots.sysfs("class", "iscsi_session", session, "targetname")).startswith("iqn.")
    (link,) = os.listdir(roots.devfs("disk", "by-path"))
    sd = os.path.basename(os.path.realpath(roots.devfs("disk", "by-path", link)))
    assert _read(roots.sysfs("block", sd, "device", "wwid")).startswith("naa.6001405")
    # write-only attributes are present and writable
    with open(roots.sysfs("block", sd, "device", "delete"), "w") as f:
        f.write("1")
    assert _read(roots.etcfs("iscsi", "initiatorname.iscsi")).startswith("InitiatorName=iqn.")


def test_iscsi_multipath_maps_have_two_slaves(tmp_path) -> None:
    roots = extract_tree("iscsi-shared-multipath", tmp_path)
    dms = [d for d in os.listdir(roots.sysfs("block")) if d.startswith("dm-")]
    assert len(dms) == 2
    for dm in dms:
        assert _read(roots.sysfs("block", dm, "dm", "uuid")).startswith("mpath-36001405")
        assert len(os.listdir(roots.sysfs("block", dm, "slaves"))) == 2


def test_nvme_tcp_native_multipath(tmp_path) -> None:
    roots = extract_tree("nvme-tcp", tmp_path)
    ctrls = os.listdir(roots.sysfs("class", "nvme"))
    assert len(ctrls) == 2
    assert {_read(roots.sysfs("class", "nvme", c, "transport")) for c in ctrls} == {"tcp"}
    assert _read(roots.sysfs("module", "nvme_core", "parameters", "multipath")) == "Y"
    assert _read(roots.etcfs("nvme", "hostnqn")).startswith("nqn.2014-08.org.nvmexpress:uuid:")


def test_fcoe_online_host_and_target_rport(tmp_path) -> None:
    roots = extract_tree("fcoe", tmp_path)
    hosts = os.listdir(roots.sysfs("class", "fc_host"))
    assert any(_read(roots.sysfs("class", "fc_host", h, "port_state")) == "Online" for h in hosts)
    roles = [
        _read(roots.sysfs("class", "fc_remote_ports", r, "roles"))
        for r in os.listdir(roots.sysfs("class", "fc_remote_ports"))
    ]
    assert any("FCP Target" in r for r in roles)
