"""The journaled ledger (issue 17 §2): a transaction's cost does not grow with the ledger.

Above ``JOURNAL_FROM`` volumes each commit appends one checksummed record to
``<ledger>.journal`` instead of rewriting the snapshot.  These tests cover the
upgrade from the old format, every crash point of the new one (torn append,
compaction interrupted before and after the snapshot's rename, a leftover journal),
the fail-closed rules (unreadable, corrupt), writers in two processes, and that the
indexed lookups agree with a scan of the plain content.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib

import pytest

from brick_agent.ledger import journal
from brick_agent.ledger import store as ledgermod
from brick_agent.ledger.store import AttachmentLedger, LedgerCorrupt, LedgerUnreadable
from tests.unit.host.fakehost import FakeHost

N = ledgermod.JOURNAL_FROM + 36  # journaled


def _entry(i: int) -> tuple[str, dict]:
    ident = f"naa.6001405{i:025x}"
    return ledgermod.volume_key("ISCSI", ident), {
        "protocol": "ISCSI",
        "identity": ident,
        "lookup": [f"iscsi:iqn.2010-10.org.test:t:{i}"],
        "volume_id": f"vol-{i}",
        "device_info": {"type": "block", "path": f"/dev/sd{i}"},
        "attachments": {"default": {"access_mode": "rw", "since": 1.0}},
    }


@pytest.fixture
def host(tmp_path):
    return FakeHost(tmp_path / "host")  # no fabric volumes: a rebuild finds none


@pytest.fixture
def led(tmp_path, host):
    ledgermod._STATES.clear()
    yield AttachmentLedger(
        str(tmp_path / "d" / "attachments.json"),
        lock_path=str(tmp_path / "locks"),
        roots=host.roots,
    )
    ledgermod._STATES.clear()


def _fill(led, n: int = N, start: int = 0) -> None:
    with led.transaction() as data:
        for i in range(start, start + n):
            key, entry = _entry(i)
            data["volumes"][key] = entry


def _fresh(led) -> dict:
    """The content as a new process would read it (no cached state)."""
    ledgermod._STATES.clear()
    return AttachmentLedger(led.path, lock_path=led.lock_path, roots=led.roots).read()


def _snapshot(led) -> dict:
    return json.loads(pathlib.Path(led.path).read_text())


def _journal_lines(led) -> list[bytes]:
    return pathlib.Path(led.journal_path).read_bytes().splitlines(keepends=True)


def _attach(led, i: int) -> None:
    with led.transaction() as data:
        key, entry = _entry(i)
        data["volumes"][key] = entry


# ------------------------------------------------------------------ format


def test_small_ledger_keeps_the_old_format_and_no_journal(led):
    _fill(led, ledgermod.JOURNAL_FROM)
    assert _snapshot(led)["version"] == 1 and "journal" not in _snapshot(led)
    assert not os.path.exists(led.journal_path)


def test_large_ledger_appends_one_record_per_commit_and_reads_back(led):
    _fill(led)
    snap = _snapshot(led)
    assert snap["version"] == ledgermod.JOURNALED_VERSION and len(snap["volumes"]) == N
    before = pathlib.Path(led.path).read_bytes()
    _attach(led, 1000)
    with led.transaction() as data:
        del data["volumes"][_entry(3)[0]]
        data["pending"].append({"lookup": ["k"], "attachment_id": "a"})
    assert pathlib.Path(led.path).read_bytes() == before  # the snapshot is not rewritten
    lines = _journal_lines(led)
    assert len(lines) == 3  # header + 2 records
    assert journal.gen_of(journal.decode(lines[0])[0][0]) == snap["journal"]
    content = led.read()
    assert _entry(1000)[0] in content["volumes"] and _entry(3)[0] not in content["volumes"]
    assert content["pending"] == [{"lookup": ["k"], "attachment_id": "a"}]
    assert content["version"] == 1 and "journal" not in content
    assert _fresh(led) == content


def test_unchanged_transaction_appends_nothing(led):
    _fill(led)
    size = os.path.getsize(led.journal_path)
    with led.transaction() as data:
        ledgermod.find_entry(data, _entry(5)[1]["lookup"])
        data["volumes"][_entry(6)[0]]["attachments"]  # read, not changed
    assert os.path.getsize(led.journal_path) == size


def test_old_format_file_is_read_and_upgraded(led):
    os.makedirs(os.path.dirname(led.path), mode=0o700)
    old = {"version": 1, "volumes": dict(_entry(i) for i in range(N)), "pending": []}
    pathlib.Path(led.path).write_text(ledgermod.render(old))  # as the old code wrote it
    assert led.read() == old
    _attach(led, 1000)
    assert _snapshot(led)["version"] == ledgermod.JOURNALED_VERSION
    assert _fresh(led)["volumes"] == {**old["volumes"], _entry(1000)[0]: _entry(1000)[1]}


def test_view_lookups_agree_with_a_scan_of_the_plain_content(led):
    _fill(led)
    view, plain = led.view(), led.read()
    for i in (0, 7, N - 1):
        key, entry = _entry(i)
        assert ledgermod.find_entry(view, entry["lookup"]) == (key, entry)
        assert ledgermod.find_entry(plain, entry["lookup"]) == (key, entry)
        udev = "3" + entry["identity"][4:]  # another spelling of the same WWID
        assert ledgermod.find_by_identity(view, "ISCSI", udev) == (key, entry)
        assert ledgermod.find_by_identity(view, "NVMEOF", udev) is None
    assert ledgermod.find_entry(view, ["iscsi:nope:1"]) is None
    assert ledgermod.unknown_entries(view) == ledgermod.unknown_entries(plain) == []


def test_lookups_inside_a_transaction_see_its_own_changes(led):
    _fill(led)
    with led.transaction() as data:
        key, entry = _entry(2000)
        data["volumes"][key] = entry
        assert ledgermod.find_entry(data, entry["lookup"]) == (key, entry)
        del data["volumes"][_entry(1)[0]]
        assert ledgermod.find_entry(data, _entry(1)[1]["lookup"]) is None
        data["volumes"][_entry(2)[0]]["attachments"] = {"<unknown>": {}}
        assert [k for k, _ in ledgermod.unknown_entries(data)] == [_entry(2)[0]]


# ------------------------------------------------------------------ crash points


def test_torn_last_record_is_ignored_and_cut_off_under_the_lock(led):
    _fill(led)
    good = led.read()
    with open(led.journal_path, "ab") as f:
        f.write(journal.encode({"v": {"X:torn": {}}})[:-7])  # a writer died mid-append
    assert led.read() == good  # no lock: maybe a writer still writing, skipped
    assert _fresh(led) == good
    _attach(led, 1000)  # under the lock: cut off, then appended
    assert all(line.endswith(b"\n") for line in _journal_lines(led))
    assert "X:torn" not in _fresh(led)["volumes"]
    assert _entry(1000)[0] in _fresh(led)["volumes"]


def test_compaction_interrupted_after_the_snapshot_rename(led):
    """The new snapshot is in place, the old journal still beside it: its records are
    already in the snapshot, so it is ignored and replaced by the next commit."""
    _fill(led)
    _attach(led, 1000)
    content = led.read()
    stale = pathlib.Path(led.journal_path).read_bytes()
    new_gen = "feedfacecafebeef"
    led._write_text(ledgermod.render({**content, "version": 2, "journal": new_gen}))
    pathlib.Path(led.journal_path).write_bytes(stale + journal.encode({"vd": [_entry(0)[0]]}))
    assert _fresh(led) == content  # the old gen's records (even one more) are not applied
    _attach(led, 1001)
    first = journal.decode(_journal_lines(led)[0])[0][0]
    assert journal.gen_of(first) == new_gen
    assert _fresh(led)["volumes"] == {**content["volumes"], _entry(1001)[0]: _entry(1001)[1]}


def test_compaction_interrupted_before_the_rename_leaves_a_temp_file_only(led, tmp_path):
    _fill(led)
    _attach(led, 1000)
    content = _fresh(led)
    pathlib.Path(os.path.dirname(led.path), ".ledger-crashed.tmp").write_text('{"version": 2')
    led2 = AttachmentLedger(led.path, lock_path=led.lock_path, roots=led.roots)
    with led2.transaction():
        pass
    assert sorted(os.listdir(os.path.dirname(led.path))) == [
        "attachments.json",
        "attachments.json.journal",
    ]
    assert _fresh(led) == content


def test_journal_left_beside_an_unjournaled_snapshot_is_ignored_and_removed(led):
    _fill(led, 3)
    content = led.read()
    pathlib.Path(led.journal_path).write_bytes(
        journal.encode(journal.header("0123")) + journal.encode({"vd": [_entry(0)[0]]})
    )
    assert _fresh(led) == content
    _attach(led, 50)
    assert not os.path.exists(led.journal_path)
    assert len(_fresh(led)["volumes"]) == 4


def test_compaction_folds_the_journal_into_a_new_snapshot(led, monkeypatch):
    monkeypatch.setattr(ledgermod, "COMPACT_MIN_BYTES", 4096)
    _fill(led)
    gen = _snapshot(led)["journal"]
    for i in range(1000, 1150):  # more than the snapshot's bytes in records
        _attach(led, i)
    assert _snapshot(led)["journal"] != gen
    assert os.path.getsize(led.journal_path) <= max(4096, os.path.getsize(led.path)) + 1024
    assert len(_fresh(led)["volumes"]) == N + 150


def test_shrinking_below_half_the_threshold_goes_back_to_the_old_format(led):
    _fill(led)
    with led.transaction() as data:
        for i in range(N - ledgermod.JOURNAL_FROM // 2):
            del data["volumes"][_entry(i)[0]]
    assert _snapshot(led)["version"] == 1
    assert not os.path.exists(led.journal_path)
    assert len(_fresh(led)["volumes"]) == ledgermod.JOURNAL_FROM // 2


def test_failed_append_leaves_the_content_and_the_journal_as_they_were(led, monkeypatch):
    _fill(led)
    before, size = led.read(), os.path.getsize(led.journal_path)

    def boom(fd):
        raise OSError(5, "EIO")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError), led.transaction() as data:
        key, entry = _entry(1000)
        data["volumes"][key] = entry
    monkeypatch.undo()
    assert os.path.getsize(led.journal_path) == size
    assert led.read() == before and _fresh(led) == before


def test_a_failing_body_leaves_nothing_in_the_journal(led):
    _fill(led)
    size = os.path.getsize(led.journal_path)
    with pytest.raises(RuntimeError), led.transaction() as data:
        data["volumes"][_entry(0)[0]]["attachments"].clear()
        del data["volumes"][_entry(1)[0]]
        raise RuntimeError("body failed")
    assert os.path.getsize(led.journal_path) == size
    assert len(led.read()["volumes"]) == N
    assert led.read()["volumes"][_entry(0)[0]]["attachments"]


# ------------------------------------------------------------------ fail closed


def test_unreadable_journal_raises_and_nothing_is_decided(led):
    _fill(led)
    saved = pathlib.Path(led.journal_path).read_bytes()
    os.unlink(led.journal_path)
    os.mkdir(led.journal_path)  # opening it now fails with EISDIR
    ledgermod._STATES.clear()
    with pytest.raises(LedgerUnreadable):
        led.read()
    with pytest.raises(LedgerUnreadable), led.transaction():
        pass
    os.rmdir(led.journal_path)
    pathlib.Path(led.journal_path).write_bytes(saved)
    assert len(led.read()["volumes"]) == N
    assert not [n for n in os.listdir(os.path.dirname(led.path)) if "corrupt" in n]


@pytest.mark.parametrize(
    "damage",
    [
        lambda line: line[:12] + bytes([line[12] ^ 1]) + line[13:],  # a flipped bit
        lambda line: b"zzzzzzzz" + line[8:],  # a broken checksum
        lambda line: journal.encode({"v": {"X:1": "not an entry"}}),  # a malformed record
    ],
)
def test_corrupt_record_in_the_journal_is_corruption_and_rebuilds(led, damage):
    _fill(led)
    _attach(led, 1000)
    _attach(led, 1001)
    lines = _journal_lines(led)
    lines[1] = damage(lines[1])
    pathlib.Path(led.journal_path).write_bytes(b"".join(lines))
    with pytest.raises(LedgerCorrupt):
        _fresh(led)
    with led.transaction() as data:  # moved aside, rebuilt from the (empty) kernel
        assert data["volumes"] == {}
    names = os.listdir(os.path.dirname(led.path))
    assert len([n for n in names if ".corrupt-" in n and n.endswith(".journal")]) == 1
    assert len([n for n in names if ".corrupt-" in n and not n.endswith(".journal")]) == 1
    assert led.read()["recovered"]["aside"]


def test_journal_without_its_header_is_corruption(led):
    _fill(led)
    lines = _journal_lines(led)
    pathlib.Path(led.journal_path).write_bytes(b"".join(lines[1:]) + journal.encode({}))
    with pytest.raises(LedgerCorrupt):
        _fresh(led)


def test_a_journaled_snapshot_without_its_gen_is_an_unknown_format(led):
    _fill(led)
    snap = _snapshot(led)
    del snap["journal"]
    pathlib.Path(led.path).write_text(json.dumps(snap))
    with pytest.raises(LedgerCorrupt):
        _fresh(led)


# ------------------------------------------------------------------ processes


def _writer(path: str, lock_path: str, start: int, n: int) -> None:
    ledgermod._STATES.clear()
    led = AttachmentLedger(path, lock_path=lock_path)
    for i in range(start, start + n):
        _attach(led, i)
        assert ledgermod.find_entry(led.view(), _entry(i)[1]["lookup"]) is not None


def test_writers_in_two_processes_lose_nothing_in_a_journaled_ledger(led, monkeypatch):
    monkeypatch.setattr(ledgermod, "COMPACT_MIN_BYTES", 8192)  # compactions meanwhile
    _fill(led)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_writer, args=(led.path, led.lock_path, start, 40))
        for start in (1000, 2000)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    vols = led.read()["volumes"]  # this process's cached state, caught up
    assert len(vols) == N + 80 and vols == _fresh(led)["volumes"]


def _add_nvme_volume(led, nqn):
    """One attached NVMe volume of subsystem ``nqn`` (UUID ...0001)."""
    with led.transaction() as data:
        data["volumes"]["NVMEOF:uuid.1"] = {
            "protocol": "NVMEOF",
            "identity": "uuid.00000000-0000-4000-8000-000000000001",
            "lookup": [f"nvme:{nqn}:00000000-0000-4000-8000-000000000001"],
            "attachments": {"a": {}},
        }


def test_nvme_ledger_claims_from_the_indexes_equal_a_scan(led):
    """The NVMe detach asks which other namespaces of a controller the ledger holds:
    answered from the indexes on a view, by scanning on the plain content, alike."""
    from brick_agent.connectors.nvmeof.connector import ledger_claims
    from brick_agent.host.nvme import NvmeNamespace

    nqn = "nqn.2014-08.org.Example:Sub"  # mixed case: keys compare lowercase
    _fill(led)
    _add_nvme_volume(led, nqn)
    with led.transaction() as data:
        data["volumes"]["NVMEOF:nsid"] = {
            "protocol": "NVMEOF",
            "identity": "eui.00aa",
            "lookup": [f"nvme:{nqn}:nsid3"],
            "attachments": {"b": {}},
        }

    def ns(name, nsid, uuid=None):
        fields = {f: None for f in NvmeNamespace.__dataclass_fields__}
        fields.update(name=name, nsid=nsid, uuid=uuid, controllers=())
        return NvmeNamespace(**fields)

    nss = [
        ns("nvme1n1", 1, "00000000-0000-4000-8000-000000000001"),
        ns("nvme1n3", 3),
        ns("nvme1n4", 4, "00000000-0000-4000-8000-000000000004"),
    ]
    by_index = ledger_claims(led.view(), nqn, nss)
    by_scan = ledger_claims(led.read(), nqn, nss)
    assert sorted(by_index) == sorted(by_scan)
    assert len(by_index) == 2 and not any("nvme1n4" in c for c in by_index)


def test_subsystem_attached_from_the_index_equals_a_scan_and_follows_the_attachments(led):
    """A detach asks whether the ledger holds any attached volume of its subsystem before
    it reads a namespace: the subsystem index answers on a view (and inside a transaction,
    for entries it changed), a scan on the plain content, alike; an entry whose
    attachments were cleared (its detach under way) holds nothing."""
    from brick_agent.connectors.nvmeof.connector import subsystem_attached

    nqn = "nqn.2014-08.org.Example:Sub"  # an NQN holds colons, and compares lowercase
    other = "nqn.2014-08.org.Example:Sub2"
    _fill(led)
    _add_nvme_volume(led, nqn)

    def both(name):
        return subsystem_attached(led.view(), name), subsystem_attached(led.read(), name)

    assert both(nqn) == (True, True) and both(nqn.lower()) == (True, True)
    assert both(other) == (False, False) and both("nqn.2014-08.org.Example") == (False, False)
    with led.transaction() as data:
        data["volumes"]["NVMEOF:uuid.1"]["attachments"].clear()
        assert subsystem_attached(data, nqn) is False  # changed in this transaction
    assert both(nqn) == (False, False)
    with led.transaction() as data:
        data["pending"].append({"lookup": [f"nvme:{other}:nsid2"], "attachment_id": "p"})
    assert both(other) == (True, True)
    with led.transaction() as data:
        del data["volumes"]["NVMEOF:uuid.1"]
    assert both(nqn) == (False, False)
