"""The ownership checks on sysfs trees captured from the lab's real kernel: the fabric
volumes there (iSCSI LUNs, their dm-multipath maps, FCoE LUNs, NVMe/TCP heads and
controllers made with the lab host's NQN) are brick_agent's to act on."""

from __future__ import annotations

import pytest

from brick_agent.privileged import _owned, block, multipath, nvme, scsi
from tests.unit.sysfs_trees import extract_tree
from tests.unit.test_privileged_ownership import Runner


def test_iscsi_lun_and_its_session_host(tmp_path):
    roots = extract_tree("iscsi-single", tmp_path)
    scsi.do_scan_scsi_target(roots, 0, 0, 0, 0)
    scsi.do_delete_scsi_device(roots, "0:0:0:0")
    block.do_set_block_device_read_only(roots, "sda", True, run=Runner())
    _owned.require_releasable_node(roots, "iqn.2003-01.org.brick-lab:single", "127.0.0.1:3260")


def test_dm_multipath_maps_over_iscsi_paths(tmp_path):
    roots = extract_tree("iscsi-shared-multipath", tmp_path)
    run = Runner()
    for name in ("360014053ee322d90e2e34b78c6e96211", "36001405b555cd6c63916b35f265d811a"):
        multipath.do_flush_map(roots, name, run=run)
        multipath.do_resize_map(roots, name, run=run)
    for dev in ("dm-0", "dm-1", "sda", "sdd"):
        block.do_flush_block_device(roots, dev, flush=run.flush)
    multipath.do_del_path(roots, "sdb", run=run)
    assert len(run.calls) == 9


def test_fcoe_luns_are_on_fc_hosts(tmp_path):
    roots = extract_tree("fcoe", tmp_path)
    scsi.do_scan_scsi_target(roots, 1, "-", "-", 1)
    scsi.do_delete_scsi_device(roots, "1:0:0:1")
    block.do_set_block_device_read_only(roots, "sdb", True, run=Runner())


@pytest.mark.parametrize("head", ["nvme0n1", "nvme0n2"])
def test_nvme_tcp_heads_and_controllers_made_with_the_hosts_nqn(tmp_path, head):
    roots = extract_tree("nvme-tcp", tmp_path)
    _owned.require_fabric_namespace(roots, head)
    block.do_set_block_device_read_only(roots, head, True, run=Runner())
    assert sorted(_owned.controller_devices(roots, "nvme1")) == ["nvme0n1", "nvme0n2"]
    nvme.do_rescan_controller(roots, "nvme0")
    nvme.do_disconnect(roots, "nvme1")
