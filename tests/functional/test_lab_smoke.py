"""Proves the lab: real iSCSI, NVMe/TCP and FCoE attach/detach in the VM kernel.

Assertions read raw sysfs on purpose (independent of brick_agent.host.*).
Each scenario cleans up and checks the kernel is back to where it started.
"""

from __future__ import annotations

import glob
import os

import pytest

from brick_lab import LioIscsiTarget, NvmetSubsystem, wait_for
from brick_lab.initiator import iscsi_logout, iscsi_node, nvme_connect, nvme_disconnect, sh
from brick_lab.rawhost import disks_with, nvme_ctrls_of, nvme_heads_with, read, sessions_of
from brick_lab.scenarios import fcoe_luns

pytestmark = pytest.mark.realkernel


def test_iscsi_login_logout() -> None:
    with LioIscsiTarget(luns=1) as t:
        lun, portal = t.luns[0], t.portals[0]
        disc = sh("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", portal).stdout
        assert f"{portal},1 {t.iqn}" in disc
        iscsi_node(t.iqn, portal, "--login")
        try:
            sessions = wait_for(lambda: sessions_of(t.iqn), 20, "iSCSI session")
            assert len(sessions) == 1
            s = sessions[0]
            assert read(f"/sys/class/iscsi_session/{s}/state") == "LOGGED_IN"
            conn = glob.glob(f"/sys/class/iscsi_session/{s}/device/connection*/iscsi_connection/*")
            assert conn and read(f"{conn[0]}/persistent_address") == portal.split(":")[0]
            disks = wait_for(lambda: disks_with(lun.wwid), 30, f"disk with {lun.wwid}")
            assert len(disks) == 1
            sd = disks[0]
            assert int(read(f"/sys/block/{sd}/size")) * 512 == lun.size
            link = f"/dev/disk/by-path/ip-{portal}-iscsi-{t.iqn}-lun-0"
            wait_for(lambda: os.path.exists(link), 20, link)
            assert os.path.realpath(link) == f"/dev/{sd}"
            by_id = f"/dev/disk/by-id/wwn-0x{lun.naa}"
            wait_for(lambda: os.path.exists(by_id), 20, by_id)
            assert os.path.realpath(by_id) == f"/dev/{sd}"
            with open(f"/dev/{sd}", "rb") as dev:
                assert len(dev.read(4096)) == 4096
            # grow the LUN: LIO reports the new size after an initiator rescan
            t.resize_lun(0, lun.size * 2)
            with open(f"/sys/block/{sd}/device/rescan", "w") as f:
                f.write("1")
            wait_for(
                lambda: int(read(f"/sys/block/{sd}/size")) * 512 == lun.size, 20, "resized disk"
            )
        finally:
            iscsi_logout(t.iqn, portal)
        wait_for(lambda: not sessions_of(t.iqn), 20, "session removal")
        wait_for(lambda: not disks_with(lun.wwid), 20, "disk removal")
        assert not os.path.exists(f"/dev/disk/by-path/ip-{portal}-iscsi-{t.iqn}-lun-0")
    assert not os.path.exists(t.target_dir)
    assert not glob.glob("/sys/kernel/config/target/core/fileio_*/brick_" + t.token + "_*")


def test_nvme_tcp_connect_disconnect() -> None:
    with NvmetSubsystem(namespaces=1) as s:
        ns, port = s.namespaces[1], s.ports[0]
        nvme_connect(s.nqn, port)
        try:
            ctrls = wait_for(lambda: nvme_ctrls_of(s.nqn), 20, "NVMe controller")
            assert len(ctrls) == 1
            c = ctrls[0]
            assert read(f"/sys/class/nvme/{c}/transport") == "tcp"
            assert read(f"/sys/class/nvme/{c}/state") == "live"
            assert f"traddr={port.traddr}" in (read(f"/sys/class/nvme/{c}/address") or "")
            hostnqn = read("/etc/nvme/hostnqn")
            assert hostnqn and read(f"/sys/class/nvme/{c}/hostnqn") == hostnqn
            [disk] = wait_for(lambda: nvme_heads_with(ns.uuid), 20, f"namespace {ns.uuid}")
            assert int(read(f"/sys/block/{disk}/size")) * 512 == ns.size
            nguid = read(f"/sys/block/{disk}/nguid") or ""
            assert nguid.replace("-", "") == ns.nguid.replace("-", "")
            assert os.path.exists(f"/dev/{disk}")
            wait_for(
                lambda: os.path.exists(f"/dev/disk/by-id/nvme-uuid.{ns.uuid}"), 20, "by-id link"
            )
            # grow the namespace: the host updates the size on the AEN
            s.resize_namespace(1, ns.size * 2)
            wait_for(
                lambda: int(read(f"/sys/block/{disk}/size")) * 512 == ns.size,
                20,
                "resized namespace",
            )
        finally:
            nvme_disconnect(s.nqn)
        wait_for(lambda: not nvme_ctrls_of(s.nqn), 20, "controller removal")
        assert nvme_heads_with(ns.uuid) == []
    assert not os.path.exists(s.subsys_dir)


def test_fcoe_fc_host_and_luns() -> None:
    with fcoe_luns(luns=2) as t:  # both LUNs' disks are there
        f = t.fabrics[0]
        host = f.initiator_host
        assert read(f"/sys/class/fc_host/{host}/port_state") == "Online"
        assert read(f"/sys/class/fc_host/{host}/port_name") == "0x" + f.initiator_wwpn
        rp = t.target_rport(f)
        assert rp is not None
        assert "FCP Target" in (read(f"/sys/class/fc_remote_ports/{rp}/roles") or "")
        assert read(f"/sys/class/fc_remote_ports/{rp}/node_name") == "0x" + f.target_wwnn
        d0 = disks_with(t.luns[0].wwid)
        assert len(d0) == 1
        # the disk sits under the initiator's scsi host
        assert f"/{host}/" in os.path.realpath(f"/sys/block/{d0[0]}")
        assert len(disks_with(t.luns[1].wwid)) == 1
        wwn_link = f"/dev/disk/by-id/wwn-0x{t.luns[1].naa}"
        wait_for(lambda: os.path.exists(wwn_link), 20, wwn_link)
        wwids = [lun.wwid for lun in t.luns.values()]
    assert not os.path.exists(f"/sys/class/fc_host/{host}")
    for wwid in wwids:
        assert not disks_with(wwid)
    assert not glob.glob(f"/sys/class/net/{f.initiator_if}")
