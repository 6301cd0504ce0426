"""The lab fixtures' extra knobs work on the real kernel: CHAP, ACLs, portal
down/up, LUN add/remove, dm-multipath, nvmet ANA states and port removal,
two FCoE fabrics, NVMe over FC with fcloop (6.12 kernel only)."""

from __future__ import annotations

import glob
import os

import pytest

from brick_agent.host.iscsiadm import ERR_LOGIN_AUTH_FAILED
from brick_lab import (
    LabError,
    LioIscsiTarget,
    NvmetSubsystem,
    fcloop_available,
    local_initiator_iqn,
    wait_for,
)
from brick_lab import scenarios
from brick_lab.initiator import (
    iscsi_login,
    iscsi_logout,
    iscsi_node,
    nvme_connect,
    nvme_disconnect,
    sh,
)
from brick_lab.rawhost import disks_with, maps_with, nvme_ctrls_of, read

pytestmark = pytest.mark.realkernel


def test_iscsi_chap_acl() -> None:
    with LioIscsiTarget(initiators=["local"], chap=("brickuser", "s3cret-pass12")) as t:
        portal = t.portals[0]
        assert os.path.isdir(f"{t.tpg}/acls/{local_initiator_iqn()}")
        iscsi_node(t.iqn, portal, "-o", "new")
        try:
            for k, v in (
                ("node.session.auth.authmethod", "CHAP"),
                ("node.session.auth.username", "brickuser"),
                ("node.session.auth.password", "wrong-password"),
            ):
                iscsi_node(t.iqn, portal, "-o", "update", "-n", k, "-v", v)
            bad = iscsi_node(t.iqn, portal, "--login", check=False)
            assert bad.returncode == ERR_LOGIN_AUTH_FAILED, bad.stderr
            iscsi_node(
                t.iqn,
                portal,
                "-o",
                "update",
                "-n",
                "node.session.auth.password",
                "-v",
                "s3cret-pass12",
            )
            iscsi_node(t.iqn, portal, "--login")
            wait_for(lambda: disks_with(t.luns[0].wwid), 30, "disk")
        finally:
            iscsi_logout(t.iqn)


def test_iscsi_acl_rejects_other_initiator() -> None:
    with LioIscsiTarget(initiators=["iqn.1994-05.com.example:someone-else"]) as t:
        iscsi_node(t.iqn, t.portals[0], "-o", "new")
        try:
            r = iscsi_node(t.iqn, t.portals[0], "--login", check=False)
            assert r.returncode != 0
        finally:
            iscsi_logout(t.iqn)


def test_iscsi_add_remove_lun_and_portal_down_up() -> None:
    with LioIscsiTarget(luns=1, portals=scenarios.ISCSI_PORTALS) as t:
        p1, p2 = t.portals
        iscsi_login(t.iqn, p1)
        try:
            wait_for(lambda: disks_with(t.luns[0].wwid), 30, "LUN 0")
            lun1 = t.add_lun()
            assert lun1.lun_id == 1
            sh("iscsiadm", "-m", "session", "--rescan")
            wait_for(lambda: disks_with(lun1.wwid), 30, "LUN 1")
            t.remove_lun(1)
            assert not os.path.exists(lun1.storage_dir)
            # portal 2 down (not listening; refused, so no long login retries): a
            # login there fails; back up: it works
            t.portal_down(p2, drop_traffic=False)
            for k, v in (
                ("node.session.initial_login_retry_max", "1"),
                ("node.conn[0].timeo.login_timeout", "3"),
            ):
                iscsi_node(t.iqn, p2, "-o", "update", "-n", k, "-v", v)
            r = iscsi_node(t.iqn, p2, "--login", check=False)
            assert r.returncode != 0
            t.portal_up(p2)
            iscsi_node(t.iqn, p2, "--login")
            wait_for(lambda: len(disks_with(t.luns[0].wwid)) == 2, 30, "2 paths")
        finally:
            iscsi_logout(t.iqn)


def test_iscsi_dm_multipath() -> None:
    with scenarios.iscsi_dm_multipath() as t:
        lun = t.luns[0]
        [name] = maps_with(lun.scsi_id)
        assert len(os.listdir(f"/sys/block/{name}/slaves")) == 2
        assert read(f"/sys/block/{name}/dm/name") == lun.scsi_id


def test_nvme_ana_and_port_removal() -> None:
    ports = scenarios.NVME_PORTS
    with scenarios.nvme_tcp_multipath(
        connect_opts=("--ctrl-loss-tmo", "2", "--reconnect-delay", "1")
    ) as s:

        def ctrls() -> dict[str, str]:
            return {c: read(f"/sys/class/nvme/{c}/address") or "" for c in nvme_ctrls_of(s.nqn)}

        assert len(ctrls()) == 2
        c2 = next(c for c, a in ctrls().items() if "traddr=127.0.0.2" in a)
        path = wait_for(lambda: glob.glob(f"/sys/class/nvme/{c2}/nvme*c*n1"), 20, "path device")[0]
        assert read(f"{path}/ana_state") == "optimized"
        s.set_ana_state(ports[1], "inaccessible")
        assert s.ana_state(ports[1]) == "inaccessible"
        wait_for(lambda: read(f"{path}/ana_state") == "inaccessible", 20, "ANA change on host")
        port_id = s.port_for(ports[1]).port_id
        s.remove_port(ports[1])
        assert not os.path.exists(f"/sys/kernel/config/nvmet/ports/{port_id}")
        assert [p.portal for p in s.ports] == [ports[0]]
        wait_for(lambda: c2 not in ctrls(), 60, "controller on removed port to go away")


def test_fcoe_two_fabrics() -> None:
    with scenarios.fcoe_luns(luns=1, fabrics=2) as t:
        assert len(set(t.initiator_hosts)) == 2
        for f in t.fabrics:
            assert t.target_rport(f) is not None
        assert len(disks_with(t.luns[0].wwid)) == 2  # LUN 0 on both HBAs


def test_destroy_after_partial_failure() -> None:
    t = LioIscsiTarget(portals=("127.0.0.1:3260", "not-a-portal"))
    with pytest.raises(LabError):
        t.create()
    assert not os.path.exists(t.target_dir)
    assert not glob.glob(f"/sys/kernel/config/target/core/{t.hba}")


def test_nvme_over_fc_loop() -> None:
    if not fcloop_available():
        pytest.skip("nvme-fcloop needs the 6.12 lab kernel (lab run --kernel 6.12)")
    with scenarios.nvmet_over_fcloop() as (fc, s):
        sh("nvme", "connect", "-t", "fc", "-a", fc.target_traddr, "-w", fc.host_traddr, "-n", s.nqn)
        try:

            def ctrl() -> str | None:
                for c in nvme_ctrls_of(s.nqn):
                    if read(f"/sys/class/nvme/{c}/state") == "live":
                        return f"/sys/class/nvme/{c}"
                return None

            c = wait_for(ctrl, 30, "live FC controller")
            assert read(f"{c}/transport") == "fc"
            assert f"traddr={fc.target_traddr}" in (read(f"{c}/address") or "")
            uuid = s.namespaces[1].uuid
            wait_for(
                lambda: [u for u in glob.glob("/sys/block/nvme*n*/uuid") if read(u) == uuid],
                20,
                "namespace",
            )
        finally:
            nvme_disconnect(s.nqn)
        wait_for(lambda: ctrl() is None, 30, "disconnect")
        s.remove_port(fc.target_traddr)


def test_two_subsystems_share_a_portal() -> None:
    with NvmetSubsystem() as a, NvmetSubsystem() as b:
        assert a.ports[0].port_id == b.ports[0].port_id
        for s in (a, b):
            nvme_connect(s.nqn, s.ports[0])
        try:
            for s in (a, b):
                wait_for(lambda s=s: nvme_ctrls_of(s.nqn), 20, s.nqn)
        finally:
            for s in (a, b):
                nvme_disconnect(s.nqn)
        port_dir = f"/sys/kernel/config/nvmet/ports/{a.ports[0].port_id}"
    assert not os.path.exists(port_dir)
