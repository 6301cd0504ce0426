"""Node settings and CHAP written into open-iscsi's record files (never on an argv), tmp tree."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from brick_agent.errors import DeviceNotFound, InvalidArgument, LockTimeout
from brick_agent.privileged import iscsi_auth

IQN = "iqn.2003-01.org.brick-lab:chap"
PW = "-Ch4p pass;$(x) #1"
CHAP = [
    ("node.session.auth.authmethod", "CHAP"),
    ("node.session.auth.username", "brickuser"),
    ("node.session.auth.password", PW),
]
RECORD = (
    "# BEGIN RECORD 2.1.8\nnode.name = " + IQN + "\nnode.tpgt = -1\n"
    "node.session.auth.authmethod = None\nnode.session.scan = manual\n# END RECORD\n"
)


def _parse(path) -> dict[str, str]:
    """open-iscsi's reading: ``name = value`` lines, the last one of a name wins."""
    out = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            out[name.strip()] = value.strip()
    return out


def _record(root, rel: str, text: str = RECORD):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    "rel",
    [
        f"nodes/{IQN}/192.0.2.10,3260",  # --op new
        f"nodes/{IQN}/192.0.2.10,3260,1/default",
    ],
)  # discovered
def test_node_auth_goes_into_the_record_file(tmp_path, rel):
    record = _record(tmp_path / "db", rel)
    iscsi_auth.do_node_set_settings(
        IQN,
        "192.0.2.10:3260",
        "default",
        CHAP,
        root=str(tmp_path / "db"),
        lock_dir=str(tmp_path / "lock"),
    )
    values = _parse(record)
    assert values["node.session.auth.authmethod"] == "CHAP"
    assert values["node.session.auth.username"] == "brickuser"
    assert values["node.session.auth.password"] == PW
    assert values["node.session.scan"] == "manual" and values["node.name"] == IQN
    assert stat.S_IMODE(os.stat(record).st_mode) == 0o600
    assert sorted(os.listdir(record.parent)) == [record.name]  # no temp file left
    assert not os.path.exists(tmp_path / "lock" / "lock.write")  # lock released
    iscsi_auth.do_node_set_settings(
        IQN,
        "192.0.2.10:3260",
        "default",
        [("node.session.auth.password", "other")],
        root=str(tmp_path / "db"),
        lock_dir=str(tmp_path / "lock"),
    )
    assert PW not in record.read_text() and _parse(record)["node.session.auth.password"] == "other"


def test_ipv6_portal_and_discovery_record(tmp_path):
    root = tmp_path / "db"
    record = _record(root, f"nodes/{IQN}/2001:db8::1,3260")
    iscsi_auth.do_node_set_settings(
        IQN, "[2001:db8::1]:3260", "default", CHAP, root=str(root), lock_dir=str(tmp_path / "lock")
    )
    assert _parse(record)["node.session.auth.password"] == PW
    st = _record(root, "send_targets/192.0.2.10,3260/st_config", "discovery.type = 0\n")
    iscsi_auth.do_discovery_set_auth(
        "192.0.2.10:3260",
        [("discovery.sendtargets.auth.password", PW)],
        root=str(root),
        lock_dir=str(tmp_path / "lock"),
    )
    assert _parse(st) == {"discovery.type": "0", "discovery.sendtargets.auth.password": PW}


def test_refuses_what_is_not_a_record_or_not_auth(tmp_path):
    root = tmp_path / "db"
    lock = str(tmp_path / "lock")
    with pytest.raises(DeviceNotFound):
        iscsi_auth.do_node_set_settings(
            IQN, "192.0.2.10:3260", "default", CHAP, root=str(root), lock_dir=lock
        )
    target = _record(tmp_path, "elsewhere", "x = y\n")
    link = root / "nodes" / IQN / "192.0.2.10,3260"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    with pytest.raises(DeviceNotFound):
        iscsi_auth.do_node_set_settings(
            IQN, "192.0.2.10:3260", "default", CHAP, root=str(root), lock_dir=lock
        )
    assert target.read_text() == "x = y\n"
    _record(root, f"nodes/{IQN}/192.0.2.11,3260")
    for bad in ([("node.session.bogus", "x")], [("node.session.auth.password", "a\nb")]):
        with pytest.raises(InvalidArgument) as ei:
            iscsi_auth.do_node_set_settings(
                IQN, "192.0.2.11:3260", "default", bad, root=str(root), lock_dir=lock
            )
        assert "a\nb" not in str(ei.value)


def test_waits_for_iscsiadms_database_lock(tmp_path):
    root = tmp_path / "db"
    record = _record(root, f"nodes/{IQN}/192.0.2.10,3260")
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    (lock_dir / "lock").write_text("")
    os.link(lock_dir / "lock", lock_dir / "lock.write")  # iscsiadm holds it
    threading.Timer(0.3, os.unlink, [lock_dir / "lock.write"]).start()
    start = time.monotonic()
    iscsi_auth.do_node_set_settings(
        IQN, "192.0.2.10:3260", "default", CHAP, root=str(root), lock_dir=str(lock_dir)
    )
    assert time.monotonic() - start >= 0.25
    assert _parse(record)["node.session.auth.password"] == PW
    os.link(lock_dir / "lock", lock_dir / "lock.write")
    with pytest.raises(LockTimeout):
        with iscsi_auth.idbm_lock(str(lock_dir), wait=0.1):
            pass


def test_other_settings_replace_only_the_lines_the_record_has(tmp_path):
    """A setting ``--op new`` wrote a line for is replaced in place of it; one without a
    line (this iscsiadm does not know it) is left out and named, for ``--op update``."""
    record = _record(tmp_path / "db", f"nodes/{IQN}/192.0.2.10,3260")
    out = iscsi_auth.do_node_set_settings(
        IQN,
        "192.0.2.10:3260",
        "default",
        [
            ("node.session.scan", "manual"),
            ("node.conn[0].timeo.login_timeout", "7"),
            *CHAP,
        ],
        root=str(tmp_path / "db"),
        lock_dir=str(tmp_path / "lock"),
    )
    assert out == {
        "set": ["node.session.scan", *(name for name, _ in CHAP)],
        "absent": ["node.conn[0].timeo.login_timeout"],
    }
    values = _parse(record)
    assert values["node.session.scan"] == "manual" and values["node.session.auth.password"] == PW
    assert "node.conn[0].timeo.login_timeout" not in values
    assert record.read_text().count("node.session.scan") == 1
