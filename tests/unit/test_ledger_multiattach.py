"""Multiattach on one host: the attachment ledger wrapped around ISCSIConnector (fake host)."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from brick_agent.ledger import store as ledgermod
from brick_agent.errors import DeviceNotFound
from brick_agent.ledger import AttachmentLedger
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
def led(tmp_path):
    return AttachmentLedger(
        str(tmp_path / "state" / "ledger" / "attachments.json"), lock_path=str(tmp_path / "locks")
    )


class RoSetter:
    """The devices' read-only flags (what ``blockdev --setro/--setrw`` would leave)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.flags: dict[str, bool] = {}

    def __call__(self, name: str, read_only: bool) -> bool:
        self.calls.append((name, read_only))
        self.flags[name] = read_only
        return read_only

    def is_ro(self, name: str) -> bool:
        return self.flags.get(name, False)


@pytest.fixture
def ro():
    return RoSetter()


@pytest.fixture
def conn(conf, host, fake, led, ro):  # noqa: F811
    return make(conf, host, fake, ledger=led, read_only_setter=ro)


def kernel_actions(fake):  # noqa: F811
    return [e for e in fake.log if e[0] in ("login", "scan", "delete", "logout", "flush")]


def test_second_attachment_returns_same_device_without_scan_or_login(conn, fake, led):  # noqa: F811
    a = conn.connect_volume(props(lun=1, attachment_id="att-a"))
    before = kernel_actions(fake)
    b = conn.connect_volume(props(lun=1, attachment_id="att-b"))
    assert b == a
    assert kernel_actions(fake) == before  # no second login, scan
    (entry,) = led.entries().values()
    assert sorted(entry["attachments"]) == ["att-a", "att-b"]
    assert entry["device_info"]["path"] == a["path"]
    assert ledgermod.same_identity(entry["identity"], a["scsi_wwn"])


def test_detach_of_one_of_two_keeps_device_last_detach_removes(conn, fake, led):  # noqa: F811
    info = conn.connect_volume(props(lun=1, attachment_id="att-a"))
    conn.connect_volume(props(lun=1, attachment_id="att-b"))
    conn.disconnect_volume(props(lun=1, attachment_id="att-a"), info)
    assert fake.state()["devices"] == ["sda"]
    assert not [e for e in fake.log if e[0] in ("delete", "logout")]
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == ["att-b"]
    conn.disconnect_volume(props(lun=1, attachment_id="att-b"), info)
    assert fake.state() == EMPTY
    assert led.entries() == {}


def test_ro_attachment_with_id_is_made_writable_when_a_rw_attachment_arrives(conn, fake, led, ro):  # noqa: F811
    info = conn.connect_volume(props(lun=1, attachment_id="r1", access_mode="ro"))
    assert ro.is_ro("sda")
    assert conn.connect_volume(props(lun=1, attachment_id="w1")) == info
    assert not ro.is_ro("sda")  # the writer can write
    conn.disconnect_volume(props(lun=1, attachment_id="w1"), info)
    assert ro.is_ro("sda")  # only ro attachments left
    conn.disconnect_volume(props(lun=1, attachment_id="r1"), info)
    assert fake.state() == EMPTY


def test_rw_then_ro_with_ids_never_makes_the_writer_read_only(conn, fake, led, ro):  # noqa: F811
    info = conn.connect_volume(props(lun=1, attachment_id="w1"))
    assert conn.connect_volume(props(lun=1, attachment_id="r1", access_mode="ro")) == info
    assert ro.calls == []  # never read-only while w1 may write
    (entry,) = led.entries().values()
    assert ledgermod.modes_of(entry) == {"w1": "rw", "r1": "ro"}
    conn.disconnect_volume(props(lun=1, attachment_id="r1"), info)
    assert ro.calls == [] and fake.state()["devices"] == ["sda"]
    conn.disconnect_volume(props(lun=1, attachment_id="w1"), info)
    assert fake.state() == EMPTY


@pytest.mark.parametrize("first,second", [("rw", "ro"), ("ro", "rw")])
def test_without_attachment_ids_read_only_flag_is_never_touched(conn, fake, led, ro, first, second):  # noqa: F811
    # Nova strips attachment_id: both instances' connects are the attachment 'default'
    a = conn.connect_volume(props(lun=1, access_mode=first))
    b = conn.connect_volume(props(lun=1, access_mode=second))
    assert a == b
    assert ro.calls == [] and not ro.is_ro("sda")


def test_device_made_ro_by_an_older_ledger_is_made_writable_for_a_writer(conn, fake, led, ro):  # noqa: F811
    info = conn.connect_volume(props(lun=1, attachment_id="r1", access_mode="ro"))
    with led.transaction() as data:  # an entry written before 'read_only'
        (entry,) = data["volumes"].values()
        del entry["read_only"]
        entry["attachments"] = {"default": {"access_mode": "ro", "since": 0}}
    conn.connect_volume(props(lun=1))  # Nova's rw connect
    assert not ro.is_ro("sda")
    assert conn.connect_volume(props(lun=1)) == info


def test_crash_after_kernel_attach_before_ledger_write_is_recovered(conn, fake, led):  # noqa: F811
    # the kernel attach happened, the process died before the ledger recorded it:
    # only the write-ahead intent is in the ledger
    with led.transaction() as data:
        data["pending"].append(
            {
                "lookup": ["iscsi:" + props()["target_iqn"] + ":1"],
                "attachment_id": "att-a",
                "access_mode": "rw",
                "since": 0,
            }
        )
    info = make_plain_attach(conn)
    again = conn.connect_volume(props(lun=1, attachment_id="att-a"))  # the caller retries
    assert again["path"] == info["path"]
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == ["att-a"]  # belongs to att-a
    assert led.read()["pending"] == []
    conn.disconnect_volume(props(lun=1, attachment_id="att-a"), again)
    assert fake.state() == EMPTY


def make_plain_attach(conn):
    """Attach through the kernel without touching the ledger (what a crash leaves)."""
    saved, conn.ledger = conn.ledger, None
    try:
        return conn.connect_volume(props(lun=1))
    finally:
        conn.ledger = saved


def test_device_without_entry_or_intent_is_adopted_by_the_connecting_attachment(conn, fake, led):  # noqa: F811
    info = make_plain_attach(conn)  # present, but nobody recorded it
    conn.connect_volume(props(lun=1, attachment_id="att-a"))
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == ["att-a"]
    conn.disconnect_volume(props(lun=1, attachment_id="other"), info)  # not recorded
    assert fake.state()["devices"] == ["sda"]  # removes nothing
    conn.disconnect_volume(props(lun=1, attachment_id="att-a"), info)
    assert fake.state() == EMPTY
    assert led.entries() == {}


def test_entry_whose_device_is_gone_is_dropped(conn, fake, led):  # noqa: F811
    info = conn.connect_volume(props(lun=1, attachment_id="att-a"))
    saved, conn.ledger = conn.ledger, None
    conn.disconnect_volume(props(lun=1), info)  # removed behind the ledger's back
    conn.ledger = saved
    assert fake.state() == EMPTY
    info2 = conn.connect_volume(props(lun=1, attachment_id="att-b"))
    assert [e for e in fake.log if e[0] == "scan"].__len__() == 2  # a real attach again
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == ["att-b"]
    conn.disconnect_volume(props(lun=1, attachment_id="att-b"), info2)
    assert fake.state() == EMPTY


def test_failed_attach_leaves_no_intent(conn, fake, led, array):  # noqa: F811
    with pytest.raises(DeviceNotFound):
        conn.connect_volume(props(lun=9, attachment_id="att-a"))  # no such LUN
    assert led.read()["pending"] == [] and led.entries() == {}


def test_no_secret_and_no_raw_properties_stored(conn, led):
    conn.connect_volume(
        props(
            lun=1,
            attachment_id="att-a",
            auth_method="CHAP",
            auth_username="u",
            auth_password="s3cr3t-Pa55w0rd",
        )
    )
    text = pathlib.Path(led.path).read_text()
    assert "s3cr3t" not in text and "auth_username" not in text
    assert oct(os.stat(os.path.dirname(led.path)).st_mode & 0o777) == "0o700"
    assert json.loads(text)["version"] == 1


def test_connector_on_fake_roots_has_no_ledger_unless_given(conf, host, fake):  # noqa: F811
    assert make(conf, host, fake).ledger is None


def test_other_volume_behind_the_same_lun_is_not_reused_blindly(conn, fake, led):  # noqa: F811
    conn.connect_volume(props(lun=1, attachment_id="att-a"))
    before = list(fake.log)
    other = props(lun=1, attachment_id="att-b")
    other["volume_id"] = "vol-2"  # the array reused the LUN
    conn.connect_volume(other)
    assert fake.log != before  # the full attach path ran (revalidation)
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == ["att-b"] and entry["volume_id"] == "vol-2"


def test_reconnect_of_a_recorded_attachment_runs_the_kernel_path_and_keeps_others(conn, fake, led):  # noqa: F811
    info = conn.connect_volume(props(lun=1, attachment_id="att-a"))
    conn.connect_volume(props(lun=1, attachment_id="att-b"))
    before = [e for e in fake.log if e[0] == "rescan"]
    assert conn.connect_volume(props(lun=1, attachment_id="att-a")) == info
    assert len([e for e in fake.log if e[0] == "rescan"]) > len(before)  # LUN revalidated
    (entry,) = led.entries().values()
    assert sorted(entry["attachments"]) == ["att-a", "att-b"]


def test_new_attachment_on_a_reused_lun_gets_the_new_volume(conn, fake, led, array):  # noqa: F811
    from tests.unit.connectors.test_iscsi_fakehost import FakeLun, udev_of, wwid_of

    old = conn.connect_volume(props(lun=1, attachment_id="att-a"))
    array.targets[0].luns[1] = FakeLun(wwid_of(99))  # the array reused LUN 1
    new = conn.connect_volume(props(lun=1, attachment_id="att-b"))
    assert new["scsi_wwn"] == udev_of(99) and new["path"] != old["path"]
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == ["att-b"]
