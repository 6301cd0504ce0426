"""brick-agent CLI on trees captured from the lab kernel (no privileged action runs)."""

from __future__ import annotations

import contextlib
import io
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brick_agent import cli
from brick_agent.host.roots import HostRoots
from tests.unit.sysfs_trees import extract_tree
from tests.unit.test_audit_captured import kernel_delete_lun

SECRET = "Cli-Chap-Secret-77"


def run(argv: list[str], stdin: str = "") -> tuple[int, object, str]:
    out = io.StringIO()
    code = cli.main(argv, stdin=io.StringIO(stdin), stdout=out)
    text = out.getvalue()
    try:
        return code, json.loads(text) if text.strip() else None, text
    except ValueError:
        return code, None, text


@pytest.fixture
def iscsi_host(tmp_path):
    roots = extract_tree("iscsi-single", tmp_path)
    return os.path.dirname(roots.sys)


def test_connector_reports_host_identity_from_the_tree(iscsi_host):
    code, data, _ = run(
        ["--host-root", iscsi_host, "connector", "--my-ip", "192.0.2.7", "--multipath"]
    )
    assert code == cli.EXIT_OK
    with open(os.path.join(iscsi_host, "etc/iscsi/initiatorname.iscsi")) as f:
        iqn = f.read().split("=", 1)[1].strip()
    assert data["initiator"] == iqn
    assert data["ip"] == "192.0.2.7" and data["multipath"] is True
    assert data["nqn"].startswith("nqn.2014-08.org.nvmexpress:uuid:")


def test_volumes_lists_the_captured_iscsi_lun(iscsi_host):
    code, data, _ = run(["--host-root", iscsi_host, "volumes", "--protocol", "ISCSI"])
    assert code == cli.EXIT_OK
    (vol,) = data["ISCSI"]
    assert vol["iqn"] == "iqn.2003-01.org.brick-lab:single"
    assert vol["portal"] == "127.0.0.1:3260" and vol["lun"] == 0
    assert vol["wwid"] == "36001405aa6d2dc160f6b68a70cef7b43"


def test_paths_of_present_and_absent_volumes(iscsi_host):
    props = {
        "target_portal": "127.0.0.1:3260",
        "target_iqn": "iqn.2003-01.org.brick-lab:single",
        "target_lun": 0,
    }
    code, data, _ = run(["--host-root", iscsi_host, "paths", "ISCSI"], json.dumps(props))
    assert code == cli.EXIT_OK and data and all(p.startswith(iscsi_host) for p in data)
    props["target_lun"] = 5
    code, data, _ = run(
        ["--host-root", iscsi_host, "paths", "ISCSI"],
        json.dumps({"driver_volume_type": "iscsi", "data": props}),
    )
    assert code == cli.EXIT_OK and data == []


def test_invalid_properties_exit_2_without_leaking_the_secret(iscsi_host, capsys):
    props = {
        "target_portal": "127.0.0.1",
        "target_iqn": "iqn.2003-01.org.brick-lab:single",
        "target_lun": 0,
        "auth_method": "CHAP",
        "auth_username": "u",
        "auth_password": SECRET,
    }
    code, _, out = run(["--host-root", iscsi_host, "paths", "ISCSI"], json.dumps(props))
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert "target_portal" in err and SECRET not in err and SECRET not in out


def test_unreadable_json_and_unknown_protocol_exit_2(iscsi_host, capsys):
    assert run(["--host-root", iscsi_host, "paths", "ISCSI"], "{not json")[0] == cli.EXIT_USAGE
    assert run(["--host-root", iscsi_host, "paths", "FOO"], "{}")[0] == cli.EXIT_USAGE
    assert "InvalidConnectorProtocol" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["volumes", "--bogus"], ["--human", "audit", "extra"], ["paths", "ISCSI", "-", "more"]]
)
def test_unknown_arguments_are_a_usage_error(argv, capsys):
    """Only verify-detach passes what follows it on (to the verifier); every other command
    rejects arguments it does not know, before doing anything."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == cli.EXIT_USAGE
    assert "unrecognized arguments" in capsys.readouterr().err


def test_audit_clean_then_names_a_session_left_without_luns(iscsi_host):
    code, data, _ = run(["--host-root", iscsi_host, "audit"])
    assert code == cli.EXIT_OK and data["clean"] is True
    kernel_delete_lun(HostRoots.under(iscsi_host), "0:0:0:0")  # LUN gone, logout forgotten
    code, data, _ = run(["--host-root", iscsi_host, "audit"])
    assert code == cli.EXIT_LEFTOVERS and data["clean"] is False
    assert any(f["kind"] == "iscsi_session_without_luns" for f in data["findings"]), data


def test_audit_expected_volume_missing(iscsi_host):
    expected = [{"protocol": "ISCSI", "wwid": "36001405000000000000000000000beef"}]
    code, data, _ = run(
        ["--host-root", iscsi_host, "audit", "--expected", "-"], json.dumps(expected)
    )
    assert code == cli.EXIT_LEFTOVERS
    assert any("missing" in f["kind"] for f in data["findings"]), data


def test_gate_refuses_to_start_unless_enabled(capsys):
    assert run(["gate"])[0] == cli.EXIT_USAGE
    assert "gate_enabled" in capsys.readouterr().err


def test_human_output_is_a_table(iscsi_host):
    code, _, text = run(["--host-root", iscsi_host, "--human", "volumes", "--protocol", "ISCSI"])
    assert code == cli.EXIT_OK
    assert "iqn=iqn.2003-01.org.brick-lab:single" in text and "lun=0" in text


@pytest.mark.parametrize(
    "command", [["connect", "ISCSI"], ["disconnect", "ISCSI"], ["extend", "ISCSI"]]
)
def test_state_changing_commands_refuse_a_host_root(iscsi_host, command, monkeypatch, capsys):
    """--host-root reads a captured tree, but privileged actions would hit the live host."""
    ran: list[list[str]] = []

    def record(argv, **kwargs):
        ran.append([str(a) for a in argv])
        raise AssertionError("no command may run")

    monkeypatch.setattr("brick_agent.commands.run", record)
    props = {
        "target_portal": "127.0.0.1:3260",
        "target_iqn": "iqn.2003-01.org.brick-lab:single",
        "target_lun": 0,
        "auth_password": SECRET,
    }
    code, data, _ = run(["--host-root", iscsi_host, *command], json.dumps(props))
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and data is None
    assert "--host-root" in err and command[0] in err and "Traceback" not in err
    assert ran == []


def _nested_props(depth: int) -> str:
    return '{"target_portal": "127.0.0.1:3260", "x": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [100, 1100, 100_000])
def test_deeply_nested_json_is_invalid_input(iscsi_host, depth, capsys):
    code, data, _ = run(["--host-root", iscsi_host, "paths", "ISCSI"], _nested_props(depth))
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and data is None
    assert "nested deeper" in err and "Traceback" not in err


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=25,
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.one_of(
        _json.map(json.dumps),
        st.fixed_dictionaries(
            {
                "target_portal": st.text(max_size=30),
                "target_iqn": st.text(max_size=30),
                "target_lun": _json,
            }
        ).map(json.dumps),
        st.integers(min_value=500, max_value=20_000).map(_nested_props),
        st.text(max_size=100),
    ),
    command=st.sampled_from(
        [["paths", "ISCSI"], ["paths", "NVMEOF"], ["audit", "--expected", "-"]]
    ),
)
def test_fuzzed_json_input_never_gives_a_traceback(iscsi_host, text, command):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code, _, _ = run(["--host-root", iscsi_host, *command], text)
    assert code in (cli.EXIT_OK, cli.EXIT_USAGE, cli.EXIT_NOT_FOUND, cli.EXIT_LEFTOVERS), (
        err.getvalue()
    )
    assert "Traceback" not in err.getvalue()
