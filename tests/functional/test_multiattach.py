"""Multiattach of one volume on one host, through the attachment ledger (real kernel).

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest
     tests/functional/test_multiattach.py -q
"""

from __future__ import annotations

import errno
import mmap
import os

import pytest

from brick_agent import privileged
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_agent.ledger import AttachmentLedger
from brick_lab import LioIscsiTarget, NvmetSubsystem
from brick_lab.rawhost import disks_with, read, sessions_of, write_read
from tests.functional.conftest import make_conf

pytestmark = pytest.mark.realkernel


@pytest.fixture
def ledger(tmp_path):
    return AttachmentLedger(
        str(tmp_path / "ledger" / "attachments.json"), lock_path=str(tmp_path / "locks")
    )


@pytest.fixture
def connector(tmp_path, ledger):
    return ISCSIConnector(conf=make_conf(tmp_path, login_timeout=10.0), ledger=ledger)


def props_for(t: LioIscsiTarget, attachment: str, **extra) -> dict:
    return {
        "target_portal": t.portals[0],
        "target_iqn": t.iqn,
        "target_lun": 0,
        "volume_id": "vol-multi",
        "attachment_id": attachment,
        **extra,
    }


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
        write_read(b["path"], 7, lun.path)  # still does I/O
        connector.disconnect_volume(props_for(t, "att-b"), b)
        assert disks_with(lun.wwid) == []
        assert sessions_of(t.iqn) == []
        assert ledger.entries() == {}


def _write_fails(path: str) -> int:
    buf = mmap.mmap(-1, 4096)
    buf.write(b"x" * 4096)
    with pytest.raises(OSError) as exc:
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        try:
            os.pwritev(fd, [buf], 0)
        finally:
            os.close(fd)
    return exc.value.errno


def test_ro_attachment_cannot_be_written_until_a_rw_attachment_arrives(connector, ledger):
    with LioIscsiTarget(luns=1) as t:
        lun = t.luns[0]
        info = connector.connect_volume(props_for(t, "ro-1", access_mode="ro"))
        name = os.path.basename(os.path.realpath(info["path"]))
        assert read(f"/sys/block/{name}/ro") == "1"
        assert _write_fails(info["path"]) in (errno.EPERM, errno.EROFS, errno.EACCES)
        assert connector.connect_volume(props_for(t, "rw-1")) == info
        assert read(f"/sys/block/{name}/ro") == "0"
        write_read(info["path"], 3, lun.path)
        connector.disconnect_volume(props_for(t, "rw-1"), info)
        assert read(f"/sys/block/{name}/ro") == "1"  # only ro attachments left
        connector.disconnect_volume(props_for(t, "ro-1"), info)
        assert disks_with(lun.wwid) == []
        assert ledger.entries() == {}


class RunningWriter:
    """An instance's open read-write descriptor: it keeps writing across other attaches."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        self.n = 0

    def write(self) -> None:
        self.n += 1
        buf = mmap.mmap(-1, 4096)
        buf.write(bytes([self.n]) * 4096)
        assert os.pwritev(self.fd, [buf], 4096 * self.n) == 4096  # EPERM if made ro
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _access_mode_flow(connector, props_of, order: tuple[str, str], with_ids: bool) -> None:
    """Two users of one volume: one rw (a running writer), one ro; both orders.

    The writer's I/O must work after the ro connect and after the ro disconnect.
    Without attachment ids (Nova) the ro user's disconnect is not made while the
    writer uses the volume (Nova's own rule), so only the connects are exercised.
    """

    def p(mode):
        extra = {"access_mode": mode}
        if with_ids:
            extra["attachment_id"] = f"att-{mode}"
        return props_of(**extra)

    first = connector.connect_volume(p(order[0]))
    second = connector.connect_volume(p(order[1]))
    assert first["path"] == second["path"]
    name = os.path.basename(os.path.realpath(first["path"]))
    writer = RunningWriter(first["path"])
    try:
        writer.write()
        assert read(f"/sys/block/{name}/ro") == "0"
        if with_ids:
            connector.disconnect_volume(p("ro"), first)
            writer.write()
            assert read(f"/sys/block/{name}/ro") == "0"
    finally:
        writer.close()
    connector.disconnect_volume(p("rw"), first)


@pytest.mark.parametrize("with_ids", [True, False], ids=["ids", "nova-no-ids"])
@pytest.mark.parametrize("order", [("rw", "ro"), ("ro", "rw")], ids=["rw-first", "ro-first"])
def test_iscsi_ro_user_never_breaks_a_running_writer(connector, ledger, order, with_ids):
    with LioIscsiTarget(luns=1) as t:
        base = {k: v for k, v in props_for(t, "x").items() if k != "attachment_id"}
        _access_mode_flow(connector, lambda **kw: {**base, **kw}, order, with_ids)
        assert disks_with(t.luns[0].wwid) == [] and sessions_of(t.iqn) == []
        assert ledger.entries() == {}


@pytest.mark.parametrize("with_ids", [True, False], ids=["ids", "nova-no-ids"])
@pytest.mark.parametrize("order", [("rw", "ro"), ("ro", "rw")], ids=["rw-first", "ro-first"])
def test_nvme_ro_user_never_breaks_a_running_writer(tmp_path, ledger, order, with_ids):
    conf = make_conf(tmp_path)
    privileged.init(conf)
    connector = NVMeOFConnector(None, None, conf=conf, ledger=ledger)
    with NvmetSubsystem(namespaces=1) as sub:
        ns = sub.namespaces[1]
        base = {
            "target_nqn": sub.nqn,
            "vol_uuid": ns.uuid,
            "ns_id": 1,
            "portals": [[q.traddr, int(q.trsvcid), "tcp"] for q in sub.ports],
        }
        _access_mode_flow(connector, lambda **kw: {**base, **kw}, order, with_ids)
        assert ledger.entries() == {}
        assert not [
            c
            for c in os.listdir("/sys/class/nvme")
            if read(f"/sys/class/nvme/{c}/subsysnqn") == sub.nqn
        ]


def test_stale_volume_detach_after_lun_reuse_keeps_the_new_volume(connector, ledger):
    """Issue 13 §5: A at LUN 0; the array maps B at LUN 0 (host not told); B attached;
    then A detached as Nova does it, ``disconnect_volume(data_A, None)``."""
    with LioIscsiTarget(luns=1) as t:
        base = {"target_portal": t.portals[0], "target_iqn": t.iqn, "target_lun": 0}
        data_a = {**base, "volume_id": "vol-A"}
        a = connector.connect_volume(data_a)
        data_a["device_path"] = a["path"]  # what Nova stores
        old_wwid = t.luns[0].wwid
        t.remove_lun(0)
        new_lun = t.add_lun(0)
        b = connector.connect_volume({**base, "volume_id": "vol-B"})
        assert b["scsi_wwn"] == new_lun.scsi_id and disks_with(old_wwid) == []
        writer = RunningWriter(b["path"])
        try:
            connector.disconnect_volume(data_a, None)  # A's detach, Nova's shape
            connector.disconnect_volume(data_a, a)  # and with A's device_info
            writer.write()  # B's I/O still works
        finally:
            writer.close()
        assert disks_with(new_lun.wwid) == [os.path.basename(os.path.realpath(b["path"]))]
        assert len(sessions_of(t.iqn)) == 1
        (entry,) = ledger.entries().values()
        assert entry["volume_id"] == "vol-B"
        write_read(b["path"], 9, new_lun.path)
        connector.disconnect_volume({**base, "volume_id": "vol-B"}, None)
        assert disks_with(new_lun.wwid) == [] and sessions_of(t.iqn) == []
        assert ledger.entries() == {}
