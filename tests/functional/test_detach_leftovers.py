"""What a detach leaves and what the audit sees, on the real kernel (issue 13 §5.3, §5.4).

* The last detach of a shared NVMe subsystem removes the controller when nobody uses the
  other namespaces it shows (the array still exports them), and keeps it while a foreign
  process has one open.
* The audit names iSCSI node records without a session (what a killed attach leaves).

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest \
    tests/functional/test_detach_leftovers.py -m realkernel -q
"""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from brick_agent import audit as A
from brick_agent import privileged
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_agent.host.roots import DEFAULT_ROOTS
from brick_agent.ledger import AttachmentLedger
from brick_lab import LioIscsiTarget, NvmetSubsystem
from brick_lab.rawhost import nvme_ctrls_of as ctrls
from brick_lab.rawhost import nvme_heads_with, wait
from tests.functional.conftest import make_conf

pytestmark = pytest.mark.realkernel


@pytest.fixture
def connector(tmp_path):
    conf = make_conf(tmp_path, ledger_path=str(tmp_path / "attachments.json"))
    privileged.init(conf)
    return NVMeOFConnector(None, None, conf=conf)


def props(sub: NvmetSubsystem, nsid: int) -> dict:
    ns = sub.namespaces[nsid]
    return {
        "target_nqn": sub.nqn,
        "vol_uuid": ns.uuid,
        "volume_nguid": ns.nguid,
        "ns_id": nsid,
        "portals": [[p.traddr, int(p.trsvcid), "tcp"] for p in sub.ports],
    }


def test_shared_subsystem_both_attached_last_detach_removes_the_controller(connector):
    with NvmetSubsystem(namespaces=2) as sub:
        connector.connect_volume(props(sub, 1))
        connector.connect_volume(props(sub, 2))
        connector.disconnect_volume(props(sub, 1), None)
        assert len(ctrls(sub.nqn)) == 1  # namespace 2 is attached through us
        connector.disconnect_volume(props(sub, 2), None)
        assert ctrls(sub.nqn) == []


def test_shared_subsystem_one_attached_detach_removes_the_controller_nobody_needs(
    connector, caplog
):
    caplog.set_level(logging.INFO, logger="brick_agent.connectors.nvmeof.connector")
    with NvmetSubsystem(namespaces=2) as sub:
        connector.connect_volume(props(sub, 1))
        wait(
            lambda: nvme_heads_with(sub.namespaces[2].uuid),
            20,
            "namespace 2 (exported, never attached)",
        )
        # a detach comes long after its attach: udev no longer probes the new namespaces
        subprocess.run(["udevadm", "settle", "--timeout=20"], check=False)
        connector.disconnect_volume(props(sub, 1), None)
        kept = [r.getMessage() for r in caplog.records if "keeping controller" in r.getMessage()]
        assert ctrls(sub.nqn) == [], kept


def test_shared_subsystem_namespace_open_by_a_foreign_process_keeps_the_controller(connector):
    with NvmetSubsystem(namespaces=2) as sub:
        connector.connect_volume(props(sub, 1))
        (other,) = wait(lambda: nvme_heads_with(sub.namespaces[2].uuid), 20, "namespace 2")
        with open(f"/dev/{other}", "rb") as dev:  # not through us
            holder = subprocess.Popen(["sleep", "120"], stdin=dev)
        try:
            connector.disconnect_volume(props(sub, 1), None)
            assert len(ctrls(sub.nqn)) == 1 and nvme_heads_with(sub.namespaces[2].uuid)
            led = AttachmentLedger(connector.opts.ledger_path)
            found = A.audit(DEFAULT_ROOTS, ledger=led).of_kind(A.NVME_CONTROLLER_NAMESPACES_UNUSED)
            assert not [f for f in found if sub.nqn in f.detail]
        finally:
            holder.kill()
            holder.wait()
        led = AttachmentLedger(connector.opts.ledger_path)
        (finding,) = [
            f
            for f in A.audit(DEFAULT_ROOTS, ledger=led).of_kind(A.NVME_CONTROLLER_NAMESPACES_UNUSED)
            if sub.nqn in f.detail
        ]
        assert finding.name == ctrls(sub.nqn)[0]
        connector.disconnect_volume(props(sub, 1), None)  # now nobody uses it: it goes
        assert ctrls(sub.nqn) == []


def _iscsiadm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["iscsiadm", "-m", "node", *args], capture_output=True, text=True, timeout=30
    )


def test_audit_names_a_node_record_left_without_a_session():
    with LioIscsiTarget(luns=1) as t:
        portal = t.portals[0]
        created = _iscsiadm("-o", "new", "-T", t.iqn, "-p", portal)  # a killed attach's
        assert created.returncode == 0, created.stderr
        try:
            report = A.audit(DEFAULT_ROOTS)
            found = [
                f for f in report.of_kind(A.ISCSI_NODE_RECORD_WITHOUT_SESSION) if t.iqn in f.name
            ]
            assert len(found) == 1 and portal in found[0].name, report.errors
            assert found[0].detail.startswith("/etc/iscsi/nodes/")
            assert os.path.exists(found[0].detail.split(" ")[0])  # never acted on
            print(f"\n{found[0].name}: {found[0].detail}")
        finally:
            _iscsiadm("-o", "delete", "-T", t.iqn, "-p", portal)
        assert not [
            f
            for f in A.audit(DEFAULT_ROOTS).of_kind(A.ISCSI_NODE_RECORD_WITHOUT_SESSION)
            if t.iqn in f.name
        ]
