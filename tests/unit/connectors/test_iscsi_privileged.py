"""The production actions adapter: iscsiadm outcome mapping, sendtargets parsing, node-DB lock."""

from __future__ import annotations

import os
import threading
import time

import pytest

from brick_agent import config, errors
from brick_agent.connectors.iscsi import actions as ip
from brick_agent.errors import AuthenticationFailed, CommandFailed, TargetUnreachable
from brick_agent.host.roots import HostRoots

IQN = "iqn.2003-01.org.linux-iscsi.lab:tgt"


def test_parse_sendtargets_drops_tpgt_and_duplicates():
    out = (
        "127.0.0.1:3260,1 iqn.2003-01.org.x:a\n"
        "[fe80::1]:3260,1 iqn.2003-01.org.x:a\n"
        "127.0.0.1:3260,1 iqn.2003-01.org.x:a\n"
        "garbage line with words\n"
    )
    assert ip.parse_sendtargets(out) == [
        ("127.0.0.1:3260", "iqn.2003-01.org.x:a"),
        ("[fe80::1]:3260", "iqn.2003-01.org.x:a"),
    ]


@pytest.mark.parametrize(
    "code,timed_out,kind",
    [
        (24, False, AuthenticationFailed),
        (19, False, AuthenticationFailed),
        (8, False, TargetUnreachable),
        (4, False, TargetUnreachable),
        (None, True, TargetUnreachable),
        (6, False, CommandFailed),
    ],
)
def test_login_errors_are_typed(code, timed_out, kind):
    exc = CommandFailed(["iscsiadm", "--login"], code, "boom", timed_out=timed_out)
    err = ip._login_error(exc, "127.0.0.1:3260", IQN)
    assert type(err) is kind or (kind is CommandFailed and err is exc)
    assert IQN in str(err) or err is exc


def test_multipathd_running_reads_the_pid_file(tmp_path):
    roots = HostRoots.under(str(tmp_path))
    assert not ip.multipathd_running(roots)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "multipathd.pid").write_text("999999999\n")
    assert not ip.multipathd_running(roots)
    import os

    (tmp_path / "run" / "multipathd.pid").write_text(f"{os.getpid()}\n")
    assert ip.multipathd_running(roots)


def test_node_db_lock_is_shared_for_logins_exclusive_for_record_changes(tmp_path):
    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp_path), group="brick_agent")
    conf.set_override("privsep_in_process", True, group="brick_agent")
    a = ip.PrivilegedIscsiActions(conf)
    events: list[str] = []
    with a._node_db(exclusive=False):
        with a._node_db(exclusive=False):  # two readers at once
            events.append("two readers")

    def writer():
        with a._node_db(exclusive=True):
            events.append("writer")

    with a._node_db(exclusive=False):
        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.1)
        events.append("reader done")
    t.join(5)
    assert events == ["two readers", "reader done", "writer"]


def test_a_second_targets_record_is_written_before_the_first_login_not_after_it(
    tmp_path, monkeypatch
):
    """Two targets' first logins at once: the second record write does not wait for the
    first whole login (it holds back the first login instead), so the logins overlap."""
    from brick_agent.connectors.iscsi.actions import NodeSettings
    from brick_agent.privileged import iscsi as piscsi
    from brick_agent.privileged import iscsi_auth

    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp_path), group="brick_agent")
    conf.set_override("privsep_in_process", True, group="brick_agent")
    a = ip.PrivilegedIscsiActions(conf)
    spans: dict[str, list[float]] = {}
    a_written = threading.Event()

    def node_set_settings(iqn, portal, iface, settings):
        time.sleep(0.1)
        if iqn.endswith(":a"):
            a_written.set()
            time.sleep(0.2)  # B asks for the record lock meanwhile
        return {"set": [n for n, _ in settings], "absent": []}

    def node_login(iqn, portal, iface, timeout=30.0):
        start = time.monotonic()
        time.sleep(0.5)
        spans[iqn] = [start, time.monotonic()]
        return {}

    monkeypatch.setattr(piscsi, "node_create", lambda *a, **k: {})
    monkeypatch.setattr(iscsi_auth, "node_set_settings", node_set_settings)
    monkeypatch.setattr(piscsi, "node_login", node_login)

    def login(iqn: str) -> None:
        a.login(NodeSettings(portal="127.0.0.1:3260", iqn=iqn, manual_scan=False))

    first = threading.Thread(target=login, args=(IQN + ":a",))
    first.start()
    assert a_written.wait(5)
    login(IQN + ":b")
    first.join(5)
    (a_start, a_end), (b_start, _) = spans[IQN + ":a"], spans[IQN + ":b"]
    assert b_start < a_end, "the second login waited for the first to end"
    assert a_start > 0


def test_flush_is_the_bounded_privileged_flush_of_the_device(tmp_path, monkeypatch):
    """Never an fsync of this process's own (unbounded, and of whatever the path names):
    the privileged flush, which checks the device is a fabric volume's, bounded by
    flush_timeout; reached through a link as through the node."""
    from brick_agent.privileged import block

    conf = config.new_conf()
    conf.set_override("privsep_in_process", True, group="brick_agent")
    conf.set_override("flush_timeout", 7.5, group="brick_agent")
    a = ip.PrivilegedIscsiActions(conf)
    asked: list[tuple[str, float]] = []
    monkeypatch.setattr(block, "flush_block_device", lambda n, timeout: asked.append((n, timeout)))
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("fsync in the caller"))
    node = tmp_path / "sdz"
    node.write_bytes(b"x" * 4096)  # a node this process could open
    link = tmp_path / "ip-127.0.0.1:3260-iscsi-iqn-lun-0"
    link.symlink_to(node)
    a.flush(str(node))
    a.flush(str(link))
    assert asked == [("sdz", 7.5), ("sdz", 7.5)]


def test_flush_of_a_device_that_is_no_fabric_volume_is_refused():
    """The real privileged flush on this host: /dev/null exists but is no block device of
    a fabric volume; a name with no device at all is not found."""
    conf = config.new_conf()
    conf.set_override("privsep_in_process", True, group="brick_agent")
    a = ip.PrivilegedIscsiActions(conf)
    with pytest.raises(errors.BrickError):
        a.flush("/dev/null")
    with pytest.raises(errors.DeviceNotFound):
        a.flush("/dev/sdzz")


#: the lines ``iscsiadm --op new`` (2.1.8) writes for the settings a login sets
NEW_RECORD = (
    "# BEGIN RECORD 2.1.8\nnode.name = {iqn}\nnode.session.initial_login_retry_max = 4\n"
    "node.session.auth.authmethod = None\nnode.session.timeo.replacement_timeout = 120\n"
    "node.session.scan = auto\nnode.conn[0].timeo.login_timeout = 30\n# END RECORD\n"
)


def _fake_record_db(tmp_path, monkeypatch, record: str = NEW_RECORD) -> dict[str, list]:
    """iscsiadm's ``--op new`` and the record writes on a tmp database: what ran."""
    from brick_agent.privileged import iscsi as piscsi
    from brick_agent.privileged import iscsi_auth

    ran: dict[str, list] = {"update": [], "login": []}

    def node_create(iqn, portal, iface="default", timeout=30.0):
        path = tmp_path / "db" / "nodes" / iqn / portal.replace(":", ",")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record.format(iqn=iqn))
        return {}

    def node_set_settings(iqn, portal, iface, settings):
        return iscsi_auth.do_node_set_settings(
            iqn, portal, iface, settings, root=str(tmp_path / "db"), lock_dir=str(tmp_path)
        )

    def node_update(iqn, portal, iface, settings, timeout=30.0):
        names = [n for n, _ in settings]
        if "node.session.scan" in names:
            raise CommandFailed(["iscsiadm", "--op", "update"], 7, "unknown parameter")
        ran["update"].append(names)
        return {}

    monkeypatch.setattr(piscsi, "node_create", node_create)
    monkeypatch.setattr(iscsi_auth, "node_set_settings", node_set_settings)
    monkeypatch.setattr(piscsi, "node_update", node_update)
    monkeypatch.setattr(piscsi, "node_login", lambda *a, **k: ran["login"].append(a) or {})
    return ran


def _record_values(tmp_path) -> dict[str, str]:
    (path,) = [p for p in (tmp_path / "db" / "nodes").rglob("*") if p.is_file()]
    lines = [line.split("=", 1) for line in path.read_text().splitlines() if " = " in line]
    return {name.strip(): value.strip() for name, value in lines}


def test_a_new_nodes_settings_go_into_its_record_without_an_update_exec(tmp_path, monkeypatch):
    from brick_agent.connectors.iscsi.actions import NodeSettings
    from brick_agent.host import iscsiadm
    from brick_agent.properties.iscsi import ChapCredentials
    from brick_agent.secrets import Secret

    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp_path), group="brick_agent")
    conf.set_override("privsep_in_process", True, group="brick_agent")
    ran = _fake_record_db(tmp_path, monkeypatch)
    noted: list[bool] = []
    monkeypatch.setattr(iscsiadm, "note_manual_scan_result", noted.append)
    auth = ChapCredentials("brickuser", Secret("Pa55-w0rd"))
    ip.PrivilegedIscsiActions(conf).login(
        NodeSettings("127.0.0.1:3260", IQN, auth=auth, login_timeout=15.0, replacement_timeout=15)
    )
    values = _record_values(tmp_path)
    assert values["node.session.scan"] == "manual"
    assert values["node.session.initial_login_retry_max"] == "1"
    assert values["node.conn[0].timeo.login_timeout"] == "7"
    assert values["node.session.timeo.replacement_timeout"] == "15"
    assert values["node.session.auth.authmethod"] == "CHAP"
    assert values["node.session.auth.password"] == "Pa55-w0rd"
    assert ran["update"] == [] and len(ran["login"]) == 1
    assert noted == [True]


def test_iscsiadm_without_manual_scan_falls_back_and_is_remembered(tmp_path, monkeypatch):
    """An iscsiadm that does not know node.session.scan writes no line for it: the setting
    goes to --op update, whose refusal (exit 7) means automatic scans, remembered."""
    from brick_agent.connectors.iscsi.actions import NodeSettings
    from brick_agent.host import iscsiadm

    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp_path), group="brick_agent")
    conf.set_override("privsep_in_process", True, group="brick_agent")
    old = NEW_RECORD.replace("node.session.scan = auto\n", "")
    ran = _fake_record_db(tmp_path, monkeypatch, old)
    noted: list[bool] = []
    monkeypatch.setattr(iscsiadm, "note_manual_scan_result", noted.append)
    ip.PrivilegedIscsiActions(conf).login(NodeSettings("127.0.0.1:3260", IQN, manual_scan=True))
    assert noted == [False]
    assert ran["update"] == []  # nothing else was left for it
    values = _record_values(tmp_path)
    assert "node.session.scan" not in values and values["node.conn[0].timeo.login_timeout"] == "7"
    assert len(ran["login"]) == 1


@pytest.mark.parametrize("login_timeout", [2.0, 3.0, 7.5, 15.0, 15.9, 60.0])
def test_iscsid_login_attempts_fit_in_the_login_timeout(login_timeout):
    """A refused or silent portal costs iscsid every attempt: together within the timeout."""
    from brick_agent.connectors.iscsi.actions import NodeSettings

    settings = dict(
        ip.PrivilegedIscsiActions._node_settings(
            NodeSettings("127.0.0.1:3260", IQN, login_timeout=login_timeout)
        )
    )
    attempts = int(settings["node.session.initial_login_retry_max"]) + 1
    per_try = int(settings["node.conn[0].timeo.login_timeout"])
    assert per_try >= 1
    assert attempts * per_try <= login_timeout
