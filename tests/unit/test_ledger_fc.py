"""Multiattach through the attachment ledger with FibreChannelConnector (captured FCoE tree)."""

from __future__ import annotations

from brick_agent.host.scsi import HCTL
from brick_agent.ledger import AttachmentLedger
from tests.unit.connectors.test_fibre_channel import cap_props, captured, conf, make  # noqa: F401


def test_fc_two_attachments_one_device_last_detach_deletes(conf, captured, tmp_path):  # noqa: F811
    host, fake = captured
    fake.delete_device(HCTL(1, 0, 0, 1))
    fake.log.clear()
    led = AttachmentLedger(str(tmp_path / "ledger.json"), lock_path=str(tmp_path / "locks"))
    conn = make(conf, host, fake, ledger=led)
    a = conn.connect_volume(cap_props(1, attachment_id="a"))
    b = conn.connect_volume(cap_props(1, attachment_id="b"))
    assert a == b and fake.scans() == [(1, 0, 0, 1)]        # one scan for both
    conn.disconnect_volume(cap_props(1, attachment_id="a"), a)
    assert fake.hctls() == ["1:0:0:0", "1:0:0:1"]
    conn.disconnect_volume(cap_props(1, attachment_id="b"), b)
    assert fake.hctls() == ["1:0:0:0"]
    assert led.entries() == {}
