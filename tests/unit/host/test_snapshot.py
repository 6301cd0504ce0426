import json

import pytest

from brick_agent.host import snapshot
from tests.unit.host.test_iscsi import IQN, _tree as iscsi_tree
from tests.unit.host.test_nvme import _native


def test_snapshot_is_json_and_complete(fake):
    iscsi_tree(fake)
    _native(fake)
    snap = snapshot.host_snapshot(fake.roots)
    text = json.dumps(snap)  # serialisable as is
    assert "must-never-be-read" not in text  # credentials never read
    assert fake.roots.sys not in text  # no sysfs paths, just facts
    assert [s["sid"] for s in snap["iscsi"]] == [1, 2, 5]
    assert snap["iscsi"][0]["target_iqn"] == IQN
    assert {d["hctl"] for d in snap["scsi"]} == {"2:0:0:0", "2:0:0:1", "3:0:0:1"}
    assert snap["multipath"] == []
    assert [c["name"] for c in snap["nvme"]["controllers"]] == ["nvme0", "nvme1"]
    assert snap["nvme"]["namespaces"][0]["paths"] == ["nvme0c0n1", "nvme0c1n1"]
    assert snap["fc"] == {"hosts": [], "remote_ports": []}


def test_snapshot_sections_and_errors(fake, monkeypatch):
    assert set(snapshot.host_snapshot(fake.roots, sections=("fc",))) == {"fc"}
    with pytest.raises(ValueError):
        snapshot.host_snapshot(fake.roots, sections=("nope",))

    def boom(roots):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(snapshot.iscsi, "iscsi_sessions", boom)
    snap = snapshot.host_snapshot(fake.roots, sections=("iscsi", "scsi"))
    assert snap["iscsi"] == {"error": "OSError: [Errno 5] Input/output error"}
    assert snap["scsi"] == []
