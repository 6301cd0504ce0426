"""The gate served by the real WSGI server (waitress) on loopback, over real HTTP.

Also the multi-host detach verifier (brick_agent.gate.verify, ``brick-agent
verify-detach``) against two such servers reading different fake host trees.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from brick_agent import cli
from brick_agent.gate import verify as verify_detach
from brick_agent.gate.app import GateConfigurationError, GateDisabled
from brick_agent.gate.server import make_server, serve, stop_server
from tests.unit.gate.conftest import IQN, PASSWORD, PROPS, host_with_volume, link_factory, make_conf
from tests.unit.gate.fakehost import FakeHost

REPO = Path(__file__).resolve().parents[3]


def _real_connectors() -> bool:
    return importlib.util.find_spec("brick_agent.connectors.iscsi.connector") is not None


@contextlib.contextmanager
def running(conf, roots, connector_factory=None, host="127.0.0.1") -> Iterator[str]:
    """A gate server on a free loopback port in a thread; yields its base URL."""
    server = make_server(conf, roots, host=host, port=0, connector_factory=connector_factory)
    thread = threading.Thread(target=server.run, name="gate-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stop_server(server)
        thread.join(10)
        assert not thread.is_alive(), "server thread did not stop"


def _request(url, body=None, headers=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_refuses_to_serve_when_disabled():
    with pytest.raises(GateDisabled):
        serve(make_conf(gate_enabled=False))


def test_host_override_obeys_the_token_rule(tmp_path):
    with pytest.raises(GateConfigurationError, match="gate_token"):
        make_server(make_conf(), FakeHost(tmp_path).roots, host="0.0.0.0", port=0)


def test_a_host_with_several_addresses_is_refused(tmp_path, monkeypatch):
    """waitress makes one listener per address of a host name (a MultiSocketServer); the
    gate serves one listener, so it refuses instead of starting without its JSON errors."""
    import waitress.server

    real = waitress.server.create_server
    made = []

    def two_listeners(app, host, port, **kw):  # as if host resolved to two addresses
        made.append(real(app, listen="127.0.0.1:0 127.0.0.1:0", **kw))
        return made[-1]

    monkeypatch.setattr(waitress.server, "create_server", two_listeners)
    with pytest.raises(GateConfigurationError, match="several addresses"):
        make_server(make_conf(), FakeHost(tmp_path).roots, host="localhost", port=0)
    assert isinstance(made[0], waitress.server.MultiSocketServer)
    assert not made[0].map  # its listeners were closed


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_in_a_process_until_sigterm(tmp_path):
    """serve(): the blocking entry point `brick-agent gate` uses; SIGTERM stops it cleanly."""
    import signal
    import subprocess
    import sys
    import time

    host = host_with_volume(tmp_path / "h")
    port = _free_port()
    conf_file = tmp_path / "gate.conf"
    conf_file.write_text(f"[brick_agent]\ngate_enabled = true\ngate_port = {port}\n")
    code = (
        "import sys; from brick_agent import config; from brick_agent.gate.server import serve;"
        "from brick_agent.host.roots import HostRoots;"
        f"serve(config.new_conf(config_files=[{str(conf_file)!r}]),"
        f" roots=HostRoots.under({str(host.base)!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _, text = _request(f"http://127.0.0.1:{port}/v1/audit")
                break
            except urllib.error.URLError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.1)
        assert status == 200 and json.loads(text)["clean"] is True
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err  # a clean stop
    assert f"listening on http://127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_over_http(tmp_path):
    h = host_with_volume(tmp_path / "h")
    with running(make_conf(), h.roots, link_factory) as url:
        status, headers, text = _request(url + "/health")
        assert status == 200 and json.loads(text)["status"] == "ok"
        assert headers["Server"] == "brick-agent-gate"
        status, _, text = _request(
            url + "/v1/paths", {"protocol": "ISCSI", "connection_properties": PROPS}
        )
        assert status == 200 and json.loads(text)["present"] is True
        assert PASSWORD not in text
        status, _, text = _request(
            url + "/v1/paths",
            {"protocol": "ISCSI", "connection_properties": dict(PROPS, target_lun="x")},
        )
        assert status == 400 and json.loads(text)["key"] == "target_lun"
        assert PASSWORD not in text
        status, _, text = _request(url + "/v1/audit")
        assert status == 200 and json.loads(text)["clean"] is True
        status, _, text = _request(url + "/openapi.json")
        assert status == 200 and json.loads(text)["openapi"].startswith("3.")


def test_over_http_malformed_request(tmp_path):
    h = FakeHost(tmp_path)
    with running(make_conf(), h.roots, link_factory) as url:
        req = urllib.request.Request(
            url + "/v1/paths",
            data=b"{oops",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 400
        assert json.loads(info.value.read())["error"] == "InvalidRequest"


def test_over_http_with_token(tmp_path):
    h = host_with_volume(tmp_path / "h")
    conf = make_conf(gate_token="tok-123")
    with running(conf, h.roots, link_factory) as url:
        assert _request(url + "/health")[0] == 200
        assert _request(url + "/v1/audit")[0] == 401
        ok = _request(url + "/v1/audit", headers={"Authorization": "Bearer tok-123"})
        assert ok[0] == 200


# ------------------------------------------------------------------ verifier


@pytest.fixture
def two_hosts(tmp_path):
    """'dest' has the volume attached, 'src' was cleanly detached."""
    dest = host_with_volume(tmp_path / "dest")
    src = FakeHost(tmp_path / "src")
    return dest, src


@pytest.fixture
def props_file(tmp_path):
    path = tmp_path / "props.json"
    path.write_text(json.dumps({"driver_volume_type": "iscsi", "data": PROPS}))
    return str(path)


@pytest.fixture(params=["test-connector", "real-connector"])
def factory(request):
    if request.param == "real-connector":
        if not _real_connectors():
            pytest.skip("brick_agent.connectors.iscsi.connector not available yet")
        return None  # the app's default: brick_agent.connectors.factory
    return link_factory


def _verify(args):
    out = io.StringIO()
    code = verify_detach.main(args, stdout=out)
    return code, (json.loads(out.getvalue()) if out.getvalue() else None)


def test_verifier_pass_and_fail(two_hosts, props_file, factory):
    dest, src = two_hosts
    conf = make_conf()
    with (
        running(conf, dest.roots, factory) as dest_url,
        running(conf, src.roots, factory) as src_url,
    ):
        base = ["--protocol", "ISCSI", "--properties", props_file]
        code, verdict = _verify(base + ["--present", dest_url, "--absent", src_url])
        assert code == 0, verdict
        assert verdict["verdict"] == "pass"
        assert [(h["expect"], h["ok"], len(h["paths"])) for h in verdict["hosts"]] == [
            ("present", True, 1),
            ("absent", True, 0),
        ]
        # swapped: the volume is not on the "destination" and still on the "source"
        code, verdict = _verify(base + ["--present", src_url, "--absent", dest_url])
        assert code == 1 and verdict["verdict"] == "fail"
        assert [h["ok"] for h in verdict["hosts"]] == [False, False]
        # a leftover on the source only
        code, verdict = _verify(base + ["--present", dest_url, "--absent", dest_url])
        assert code == 1 and [h["ok"] for h in verdict["hosts"]] == [True, False]


def test_verifier_after_broken_detach(tmp_path, props_file, factory):
    """Session kept and by-path link left dangling after the LUN was deleted: the real
    connector names both as left behind (the test connector knows only paths); the audit
    names them either way."""
    src = host_with_volume(tmp_path / "src")
    src.remove_lun("2:0:0:1")  # device deleted, session kept, link left dangling
    with running(make_conf(), src.roots, factory) as src_url:
        code, verdict = _verify(
            ["--protocol", "ISCSI", "--properties", props_file, "--absent", src_url]
        )
        (host,) = verdict["hosts"]
        if factory is None:  # the real connectors
            assert code == 1, verdict
            assert {o["kind"] for o in host["objects"]} == {"session", "link"}
            assert any("session1" in p for p in host["problems"])
            assert any("by-path/ip-192.0.2.10:3260" in p for p in host["problems"])
        else:
            assert code == 0, verdict
        status, _, text = _request(src_url + "/v1/audit")
        kinds = {f["kind"] for f in json.loads(text)["findings"]}
        assert kinds == {"iscsi_session_without_luns", "dangling_link"}


def test_verifier_audit_option(tmp_path, props_file, factory):
    """--audit: the absent host must also have no leftovers at all."""
    dest = host_with_volume(tmp_path / "dest")
    src = host_with_volume(tmp_path / "src")
    src.remove_lun("2:0:0:1")  # paths gone, session and links left
    clean = FakeHost(tmp_path / "clean")
    conf = make_conf()
    with (
        running(conf, dest.roots, factory) as dest_url,
        running(conf, src.roots, factory) as src_url,
        running(conf, clean.roots, factory) as clean_url,
    ):
        base = ["--protocol", "ISCSI", "--properties", props_file, "--present", dest_url]
        code, verdict = _verify(base + ["--absent", src_url])
        assert code == (1 if factory is None else 0)  # real connectors see the leftovers
        code, verdict = _verify(base + ["--absent", src_url, "--absent", clean_url, "--audit"])
        assert code == 1 and verdict["verdict"] == "fail"
        present, leftover, ok = verdict["hosts"]
        assert "findings" not in present  # the audit is for absent hosts only
        assert leftover["ok"] is False and leftover["paths"] == []
        assert {f["kind"] for f in leftover["findings"]} == {
            "iscsi_session_without_luns",
            "dangling_link",
        }
        assert ok["ok"] is True and ok["findings"] == []


def test_verifier_with_token(two_hosts, props_file, tmp_path, monkeypatch):
    """The token comes from a file or the environment, never argv."""
    dest, src = two_hosts
    conf = make_conf(gate_token="tok-9")
    base = ["--protocol", "ISCSI", "--properties", props_file]
    monkeypatch.delenv("BRICK_GATE_TOKEN", raising=False)
    monkeypatch.delenv("BRICK_GATE_TOKEN_FILE", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("tok-9\n")
    with running(conf, dest.roots, link_factory) as dest_url:
        base += ["--present", dest_url]
        code, verdict = _verify(base)
        assert code == 3 and "HTTP 401" in verdict["hosts"][0]["error"]
        code, verdict = _verify(base + ["--token-file", str(token_file)])
        assert code == 0, verdict
        monkeypatch.setenv("BRICK_GATE_TOKEN_FILE", str(token_file))
        assert _verify(base)[0] == 0
        monkeypatch.delenv("BRICK_GATE_TOKEN_FILE")
        monkeypatch.setenv("BRICK_GATE_TOKEN", "tok-9")
        assert _verify(base)[0] == 0
        # on the command line: refused before anything is asked
        assert _verify(base + ["--token", "tok-9"]) == (2, None)
        assert _verify(base + ["--token-file", str(tmp_path / "none")]) == (2, None)
        (tmp_path / "empty").write_text("")
        assert _verify(base + ["--token-file", str(tmp_path / "empty")]) == (2, None)


def test_verifier_unreachable_and_errors(two_hosts, props_file, tmp_path):
    dest, _ = two_hosts
    with running(make_conf(), dest.roots, link_factory) as dest_url:
        pass  # stopped: its port is now closed
    code, verdict = _verify(
        ["--protocol", "ISCSI", "--properties", props_file, "--absent", dest_url, "--timeout", "2"]
    )
    assert code == 3 and verdict["verdict"] == "error"
    assert verdict["hosts"][0]["error"].startswith("unreachable")
    with running(make_conf(), dest.roots, link_factory) as url:
        code, verdict = _verify(["--protocol", "SMB", "--properties", props_file, "--absent", url])
        assert code == 3 and "InvalidConnectorProtocol" in verdict["hosts"][0]["error"]
        assert PASSWORD not in json.dumps(verdict)


def test_verifier_usage(props_file, tmp_path, capsys):
    assert verify_detach.main(["--protocol", "ISCSI", "--properties", props_file]) == 2
    assert verify_detach.main(["--present", "http://x"]) == 2
    missing = str(tmp_path / "nope.json")
    assert (
        verify_detach.main(
            ["--protocol", "ISCSI", "--properties", missing, "--present", "http://x"]
        )
        == 2
    )
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert (
        verify_detach.main(
            ["--protocol", "ISCSI", "--properties", str(bad), "--present", "http://x"]
        )
        == 2
    )


def test_verifier_reads_stdin(two_hosts):
    dest, _ = two_hosts
    with running(make_conf(), dest.roots, link_factory) as url:
        out = io.StringIO()
        code = verify_detach.main(
            ["--protocol", "ISCSI", "--properties", "-", "--present", url],
            stdin=io.StringIO(json.dumps(PROPS)),
            stdout=out,
        )
        assert code == 0 and json.loads(out.getvalue())["verdict"] == "pass"


def _run_module(*args, module="brick_agent.gate.verify", site=True):
    """``python [-S] -m module args`` with only this checkout on PYTHONPATH."""
    import subprocess
    import sys

    argv = [sys.executable, *([] if site else ["-S"]), "-m", module, *args]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_verifier_runs_with_the_standard_library_only(two_hosts, props_file):
    """``python -S``: no site-packages (no flask, oslo.*, pyudev), only this checkout: the
    verifier still parses, asks a gate over HTTP and prints its verdict, as on a CI node
    without brick_agent's dependencies."""
    proc = _run_module("--help", site=False)
    assert proc.returncode == 0 and "--present" in proc.stdout
    assert IQN not in proc.stdout
    dest, src = two_hosts
    conf = make_conf()
    with (
        running(conf, dest.roots, link_factory) as dest_url,
        running(conf, src.roots, link_factory) as src_url,
    ):
        proc = _run_module(
            "--protocol",
            "ISCSI",
            "--properties",
            props_file,
            "--present",
            dest_url,
            "--absent",
            src_url,
            site=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["verdict"] == "pass"
        proc = _run_module(
            "--protocol", "ISCSI", "--properties", props_file, "--present", src_url, site=False
        )
        assert proc.returncode == 1 and json.loads(proc.stdout)["verdict"] == "fail"


def test_cli_verify_detach_is_the_verifier(two_hosts, props_file, capsys):
    """``brick-agent verify-detach ARGS``: the verifier's options, JSON verdict and exit
    statuses, unchanged (global options before the command are accepted)."""
    dest, src = two_hosts
    conf = make_conf()
    with (
        running(conf, dest.roots, link_factory) as dest_url,
        running(conf, src.roots, link_factory) as src_url,
    ):
        base = ["--protocol", "ISCSI", "--properties", props_file]
        cases = [
            base + ["--present", dest_url, "--absent", src_url],
            base + ["--present", src_url, "--absent", dest_url],
            base + ["--present", dest_url, "--absent", dest_url, "--audit"],
            base + ["--present", dest_url, "--retries", "0", "--timeout", "5"],
            ["--present", dest_url],
            base,
            base + ["--present", dest_url, "--no-such-option"],
        ]
        codes = []
        for args in cases:
            direct, via_cli = io.StringIO(), io.StringIO()
            code = verify_detach.main(args, stdout=direct)
            assert cli.main(["verify-detach", *args], stdout=via_cli) == code, args
            assert via_cli.getvalue() == direct.getvalue(), args
            codes.append(code)
        assert codes == [0, 1, 1, 0, 2, 2, 2]
        out = io.StringIO()
        assert cli.main(["--debug", "verify-detach", *cases[0]], stdout=out) == 0
        assert json.loads(out.getvalue())["verdict"] == "pass"
    capsys.readouterr()
    assert cli.main(["verify-detach", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: brick-agent verify-detach ")
    for option in (
        "--present",
        "--absent",
        "--protocol",
        "--properties",
        "--token-file",
        "--audit",
        "--timeout",
        "--retries",
        "--human",
        "--junit",
    ):
        assert option in help_text


def test_brick_agent_command_runs_verify_detach():
    """The installed command's entry point (brick_agent.cli:main) in its own process."""
    proc = _run_module("verify-detach", "--help", module="brick_agent.cli")
    assert proc.returncode == 0 and "usage: brick-agent verify-detach" in proc.stdout
    proc = _run_module("--help", module="brick_agent.cli")
    assert proc.returncode == 0 and "verify-detach" in proc.stdout
    proc = _run_module("verify-detach", "--present", "http://x", module="brick_agent.cli")
    assert proc.returncode == 2 and "--protocol" in proc.stderr
