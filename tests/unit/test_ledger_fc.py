"""Multiattach through the attachment ledger with FibreChannelConnector (captured FCoE tree)."""

from __future__ import annotations

from brick_agent.host.scsi import Hctl
from brick_agent.ledger import AttachmentLedger
from tests.unit.connectors.test_fibre_channel import cap_props, captured, conf, make  # noqa: F401


def test_fc_two_attachments_one_device_last_detach_deletes(conf, captured, tmp_path):  # noqa: F811
    host, fake = captured
    fake.delete_device(Hctl(1, 0, 0, 1))
    fake.log.clear()
    led = AttachmentLedger(str(tmp_path / "ledger.json"), lock_path=str(tmp_path / "locks"))
    conn = make(conf, host, fake, ledger=led)
    a = conn.connect_volume(cap_props(1, attachment_id="a"))
    b = conn.connect_volume(cap_props(1, attachment_id="b"))
    assert a == b and fake.scans() == [(1, 0, 0, 1)]  # one scan for both
    conn.disconnect_volume(cap_props(1, attachment_id="a"), a)
    assert fake.hctls() == ["1:0:0:0", "1:0:0:1"]
    conn.disconnect_volume(cap_props(1, attachment_id="b"), b)
    assert fake.hctls() == ["1:0:0:0"]
    assert led.entries() == {}


def test_fc_stale_volume_detach_after_lun_reuse_keeps_the_new_volume(conf, captured, tmp_path):  # noqa: F811
    from brick_agent.ledger import store as ledgermod
    from tests.unit.connectors.scsi_fakes import FakeLun, wwid_of
    from tests.unit.connectors.test_fibre_channel import CAP_TGT

    host, fake = captured
    led = AttachmentLedger(str(tmp_path / "ledger.json"), lock_path=str(tmp_path / "locks"))
    conn = make(conf, host, fake, ledger=led)
    a = conn.connect_volume(cap_props(1, volume_id="vol-A"))
    fake.array[CAP_TGT][1] = FakeLun(wwid_of(77), 65536)  # LUN 1 reused for B
    b = conn.connect_volume(cap_props(1, volume_id="vol-B"))
    assert ledgermod.same_identity(b["scsi_wwn"], wwid_of(77))
    conn.disconnect_volume(cap_props(1, volume_id="vol-A", device_path=a["path"]), None)
    conn.disconnect_volume(cap_props(1, volume_id="vol-A"), a)
    assert fake.hctls() == ["1:0:0:0", "1:0:0:1"]  # B's disk stays
    assert ledgermod.same_identity(ledgermod.device_identity(host.roots, b["path"]), wwid_of(77))
    (entry,) = led.entries().values()
    assert entry["volume_id"] == "vol-B"
    conn.disconnect_volume(cap_props(1, volume_id="vol-B"), None)
    assert fake.hctls() == ["1:0:0:0"] and led.entries() == {}


def test_fc_attach_is_recorded_while_udev_relinks_the_returned_path(conf, captured, tmp_path):  # noqa: F811
    """udev re-points the wwn link a moment after the connector returned it (another
    claimant of the link coming or going): the attachment is still recorded, so the
    next attachment's detach keeps the device."""
    import os
    import threading

    host, fake = captured
    fake.delete_device(Hctl(1, 0, 0, 1))
    led = AttachmentLedger(str(tmp_path / "ledger.json"), lock_path=str(tmp_path / "locks"))
    conn = make(conf, host, fake, ledger=led)
    device_info = conn.ops.device_info

    def relinked_later(*args, **kwargs):
        info = device_info(*args, **kwargs)
        host.attr("run/udev/control", "")  # udev manages the links from here on
        link = host.roots.devfs("disk", "by-id", "wwn-0x" + info["scsi_wwn"][1:])
        os.makedirs(os.path.dirname(link), exist_ok=True)
        threading.Timer(0.3, os.symlink, [info["path"], link]).start()
        return {**info, "path": link}

    conn.ops.device_info = relinked_later
    a = conn.connect_volume(cap_props(1, attachment_id="a"))
    assert a["path"].endswith(os.path.join("by-id", os.path.basename(a["path"])))
    conn.ops.device_info = device_info
    os.unlink(host.p("run/udev/control"))
    b = conn.connect_volume(cap_props(1, attachment_id="b"))
    (entry,) = led.entries().values()
    assert sorted(entry["attachments"]) == ["a", "b"]
    conn.disconnect_volume(cap_props(1, attachment_id="b"), b)
    assert fake.hctls() == ["1:0:0:0", "1:0:0:1"]  # a's device stays
    conn.disconnect_volume(cap_props(1, attachment_id="a"), a)
    assert fake.hctls() == ["1:0:0:0"] and led.entries() == {}
