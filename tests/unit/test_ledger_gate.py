"""Gate app: GET /v1/audit?expected=ledger compares the host with the attachment ledger."""

from __future__ import annotations

from brick_agent.gate.app import create_app
from brick_agent.ledger import AttachmentLedger
from tests.unit.gate.conftest import WWID, host_with_volume, link_factory, make_conf


def _client(tmp_path, recorded: list[str]):
    path = str(tmp_path / "ledger.json")
    led = AttachmentLedger(path, lock_path=str(tmp_path / "locks"))
    with led.transaction() as data:
        for w in recorded:
            data["volumes"][f"ISCSI:{w}"] = {
                "protocol": "ISCSI",
                "identity": w,
                "lookup": [w],
                "attachments": {"a": {"access_mode": "rw"}},
            }
    host = host_with_volume(tmp_path / "host")
    conf = make_conf(ledger_path=path, lock_path=str(tmp_path / "locks"))
    return create_app(conf, roots=host.roots, connector_factory=link_factory).test_client()


def test_audit_against_ledger_clean_and_missing(tmp_path):
    body = _client(tmp_path / "a", [WWID]).get("/v1/audit?expected=ledger").get_json()
    assert body["clean"] is True, body
    body = (
        _client(tmp_path / "b", [WWID, "naa.6001405bbbbbbbbbbbbbbbbbbbbbbbb2"])
        .get("/v1/audit?expected=ledger")
        .get_json()
    )
    assert [f["kind"] for f in body["findings"]] == ["missing_volume"]


def test_audit_against_empty_ledger_names_the_unexpected_volume(tmp_path):
    body = _client(tmp_path, []).get("/v1/audit?expected=ledger").get_json()
    assert [f["kind"] for f in body["findings"]] == ["unexpected_volume"]


def test_bad_expected_query_is_400(tmp_path):
    client = _client(tmp_path, [])
    for query in ("expected=file", "expected=ledger&expected=ledger"):
        resp = client.get(f"/v1/audit?{query}")
        assert resp.status_code == 400 and resp.get_json()["error"]
    resp = client.post("/v1/audit?expected=ledger", json={"expected": []})
    assert resp.status_code == 400
