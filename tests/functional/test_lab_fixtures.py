"""The lab fixtures' extra knobs work on the real kernel: CHAP, ACLs, portal
down/up, LUN add/remove, dm-multipath, nvmet ANA states and port removal,
two FCoE fabrics, NVMe over FC with fcloop (6.12 kernel only)."""

from __future__ import annotations

import glob
import os
import subprocess

import pytest

from tests.functional.lab import (FcLoop, FcoeTarget, LabError, LioIscsiTarget,
                                  NvmetSubsystem, fcloop_available, local_initiator_iqn,
                                  wait_for)

pytestmark = pytest.mark.realkernel
LAB_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "kernel-lab")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr}")
    return p


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def disks_with_wwid(wwid: str) -> list[str]:
    out = []
    for w in glob.glob("/sys/block/sd*/device/wwid"):
        try:
            if read(w) == wwid:
                out.append(w.split("/")[3])
        except OSError:
            pass
    return sorted(out)


def iscsiadm_node(t: LioIscsiTarget, portal: str, *args: str, check: bool = True):
    return sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", portal, *args, check=check)


def iscsi_cleanup(t: LioIscsiTarget) -> None:
    sh("iscsiadm", "-m", "node", "-T", t.iqn, "--logout", check=False)
    sh("iscsiadm", "-m", "node", "-T", t.iqn, "-o", "delete", check=False)


def test_iscsi_chap_acl() -> None:
    with LioIscsiTarget(initiators=["local"], chap=("brickuser", "s3cret-pass12")) as t:
        portal = t.portals[0]
        assert os.path.isdir(f"{t.tpg}/acls/{local_initiator_iqn()}")
        iscsiadm_node(t, portal, "-o", "new")
        try:
            for k, v in (("node.session.auth.authmethod", "CHAP"),
                         ("node.session.auth.username", "brickuser"),
                         ("node.session.auth.password", "wrong-password")):
                iscsiadm_node(t, portal, "-o", "update", "-n", k, "-v", v)
            bad = iscsiadm_node(t, portal, "--login", check=False)
            assert bad.returncode == 24, bad.stderr  # ISCSI_ERR_LOGIN_AUTH_FAILED
            iscsiadm_node(t, portal, "-o", "update", "-n", "node.session.auth.password",
                          "-v", "s3cret-pass12")
            iscsiadm_node(t, portal, "--login")
            wait_for(lambda: disks_with_wwid(t.luns[0].wwid), 30, "disk")
        finally:
            iscsi_cleanup(t)


def test_iscsi_acl_rejects_other_initiator() -> None:
    with LioIscsiTarget(initiators=["iqn.1994-05.com.example:someone-else"]) as t:
        iscsiadm_node(t, t.portals[0], "-o", "new")
        try:
            r = iscsiadm_node(t, t.portals[0], "--login", check=False)
            assert r.returncode != 0
        finally:
            iscsi_cleanup(t)


def test_iscsi_add_remove_lun_and_portal_down_up() -> None:
    with LioIscsiTarget(luns=1, portals=("127.0.0.1:3260", "127.0.0.2:3260")) as t:
        p1, p2 = t.portals
        sh("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", p1)
        iscsiadm_node(t, p1, "--login")
        try:
            wait_for(lambda: disks_with_wwid(t.luns[0].wwid), 30, "LUN 0")
            lun1 = t.add_lun()
            assert lun1.lun_id == 1
            sh("iscsiadm", "-m", "session", "--rescan")
            wait_for(lambda: disks_with_wwid(lun1.wwid), 30, "LUN 1")
            t.remove_lun(1)
            assert not os.path.exists(lun1.storage_dir)
            # portal 2 down (not listening; refused, so no long login retries): a
            # login there fails; back up: it works
            t.portal_down(p2, drop_traffic=False)
            for k, v in (("node.session.initial_login_retry_max", "1"),
                         ("node.conn[0].timeo.login_timeout", "3")):
                iscsiadm_node(t, p2, "-o", "update", "-n", k, "-v", v)
            r = sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", p2, "--login", check=False)
            assert r.returncode != 0
            t.portal_up(p2)
            iscsiadm_node(t, p2, "--login")
            wait_for(lambda: len(disks_with_wwid(t.luns[0].wwid)) == 2, 30, "2 paths")
        finally:
            iscsi_cleanup(t)


def test_iscsi_dm_multipath() -> None:
    mpd = os.path.join(LAB_DIR, "guest-multipathd")
    sh(mpd, "start")
    try:
        with LioIscsiTarget(luns=1, portals=("127.0.0.1:3260", "127.0.0.2:3260")) as t:
            lun = t.luns[0]
            for p in t.portals:
                sh("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", p)
                iscsiadm_node(t, p, "--login")
            try:
                def dm() -> str | None:
                    for u in glob.glob("/sys/block/dm-*/dm/uuid"):
                        if read(u) == "mpath-" + lun.scsi_id:
                            return u.split("/")[3]
                    return None
                name = wait_for(dm, 30, "multipath map")
                wait_for(lambda: len(os.listdir(f"/sys/block/{name}/slaves")) == 2, 30, "2 slaves")
                assert read(f"/sys/block/{name}/dm/name") == lun.scsi_id
            finally:
                sh("multipath", "-f", lun.scsi_id, check=False)
                iscsi_cleanup(t)
    finally:
        sh(mpd, "stop", check=False)


def test_nvme_ana_and_port_removal() -> None:
    ports = ("127.0.0.1:4420", "127.0.0.2:4420")
    with NvmetSubsystem(namespaces=1, ports=ports) as s:
        for p in s.ports:
            sh("nvme", "connect", "-t", "tcp", "-a", p.traddr, "-s", p.trsvcid, "-n", s.nqn,
               "--ctrl-loss-tmo", "2", "--reconnect-delay", "1")
        try:
            def ctrls() -> dict[str, str]:
                out = {}
                for c in glob.glob("/sys/class/nvme/nvme*"):
                    if read(f"{c}/subsysnqn") == s.nqn:
                        out[os.path.basename(c)] = read(f"{c}/address")
                return out
            wait_for(lambda: len(ctrls()) == 2, 30, "2 controllers")
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
        finally:
            sh("nvme", "disconnect", "-n", s.nqn, check=False)


def test_fcoe_two_fabrics() -> None:
    with FcoeTarget(luns=1, fabrics=2) as t:
        assert len(set(t.initiator_hosts)) == 2
        for f in t.fabrics:
            assert t.target_rport(f) is not None
        wait_for(lambda: len(disks_with_wwid(t.luns[0].wwid)) == 2, 40, "LUN 0 on both HBAs")


def test_destroy_after_partial_failure() -> None:
    t = LioIscsiTarget(portals=("127.0.0.1:3260", "not-a-portal"))
    with pytest.raises(LabError):
        t.create()
    assert not os.path.exists(t.target_dir)
    assert not glob.glob(f"/sys/kernel/config/target/core/{t.hba}")


def test_nvme_over_fc_loop() -> None:
    if not fcloop_available():
        pytest.skip("nvme-fcloop needs the 6.12 lab kernel (lab run --kernel 6.12)")
    with FcLoop() as fc, NvmetSubsystem(namespaces=1, ports=()) as s:
        s.add_port(fc.target_traddr, trtype="fc")
        sh("nvme", "connect", "-t", "fc", "-a", fc.target_traddr, "-w", fc.host_traddr, "-n", s.nqn)
        try:
            def ctrl() -> str | None:
                for c in glob.glob("/sys/class/nvme/nvme*"):
                    if read(f"{c}/subsysnqn") == s.nqn and read(f"{c}/state") == "live":
                        return c
                return None
            c = wait_for(ctrl, 30, "live FC controller")
            assert read(f"{c}/transport") == "fc"
            assert f"traddr={fc.target_traddr}" in read(f"{c}/address")
            uuid = s.namespaces[1].uuid
            wait_for(lambda: [u for u in glob.glob("/sys/block/nvme*n*/uuid") if read(u) == uuid],
                     20, "namespace")
        finally:
            sh("nvme", "disconnect", "-n", s.nqn, check=False)
        wait_for(lambda: ctrl() is None, 30, "disconnect")
        s.remove_port(fc.target_traddr)


def test_two_subsystems_share_a_portal() -> None:
    with NvmetSubsystem() as a, NvmetSubsystem() as b:
        assert a.ports[0].port_id == b.ports[0].port_id
        for s in (a, b):
            sh("nvme", "connect", "-t", "tcp", "-a", "127.0.0.1", "-s", "4420", "-n", s.nqn)
        try:
            for s in (a, b):
                wait_for(lambda: any(read(f"{c}/subsysnqn") == s.nqn
                                     for c in glob.glob("/sys/class/nvme/nvme*")), 20, s.nqn)
        finally:
            for s in (a, b):
                sh("nvme", "disconnect", "-n", s.nqn, check=False)
        port_dir = f"/sys/kernel/config/nvmet/ports/{a.ports[0].port_id}"
    assert not os.path.exists(port_dir)
