"""The gate app through Flask's test client: every endpoint and every error path."""

from __future__ import annotations

import json
import logging
import socket

import pytest

from brick_agent import errors
from brick_agent.gate import app as gate_app
from brick_agent.gate.app import GateConfigurationError, GateDisabled, create_app, is_loopback
from tests.unit.gate.conftest import (
    IQN,
    PASSWORD,
    PROPS,
    WWID,
    FailingConnector,
    by_path_name,
    link_factory,
    make_conf,
)

PRESENT = f"/dev/disk/by-path/{by_path_name('192.0.2.10:3260', IQN, 1)}"


def _post(client, body, **kw):
    return client.post("/v1/paths", json=body, **kw)


def _assert_error(resp, status, name, key=None):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error", "message", "key"}
    assert body["error"] == name
    assert body["key"] == key
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


# ------------------------------------------------------------------ start-up rules


def test_refuses_to_start_by_default():
    with pytest.raises(GateDisabled, match=r"gate_enabled = true"):
        create_app()


def test_refuses_when_disabled_explicitly():
    conf = make_conf(gate_enabled=False)
    with pytest.raises(GateDisabled):
        create_app(conf)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::", "gate.example.org"])
def test_non_loopback_bind_needs_token(host):
    with pytest.raises(GateConfigurationError, match="gate_token"):
        create_app(make_conf(gate_host=host), connector_factory=link_factory)
    assert create_app(make_conf(gate_host=host, gate_token="t0k"), connector_factory=link_factory)


@pytest.mark.parametrize(
    "host,loop",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("myhost", False),
    ],
)
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


def test_conf_without_registered_options_gets_them():
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    conf([], project="brick_agent")
    with pytest.raises(GateDisabled):
        create_app(conf)


def test_no_attach_or_detach_endpoints(app):
    rules = {
        (r.rule, m)
        for r in app.url_map.iter_rules()
        for m in r.methods
        if m not in ("HEAD", "OPTIONS") and r.endpoint != "static"
    }
    assert rules == {
        ("/health", "GET"),
        ("/openapi.json", "GET"),
        ("/v1/connector", "GET"),
        ("/v1/volumes", "GET"),
        ("/v1/paths", "POST"),
        ("/v1/audit", "GET"),
        ("/v1/audit", "POST"),
    }


@pytest.mark.parametrize(
    "path", ["/v1/connect", "/v1/disconnect", "/v1/extend", "/v1/volumes/attach"]
)
def test_attach_like_urls_are_not_found(client, path):
    _assert_error(client.post(path, json=PROPS), 404, "NotFound")


# ------------------------------------------------------------------ endpoints


def test_health(client):
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "ok"
    assert resp.headers["Cache-Control"] == "no-store"


def test_paths_present(client):
    resp = _post(client, {"protocol": "ISCSI", "connection_properties": PROPS})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body == {
        "protocol": "ISCSI",
        "paths": [PRESENT],
        "present": True,
        "search_path": "/dev/disk/by-path",
        "host": socket.gethostname(),
        "objects": body["objects"],
        "missing": [],
        "shared": [],
    }
    # the test connector knows only paths: the device behind the path, the link to it
    assert [(o["kind"], o["name"]) for o in body["objects"]] == [
        ("device", "sda"),
        ("link", "/dev/disk/by-id/scsi-36001405aaaaaaaaaaaaaaaaaaaaaaaa1"),
        ("link", PRESENT),
    ]


def test_paths_absent(client):
    props = dict(PROPS, target_lun=2)
    resp = _post(client, {"protocol": "iscsi", "connection_properties": props})
    assert resp.status_code == 200
    assert resp.get_json() == {
        "protocol": "ISCSI",
        "paths": [],
        "present": False,
        "search_path": "/dev/disk/by-path",
        "host": socket.gethostname(),
        "objects": [],
        "missing": [],
        "shared": [],
    }


def test_paths_accepts_cinder_envelope(client):
    resp = _post(
        client,
        {
            "protocol": "ISCSI",
            "connection_properties": {"driver_volume_type": "iscsi", "data": PROPS},
        },
    )
    assert resp.get_json()["paths"] == [PRESENT]


def test_paths_do_not_mutate_or_leak(client):
    props = json.loads(json.dumps(PROPS))
    _post(client, {"protocol": "ISCSI", "connection_properties": props})
    assert props == PROPS


def test_volumes_of_one_protocol(client):
    resp = client.get("/v1/volumes?protocol=iscsi")
    assert resp.status_code == 200
    assert resp.get_json() == {"volumes": {"ISCSI": [{"path": PRESENT}]}, "errors": {}}


def test_volumes_of_every_protocol_reports_unavailable_ones(client):
    resp = client.get("/v1/volumes")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["volumes"] == {"ISCSI": [{"path": PRESENT}]}
    assert set(body["errors"]) == {"NVMEOF", "FIBRE_CHANNEL"}
    assert body["errors"]["NVMEOF"]["error"] == "NotSupported"


def test_connector_endpoint_uses_roots_and_never_creates_identity(
    client, app, monkeypatch, fakehost
):
    from brick_agent import connector_properties as cp

    seen = {}

    def fake(**kw):
        seen.update(kw)
        return {"host": "h1", "initiator": "iqn.2004-10.org.test:h1", "multipath": False}

    monkeypatch.setattr(cp, "get_connector_properties", fake)
    resp = client.get("/v1/connector")
    assert resp.status_code == 200
    assert resp.get_json()["initiator"] == "iqn.2004-10.org.test:h1"
    assert seen["create_nvme_identity"] is False
    assert seen["roots"] == fakehost.roots
    assert seen["multipath"] is False


def test_connector_endpoint_on_fake_tree(client, fakehost):
    pytest.importorskip("brick_agent.connectors.iscsi.connector")
    pytest.importorskip("brick_agent.connectors.nvmeof.identity")
    (fakehost.base / "etc" / "iscsi").mkdir(parents=True)
    (fakehost.base / "etc" / "iscsi" / "initiatorname.iscsi").write_text(
        "InitiatorName=iqn.2004-10.org.test:gatehost\n"
    )
    resp = client.get("/v1/connector")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["initiator"] == "iqn.2004-10.org.test:gatehost"
    assert not (fakehost.base / "etc" / "nvme" / "hostnqn").exists()


def test_audit_get_clean(client):
    resp = client.get("/v1/audit")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["clean"] is True and body["findings"] == [] and body["errors"] == []
    assert body["volumes"][0]["protocol"] == "ISCSI"


def test_audit_get_names_orphan(client, fakehost):
    fakehost.iscsi_session(5, 6, "iqn.2003-01.org.test:orphan")
    body = client.get("/v1/audit").get_json()
    assert body["clean"] is False
    assert [(f["kind"], f["name"]) for f in body["findings"]] == [
        ("iscsi_session_without_luns", "session5")
    ]


def test_audit_nvme_grace(client, fakehost):
    fakehost.nvme_controller(0, 0, "nqn.2014-08.org.test:s1", state="connecting")
    fakehost.nvme_namespace(0, [0], 1, "5b2a0c9e-1111-4d6f-8e3a-0123456789ab")
    body = client.get("/v1/audit?nvme_grace=0.2").get_json()
    assert [(f["kind"], f["name"]) for f in body["findings"]] == [
        ("nvme_controller_not_live", "nvme0")
    ]
    assert "still after 0.2s" in body["findings"][0]["detail"]
    body = client.post("/v1/audit?nvme_grace=0", json={"expected": []}).get_json()
    assert {f["kind"] for f in body["findings"]} == {
        "nvme_controller_not_live",
        "unexpected_volume",
    }


@pytest.mark.parametrize(
    "query",
    [
        "nvme_grace=abc",
        "nvme_grace=61",
        "nvme_grace=-1",
        "nvme_grace=nan",
        "nvme_grace=inf",
        "nvme_grace=",
        "nvme_grace=1&nvme_grace=2",
    ],
)
def test_audit_bad_nvme_grace(client, query):
    _assert_error(client.get(f"/v1/audit?{query}"), 400, "InvalidRequest", key="nvme_grace")


def test_audit_post_expected(client):
    resp = client.post(
        "/v1/audit", json={"expected": [{"protocol": "ISCSI", "wwid": WWID, "name": "vol-1"}]}
    )
    assert resp.status_code == 200 and resp.get_json()["clean"] is True
    body = client.post("/v1/audit", json={"expected": []}).get_json()
    assert [f["kind"] for f in body["findings"]] == ["unexpected_volume"]


# ------------------------------------------------------------------ error paths


def test_paths_wrong_content_type(client):
    resp = client.post(
        "/v1/paths", data=json.dumps({"protocol": "ISCSI"}), content_type="text/plain"
    )
    _assert_error(resp, 400, "InvalidRequest", key="Content-Type")


def test_paths_no_body(client):
    _assert_error(client.post("/v1/paths"), 400, "InvalidRequest", key="Content-Type")


@pytest.mark.parametrize("raw", ["{not json", "", "\xff\xfe", '{"protocol": "ISCSI",}'])
def test_paths_bad_json(client, raw):
    resp = client.post("/v1/paths", data=raw, content_type="application/json")
    _assert_error(resp, 400, "InvalidRequest", key="body")


@pytest.mark.parametrize("body", [[], "ISCSI", 5, None])
def test_paths_body_not_an_object(client, body):
    resp = client.post("/v1/paths", data=json.dumps(body), content_type="application/json")
    _assert_error(resp, 400, "InvalidRequest", key="body")


@pytest.mark.parametrize(
    "body,key",
    [
        ({"connection_properties": PROPS}, "protocol"),
        ({"protocol": 7, "connection_properties": PROPS}, "protocol"),
        ({"protocol": "", "connection_properties": PROPS}, "protocol"),
        ({"protocol": "ISCSI"}, "connection_properties"),
        ({"protocol": "ISCSI", "connection_properties": [PROPS]}, "connection_properties"),
        ({"protocol": "ISCSI", "connection_properties": PROPS, "force": True}, "force"),
    ],
)
def test_paths_bad_fields(client, body, key):
    _assert_error(_post(client, body), 400, "InvalidRequest", key=key)


def test_paths_unknown_protocol(client):
    body = _assert_error(
        _post(client, {"protocol": "SMB", "connection_properties": PROPS}),
        400,
        "InvalidConnectorProtocol",
    )
    assert "SMB" in body["message"]


def test_paths_unavailable_protocol(client):
    _assert_error(
        _post(client, {"protocol": "NVMEOF", "connection_properties": {}}), 501, "NotSupported"
    )


@pytest.mark.parametrize(
    "change,key",
    [
        ({"target_portal": "192.0.2.10"}, "target_portal"),
        ({"target_iqn": "not an iqn"}, "target_iqn"),
        ({"target_lun": -1}, "target_lun"),
        ({"auth_password": 12}, "auth_password"),
    ],
)
def test_paths_invalid_properties(client, change, key):
    body = _assert_error(
        _post(client, {"protocol": "ISCSI", "connection_properties": dict(PROPS, **change)}),
        400,
        "InvalidConnectionProperties",
        key=key,
    )
    assert key in body["message"]


def test_volumes_bad_protocol(client):
    _assert_error(client.get("/v1/volumes?protocol=SMB"), 400, "InvalidConnectorProtocol")
    _assert_error(client.get("/v1/volumes?protocol="), 400, "InvalidRequest", key="protocol")
    _assert_error(
        client.get("/v1/volumes?protocol=ISCSI&protocol=FC"), 400, "InvalidRequest", key="protocol"
    )
    _assert_error(client.get("/v1/volumes?protocol=FC"), 501, "NotSupported")


@pytest.mark.parametrize(
    "body,name,key",
    [
        ({}, "InvalidRequest", "expected"),
        ({"expected": "all"}, "InvalidRequest", "expected"),
        ({"expected": [], "extra": 1}, "InvalidRequest", "extra"),
        ({"expected": [{"protocol": "ISCSI"}]}, "InvalidExpectedVolume", "wwid"),
        ({"expected": [5]}, "InvalidExpectedVolume", "expected"),
        ({"expected": [{"protocol": "SMB", "wwid": "x"}]}, "InvalidExpectedVolume", "protocol"),
    ],
)
def test_audit_post_bad_body(client, body, name, key):
    _assert_error(client.post("/v1/audit", json=body), 400, name, key=key)


def test_audit_post_wrong_content_type(client):
    _assert_error(
        client.post("/v1/audit", data="x", content_type="text/plain"),
        400,
        "InvalidRequest",
        key="Content-Type",
    )


def test_method_not_allowed(client):
    resp = client.get("/v1/paths")
    _assert_error(resp, 405, "MethodNotAllowed")
    assert "POST" in resp.headers["Allow"]
    _assert_error(client.delete("/v1/audit"), 405, "MethodNotAllowed")


def test_body_too_large(client):
    big = {"protocol": "ISCSI", "connection_properties": dict(PROPS, pad="x" * (2 << 20))}
    _assert_error(_post(client, big), 413, "RequestEntityTooLarge")


@pytest.mark.parametrize(
    "exc,status",
    [
        (errors.DeviceNotFound("no device"), 404),
        (errors.VolumeIdentityMismatch("wrong wwid"), 409),
        (errors.TargetUnreachable("portal down"), 502),
        (errors.LockTimeout("lock busy"), 503),
        (errors.CommandFailed(["iscsiadm", "-m", "session"], 21, "no session"), 500),
    ],
)
def test_brick_errors_map_to_status(conf, fakehost, exc, status):
    FailingConnector.ERROR = exc
    app = create_app(
        conf,
        roots=fakehost.roots,
        connector_factory=lambda p, **kw: link_factory(p, cls=FailingConnector, **kw),
    )
    resp = _post(app.test_client(), {"protocol": "ISCSI", "connection_properties": PROPS})
    _assert_error(resp, status, type(exc).__name__)


def test_unexpected_exception_is_500_without_traceback(conf, fakehost, caplog):
    FailingConnector.ERROR = KeyError(f"secret {PASSWORD} in a bug")
    app = create_app(
        conf,
        roots=fakehost.roots,
        connector_factory=lambda p, **kw: link_factory(p, cls=FailingConnector, **kw),
    )
    with caplog.at_level(logging.ERROR, logger="brick_agent.gate.app"):
        resp = app.test_client().get("/v1/volumes?protocol=ISCSI")
    body = _assert_error(resp, 500, "InternalError")
    assert "KeyError" not in body["message"] and PASSWORD not in resp.get_data(as_text=True)
    assert "failed unexpectedly" in caplog.text


def test_missing_connector_module_is_not_supported(conf, fakehost):
    def factory(protocol, **kw):
        raise ModuleNotFoundError("No module named 'brick_agent.connectors.nvmeof.connector'")

    app = create_app(conf, roots=fakehost.roots, connector_factory=factory)
    _assert_error(app.test_client().get("/v1/volumes?protocol=NVMEOF"), 501, "NotSupported")


# ------------------------------------------------------------------ secrets


def test_chap_password_never_in_any_response(conf, fakehost):
    """Send the password through every endpoint and error path; it never comes back."""
    bodies = [
        {"protocol": "ISCSI", "connection_properties": PROPS},
        {"protocol": "ISCSI", "connection_properties": dict(PROPS, target_portal="bad")},
        {"protocol": "ISCSI", "connection_properties": dict(PROPS, auth_password=[PASSWORD])},
        {"protocol": "ISCSI", "connection_properties": dict(PROPS, auth_method="PAP")},
        {"protocol": PASSWORD, "connection_properties": PROPS},
        {"protocol": "ISCSI", "connection_properties": PROPS, PASSWORD: 1},
        {
            "protocol": "ISCSI",
            "connection_properties": dict(
                PROPS,
                discovery_auth_method="CHAP",
                discovery_auth_username="d",
                discovery_auth_password=PASSWORD,
            ),
        },
    ]
    responses = []
    client = create_app(conf, roots=fakehost.roots, connector_factory=link_factory).test_client()
    for body in bodies:
        responses.append(_post(client, body))
    responses.append(
        client.post(
            "/v1/audit",
            json={"expected": [{"protocol": "ISCSI", "wwid": WWID, "password": PASSWORD}]},
        )
    )
    # a misbehaving connector that puts the password in its error message
    for exc in (
        errors.TargetUnreachable(f"login with {PASSWORD} failed"),
        errors.InvalidArgument(f"bad {PASSWORD}"),
    ):
        FailingConnector.ERROR = exc
        bad = create_app(
            conf,
            roots=fakehost.roots,
            connector_factory=lambda p, **kw: link_factory(p, cls=FailingConnector, **kw),
        ).test_client()
        responses.append(_post(bad, {"protocol": "ISCSI", "connection_properties": PROPS}))
    assert [r.status_code for r in responses] == [200, 400, 400, 400, 400, 400, 200, 400, 502, 400]
    for r in responses:
        assert PASSWORD not in r.get_data(as_text=True)
    assert "***" in responses[-2].get_json()["message"]


# ------------------------------------------------------------------ bearer token


@pytest.fixture
def token_client(fakehost):
    conf = make_conf(gate_host="0.0.0.0", gate_token="s3cr3t-t0ken")
    return create_app(conf, roots=fakehost.roots, connector_factory=link_factory).test_client()


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong",
        "Basic s3cr3t-t0ken",
        "s3cr3t-t0ken",
        "Bearer s3cr3t-t0ke",
        "Bearer s3cr3t-t0ken2",
        "Bearer ",
    ],
)
@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/connector"),
        ("GET", "/v1/volumes"),
        ("POST", "/v1/paths"),
        ("GET", "/v1/audit"),
        ("GET", "/openapi.json"),
        ("GET", "/nope"),
    ],
)
def test_token_required(token_client, header, method, path):
    headers = {"Authorization": header} if header is not None else {}
    resp = token_client.open(
        path,
        method=method,
        headers=headers,
        json={"protocol": "ISCSI", "connection_properties": PROPS},
    )
    _assert_error(resp, 401, "Unauthorized")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "s3cr3t-t0ken" not in resp.get_data(as_text=True)


def test_token_accepted(token_client):
    for scheme in ("Bearer", "bearer"):
        headers = {"Authorization": f"{scheme} s3cr3t-t0ken"}
        resp = token_client.post(
            "/v1/paths", headers=headers, json={"protocol": "ISCSI", "connection_properties": PROPS}
        )
        assert resp.status_code == 200 and resp.get_json()["present"] is True
        assert token_client.get("/v1/audit", headers=headers).status_code == 200


def test_health_needs_no_token(token_client):
    assert token_client.get("/health").status_code == 200


def test_token_on_loopback_is_enforced_too(fakehost):
    conf = make_conf(gate_token="tok")
    client = create_app(conf, roots=fakehost.roots, connector_factory=link_factory).test_client()
    assert client.get("/v1/audit").status_code == 401
    assert client.get("/v1/audit", headers={"Authorization": "Bearer tok"}).status_code == 200


def test_token_compared_in_constant_time(token_client, monkeypatch):
    calls = []
    real = gate_app.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(gate_app.hmac, "compare_digest", spy)
    token_client.get("/v1/audit", headers={"Authorization": "Bearer nope"})
    assert calls == [(b"nope", b"s3cr3t-t0ken")]


# ------------------------------------------------------------------ OpenAPI


def test_openapi_documents_every_route(app, client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {
        (path, method.upper())
        for path, ops in spec["paths"].items()
        for method in ops
        if method != "parameters"
    }
    routes = {
        (r.rule, m)
        for r in app.url_map.iter_rules()
        for m in r.methods
        if m not in ("HEAD", "OPTIONS") and r.endpoint != "static"
    }
    assert documented == routes
    # every $ref resolves
    text = json.dumps(spec)
    import re

    for ref in set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', text)):
        assert ref in spec["components"]["schemas"]


def test_openapi_is_a_valid_document(client):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(client.get("/openapi.json").get_json())
