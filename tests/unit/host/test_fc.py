from brick_agent.host import fc


def _tree(fake):
    h5 = fake.fc_host(5, "0x21000024ff3e5a10", "0x20000024ff3e5a10")
    h6 = fake.fc_host(
        6,
        "0x1000000000000001",
        "0x2000000000000001",
        port_state="Linkdown",
        parent="sys/devices/pci0000:00/0000:00:06.0",
    )
    fake.rport(h5, 5, 0, 0, "0x500a0981891b8dc5", "0x500a0980891b8dc5", scsi_target_id=0)
    fake.rport(
        h5,
        5,
        0,
        1,
        "0x500a0982891b8dc5",
        "0x500a0980891b8dc5",
        scsi_target_id=1,
        transport_target=False,
    )
    fake.rport(
        h5,
        5,
        0,
        2,
        "0x10000090fa000001",
        "0x20000090fa000001",
        roles="FCP Initiator",
        scsi_target_id=-1,
    )
    fake.rport(
        h6,
        6,
        0,
        0,
        "0x500a0981891b8dc5",
        "0x500a0980891b8dc5",
        scsi_target_id=3,
        port_state="Blocked",
    )
    fake.scsi_disk(
        f"{h5}/rport-5:0-0", "5:0:0:1", "sde", wwid="naa.600a098038304331395d4f4a4f6d6b70"
    )
    return h5


def test_normalize_wwn():
    assert fc.normalize_wwn("0x500a0981891B8DC5") == "500a0981891b8dc5"
    assert fc.normalize_wwn("50:0a:09:81:89:1b:8d:c5") == "500a0981891b8dc5"
    # the kernel prints without padding
    assert fc.normalize_wwn("0xa0981891b8dc5") == "000a0981891b8dc5"
    assert fc.normalize_wwn(0x500A0981891B8DC5) == "500a0981891b8dc5"
    assert fc.normalize_wwn("0x0") is None
    assert fc.normalize_wwn("zz") is None
    assert fc.normalize_wwn("0x" + "1" * 17) is None
    assert fc.normalize_wwn(None) is None


def test_fc_hosts(fake):
    _tree(fake)
    hosts = fc.fc_hosts(fake.roots)
    assert [(h.host_number, h.port_name, h.node_name, h.port_state) for h in hosts] == [
        (5, "21000024ff3e5a10", "20000024ff3e5a10", "Online"),
        (6, "1000000000000001", "2000000000000001", "Linkdown"),
    ]
    h5 = hosts[0]
    assert h5.online and not hosts[1].online
    assert h5.port_type == "NPort (fabric via point-to-point)"
    assert h5.fabric_name == "100000051e000001" and h5.speed == "16 Gbit"
    assert h5.device_path.endswith("/0000:00:05.0/host5")


def test_remote_ports(fake):
    _tree(fake)
    rports = fc.fc_remote_ports(fake.roots)
    assert [r.name for r in rports] == ["rport-5:0-0", "rport-5:0-1", "rport-5:0-2", "rport-6:0-0"]
    r0 = rports[0]
    assert (r0.host_number, r0.channel, r0.number) == (5, 0, 0)
    assert r0.port_name == "500a0981891b8dc5" and r0.node_name == "500a0980891b8dc5"
    assert r0.roles == ("FCP Target",) and r0.is_fcp_target
    assert r0.scsi_target_id == 0 and r0.target == "5:0:0"
    assert r0.port_state == "Online" and r0.port_id == "0x010200"
    initiator = rports[2]
    assert initiator.roles == ("FCP Initiator",) and not initiator.is_fcp_target
    assert initiator.scsi_target_id is None and initiator.target is None
    assert [r.name for r in fc.fc_remote_ports(fake.roots, host_number=6)] == ["rport-6:0-0"]


def test_fc_targets_for(fake):
    _tree(fake)
    r = fake.roots
    assert fc.fc_targets_for(r, 5, "0x500a0981891b8dc5") == [(0, 0)]
    assert fc.fc_targets_for(r, 5, "50:0a:09:82:89:1b:8d:c5") == [(0, 1)]  # rport only
    assert fc.fc_targets_for(r, 6, "500A0981891B8DC5") == [(0, 3)]
    assert fc.fc_targets_for(r, 5, "0x10000090fa000001") == []  # initiator, no target
    assert fc.fc_targets_for(r, 7, "0x500a0981891b8dc5") == []
    assert fc.fc_targets_for(r, 5, "garbage") == []


def test_fc_transport_only(fake):
    """A target listed only under fc_transport (rport dir unreadable) is still found."""
    _tree(fake)
    import os

    os.unlink(fake.p("sys/class/fc_remote_ports/rport-5:0-0"))
    assert fc.fc_targets_for(fake.roots, 5, "0x500a0981891b8dc5") == [(0, 0)]
    assert fc.fc_transport_targets(fake.roots) == [
        (5, 0, 0, "500a0981891b8dc5"),
        (6, 0, 3, "500a0981891b8dc5"),
    ]


def test_no_fc(fake):
    assert fc.fc_hosts(fake.roots) == [] and fc.fc_remote_ports(fake.roots) == []
