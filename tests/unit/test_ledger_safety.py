"""The ledger fails closed and anchors every detach to the volume's identity (fake host).

Issue 13 §2 (read errors and corruption never drop a live attachment) and §5 (a
stale volume's detach on a reused LUN never removes the new volume's device).
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from brick_agent import audit as auditmod
from brick_agent.ledger import store as ledgermod
from brick_agent.ledger import AttachmentLedger, AttachmentsUnknown, LedgerUnreadable
from tests.unit.connectors.scsi_fakes import FakeLun, udev_of, wwid_of
from tests.unit.connectors.test_iscsi_connector import (  # noqa: F401
    EMPTY,
    array,
    conf,
    fake,
    host,
    make,
    props,
)


@pytest.fixture
def led(tmp_path, host):  # noqa: F811
    return AttachmentLedger(
        str(tmp_path / "state" / "ledger" / "attachments.json"),
        lock_path=str(tmp_path / "locks"),
        roots=host.roots,
    )


@pytest.fixture
def conn(conf, host, fake, led):  # noqa: F811
    return make(conf, host, fake, ledger=led, read_only_setter=lambda name, ro: ro)


def _two_attachments(conn):
    a = conn.connect_volume(props(lun=1, attachment_id="att-a"))
    conn.connect_volume(props(lun=1, attachment_id="att-b"))
    return a


# ------------------------------------------------------------------ §2 fail closed


def test_ledger_that_cannot_be_read_raises_and_nothing_is_detached(conn, fake, led):
    info = _two_attachments(conn)
    saved = pathlib.Path(led.path).read_bytes()
    os.unlink(led.path)
    os.mkdir(led.path)  # open() now fails with EISDIR (an OSError)
    with pytest.raises(LedgerUnreadable):
        conn.disconnect_volume(props(lun=1, attachment_id="att-a"), info)
    assert fake.state()["devices"] == ["sda"]
    os.rmdir(led.path)
    pathlib.Path(led.path).write_bytes(saved)
    (entry,) = led.entries().values()  # not moved aside, not emptied
    assert sorted(entry["attachments"]) == ["att-a", "att-b"]
    assert [n for n in os.listdir(os.path.dirname(led.path)) if "corrupt" in n] == []


def test_service_user_reading_a_root_only_ledger_gets_a_typed_error(conn, led):
    conn.connect_volume(props(lun=1, attachment_id="att-a"))
    assert os.stat(led.path).st_mode & 0o077 == 0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: an unprivileged service user
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                led.read()
                verdict = b"read"
            except LedgerUnreadable:
                verdict = b"LedgerUnreadable"
            except BaseException as exc:  # noqa: BLE001
                verdict = type(exc).__name__.encode()
            os.write(w, verdict)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 100) == b"LedgerUnreadable"
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == ["att-a"]


def _corrupt(led) -> None:
    with open(led.path, "w") as f:
        f.write('{"version": 1, "volu')  # a torn write


def test_corrupt_ledger_is_rebuilt_from_the_kernel_with_unknown_attachments(conn, fake, led):
    info = _two_attachments(conn)
    _corrupt(led)
    with pytest.raises(AttachmentsUnknown) as exc:
        conn.disconnect_volume(props(lun=1, attachment_id="att-a"), info)
    assert "force" in str(exc.value)
    assert fake.state()["devices"] == ["sda"]  # att-b's device survives
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == [ledgermod.UNKNOWN_ATTACHMENT]
    assert ledgermod.same_identity(entry["identity"], info["scsi_wwn"])
    aside = [n for n in os.listdir(os.path.dirname(led.path)) if ".corrupt-" in n]
    assert len(aside) == 1
    assert pathlib.Path(os.path.dirname(led.path), aside[0]).read_text().endswith('"volu')
    kinds = [k for k, _, _ in led.concerns()]
    assert kinds == ["attachments_unknown"]
    conn.disconnect_volume(props(lun=1, attachment_id="att-a"), info, force=True)
    assert fake.state() == EMPTY and led.entries() == {}


def test_after_rebuild_a_new_attachment_joins_the_unknown_one(conn, fake, led):
    info = conn.connect_volume(props(lun=1, attachment_id="att-a"))
    _corrupt(led)
    assert conn.connect_volume(props(lun=1, attachment_id="att-c")) == info
    (entry,) = led.entries().values()
    assert sorted(entry["attachments"]) == ["<unknown>", "att-c"]
    with pytest.raises(AttachmentsUnknown):
        conn.disconnect_volume(props(lun=1, attachment_id="att-c"), info)
    assert fake.state()["devices"] == ["sda"]
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == ["<unknown>"]
    conn.disconnect_volume(props(lun=1, attachment_id="att-c"), info, ignore_errors=True)
    assert fake.state()["devices"] == ["sda"]  # ignore_errors is not force


def test_two_corruptions_in_one_second_get_two_aside_copies(led):
    os.makedirs(os.path.dirname(led.path))
    for _ in range(2):
        _corrupt(led)
        with led.transaction():
            pass
    aside = [n for n in os.listdir(os.path.dirname(led.path)) if ".corrupt-" in n]
    assert len(aside) == 2


def test_temp_files_of_a_crashed_writer_are_removed(tmp_path, host):  # noqa: F811
    path = tmp_path / "l" / "attachments.json"
    path.parent.mkdir()
    (path.parent / ".ledger-abc123.tmp").write_text("half")
    led = AttachmentLedger(str(path), lock_path=str(tmp_path / "locks"), roots=host.roots)
    with led.transaction() as data:
        data["pending"].append({"lookup": ["k"]})
    assert sorted(os.listdir(path.parent)) == ["attachments.json"]


def test_audit_reports_an_unreadable_ledger_as_an_error_not_unexpected_volumes(conn, host, led):  # noqa: F811
    conn.connect_volume(props(lun=1, attachment_id="att-a"))
    os.unlink(led.path)
    os.mkdir(led.path)
    report = auditmod.audit_against_ledger(led, host.roots)
    assert not report.clean
    assert any("LedgerUnreadable" in e for e in report.errors)
    assert report.of_kind(auditmod.UNEXPECTED_VOLUME) == []


# ------------------------------------------------------------------ §5 reused LUN


def _reuse_lun_1(array):  # noqa: F811
    array.targets[0].luns[1] = FakeLun(wwid_of(99))  # the array maps volume B at LUN 1


def test_stale_volume_detach_in_novas_shape_keeps_the_new_volume(conn, fake, led, array):  # noqa: F811
    a = conn.connect_volume(props(lun=1, volume_id="vol-A"))
    _reuse_lun_1(array)
    b = conn.connect_volume(props(lun=1, volume_id="vol-B"))
    assert b["scsi_wwn"] == udev_of(99)
    # Nova: disconnect_volume(data_A, None), data_A carrying device_path
    conn.disconnect_volume(props(lun=1, volume_id="vol-A", device_path=a["path"]), None)
    assert len(fake.state()["devices"]) == 1
    assert ledgermod.same_identity(ledgermod.device_identity(conn.roots, b["path"]), udev_of(99))
    assert fake.state()["sessions"]  # not logged out
    (entry,) = led.entries().values()
    assert entry["volume_id"] == "vol-B" and list(entry["attachments"]) == ["default"]
    # with A's full device_info too
    conn.disconnect_volume(props(lun=1, volume_id="vol-A"), a)
    (entry,) = led.entries().values()
    assert entry["volume_id"] == "vol-B" and list(entry["attachments"]) == ["default"]
    assert len(fake.state()["devices"]) == 1
    conn.disconnect_volume(props(lun=1, volume_id="vol-B"), None)  # B's own detach
    assert fake.state() == EMPTY and led.entries() == {}


def test_stale_detach_without_volume_id_names_a_by_its_device_info(conn, fake, led, array):  # noqa: F811
    a = conn.connect_volume(props(lun=1, volume_id=None))
    _reuse_lun_1(array)
    conn.connect_volume(props(lun=1, volume_id=None))  # B: the stale disk is replaced
    conn.disconnect_volume(props(lun=1, volume_id=None), a)  # A's device_info: WWID of A
    assert len(fake.state()["devices"]) == 1
    (entry,) = led.entries().values()
    assert ledgermod.same_identity(entry["identity"], udev_of(99))


def test_detach_naming_no_volume_on_a_reused_address_keeps_the_device_and_says_so(
    conn, fake, led, array
):  # noqa: F811
    conn.connect_volume(props(lun=1, volume_id=None))
    _reuse_lun_1(array)
    b = conn.connect_volume(props(lun=1, volume_id=None))
    conn.disconnect_volume(props(lun=1, volume_id=None), None)  # A's or B's? cannot tell
    assert len(fake.state()["devices"]) == 1
    assert [k for k, _, _ in led.concerns()] == ["detach_kept"]
    conn.disconnect_volume(props(lun=1, volume_id=None), b)  # B's, by its device_info
    assert fake.state() == EMPTY and led.entries() == {}
    # A's tombstone stays (bounded): a later detach of A must still be told apart
    (tomb,) = json.loads(pathlib.Path(led.path).read_text())["replaced"]
    assert ledgermod.same_identity(tomb["identity"], udev_of(2))


def test_detach_without_device_info_uses_the_recorded_identity(conn, fake, led, array):  # noqa: F811
    conn.connect_volume(props(lun=1, volume_id="vol-A"))
    _reuse_lun_1(array)  # B mapped, nobody attached it yet
    conn.disconnect_volume(props(lun=1, volume_id="vol-A"), None)
    # the disk at LUN 1 still reports A's WWID to the kernel (no rescan): A's own, removed
    assert fake.state() == EMPTY and led.entries() == {}


def test_detach_of_a_volume_whose_disk_vanished_logs_out_of_its_empty_session(conn, fake, led):
    conn.connect_volume(props(lun=1, volume_id="vol-A"))
    fake.delete_device(_hctl_of_lun(conn, 1))  # removed behind our back
    assert fake.state()["devices"] == [] and fake.state()["sessions"]
    conn.disconnect_volume(props(lun=1, volume_id="vol-A"), None)  # Nova's shape
    assert fake.state() == EMPTY and led.entries() == {}


def _hctl_of_lun(conn, lun):
    from brick_agent.host.scsi import scsi_devices

    (dev,) = [d for d in scsi_devices(conn.roots) if d.hctl.lun == lun]
    return dev.hctl


def test_a_detach_reads_the_named_device_once_and_still_removes_it(conn, fake, led, monkeypatch):
    """The path the caller names is the recorded device's: its identity is read once,
    under the volume lock, for both the claim and the recorded entry."""
    info = conn.connect_volume(props(lun=1))
    reads: list[str] = []
    real = ledgermod.device_identity

    def counting(roots, path):
        reads.append(path)
        return real(roots, path)

    monkeypatch.setattr(ledgermod, "device_identity", counting)
    conn.disconnect_volume(props(lun=1), info)
    assert reads == [info["path"]]
    assert fake.state() == EMPTY and led.entries() == {}
