"""The attachment ledger as the audit's ``expected`` source (brick-agent audit --ledger)."""

from __future__ import annotations

from brick_agent import audit, cli
from brick_agent.host.roots import HostRoots
from brick_agent.ledger import AttachmentLedger
from tests.unit.test_cli import iscsi_host, run  # noqa: F401

WWID = "36001405aa6d2dc160f6b68a70cef7b43"  # the LUN of the captured iscsi-single tree


def _ledger(path, wwid):
    led = AttachmentLedger(str(path), lock_path=str(path.parent / "locks"))
    with led.transaction() as data:
        data["volumes"][f"ISCSI:{wwid}"] = {
            "protocol": "ISCSI",
            "identity": wwid,
            "lookup": ["iscsi:x:0"],
            "device_info": {"type": "block", "path": "/dev/sda"},
            "attachments": {"a": {"access_mode": "rw"}},
        }
    return led


def test_volume_in_ledger_and_kernel_is_clean(iscsi_host, tmp_path):  # noqa: F811
    led = _ledger(tmp_path / "l.json", WWID)
    report = audit.audit(HostRoots.under(iscsi_host), expected=audit.expected_from_ledger(led))
    assert report.clean, report.to_dict()
    code, data, _ = run(["--host-root", iscsi_host, "audit", "--ledger", led.path])
    assert code == cli.EXIT_OK and data["clean"] is True


def test_kernel_volume_not_in_ledger_is_unexpected(iscsi_host, tmp_path):  # noqa: F811
    led = AttachmentLedger(str(tmp_path / "empty.json"))  # nothing recorded
    code, data, _ = run(["--host-root", iscsi_host, "audit", "--ledger", led.path])
    assert code == cli.EXIT_LEFTOVERS
    assert [f["kind"] for f in data["findings"]] == ["unexpected_volume"]


def test_ledger_volume_gone_from_kernel_is_missing(iscsi_host, tmp_path):  # noqa: F811
    led = _ledger(tmp_path / "l.json", "36001405000000000000000000000beef")
    code, data, _ = run(["--host-root", iscsi_host, "audit", "--ledger", led.path])
    assert code == cli.EXIT_LEFTOVERS
    assert {f["kind"] for f in data["findings"]} == {"unexpected_volume", "missing_volume"}


def test_ledger_and_expected_are_exclusive(iscsi_host, tmp_path):  # noqa: F811
    code, _, _ = run(
        ["--host-root", iscsi_host, "audit", "--ledger", str(tmp_path / "x"), "--expected", "-"],
        "[]",
    )
    assert code == cli.EXIT_USAGE


def test_ledger_flag_without_file_uses_configured_path(iscsi_host, tmp_path):  # noqa: F811
    led = _ledger(tmp_path / "conf.json", WWID)
    cfgfile = tmp_path / "brick_agent.conf"
    cfgfile.write_text(f"[brick_agent]\nledger_path = {led.path}\n")
    code, data, _ = run(
        ["--config-file", str(cfgfile), "--host-root", iscsi_host, "audit", "--ledger"]
    )
    assert code == cli.EXIT_OK, data
