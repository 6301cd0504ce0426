"""Leftover audit on hand-built fake host trees with planted orphans."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from brick_agent import audit as A
from brick_agent.audit import ExpectedVolume, InvalidExpectedVolume, audit
from tests.unit.gate.fakehost import FakeHost

IQN = "iqn.2003-01.org.linux-iscsi.target:vol1"
WWID1 = "naa.6001405aaaaaaaaaaaaaaaaaaaaaaaa1"
WWID2 = "naa.6001405bbbbbbbbbbbbbbbbbbbbbbbb2"
NQN = "nqn.2014-08.org.test:subsys1"
UUID1 = "5b2a0c9e-1111-4d6f-8e3a-0123456789ab"
NGUID1 = "5b2a0c9e11114d6f8e3a0123456789ab"


def _healthy(tmp_path) -> FakeHost:
    """Two iSCSI paths (two sessions) to one LUN under a multipath map, plus one NVMe-oF ns."""
    h = FakeHost(tmp_path)
    s1 = h.iscsi_session(1, 2, IQN, portal="192.0.2.10")
    s2 = h.iscsi_session(2, 3, IQN, portal="192.0.2.11")
    h.scsi_lun(s1, "2:0:0:1", "sda", WWID1)
    h.scsi_lun(s2, "3:0:0:1", "sdb", WWID1)
    h.multipath_map(0, "mpatha", "3" + WWID1[4:], ["sda", "sdb"])
    h.wwids("3" + WWID1[4:])
    h.disk_link("by-path", f"ip-192.0.2.10:3260-iscsi-{IQN}-lun-1", "sda")
    h.nvme_controller(0, 0, NQN)
    h.nvme_namespace(0, [0], 1, UUID1, nguid=NGUID1)
    return h


def test_healthy_host_is_clean(tmp_path):
    report = audit(_healthy(tmp_path).roots)
    assert report.errors == []
    assert report.findings == []
    assert report.clean
    assert report.counts["iscsi_sessions"] == 2
    assert report.counts["scsi_devices"] == 2
    assert report.counts["multipath_maps"] == 1
    assert report.counts["nvme_controllers"] == 1
    protos = sorted((v.protocol, v.devices) for v in report.volumes)
    assert protos == [("ISCSI", ("sda", "sdb")), ("NVMEOF", ("nvme0n1",))]


def test_empty_host_is_clean(tmp_path):
    report = audit(FakeHost(tmp_path).roots)
    assert report.clean and report.volumes == [] and report.errors == []


def test_session_without_luns(tmp_path):
    h = _healthy(tmp_path)
    h.iscsi_session(7, 9, "iqn.2003-01.org.test:other", portal="192.0.2.99")
    report = audit(h.roots)
    found = report.of_kind(A.ISCSI_SESSION_WITHOUT_LUNS)
    assert [f.name for f in found] == ["session7"]
    assert "iqn.2003-01.org.test:other" in found[0].detail
    assert "192.0.2.99" in found[0].detail
    assert report.kinds() == {A.ISCSI_SESSION_WITHOUT_LUNS}


def test_session_whose_lun_was_deleted_but_session_kept(tmp_path):
    # a broken detach: LUN deleted, logout forgotten
    h = FakeHost(tmp_path)
    s = h.iscsi_session(1, 2, IQN)
    h.scsi_lun(s, "2:0:0:1", "sda", WWID1, links=False)
    h.remove_lun("2:0:0:1")
    report = audit(h.roots)
    assert [f.name for f in report.of_kind(A.ISCSI_SESSION_WITHOUT_LUNS)] == ["session1"]


def test_session_not_logged_in(tmp_path):
    h = FakeHost(tmp_path)
    s = h.iscsi_session(1, 2, IQN, state="FAILED")
    h.scsi_lun(s, "2:0:0:1", "sda", WWID1)
    report = audit(h.roots)
    assert [(f.kind, f.name) for f in report.findings] == [
        (A.ISCSI_SESSION_NOT_LOGGED_IN, "session1")
    ]
    assert "FAILED" in report.findings[0].detail


def test_device_left_after_session_deleted(tmp_path):
    # a broken detach: logout done while the LUN (and its device) stayed
    h = FakeHost(tmp_path)
    s = h.iscsi_session(1, 2, IQN)
    h.scsi_lun(s, "2:0:0:1", "sda", WWID1)
    h.remove_session(1)
    report = audit(h.roots)
    found = report.of_kind(A.SCSI_DEVICE_WITHOUT_SESSION)
    assert [f.name for f in found] == ["2:0:0:1"]
    assert "sda" in found[0].detail and "session1 is gone" in found[0].detail


def test_offline_and_blocked_devices(tmp_path):
    h = FakeHost(tmp_path)
    s = h.iscsi_session(1, 2, IQN)
    h.scsi_lun(s, "2:0:0:1", "sda", WWID1, state="offline")
    h.scsi_lun(s, "2:0:0:2", "sdb", WWID2, state="blocked")
    report = audit(h.roots)
    found = {f.name: f.detail for f in report.of_kind(A.SCSI_DEVICE_NOT_RUNNING)}
    assert set(found) == {"2:0:0:1", "2:0:0:2"}
    assert "offline" in found["2:0:0:1"] and "blocked" in found["2:0:0:2"]


def test_map_without_paths(tmp_path):
    h = _healthy(tmp_path)
    h.remove_lun("2:0:0:1")
    h.remove_lun("3:0:0:1")
    report = audit(h.roots)
    assert [f.name for f in report.of_kind(A.MULTIPATH_MAP_WITHOUT_PATHS)] == ["mpatha"]
    # both sessions now have no LUN, the by-path link and the wwids entry outlive the device
    assert {f.name for f in report.of_kind(A.ISCSI_SESSION_WITHOUT_LUNS)} == {
        "session1",
        "session2",
    }
    assert {f.name for f in report.of_kind(A.DANGLING_LINK)} == {
        f"/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-{IQN}-lun-1",
        "/dev/disk/by-id/scsi-3" + WWID1[4:],
    }
    # the map itself still carries the WWID: the wwids entry is explained
    assert report.of_kind(A.WWIDS_ENTRY_WITHOUT_DEVICE) == []


def test_map_with_every_path_failed(tmp_path):
    h = FakeHost(tmp_path)
    s = h.iscsi_session(1, 2, IQN)
    h.scsi_lun(s, "2:0:0:1", "sda", WWID1, state="transport-offline")
    h.multipath_map(0, "mpatha", "3" + WWID1[4:], ["sda"])
    report = audit(h.roots)
    found = report.of_kind(A.MULTIPATH_MAP_ALL_PATHS_FAILED)
    assert [f.name for f in found] == ["mpatha"]
    assert "sda=transport-offline" in found[0].detail


def test_map_with_one_good_path_is_fine(tmp_path):
    h = FakeHost(tmp_path)
    s1 = h.iscsi_session(1, 2, IQN)
    s2 = h.iscsi_session(2, 3, IQN, portal="192.0.2.11")
    h.scsi_lun(s1, "2:0:0:1", "sda", WWID1, state="offline")
    h.scsi_lun(s2, "3:0:0:1", "sdb", WWID1)
    h.multipath_map(0, "mpatha", "3" + WWID1[4:], ["sda", "sdb"])
    report = audit(h.roots)
    assert report.of_kind(A.MULTIPATH_MAP_ALL_PATHS_FAILED) == []
    assert [f.name for f in report.of_kind(A.SCSI_DEVICE_NOT_RUNNING)] == ["2:0:0:1"]


def test_wwids_entry_without_device(tmp_path):
    h = _healthy(tmp_path)
    stale = "36001405cccccccccccccccccccccccc3"
    h.wwids("3" + WWID1[4:], stale, "eui.0123456789abcdef")
    report = audit(h.roots)
    assert {f.name for f in report.of_kind(A.WWIDS_ENTRY_WITHOUT_DEVICE)} == {
        stale,
        "eui.0123456789abcdef",
    }
    assert report.kinds() == {A.WWIDS_ENTRY_WITHOUT_DEVICE}


def test_wwids_entry_of_nvme_namespace_is_explained(tmp_path):
    h = _healthy(tmp_path)
    h.wwids("3" + WWID1[4:], f"uuid.{UUID1}")
    assert audit(h.roots).of_kind(A.WWIDS_ENTRY_WITHOUT_DEVICE) == []


def test_dangling_and_stale_links(tmp_path):
    h = _healthy(tmp_path)
    h.disk_link("by-id", "scsi-3600140500000000000000000000dead", "sdz")
    h.disk_link("by-path", "ip-192.0.2.10:3260-iscsi-iqn.x-lun-9", "sdy")
    (h.base / "dev" / "sdy").write_text("")  # a stale device node: no kernel device
    report = audit(h.roots)
    assert [f.name for f in report.of_kind(A.DANGLING_LINK)] == [
        "/dev/disk/by-id/scsi-3600140500000000000000000000dead"
    ]
    stale = report.of_kind(A.STALE_LINK)
    assert [f.name for f in stale] == ["/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.x-lun-9"]
    assert "sdy" in stale[0].detail


def test_nvme_controller_without_namespaces(tmp_path):
    h = _healthy(tmp_path)
    h.nvme_controller(1, 1, "nqn.2014-08.org.test:leftover", traddr="192.0.2.30")
    report = audit(h.roots)
    found = report.of_kind(A.NVME_CONTROLLER_WITHOUT_NAMESPACES)
    assert [f.name for f in found] == ["nvme1"]
    assert "nqn.2014-08.org.test:leftover" in found[0].detail and "192.0.2.30" in found[0].detail
    assert report.kinds() == {A.NVME_CONTROLLER_WITHOUT_NAMESPACES}


def test_discovery_controller_and_pcie_are_not_leftovers(tmp_path):
    h = FakeHost(tmp_path)
    h.nvme_controller(0, 0, A.NVME_DISCOVERY_NQN)
    h.nvme_controller(1, 1, "nqn.2014.08.org.nvmexpress:local", transport="pcie")
    h.nvme_namespace(1, [1], 1, "5b2a0c9e-3333-4d6f-8e3a-0123456789ab")
    report = audit(h.roots, [])
    assert report.clean, report.findings
    assert report.volumes == []  # a local PCIe namespace is no volume


@pytest.mark.parametrize("state", ["connecting", "resetting", "deleting", "dead"])
def test_nvme_controller_not_live(tmp_path, state):
    h = FakeHost(tmp_path)
    h.nvme_controller(0, 0, NQN, state=state)
    h.nvme_namespace(0, [0], 1, UUID1)
    report = audit(h.roots)
    found = report.of_kind(A.NVME_CONTROLLER_NOT_LIVE)
    assert [f.name for f in found] == ["nvme0"] and state in found[0].detail


def test_nvme_grace_drops_controllers_that_recover(tmp_path):
    h = FakeHost(tmp_path)
    c0 = h.nvme_controller(0, 0, NQN, state="connecting")
    h.nvme_namespace(0, [0], 1, UUID1)
    h.nvme_controller(1, 1, "nqn.2014-08.org.test:stuck", state="resetting")
    h.nvme_namespace(1, [1], 1, "5b2a0c9e-2222-4d6f-8e3a-0123456789ab")
    waited = []

    def sleep(seconds):  # during the grace period nvme0 reconnects, nvme1 stays stuck
        waited.append(seconds)
        (c0 / "state").write_text("live\n")

    report = audit(h.roots, nvme_grace=2.5, sleep=sleep)
    assert waited == [2.5]
    found = report.of_kind(A.NVME_CONTROLLER_NOT_LIVE)
    assert [f.name for f in found] == ["nvme1"] and "still after 2.5s" in found[0].detail


def test_nvme_no_grace_wait_when_all_live(tmp_path):
    h = _healthy(tmp_path)
    report = audit(h.roots, nvme_grace=30, sleep=lambda s: pytest.fail("must not wait"))
    assert report.clean


def test_nvme_namespace_head_without_paths(tmp_path):
    h = FakeHost(tmp_path)
    c = h.nvme_controller(0, 0, NQN)
    h.nvme_namespace(0, [0], 1, UUID1)
    # the controller went away, the head (held open) stayed
    os.unlink(h.sys("class", "nvme", "nvme0"))
    os.unlink(h.sys("devices", "virtual", "nvme-subsystem", "nvme-subsys0", "nvme0"))
    shutil.rmtree(c)
    report = audit(h.roots)
    assert [f.name for f in report.of_kind(A.NVME_NAMESPACE_WITHOUT_PATHS)] == ["nvme0n1"]


# ----------------------------------------------------------------- expected volumes


def test_expected_volumes_all_present(tmp_path):
    h = _healthy(tmp_path)
    expected = [ExpectedVolume("ISCSI", wwid=WWID1), ExpectedVolume("NVMEOF", uuid=UUID1.upper())]
    report = audit(h.roots, expected)
    assert report.clean, report.findings


@pytest.mark.parametrize(
    "ident",
    [
        {"nguid": NGUID1},
        {"wwid": f"uuid.{UUID1}"},
        {"nguid": "5b2a0c9e-1111-4d6f-8e3a-0123456789ab"},
    ],
)
def test_expected_nvme_by_other_identities(tmp_path, ident):
    h = _healthy(tmp_path)
    report = audit(
        h.roots, [ExpectedVolume("ISCSI", wwid="3" + WWID1[4:]), ExpectedVolume("NVME", **ident)]
    )
    assert report.clean, report.findings


def test_unexpected_and_missing(tmp_path):
    h = _healthy(tmp_path)
    expected = [
        ExpectedVolume("ISCSI", wwid=WWID2, name="vol-2"),
        ExpectedVolume("NVMEOF", uuid=UUID1),
    ]
    report = audit(h.roots, expected)
    unexpected = report.of_kind(A.UNEXPECTED_VOLUME)
    missing = report.of_kind(A.MISSING_VOLUME)
    assert [f.name for f in unexpected] == ["3" + WWID1[4:]]
    assert "sda, sdb" in unexpected[0].detail
    assert [f.name for f in missing] == [f"vol-2 ({WWID2})"]
    assert report.kinds() == {A.UNEXPECTED_VOLUME, A.MISSING_VOLUME}


def test_expected_empty_flags_every_volume(tmp_path):
    # source host after a migration: nothing should be left
    report = audit(_healthy(tmp_path).roots, [])
    assert {(f.kind, f.name) for f in report.findings} == {
        (A.UNEXPECTED_VOLUME, "3" + WWID1[4:]),
        (A.UNEXPECTED_VOLUME, f"uuid.{UUID1}"),
    }


def test_wrong_protocol_does_not_match(tmp_path):
    report = audit(
        _healthy(tmp_path).roots,
        [ExpectedVolume("FC", wwid=WWID1), ExpectedVolume("NVMEOF", uuid=UUID1)],
    )
    assert {f.kind for f in report.findings} == {A.UNEXPECTED_VOLUME, A.MISSING_VOLUME}


def test_local_disks_are_not_volumes(tmp_path):
    h = FakeHost(tmp_path)
    hdir = h.scsi_host(0, proc_name="ata_piix")
    h.scsi_lun(hdir, "0:0:0:0", "sda", "t10.ATA     QEMU HARDDISK")
    report = audit(h.roots, [])
    assert report.clean and report.volumes == []


def test_fc_device_with_rport_gone(tmp_path):
    h = FakeHost(tmp_path)
    hdir = h.scsi_host(5, proc_name="qla2xxx")
    rport = hdir / "rport-5:0-1"
    attrs = rport / "fc_remote_ports" / "rport-5:0-1"
    h.write(
        attrs,
        {
            "port_name": "0x500a0981891b8dc5",
            "node_name": "0x500a0980891b8dc5",
            "port_state": "Online",
            "roles": "FCP Target",
            "scsi_target_id": 0,
        },
    )
    h.link(h.sys("class", "fc_remote_ports", "rport-5:0-1"), attrs)
    h.scsi_lun(rport, "5:0:0:3", "sdc", WWID2)
    report = audit(h.roots, [ExpectedVolume("FIBRE_CHANNEL", wwid=WWID2)])
    assert report.clean, report.findings
    (attrs / "port_state").write_text("Blocked\n")
    report = audit(h.roots)
    found = report.of_kind(A.SCSI_DEVICE_WITHOUT_RPORT)
    assert [f.name for f in found] == ["5:0:0:3"] and "Blocked" in found[0].detail


# ----------------------------------------------------------------- report and inputs


def test_report_is_json_able(tmp_path):
    h = _healthy(tmp_path)
    h.iscsi_session(7, 9, "iqn.2003-01.org.test:other")
    data = json.loads(json.dumps(audit(h.roots, []).to_dict()))
    assert data["clean"] is False
    assert {"kind": A.ISCSI_SESSION_WITHOUT_LUNS, "name": "session7"}.items() <= data["findings"][
        0
    ].items()
    assert set(data) == {"clean", "findings", "volumes", "counts", "errors"}
    assert all(set(f) == {"kind", "name", "detail"} for f in data["findings"])


def test_broken_view_is_reported_not_raised(tmp_path, monkeypatch):
    from brick_agent.host import nvme

    def boom(roots):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(nvme, "nvme_controllers", boom)
    report = audit(_healthy(tmp_path).roots)
    assert not report.clean
    assert report.errors == ["nvme controllers: PermissionError: [Errno 13] Permission denied"]
    assert report.findings == []  # everything else still audited and fine


def test_broken_check_is_reported_not_raised(tmp_path, monkeypatch):
    def boom(*args):
        raise TypeError("bug")

    monkeypatch.setattr(A, "_check_wwids", boom)
    h = _healthy(tmp_path)
    h.iscsi_session(7, 9, "iqn.2003-01.org.test:other")
    report = audit(h.roots)
    assert report.errors == ["check wwids: TypeError: bug"] and not report.clean
    assert [f.name for f in report.findings] == ["session7"]  # other checks still ran


@pytest.mark.parametrize(
    "data,key",
    [
        ("nope", "expected"),
        ({}, "protocol"),
        ({"protocol": "SMB", "wwid": "x"}, "protocol"),
        ({"protocol": "ISCSI"}, "wwid"),
        ({"protocol": "NVMEOF"}, "uuid"),
        ({"protocol": "ISCSI", "wwid": 5}, "wwid"),
        ({"protocol": "NVMEOF", "uuid": None, "nguid": "0" * 31 + "1"}, "uuid"),
        ({"protocol": None, "wwid": "x"}, "protocol"),
        ({"protocol": "NVMEOF", "uuid": "u", "nguid": ""}, "nguid"),
        ({"protocol": "ISCSI", "wwid": ""}, "wwid"),
        ({"protocol": "ISCSI", "wwid": "x", "color": "red"}, "color"),
    ],
)
def test_expected_volume_validation(data, key):
    with pytest.raises(InvalidExpectedVolume) as info:
        ExpectedVolume.from_dict(data, index=3)
    assert info.value.key == key
    if isinstance(data, dict) and data:
        assert "expected[3]" in str(info.value)


def test_expected_volume_from_dict_normalises_protocol():
    vol = ExpectedVolume.from_dict({"protocol": "iser", "wwid": WWID1, "name": "v"})
    assert vol.protocol == "ISCSI" and vol.to_dict()["wwid"] == WWID1


def _node_record(
    h: FakeHost, iqn: str, entry: str, iface: str | None = "default", startup: str = "manual"
) -> str:
    """A node record as iscsiadm writes it (``iface`` None: the older file-per-portal layout)."""
    base = h.base / "etc" / "iscsi" / "nodes" / iqn
    path = base / entry if iface is None else base / entry / iface
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# BEGIN RECORD 2.1.8\nnode.name = {iqn}\nnode.tpgt = 1\n"
        f"node.startup = {startup}\nnode.session.scan = manual\n"
        "node.session.auth.password = must-never-show\n# END RECORD\n"
    )
    return str(path)


def test_node_records_without_a_session_are_reported_with_evidence_never_acted_on(tmp_path):
    h = _healthy(tmp_path)
    _node_record(h, IQN, "192.0.2.10,3260,1")  # its session is live
    _node_record(h, IQN, "192.0.2.11,3260,1", iface=None)  # older layout, live too
    killed = _node_record(h, "iqn.2003-01.org.test:killed", "192.0.2.20,3260,1")
    boot = _node_record(h, "iqn.2003-01.org.test:boot", "fe80::5,3260,1", startup="automatic")
    # `iscsiadm -m node -o new` without a portal group tag: a file named ADDRESS,PORT
    made = _node_record(h, "iqn.2003-01.org.test:made", "192.0.2.21,3260", iface=None)
    report = audit(h.roots)
    found = {f.name: f.detail for f in report.of_kind(A.ISCSI_NODE_RECORD_WITHOUT_SESSION)}
    assert sorted(found) == [
        "iqn.2003-01.org.test:boot [fe80::5]:3260 default",
        "iqn.2003-01.org.test:killed 192.0.2.20:3260 default",
        "iqn.2003-01.org.test:made 192.0.2.21:3260 default",
    ]
    assert made in found["iqn.2003-01.org.test:made 192.0.2.21:3260 default"]
    assert killed in found["iqn.2003-01.org.test:killed 192.0.2.20:3260 default"]
    assert "not brick_agent's" in found["iqn.2003-01.org.test:boot [fe80::5]:3260 default"]
    assert all("must-never-show" not in d for d in found.values())
    assert os.path.exists(killed) and os.path.exists(boot)  # the audit never acts
    assert report.errors == []


def test_controller_whose_namespaces_nobody_uses_is_named_when_the_ledger_is_given(tmp_path):
    from brick_agent.ledger import AttachmentLedger

    h = FakeHost(tmp_path / "host")
    h.nvme_controller(0, 0, NQN)
    h.nvme_namespace(0, [0], 1, UUID1)  # attached through us
    h.nvme_controller(1, 1, "nqn.2014-08.org.test:shared", traddr="192.0.2.31")
    h.nvme_namespace(1, [1], 1, "5b2a0c9e-4444-4d6f-8e3a-0123456789ab")  # exported, unused
    h.nvme_namespace(1, [1], 2, "5b2a0c9e-5555-4d6f-8e3a-0123456789ab")
    led = AttachmentLedger(str(tmp_path / "ledger.json"))
    (tmp_path / "ledger.json").write_text(
        json.dumps(
            {
                "version": 1,
                "pending": [],
                "volumes": {
                    f"NVMEOF:uuid.{UUID1}": {
                        "protocol": "NVMEOF",
                        "identity": f"uuid.{UUID1}",
                        "lookup": [f"nvme:{NQN}:{UUID1}"],
                        "device_info": {},
                        "attachments": {"default": {"access_mode": "rw"}},
                    }
                },
            }
        )
    )
    found = audit(h.roots, ledger=led).of_kind(A.NVME_CONTROLLER_NAMESPACES_UNUSED)
    assert [f.name for f in found] == ["nvme1"]
    assert "nvme1n1, nvme1n2" in found[0].detail
    assert "nqn.2014-08.org.test:shared" in found[0].detail
    assert audit(h.roots).of_kind(A.NVME_CONTROLLER_NAMESPACES_UNUSED) == []  # unknown: silent
    (h.base / "proc" / "self").mkdir(parents=True)  # no device number: by source path
    (h.base / "proc" / "self" / "mountinfo").write_text(
        "36 1 0:44 / /srv rw - ext4 /dev/nvme1n2 rw\n"
    )
    assert audit(h.roots, ledger=led).of_kind(A.NVME_CONTROLLER_NAMESPACES_UNUSED) == []
