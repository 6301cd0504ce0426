"""Bad input and overload against the gate over real HTTP (waitress): always JSON, never 5xx,
and /health always answers."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.gate.conftest import make_conf
from tests.unit.gate.fakehost import FakeHost
from tests.unit.gate.test_server import running


def _raw(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _json_error(status: int, headers: dict[str, str], body: bytes) -> dict:
    assert headers.get("content-type", "").startswith("application/json"), (status, body)
    data = json.loads(body)
    assert set(data) >= {"error", "message"} and b"Traceback" not in body
    return data


def _nested(depth: int) -> bytes:
    return (
        b'{"protocol": "ISCSI", "connection_properties": {"x": '
        + b"[" * depth
        + b"]" * depth
        + b"}}"
    )


@pytest.fixture
def gate(tmp_path):
    with running(make_conf(), FakeHost(tmp_path).roots) as base:
        yield base


def _announce_body(base: str, length: int) -> tuple[int, dict[str, str], bytes]:
    """Send only the headers of a POST announcing ``length`` body bytes; read the answer
    (a server refusing the size answers before the body and closes)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/paths HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
            "\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize("size", [(1 << 20) + 1, 3 << 20, 1 << 40])
def test_too_large_body_is_a_json_413(gate, size):
    status, headers, body = _announce_body(gate, size)
    assert status == 413
    assert _json_error(status, headers, body)["error"] == "RequestEntityTooLarge"


@pytest.mark.parametrize("depth", [200, 1100, 100_000])
def test_deeply_nested_json_is_a_400(gate, depth):
    for path in ("/v1/paths", "/v1/audit"):
        status, headers, body = _raw(gate, "POST", path, _nested(depth))
        assert status == 400, body[:300]
        assert _json_error(status, headers, body)["error"] == "InvalidRequest"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "protocol": st.sampled_from(["ISCSI", "NVMEOF", "x", ""]),
                "connection_properties": json_values,
            }
        ).map(lambda v: json.dumps(v).encode()),
        st.integers(min_value=900, max_value=5000).map(_nested),
        st.binary(max_size=200),
    ),
    path=st.sampled_from(["/v1/paths", "/v1/audit"]),
)
def test_fuzzed_bodies_never_give_a_5xx(gate, body, path):
    status, headers, data = _raw(gate, "POST", path, body)
    assert status < 500, data[:300]
    if status >= 400:
        _json_error(status, headers, data)


def test_slow_audits_are_bounded_and_health_always_answers(tmp_path, monkeypatch):
    host = FakeHost(tmp_path)
    host.nvme_controller(0, 0, "nqn.2014-08.org.test:s1", state="connecting")
    with running(make_conf(), host.roots) as base:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            audits = [pool.submit(_raw, base, "GET", "/v1/audit?nvme_grace=3") for _ in range(6)]
            time.sleep(0.5)  # every audit has been accepted
            start = time.monotonic()
            status, _, body = _raw(base, "GET", "/health", timeout=10)
            health_took = time.monotonic() - start
            results = [f.result(timeout=30) for f in audits]
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert health_took < 1.0, health_took
    codes = sorted(code for code, _, _ in results)
    assert 200 in codes and set(codes) <= {200, 429}
    busy = [(h, b) for code, h, b in results if code == 429]
    assert busy, codes
    for headers, body in busy:
        assert int(headers["retry-after"]) >= 1
        assert _json_error(429, headers, body)["error"] == "GateBusy"
