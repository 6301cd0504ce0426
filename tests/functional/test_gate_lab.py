"""The gate app and the leftover audit on the lab VM's real kernel (issue 7).

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest tests/functional/test_gate_lab.py -q

* attach an iSCSI and an NVMe/TCP volume: the gate (real waitress server on
  loopback) shows their paths and the audit, told both are expected, is clean;
  detach them: no path, and the audit finds nothing new;
* break a detach on purpose (iSCSI: delete the LUN but keep the session; NVMe:
  the target drops the namespace but the controller stays): the audit names
  the orphan;
* two-host verification: this VM as the destination and a fake, empty host tree
  as the source: the verifier passes, and fails when swapped.

The VM runs many tests in one kernel and other tests may leave harmless host
state (e.g. /etc/multipath/wwids entries): audits here are compared with a
baseline taken at the start of each test.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
import urllib.request

import pytest

from brick_agent import privileged
from brick_agent.audit import ExpectedVolume, audit
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_agent.gate import verify as verify_detach
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_agent.host.roots import DEFAULT_ROOTS
from brick_lab import LioIscsiTarget, NvmetSubsystem
from brick_lab.rawhost import nvme_ctrls_of
from tests.functional.conftest import make_conf
from tests.unit.gate.fakehost import FakeHost
from tests.unit.gate.test_server import running

pytestmark = pytest.mark.realkernel


@pytest.fixture
def conf(tmp_path):
    c = make_conf(tmp_path, login_timeout=10.0, gate_enabled=True, nvme_reconnect_delay=None)
    privileged.init(c)
    return c


def findings(report) -> set[tuple[str, str]]:
    return {(f.kind, f.name) for f in report.findings}


def new_findings(baseline: set, timeout: float = 5.0, expected=None) -> set[tuple[str, str]]:
    """Findings not in ``baseline``; udev removes links asynchronously, so wait briefly
    for them to settle."""
    deadline = time.monotonic() + timeout
    while True:
        extra = findings(audit(DEFAULT_ROOTS, expected)) - baseline
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.2)


def appeared(baseline: set, kind: str, timeout: float = 15.0) -> set[tuple[str, str]]:
    """New findings once one of ``kind`` shows up (the kernel acts asynchronously, e.g.
    a namespace goes only after the controller processed the array's notice)."""
    deadline = time.monotonic() + timeout
    while True:
        extra = findings(audit(DEFAULT_ROOTS)) - baseline
        if any(k == kind for k, _ in extra) or time.monotonic() > deadline:
            return extra
        time.sleep(0.2)


def http_json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def iscsi_props(t: LioIscsiTarget) -> dict:
    return {
        "target_portal": t.portals[0],
        "target_iqn": t.iqn,
        "target_lun": 0,
        "volume_id": "vol-iscsi",
    }


def nvme_props(sub: NvmetSubsystem) -> dict:
    ns = sub.namespaces[1]
    return {
        "target_nqn": sub.nqn,
        "vol_uuid": ns.uuid,
        "volume_nguid": ns.nguid,
        "ns_id": 1,
        "portals": [[p.traddr, int(p.trsvcid), "tcp"] for p in sub.ports],
    }


def test_gate_shows_paths_and_audit_is_clean_after_detach(conf):
    baseline = findings(audit(DEFAULT_ROOTS))
    iscsi = ISCSIConnector(conf=conf)
    nvme = NVMeOFConnector(None, None, conf=conf)
    with (
        LioIscsiTarget(luns=1) as t,
        NvmetSubsystem(namespaces=1) as sub,
        running(conf, DEFAULT_ROOTS) as url,
    ):
        ip, npr = iscsi_props(t), nvme_props(sub)
        a = iscsi.connect_volume(ip)
        b = nvme.connect_volume(npr)
        try:
            got = http_json(url + "/v1/paths", {"protocol": "ISCSI", "connection_properties": ip})
            assert got["present"] is True
            assert {os.path.realpath(p) for p in got["paths"]} == {os.path.realpath(a["path"])}
            got = http_json(url + "/v1/paths", {"protocol": "NVMEOF", "connection_properties": npr})
            assert [os.path.realpath(p) for p in got["paths"]] == [os.path.realpath(b["path"])]
            vols = http_json(url + "/v1/volumes")["volumes"]
            assert any(v["iqn"] == t.iqn for v in vols["ISCSI"])
            assert any(v.get("uuid") == sub.namespaces[1].uuid for v in vols["NVMEOF"])
            expected = [
                {"protocol": "ISCSI", "wwid": t.luns[0].wwid},
                {"protocol": "NVMEOF", "uuid": sub.namespaces[1].uuid},
            ]
            report = http_json(url + "/v1/audit", {"expected": expected})
            new = {(f["kind"], f["name"]) for f in report["findings"]} - baseline
            assert new == set(), report
        finally:
            iscsi.disconnect_volume(ip, a)
            nvme.disconnect_volume(npr, b)
        assert (
            http_json(url + "/v1/paths", {"protocol": "ISCSI", "connection_properties": ip})[
                "paths"
            ]
            == []
        )
        assert (
            http_json(url + "/v1/paths", {"protocol": "NVMEOF", "connection_properties": npr})[
                "paths"
            ]
            == []
        )
    assert new_findings(baseline) == set()


def test_audit_names_iscsi_session_left_without_lun(conf):
    """Broken detach: the LUN is deleted but the session is never logged out."""
    baseline = findings(audit(DEFAULT_ROOTS))
    iscsi = ISCSIConnector(conf=conf)
    with LioIscsiTarget(luns=1) as t:
        props = iscsi_props(t)
        info = iscsi.connect_volume(props)
        disk = os.path.basename(os.path.realpath(info["path"]))
        try:
            with open(f"/sys/block/{disk}/device/delete", "w") as f:
                f.write("1")
            extra = appeared(baseline, "iscsi_session_without_luns")
            kinds = {k for k, _ in extra}
            assert "iscsi_session_without_luns" in kinds, extra
            (session,) = [
                f
                for f in audit(DEFAULT_ROOTS).findings
                if f.kind == "iscsi_session_without_luns" and (f.kind, f.name) not in baseline
            ]
            assert t.iqn in session.detail
        finally:
            iscsi.disconnect_volume(props, None, force=True, ignore_errors=True)
            subprocess.run(
                ["iscsiadm", "-m", "node", "-T", t.iqn, "--logout"], capture_output=True, timeout=60
            )
    assert new_findings(baseline) == set()


def test_audit_names_nvme_controller_left_without_namespace(conf):
    """Broken detach: the backend unmapped the namespace, nobody disconnected."""
    baseline = findings(audit(DEFAULT_ROOTS))
    nvme = NVMeOFConnector(None, None, conf=conf)
    with NvmetSubsystem(namespaces=1) as sub:
        props = nvme_props(sub)
        nvme.connect_volume(props)
        ctrl = nvme_ctrls_of(sub.nqn)
        try:
            sub.remove_namespace(1)
            extra = appeared(baseline, "nvme_controller_without_namespaces")
            assert ("nvme_controller_without_namespaces", ctrl[0]) in extra, extra
        finally:
            for c in ctrl:
                path = f"/sys/class/nvme/{c}/delete_controller"
                if os.path.exists(path):
                    with open(path, "w") as f:
                        f.write("1")
    assert new_findings(baseline, timeout=10) == set()


def test_two_host_verification_vm_and_fake_host(conf, tmp_path):
    """This VM is the destination (volume attached); an empty fake tree is the source."""
    iscsi = ISCSIConnector(conf=conf)
    source = FakeHost(tmp_path / "source")
    with LioIscsiTarget(luns=1) as t:
        props = iscsi_props(t)
        info = iscsi.connect_volume(props)
        props_file = tmp_path / "props.json"
        props_file.write_text(json.dumps(props))
        try:
            with running(conf, DEFAULT_ROOTS) as dest_url, running(conf, source.roots) as src_url:
                args = ["--protocol", "ISCSI", "--properties", str(props_file)]
                out = io.StringIO()
                code = verify_detach.main(
                    args + ["--present", dest_url, "--absent", src_url], stdout=out
                )
                assert code == 0, out.getvalue()
                out = io.StringIO()
                code = verify_detach.main(
                    args + ["--present", src_url, "--absent", dest_url], stdout=out
                )
                assert code == 1 and json.loads(out.getvalue())["verdict"] == "fail"
        finally:
            iscsi.disconnect_volume(props, info)
        with running(conf, DEFAULT_ROOTS) as dest_url:
            out = io.StringIO()
            code = verify_detach.main(
                ["--protocol", "ISCSI", "--properties", str(props_file), "--absent", dest_url],
                stdout=out,
            )
            assert code == 0, out.getvalue()


def test_expected_volume_comparison_on_real_kernel(conf):
    nvme = NVMeOFConnector(None, None, conf=conf)
    with NvmetSubsystem(namespaces=1) as sub:
        props = nvme_props(sub)
        info = nvme.connect_volume(props)
        try:
            mine = ExpectedVolume("NVMEOF", uuid=sub.namespaces[1].uuid)
            report = audit(DEFAULT_ROOTS, [mine])
            assert not [f for f in report.findings if f.kind == "missing_volume"]
            other = ExpectedVolume("NVMEOF", uuid="00000000-0000-4000-8000-000000000001")
            report = audit(DEFAULT_ROOTS, [other])
            kinds = {(f.kind, f.name) for f in report.findings}
            assert ("missing_volume", other.label) in kinds
            assert any(k == "unexpected_volume" and sub.namespaces[1].uuid in n for k, n in kinds)
        finally:
            nvme.disconnect_volume(props, info)
