"""AttachmentLedger group commit: concurrent transactions of one process share a write."""

from __future__ import annotations

import json
import os
import pathlib
import threading

import pytest

from brick_agent import locking
from brick_agent.ledger import store as ledgermod
from brick_agent.errors import LockTimeout
from brick_agent.ledger import AttachmentLedger


class CountingLedger(AttachmentLedger):
    """Counts real file writes (the expensive, fsynced part)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.writes = 0

    def _write_locked(self, data, state=None) -> str:
        self.writes += 1
        return super()._write_locked(data, state)


@pytest.fixture
def led(tmp_path):
    return CountingLedger(
        str(tmp_path / "d" / "attachments.json"), lock_path=str(tmp_path / "locks")
    )


def _hold_ledger_lock(led, release: threading.Event, held: threading.Event) -> threading.Thread:
    def run() -> None:
        with locking.external_lock(
            locking.safe_lock_name(ledgermod.LOCK_NAME), lock_path=led.lock_path
        ):
            held.set()
            release.wait(10)

    t = threading.Thread(target=run)
    t.start()
    assert held.wait(5)
    return t


def _wait_for_batch(led, members: int) -> None:
    """Until ``members`` transactions are queued in the ledger's open batch (or 2 s)."""
    for _ in range(200):
        batch = ledgermod._OPEN_BATCHES.get(led.path)
        if batch is not None and len(batch.members) == members:
            return
        threading.Event().wait(0.01)


def test_concurrent_transactions_share_writes_and_lose_nothing(led):
    release, held = threading.Event(), threading.Event()
    holder = _hold_ledger_lock(led, release, held)  # everyone queues behind it
    errors = []

    def add(i: int) -> None:
        try:
            with led.transaction() as data:
                data["volumes"][f"V:{i}"] = {"lookup": [f"k{i}"], "attachments": {}}
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    _wait_for_batch(led, 16)  # all 16 queued: one leader, 15 members
    release.set()
    holder.join(5)
    for t in threads:
        t.join(10)
    assert errors == []
    on_disk = json.loads(pathlib.Path(led.path).read_text())
    assert sorted(on_disk["volumes"]) == sorted(f"V:{i}" for i in range(16))
    assert led.writes == 1
    assert ledgermod._OPEN_BATCHES == {}


def test_a_failing_body_rolls_back_only_its_own_changes(led):
    release, held = threading.Event(), threading.Event()
    holder = _hold_ledger_lock(led, release, held)
    outcome = {}

    def good() -> None:
        with led.transaction() as data:
            data["volumes"]["V:good"] = {"lookup": ["g"]}
        outcome["good"] = "ok"

    def bad() -> None:
        try:
            with led.transaction() as data:
                data["volumes"]["V:bad"] = {"lookup": ["b"]}
                raise RuntimeError("body failed")
        except RuntimeError as exc:
            outcome["bad"] = str(exc)

    threads = [threading.Thread(target=f) for f in (bad, good)]
    for t in threads:
        t.start()
    _wait_for_batch(led, 2)
    release.set()
    holder.join(5)
    for t in threads:
        t.join(10)
    assert outcome == {"good": "ok", "bad": "body failed"}
    assert sorted(led.read()["volumes"]) == ["V:good"]


def test_lock_timeout_fails_every_member_without_running_bodies(tmp_path):
    led = CountingLedger(
        str(tmp_path / "attachments.json"), lock_path=str(tmp_path / "locks"), lock_timeout=0.3
    )
    release, held = threading.Event(), threading.Event()
    holder = _hold_ledger_lock(led, release, held)
    ran, failures = [], []

    def attempt(i: int) -> None:
        try:
            with led.transaction() as data:
                ran.append(i)
                data["x"] = i
        except LockTimeout as exc:
            failures.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    release.set()
    holder.join(5)
    assert ran == [] and len(failures) == 3 and led.writes == 0
    with led.transaction() as data:  # the ledger works again afterwards
        data["volumes"]["V:1"] = {}
    assert led.read()["volumes"] == {"V:1": {}}


def test_file_has_one_line_per_volume_and_round_trips(led):
    with led.transaction() as data:
        data["volumes"]["ISCSI:a"] = {"lookup": ["k1"], "attachments": {"x": {"access_mode": "rw"}}}
        data["volumes"]["NVMEOF:b"] = {"lookup": ["k2"], "attachments": {}}
        data["pending"].append({"lookup": ["k3"], "attachment_id": "y"})
    text = pathlib.Path(led.path).read_text()
    assert json.loads(text) == led.read()
    lines = text.splitlines()
    assert sum('"ISCSI:a"' in ln for ln in lines) == 1
    assert sum('"NVMEOF:b"' in ln for ln in lines) == 1
    assert any(ln.strip().startswith('{"attachment_id":"y"') for ln in lines)


def _counting_parses(monkeypatch) -> list[str]:
    parsed: list[str] = []
    real = ledgermod._parse

    def parse(path, text):
        parsed.append(path)
        return real(path, text)

    monkeypatch.setattr(ledgermod, "_parse", parse)
    return parsed


def _volume(volume_id: str) -> dict:
    return {
        "lookup": ["iscsi:iqn.2010-10.org.test:t:1"],
        "volume_id": volume_id,
        "attachments": {"a": {"access_mode": "rw"}},
    }


def test_a_small_ledger_this_process_wrote_is_not_parsed_again(led, monkeypatch):
    """Below the journal's threshold the file is rewritten whole: the content this
    process wrote is kept, and a read that finds the same text uses it."""
    with led.transaction() as data:
        data["volumes"]["ISCSI:naa.1"] = _volume("vol-a")
    parsed = _counting_parses(monkeypatch)
    found = ledgermod.find_entry(led.view(), ["iscsi:iqn.2010-10.org.test:t:1"])
    assert found is not None and found[1]["volume_id"] == "vol-a"
    with led.transaction() as data:
        data["volumes"]["ISCSI:naa.1"]["attachments"]["b"] = {"access_mode": "ro"}
    assert sorted(led.view()["volumes"]["ISCSI:naa.1"]["attachments"]) == ["a", "b"]
    assert parsed == []
    assert json.loads(pathlib.Path(led.path).read_text())["version"] == 1
    assert led.writes == 2


def test_a_small_ledger_rewritten_elsewhere_is_read_afresh_even_at_the_same_size_and_time(
    led, monkeypatch
):
    """Another process's write is seen by its text, not by the file's stat: here it
    has the same size and modification time as the content this process holds."""
    with led.transaction() as data:
        data["volumes"]["ISCSI:naa.1"] = _volume("vol-a")
    before = os.stat(led.path)
    text = pathlib.Path(led.path).read_text()
    other = pathlib.Path(led.path + ".other")
    other.write_text(text.replace('"vol-a"', '"vol-b"'))
    os.replace(other, led.path)
    os.utime(led.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(led.path).st_size == before.st_size
    parsed = _counting_parses(monkeypatch)
    assert led.view()["volumes"]["ISCSI:naa.1"]["volume_id"] == "vol-b"
    with led.transaction() as data:
        assert data["volumes"]["ISCSI:naa.1"]["volume_id"] == "vol-b"
        data["volumes"]["ISCSI:naa.1"]["attachments"]["c"] = {"access_mode": "rw"}
    assert len(parsed) == 1  # once, then the content is current again
    assert led.read()["volumes"]["ISCSI:naa.1"]["volume_id"] == "vol-b"


@pytest.mark.parametrize("tree", ["iscsi-single", "iscsi-shared-multipath", "nvme-tcp"])
def test_device_identity_reads_what_the_full_block_device_view_says(tmp_path, tree):
    """The lean identity read agrees with the full BlockDevice reading on captured hosts
    (SCSI disks, dm-multipath maps, NVMe heads), for /dev nodes and by-id links."""
    import os

    from brick_agent.host.block import block_device_for_path, block_devices
    from tests.unit.sysfs_trees import extract_tree

    roots = extract_tree(tree, tmp_path)

    def full(path):
        return ledgermod.identity_of(block_device_for_path(roots, path))

    paths = [d.devpath for d in block_devices(roots)]
    by_id = roots.devfs("disk", "by-id")
    if os.path.isdir(by_id):
        paths += [os.path.join(by_id, e) for e in sorted(os.listdir(by_id))]
    assert paths
    identified = 0
    for path in paths:
        assert ledgermod.device_identity(roots, path) == full(path), path
        identified += full(path) is not None
    assert identified  # the trees do have identified devices
    assert ledgermod.device_identity(roots, roots.devfs("nope")) is None
