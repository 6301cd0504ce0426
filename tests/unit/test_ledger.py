"""AttachmentLedger file handling: atomic writes, lock across processes, helpers; blockdev ro."""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib

import pytest

from brick_agent.ledger import store as ledgermod
from brick_agent.errors import DeviceNotFound, InvalidArgument
from brick_agent.host.roots import HostRoots
from brick_agent.ledger import AttachmentLedger
from brick_agent.privileged import block
from tests.unit.host.fakehost import FakeHost


@pytest.fixture
def led(tmp_path):
    return AttachmentLedger(
        str(tmp_path / "d" / "attachments.json"), lock_path=str(tmp_path / "locks")
    )


def test_missing_file_reads_empty_and_first_write_creates_private_dir(led):
    assert led.read() == {"version": 1, "volumes": {}, "pending": []}
    with led.transaction() as data:
        data["volumes"]["ISCSI:x"] = {
            "protocol": "ISCSI",
            "identity": "x",
            "lookup": ["k"],
            "attachments": {"a": {"access_mode": "rw"}},
        }
    assert os.stat(os.path.dirname(led.path)).st_mode & 0o777 == 0o700
    assert os.stat(led.path).st_mode & 0o777 == 0o600
    assert led.expected_volumes() == [{"protocol": "ISCSI", "wwid": "x", "name": "ISCSI:x"}]


def test_unchanged_transaction_does_not_write(led):
    with led.transaction():
        pass
    assert not os.path.exists(led.path)


def test_failed_write_leaves_old_file_and_no_temp(led, monkeypatch):
    with led.transaction() as data:
        data["pending"].append({"lookup": ["old"]})
    before = pathlib.Path(led.path).read_text()

    def boom(fd):
        raise OSError(5, "EIO")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError), led.transaction() as data:
        data["pending"].append({"lookup": ["new"]})
    assert pathlib.Path(led.path).read_text() == before
    assert sorted(os.listdir(os.path.dirname(led.path))) == ["attachments.json"]


def test_corrupt_file_is_moved_aside(led):
    os.makedirs(os.path.dirname(led.path))
    with open(led.path, "w") as f:
        f.write('{"version": 1, "volu')  # a torn write of a non-atomic writer
    with led.transaction() as data:
        assert data["volumes"] == {}
        data["pending"].append({"lookup": ["k"]})
    names = os.listdir(os.path.dirname(led.path))
    assert any(n.startswith("attachments.json.corrupt-") for n in names)
    assert json.loads(pathlib.Path(led.path).read_text())["pending"] == [{"lookup": ["k"]}]


def _writer(path: str, lock_path: str, tag: str, n: int) -> None:
    led = AttachmentLedger(path, lock_path=lock_path)
    for i in range(n):
        with led.transaction() as data:
            data["pending"].append({"lookup": [f"{tag}-{i}"]})


def test_concurrent_writers_in_two_processes_lose_nothing(led):
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_writer, args=(led.path, led.lock_path, tag, 40)) for tag in ("p1", "p2")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    keys = sorted(p["lookup"][0] for p in led.read()["pending"])
    assert len(keys) == 80 and len(set(keys)) == 80


def test_relative_path_refused():
    with pytest.raises(InvalidArgument):
        AttachmentLedger("attachments.json")


@pytest.mark.parametrize("value,expected", [({}, "default"), ({"attachment_id": "a-1"}, "a-1")])
def test_attachment_id(value, expected):
    assert ledgermod.attachment_id(value) == expected


@pytest.mark.parametrize("bad", [5, "x\n", "a" * 300])
def test_attachment_id_rejects_bad(bad):
    with pytest.raises(InvalidArgument):
        ledgermod.attachment_id({"attachment_id": bad})


def test_lookup_keys_per_protocol():
    iq = "iqn.2010-10.org.openstack:vol-1"
    assert ledgermod.lookup_keys(
        "ISCSI", {"target_portal": "192.0.2.1:3260", "target_iqn": iq, "target_lun": 3}
    ) == [f"iscsi:{iq}:3"]
    nqn = "nqn.2014-08.org.example:sub1"
    keys = ledgermod.lookup_keys(
        "NVMEOF",
        {
            "target_nqn": nqn,
            "vol_uuid": "c2a8d8a4-1f2e-4b0e-9b8a-0d1c2e3f4a5b",
            "portals": [["192.0.2.1", 4420, "tcp"]],
        },
    )
    assert keys == [f"nvme:{nqn}:c2a8d8a4-1f2e-4b0e-9b8a-0d1c2e3f4a5b"]


# ------------------------------------------------------------------ privileged blockdev
class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, argv, **kw):
        self.calls.append((argv, kw))


@pytest.fixture
def roots(tmp_path):
    r = HostRoots.under(str(tmp_path / "h"))
    os.makedirs(r.sysfs("block"))
    os.makedirs(r.dev, exist_ok=True)
    return r


def test_set_read_only_runs_blockdev(roots, tmp_path):
    fh = FakeHost(tmp_path / "h")  # sdb: an iSCSI LUN, dm-2: its multipath map
    session = fh.iscsi_session(1, 2, "iqn.2003-01.org.example:t", "192.0.2.1")
    fh.scsi_disk(session, "2:0:0:1", "sdb", wwid="naa.6001405aa6d2dc160f6b68a70cef7b43")
    fh.dm(2, "mpatha", "mpath-36001405aa6d2dc160f6b68a70cef7b43", ["sdb"])
    run = Recorder()
    assert block.do_set_block_device_read_only(roots, "sdb", True, run=run) is True
    block.do_set_block_device_read_only(roots, "dm-2", False, run=run)
    assert [c[0] for c in run.calls] == [
        ["blockdev", "--setro", roots.devfs("sdb")],
        ["blockdev", "--setrw", roots.devfs("dm-2")],
    ]


@pytest.mark.parametrize("name", ["../sda", "/dev/sda", "-sda", "sda;reboot", "loop0", "", None])
def test_set_read_only_rejects_bad_names(roots, name):
    run = Recorder()
    with pytest.raises(InvalidArgument):
        block.do_set_block_device_read_only(roots, name, True, run=run)
    assert run.calls == []


@pytest.mark.parametrize("flag", [1, "yes", None])
def test_set_read_only_rejects_non_bool(roots, flag):
    os.makedirs(roots.sysfs("block", "sdb"))
    run = Recorder()
    with pytest.raises(InvalidArgument):
        block.do_set_block_device_read_only(roots, "sdb", flag, run=run)
    assert run.calls == []


def test_set_read_only_missing_device(roots):
    run = Recorder()
    with pytest.raises(DeviceNotFound):
        block.do_set_block_device_read_only(roots, "sdz", True, run=run)
    assert run.calls == []


def test_transactions_lock_one_kept_lock_file(led):
    """The ledger's lock file is made once, not made and removed by every transaction."""
    with led.transaction() as data:
        data["pending"].append({"lookup": ["a"]})
    lock = os.path.join(led.lock_path, "brick_agent-ledger")
    inode = os.stat(lock).st_ino
    with led.transaction() as data:
        data["pending"].append({"lookup": ["b"]})
    assert os.stat(lock).st_ino == inode
    assert os.listdir(led.lock_path) == ["brick_agent-ledger"]


def test_a_snapshot_read_takes_every_byte_even_past_the_size_it_expected(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 200_000)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert ledgermod._read_to_end(fd, 10) == b"x" * 200_000
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert ledgermod._read_to_end(fd, 200_000) == b"x" * 200_000
    finally:
        os.close(fd)
