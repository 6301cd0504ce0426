import pytest

from brick_agent.host import iscsi

IQN = "iqn.2003-01.org.linux-iscsi.lab:t1"


def _tree(fake):
    s1 = fake.iscsi_session(1, 2, IQN, "127.0.0.1")
    fake.scsi_disk(s1, "2:0:0:0", "sdb", wwid="naa.6001405000000000000000000000000a")
    fake.scsi_disk(s1, "2:0:0:1", "sdc", wwid="naa.6001405000000000000000000000000b")
    s2 = fake.iscsi_session(2, 3, IQN, "fe80::1", port=3261, state="FAILED", iface="iface0")
    fake.scsi_disk(s2, "3:0:0:1", "sdd", wwid="naa.6001405000000000000000000000000b")
    fake.iscsi_session(5, 6, "iqn.2003-01.org.other:t2", "10.0.0.5", current_address="10.0.0.6")


def test_sessions(fake):
    _tree(fake)
    sessions = iscsi.iscsi_sessions(fake.roots)
    assert [s.sid for s in sessions] == [1, 2, 5]
    s1 = sessions[0]
    assert s1.name == "session1"
    assert s1.target_iqn == IQN
    assert s1.tpgt == 1
    assert (s1.portal_address, s1.portal_port) == ("127.0.0.1", 3260)
    assert s1.portal == "127.0.0.1:3260"
    assert s1.state == "LOGGED_IN" and s1.logged_in
    assert s1.host_number == 2
    assert s1.iface_name == "default"
    assert s1.initiator_name is None  # kernel prints "(null)"
    assert s1.connection_state == "up"
    assert s1.sysfs_path.endswith("/host2/session1/iscsi_session/session1")
    assert s1.device_path.endswith("/host2/session1")
    s2 = sessions[1]
    assert s2.portal == "[fe80::1]:3261"
    assert not s2.logged_in and s2.host_number == 3
    assert "must-never-be-read" not in repr(sessions)


def test_redirected_session_keeps_login_portal(fake):
    _tree(fake)
    s5 = iscsi.read_session(fake.roots, 5)
    assert s5.portal_address == "10.0.0.5" and s5.current_address == "10.0.0.6"


def test_session_devices_from_session_tree(fake):
    _tree(fake)
    s1 = iscsi.read_session(fake.roots, 1)
    assert [(str(d.hctl), d.name) for d in iscsi.session_devices(fake.roots, s1)] == [
        ("2:0:0:0", "sdb"),
        ("2:0:0:1", "sdc"),
    ]
    assert iscsi.session_targets(s1) == [(2, 0, 0)]
    s5 = iscsi.read_session(fake.roots, 5)
    assert iscsi.session_devices(fake.roots, s5) == []


def test_session_devices_host_fallback(fake):
    _tree(fake)
    s1 = iscsi.read_session(fake.roots, 1)
    import dataclasses

    blind = dataclasses.replace(s1, device_path=None)
    assert [d.name for d in iscsi.session_devices(fake.roots, blind)] == ["sdb", "sdc"]


def test_find_session_normalises_addresses(fake):
    _tree(fake)
    r = fake.roots
    assert iscsi.find_session(r, IQN, "127.0.0.1", 3260).sid == 1
    assert iscsi.find_session(r, IQN.upper(), "127.0.0.1").sid == 1
    assert iscsi.find_session(r, IQN, "[fe80:0:0::1]", 3261).sid == 2
    assert iscsi.find_session(r, IQN, "FE80::0001", "3261").sid == 2
    assert iscsi.find_session(r, IQN, "127.0.0.1", 3261) is None
    assert iscsi.find_session(r, IQN, "127.0.0.2") is None
    assert iscsi.find_session(r, "iqn.2003-01.org.other:t2", "10.0.0.6").sid == 5  # current address
    assert [s.sid for s in iscsi.find_sessions(r, IQN)] == [1, 2]
    assert [s.sid for s in iscsi.find_sessions(r, IQN, iface_name="iface0")] == [2]


def test_split_and_format_portal():
    assert iscsi.split_portal("10.0.0.1:3260") == ("10.0.0.1", 3260)
    assert iscsi.split_portal("10.0.0.1") == ("10.0.0.1", 3260)
    assert iscsi.split_portal("[fe80::1]:3261") == ("fe80::1", 3261)
    assert iscsi.split_portal("[fe80::1]") == ("fe80::1", 3260)
    assert iscsi.split_portal("fe80::1") == ("fe80::1", 3260)
    assert iscsi.split_portal("10.0.0.1:3260,1") == ("10.0.0.1", 3260)
    assert iscsi.split_portal("storage.example:3260") == ("storage.example", 3260)
    with pytest.raises(ValueError):
        iscsi.split_portal("10.0.0.1:abc")
    assert iscsi.format_portal("fe80::1", 3260) == "[fe80::1]:3260"
    assert iscsi.normalize_address("[FE80::0:1]") == "fe80::1"
    assert iscsi.normalize_address("Storage.Example") == "storage.example"
    assert iscsi.normalize_address(None) is None


def test_no_iscsi_at_all(fake):
    assert iscsi.iscsi_sessions(fake.roots) == []
    assert iscsi.find_session(fake.roots, IQN) is None


def test_session_lun_reads_only_that_lun_and_agrees_with_session_devices(fake, monkeypatch):
    """A shared target with many LUNs: finding one LUN must not read the others."""
    s = fake.iscsi_session(7, 8, IQN, "127.0.0.1")
    for lun in range(64):
        fake.scsi_disk(
            s, f"8:0:0:{lun}", f"sd{lun}x", wwid=f"naa.60014050000000000000000000{lun:06x}"
        )
    session = iscsi.read_session(fake.roots, 7)
    listed = {d.hctl.lun: d for d in iscsi.session_devices(fake.roots, session)}
    read: list[str] = []
    real = iscsi.read_scsi_device

    def counting(lun_dir, hctl, resolved=False):
        read.append(str(hctl))
        return real(lun_dir, hctl, resolved=resolved)

    monkeypatch.setattr(iscsi, "read_scsi_device", counting)
    for lun in (0, 17, 63):
        read.clear()
        assert iscsi.session_lun(fake.roots, session, lun) == listed[lun]
        assert read == [f"8:0:0:{lun}"]
    assert iscsi.session_lun(fake.roots, session, 64) is None
    assert iscsi.session_has_luns(fake.roots, session)
    import dataclasses

    blind = dataclasses.replace(session, device_path=None)  # the host's LUNs instead
    assert iscsi.session_lun(fake.roots, blind, 17) == listed[17]


def test_session_has_luns_without_reading_any(fake):
    _tree(fake)
    s1, s5 = iscsi.read_session(fake.roots, 1), iscsi.read_session(fake.roots, 5)
    assert iscsi.session_has_luns(fake.roots, s1) and not iscsi.session_has_luns(fake.roots, s5)
    fake.p("sys/devices/platform/host6/session5/target6:0:0").mkdir(parents=True)
    assert not iscsi.session_has_luns(fake.roots, s5)  # a target without LUNs
