"""Multiattach of one iSCSI volume on one host, through the attachment ledger (real kernel).

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest tests/functional/test_multiattach.py -q
"""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from brick_agent.connectors.iscsi import ISCSIConnector
from brick_agent.ledger import AccessModeConflict, AttachmentLedger
from tests.functional.conftest import make_conf
from tests.functional.lab import LioIscsiTarget
from tests.functional.rawhost import disks_with, read, sessions_of, write_read

pytestmark = pytest.mark.realkernel


@pytest.fixture
def ledger(tmp_path):
    return AttachmentLedger(str(tmp_path / "ledger" / "attachments.json"),
                            lock_path=str(tmp_path / "locks"))


@pytest.fixture
def connector(tmp_path, ledger):
    return ISCSIConnector(conf=make_conf(tmp_path, login_timeout=10.0), ledger=ledger)


def props_for(t: LioIscsiTarget, attachment: str, **extra) -> dict:
    return {"target_portal": t.portals[0], "target_iqn": t.iqn, "target_lun": 0,
            "volume_id": "vol-multi", "attachment_id": attachment, **extra}


def test_two_attachments_detach_one_keeps_device_detach_other_removes(connector, ledger):
    with LioIscsiTarget(luns=1) as t:
        lun = t.luns[0]
        a = connector.connect_volume(props_for(t, "att-a"))
        b = connector.connect_volume(props_for(t, "att-b"))
        assert a == b
        assert disks_with(lun.wwid) == [os.path.basename(a["path"])]
        assert len(sessions_of(t.iqn)) == 1
        (entry,) = ledger.entries().values()
        assert sorted(entry["attachments"]) == ["att-a", "att-b"]
        connector.disconnect_volume(props_for(t, "att-a"), a)
        assert disks_with(lun.wwid) == [os.path.basename(a["path"])]
        write_read(b["path"], 7, lun.path)           # still does I/O
        connector.disconnect_volume(props_for(t, "att-b"), b)
        assert disks_with(lun.wwid) == []
        assert sessions_of(t.iqn) == []
        assert ledger.entries() == {}


def test_ro_attachment_cannot_be_written_and_rw_is_refused(connector, ledger):
    with LioIscsiTarget(luns=1) as t:
        lun = t.luns[0]
        info = connector.connect_volume(props_for(t, "ro-1", access_mode="ro"))
        name = os.path.basename(info["path"])
        assert read(f"/sys/block/{name}/ro") == "1"
        buf = mmap.mmap(-1, 4096)
        buf.write(b"x" * 4096)
        with pytest.raises(OSError) as exc:
            fd = os.open(info["path"], os.O_RDWR | os.O_DIRECT)
            try:
                os.pwritev(fd, [buf], 0)
            finally:
                os.close(fd)
        assert exc.value.errno in (errno.EPERM, errno.EROFS, errno.EACCES)
        with pytest.raises(AccessModeConflict):
            connector.connect_volume(props_for(t, "rw-1"))
        assert os.path.basename(info["path"]) in disks_with(lun.wwid)
        connector.disconnect_volume(props_for(t, "ro-1"), info)
        assert disks_with(lun.wwid) == []
        assert ledger.entries() == {}
