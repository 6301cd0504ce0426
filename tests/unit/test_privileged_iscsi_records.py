"""The node record of a detach removed without iscsiadm, only in iscsiadm's static case.

The record is the one open-iscsi 2.1.8's ``iscsiadm --op new`` wrote in the lab VM
(``tests/unit/data/iscsi-node-record-2.1.8.txt``); every other case must reach
iscsiadm, with the same argv as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from brick_agent.connectors.iscsi.actions import NodeSettings
from brick_agent.errors import InvalidArgument, LockTimeout, NotOwned
from brick_agent.host.iscsiadm import ERR_NO_OBJS_FOUND
from brick_agent.privileged import iscsi as piscsi
from brick_agent.privileged import iscsi_records
from tests.unit.connectors.test_iscsi_fakehost import FakeArray, FakeIscsi
from tests.unit.host.fakehost import FakeHost

CAPTURED = Path(__file__).parent / "data" / "iscsi-node-record-2.1.8.txt"
CAPTURED_IQN = "iqn.2003-01.org.example:rec"
IQN = "iqn.2003-01.org.example:vol1"
PORTAL = "127.0.0.1:3260"


def record_text(iqn=IQN, address="127.0.0.1", port="3260", **changes) -> str:
    text = CAPTURED.read_text().replace(CAPTURED_IQN, iqn)
    text = text.replace("node.conn[0].address = 127.0.0.1", f"node.conn[0].address = {address}")
    text = text.replace("node.conn[0].port = 3260", f"node.conn[0].port = {port}")
    for name, value in changes.items():
        name = name.replace("__", ".")
        lines = [ln for ln in text.splitlines() if not ln.startswith(name + " ")]
        if value is not None:
            lines.insert(-1, f"{name} = {value}")
        text = "\n".join(lines) + "\n"
    return text


class Db:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "etc-iscsi"
        (self.root / "nodes").mkdir(parents=True)
        self.lock_dir = str(tmp_path / "run-lock-iscsi")
        self.host = FakeHost(tmp_path / "host")
        self.host.mkdir("sys/class/iscsi_session")
        self.runs: list[list[str]] = []

    def static(self, iqn=IQN, address="127.0.0.1", port="3260", **changes) -> Path:
        path = self.root / "nodes" / iqn / f"{address},{port}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record_text(iqn, address, port, **changes))
        return path

    def run(self, argv, **kw):
        from brick_agent.commands import CommandResult

        self.runs.append(list(argv))
        return CommandResult(argv=list(argv), returncode=0, stdout="", stderr="", duration=0.1)

    def delete(self, iqn=IQN, portal=PORTAL, iface="default") -> dict:
        return piscsi.do_node_delete(
            self.host.roots,
            iqn,
            portal,
            iface,
            run=self.run,
            db_root=str(self.root),
            lock_dir=self.lock_dir,
        )


@pytest.fixture
def db(tmp_path):
    return Db(tmp_path)


ISCSIADM_DELETE = ["iscsiadm", "-m", "node", "-T", IQN, "-p", PORTAL, "-I", "default"]


def test_a_static_record_is_removed_without_iscsiadm_as_iscsiadm_does(db):
    path = db.static()

    out = db.delete()

    assert out["returncode"] == 0 and out["removed"] == str(path)
    assert db.runs == [] and not path.exists()
    assert os.listdir(db.root / "nodes") == []  # the emptied target directory too
    assert not os.path.exists(os.path.join(db.lock_dir, "lock.write"))  # lock released


def test_other_portals_records_of_the_target_stay(db):
    mine = db.static()
    other = db.static(address="127.0.0.2")

    db.delete()

    assert not mine.exists() and other.exists() and db.runs == []


@pytest.mark.parametrize(
    "changes",
    [
        {"iface__iscsi_ifacename": "offload0"},  # another iface's record
        {"node__discovery_type": "send_targets"},
        {"node__conn[0]__address": "127.0.0.9"},  # the file does not name this node
        {"node__name": "iqn.2003-01.org.example:other"},
        {"node__conn[0]__port": None},
    ],
    ids=["iface", "discovery", "address", "name", "no-port"],
)
def test_a_record_that_is_not_exactly_this_static_node_is_iscsiadms(db, changes):
    path = db.static(**changes)

    db.delete()

    assert path.exists() and db.runs == [ISCSIADM_DELETE + ["--op", "delete"]]


def test_a_missing_iface_line_means_the_default_iface(db):
    path = db.static(iface__iscsi_ifacename=None)
    db.delete()
    assert not path.exists() and db.runs == []


def test_records_of_discovery_for_the_portal_make_it_iscsiadms(db):
    path = db.static()
    disc = db.root / "nodes" / IQN / "127.0.0.1,3260,1" / "default"
    disc.parent.mkdir()
    disc.write_text(record_text(node__tpgt="1", node__discovery_type="send_targets"))

    db.delete()

    assert path.exists() and disc.exists() and len(db.runs) == 1


def test_no_record_at_all_is_iscsiadms_answer(db):
    db.delete()
    assert db.runs == [ISCSIADM_DELETE + ["--op", "delete"]]


def test_a_symlinked_or_special_record_is_never_unlinked_here(db, tmp_path):
    elsewhere = tmp_path / "precious"
    elsewhere.write_text(record_text())
    link = db.root / "nodes" / IQN / "127.0.0.1,3260"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)

    db.delete()

    assert link.is_symlink() and elsewhere.exists() and len(db.runs) == 1
    link.unlink()
    os.mkfifo(link)  # must not block on open either
    db.delete()
    assert link.exists() and len(db.runs) == 2


def test_a_host_name_portal_is_iscsiadms(db):
    db.static(address="array.example")
    db.delete(portal="array.example:3260")
    assert len(db.runs) == 1


def test_a_session_using_the_record_leaves_it_to_iscsiadm(db):
    array = FakeArray()
    array.add(IQN, [PORTAL], {})
    FakeIscsi(db.host, array).login(NodeSettings(PORTAL, IQN))
    path = db.static()

    db.delete()

    assert path.exists() and db.runs == [ISCSIADM_DELETE + ["--op", "delete"]]


def test_iscsiadms_database_lock_is_waited_for_then_times_out(db):
    path = db.static()
    with iscsi_records.idbm_lock(db.lock_dir):
        with pytest.raises(LockTimeout):
            piscsi.do_node_delete(
                db.host.roots,
                IQN,
                PORTAL,
                timeout=0.2,
                run=db.run,
                db_root=str(db.root),
                lock_dir=db.lock_dir,
            )
    assert path.exists() and db.runs == []
    db.delete()
    assert not path.exists()


def test_without_the_database_it_is_iscsiadm_as_before(db):
    path = db.static()
    out = piscsi.do_node_delete(db.host.roots, IQN, PORTAL, run=db.run)
    assert path.exists() and db.runs == [ISCSIADM_DELETE + ["--op", "delete"]]
    assert out["returncode"] == 0


def test_the_checks_come_first_bad_input_and_boot_targets(db):
    db.static()
    with pytest.raises(InvalidArgument):
        db.delete(iqn="iqn.2003-01.org.example:x/../../etc")
    with pytest.raises(InvalidArgument):
        db.delete(portal="127.0.0.1:3260; rm -rf /")
    db.host.ibft_target(0, IQN, "127.0.0.1")
    with pytest.raises(NotOwned):
        db.delete()
    assert db.runs == [] and (db.root / "nodes" / IQN / "127.0.0.1,3260").exists()


def test_iscsiadm_no_record_exit_still_counts_as_done(db):
    from brick_agent.commands import CommandResult

    def run(argv, **kw):
        assert ERR_NO_OBJS_FOUND in kw["ok_codes"]
        return CommandResult(argv=list(argv), returncode=21, stdout="", stderr="", duration=0.1)

    out = piscsi.do_node_delete(
        db.host.roots, IQN, PORTAL, run=run, db_root=str(db.root), lock_dir=db.lock_dir
    )
    assert out["returncode"] == 21
