"""A commit renders only what its batch changed: the file is still what a whole render makes.

The committed state keeps the canonical text of each entry and top-level value
(:class:`brick_agent.ledger.state.CanonCache`); these tests check that the text on
disk and the content a new process reads never drift from the content the
transactions made, over a random workload that goes journaled and back.
"""

from __future__ import annotations

import json
import pathlib
import random

import pytest

from brick_agent.ledger import store as ledgermod
from brick_agent.ledger.state import CanonCache, State
from brick_agent.ledger.store import AttachmentLedger
from tests.unit.host.fakehost import FakeHost


@pytest.fixture
def led(tmp_path, monkeypatch):
    monkeypatch.setattr(ledgermod, "JOURNAL_FROM", 8)  # journaled above 8, back below 4
    monkeypatch.setattr(ledgermod, "COMPACT_MIN_BYTES", 2048)
    ledgermod._STATES.clear()
    host = FakeHost(tmp_path / "host")
    yield AttachmentLedger(
        str(tmp_path / "d" / "attachments.json"),
        lock_path=str(tmp_path / "locks"),
        roots=host.roots,
    )
    ledgermod._STATES.clear()


def _entry(i: int, rnd: random.Random) -> dict:
    return {
        "protocol": "ISCSI",
        "identity": f"naa.6001405{i:025x}",
        "lookup": [f"iscsi:iqn.2010-10.org.test:t:{i}"],
        "volume_id": f"vol-{i}",
        "device_info": {"type": "block", "path": f"/dev/sd{i}"},
        "attachments": {f"att-{rnd.randrange(3)}": {"access_mode": "rw", "since": 1.0}},
    }


def _step(data: dict, model: dict, rnd: random.Random) -> None:
    """One random change, made the same way to the transaction's content and the model."""
    vols, mvols = data["volumes"], model["volumes"]
    i = rnd.randrange(14)
    key = f"ISCSI:naa.6001405{i:025x}"
    roll = rnd.random()
    if roll < 0.35:
        vols[key] = _entry(i, rnd)
        mvols[key] = json.loads(json.dumps(vols[key]))
    elif roll < 0.55 and key in mvols:
        del vols[key]
        del mvols[key]
    elif roll < 0.75 and key in mvols:
        att = f"att-{rnd.randrange(3)}"
        vols[key]["attachments"][att] = {"access_mode": "ro", "since": 2.0}  # in place
        mvols[key]["attachments"][att] = {"access_mode": "ro", "since": 2.0}
    elif roll < 0.9:
        intent = {"lookup": [key], "attachment_id": "a", "access_mode": "rw", "since": 3.0}
        data["pending"].append(intent)
        model["pending"].append(dict(intent))
    else:
        data.setdefault("replaced", []).append({"identity": key, "at": 4.0})
        model.setdefault("replaced", []).append({"identity": key, "at": 4.0})
        data["pending"].clear()
        model["pending"].clear()


def _fresh(led) -> dict:
    ledgermod._STATES.clear()
    return AttachmentLedger(led.path, lock_path=led.lock_path, roots=led.roots).read()


@pytest.mark.parametrize("seed", range(4))
def test_the_file_is_always_what_a_whole_render_of_the_content_makes(led, seed):
    rnd = random.Random(seed)
    model = {"version": 1, "volumes": {}, "pending": []}
    went_journaled = False
    for _ in range(120):
        with led.transaction() as data:
            for _ in range(rnd.randrange(1, 4)):
                _step(data, model, rnd)
        on_disk = json.loads(pathlib.Path(led.path).read_text())
        if "journal" in on_disk:
            went_journaled = True
        else:  # unjournaled: the whole file is the content, rendered from scratch
            assert pathlib.Path(led.path).read_text() == ledgermod.render(on_disk)
            assert on_disk == model
        assert led.read() == model  # this process's cached state
    assert went_journaled
    assert _fresh(led) == model  # what a new process reads


def test_a_journaled_snapshot_renders_the_same_with_and_without_the_cached_texts():
    data = {
        "version": 1,
        "volumes": {f"K{i}": {"identity": f"i{i}", "attachments": {"a": {}}} for i in range(5)},
        "pending": [{"lookup": ["x"]}],
        "replaced": [{"identity": "old"}],
    }
    state = State(json.loads(json.dumps(data)))
    for _ in range(2):  # the second time from the cache
        content = {**state.content_with(), "version": 2, "journal": "g"}
        assert ledgermod.render(content, state) == ledgermod.render({**data, **content})


def test_a_cached_text_is_used_only_for_the_very_object_it_was_made_of():
    def never(_value):
        raise AssertionError("made again")

    cache = CanonCache()
    first = {"a": 1}
    assert cache.text("k", first) == '{"a":1}'
    assert cache.text("k", first, make=never) == '{"a":1}'  # the same object: cached
    assert cache.text("k", {"a": 2}) == '{"a":2}'  # another object under the key: made
    assert cache.text("k", {"a": 1}) == '{"a":1}'
