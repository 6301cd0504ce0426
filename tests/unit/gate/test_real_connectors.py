"""The gate with brick_agent's real connectors (the default factory) over fake and
lab-captured host trees: paths present/absent, volumes, the verifier across two hosts."""

from __future__ import annotations

import io
import json
import os
import re
import urllib.request

import pytest

pytest.importorskip("brick_agent.connectors.iscsi.connector")
pytest.importorskip("brick_agent.connectors.nvmeof.connector")

from brick_agent.gate import verify as verify_detach  # noqa: E402
from brick_agent.gate.app import create_app  # noqa: E402
from tests.unit.gate.conftest import PASSWORD, PROPS, host_with_volume, make_conf  # noqa: E402
from tests.unit.gate.fakehost import FakeHost  # noqa: E402
from tests.unit.gate.test_server import running  # noqa: E402
from tests.unit.sysfs_trees import capture_note, extract_tree  # noqa: E402
from tests.unit.test_audit_captured import kernel_delete_lun  # noqa: E402

NQN = "nqn.2014-08.org.test:subsys1"
UUID = "5b2a0c9e-1111-4d6f-8e3a-0123456789ab"
NVME_PROPS = {"target_nqn": NQN, "vol_uuid": UUID, "portals": [["192.0.2.20", 4420, "tcp"]]}


def _client(roots):
    return create_app(make_conf(), roots=roots).test_client()


def _paths(client, protocol, props):
    resp = client.post("/v1/paths", json={"protocol": protocol, "connection_properties": props})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def test_iscsi_paths_on_fake_host(tmp_path):
    host = host_with_volume(tmp_path / "h")
    client = _client(host.roots)
    body = _paths(client, "ISCSI", PROPS)
    assert body["present"] is True and len(body["paths"]) == 1
    assert body["paths"][0].endswith(
        "/by-path/ip-192.0.2.10:3260-iscsi-iqn.2003-01.org.linux-iscsi.target:vol1-lun-1"
    )
    assert _paths(client, "ISCSI", dict(PROPS, target_lun=7))["paths"] == []
    vols = client.get("/v1/volumes?protocol=ISCSI").get_json()["volumes"]["ISCSI"]
    assert [(v["lun"], v["wwid"]) for v in vols] == [(1, "36001405aaaaaaaaaaaaaaaaaaaaaaaa1")]


def test_iscsi_bad_properties_with_real_connector(tmp_path):
    client = _client(host_with_volume(tmp_path / "h").roots)
    resp = client.post(
        "/v1/paths",
        json={"protocol": "ISCSI", "connection_properties": dict(PROPS, target_iqn="bogus")},
    )
    assert resp.status_code == 400
    assert resp.get_json()["key"] == "target_iqn"
    assert PASSWORD not in resp.get_data(as_text=True)


def test_nvme_paths_on_fake_host(tmp_path):
    host = FakeHost(tmp_path / "h")
    host.nvme_controller(0, 0, NQN)
    head = host.nvme_namespace(0, [0], 1, UUID)
    client = _client(host.roots)
    body = _paths(client, "NVMEOF", NVME_PROPS)
    assert body["present"] is True and body["paths"] == [host.roots.devfs(head)]
    other = dict(NVME_PROPS, vol_uuid="5b2a0c9e-9999-4d6f-8e3a-0123456789ab")
    assert _paths(client, "NVMEOF", other)["paths"] == []
    vols = client.get("/v1/volumes?protocol=NVMEOF").get_json()["volumes"]["NVMEOF"]
    assert len(vols) == 1
    # the audit agrees
    report = client.post(
        "/v1/audit", json={"expected": [{"protocol": "NVMEOF", "uuid": UUID}]}
    ).get_json()
    assert report["clean"] is True


def _single_props(roots) -> dict:
    iqn = re.search(r"to (iqn\S+) at", capture_note(roots)).group(1)
    return {"target_portal": "127.0.0.1:3260", "target_iqn": iqn, "target_lun": 0}


def test_captured_iscsi_single(tmp_path):
    roots = extract_tree("iscsi-single", tmp_path)
    client = _client(roots)
    props = _single_props(roots)
    body = _paths(client, "ISCSI", props)
    assert body["present"] is True and len(body["paths"]) == 1
    assert _paths(client, "ISCSI", dict(props, target_lun=1))["present"] is False
    assert client.get("/v1/audit").get_json()["clean"] is True


def test_captured_two_host_verification(tmp_path):
    """Destination: the captured host with the volume; source: the same capture after a
    detach that deleted the LUN but kept the session and the /dev/disk links.  The
    verifier fails on the source, naming the empty session and the dangling links, as
    does the audit."""
    dest = extract_tree("iscsi-single", tmp_path / "dest")
    src = extract_tree("iscsi-single", tmp_path / "src")
    props = _single_props(dest)
    props_file = tmp_path / "props.json"
    props_file.write_text(json.dumps(props))
    (hctl,) = [
        h
        for h in os.listdir(src.sysfs("bus", "scsi", "devices"))
        if re.fullmatch(r"\d+:\d+:\d+:\d+", h)
    ]
    kernel_delete_lun(src, hctl)
    conf = make_conf()
    with running(conf, dest) as dest_url, running(conf, src) as src_url:
        args = ["--protocol", "ISCSI", "--properties", str(props_file)]
        out = io.StringIO()
        assert verify_detach.main(["--present", dest_url, *args], stdout=out) == 0, out.getvalue()
        out = io.StringIO()
        assert (
            verify_detach.main(args + ["--present", dest_url, "--absent", src_url], stdout=out) == 1
        ), out.getvalue()
        src_entry = json.loads(out.getvalue())["hosts"][1]
        assert src_entry["paths"] == [] and not src_entry["ok"]
        kinds = sorted({o["kind"] for o in src_entry["objects"]})
        assert kinds == ["link", "session"], src_entry
        out = io.StringIO()
        assert (
            verify_detach.main(args + ["--present", src_url, "--absent", dest_url], stdout=out) == 1
        )
        assert json.loads(out.getvalue())["verdict"] == "fail"
        # the paths are gone from the source, but the audit still names what the
        # broken detach left: the session without LUNs and the dangling links
        with urllib.request.urlopen(src_url + "/v1/audit", timeout=10) as resp:
            report = json.load(resp)
        assert {f["kind"] for f in report["findings"]} == {
            "iscsi_session_without_luns",
            "dangling_link",
        }
