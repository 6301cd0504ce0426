from brick_agent.host import nvme

NQN = "nqn.2014-08.org.nvmexpress:lab-vol"
UUID = "0b0c9c3a-6c2e-4b6a-9f0e-5b1f0d9a2c11"
NGUID_SYSFS = "a1b2c3d4-e5f6-0718-293a-4b5c6d7e8f90"  # how the kernel prints it (%pU)
NGUID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:host"


def _native(fake):
    """One subsystem, two TCP controllers (ANA), one namespace head with two paths."""
    sdir = fake.nvme_subsystem(0, NQN)
    c0 = fake.nvme_ctrl(
        0, 0, NQN, address="traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1", cntlid=1
    )
    c1 = fake.nvme_ctrl(
        1,
        0,
        NQN,
        address="traddr=127.0.0.2,trsvcid=4420,src_addr=127.0.0.1",
        cntlid=2,
        state="connecting",
    )
    fake.nvme_ns(
        sdir, "nvme0n1", 1, uuid=UUID, nguid=NGUID_SYSFS, wwid="uuid." + UUID, sectors=8192
    )
    fake.nvme_ns(
        c0,
        "nvme0c0n1",
        1,
        uuid=UUID,
        nguid=NGUID_SYSFS,
        wwid="uuid." + UUID,
        ana_state="optimized",
        in_class=True,
    )
    fake.nvme_ns(
        c1,
        "nvme0c1n1",
        1,
        uuid=UUID,
        nguid=NGUID_SYSFS,
        wwid="uuid." + UUID,
        ana_state="inaccessible",
        in_class=True,
    )
    fake.attr("sys/module/nvme_core/parameters/multipath", "Y")


def _non_native(fake):
    fake.nvme_subsystem(1, "nqn.2014-08.org.example:other")
    c2 = fake.nvme_ctrl(
        2,
        1,
        "nqn.2014-08.org.example:other",
        transport="rdma",
        address="traddr=fd00::10,trsvcid=4420",
        hostnqn=None,
        cntlid=7,
    )
    # a namespace without UUID: the kernel's 'uuid' attribute shows the NGUID instead
    fake.nvme_ns(c2, "nvme2n1", 3, uuid=NGUID_SYSFS, nguid=NGUID_SYSFS, wwid="eui." + NGUID)


def test_parse_address_formats():
    assert nvme.parse_address("traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1") == {
        "traddr": "127.0.0.1",
        "trsvcid": "4420",
        "src_addr": "127.0.0.1",
    }
    assert nvme.parse_address(
        "traddr=192.168.1.5,trsvcid=4420,host_traddr=192.168.1.9,host_iface=eth1"
    ) == {
        "traddr": "192.168.1.5",
        "trsvcid": "4420",
        "host_traddr": "192.168.1.9",
        "host_iface": "eth1",
    }
    fc = nvme.parse_address(
        "traddr=nn-0x20000090fa942779:pn-0x10000090fa942779,"
        "host_traddr=nn-0x20000090fae0b5f5:pn-0x10000090fae0b5f5"
    )
    assert fc == {
        "traddr": "nn-0x20000090fa942779:pn-0x10000090fa942779",
        "host_traddr": "nn-0x20000090fae0b5f5:pn-0x10000090fae0b5f5",
    }
    assert nvme.parse_address("traddr=fe80::1%eth0,trsvcid=4420")["traddr"] == "fe80::1%eth0"
    assert nvme.parse_address(None) == {} and nvme.parse_address("") == {}


def test_canonical_identities():
    assert nvme.canonical_uuid(UUID.upper()) == UUID
    assert nvme.canonical_uuid("uuid." + UUID) == UUID
    assert nvme.canonical_uuid(UUID.replace("-", "")) == UUID
    assert nvme.canonical_uuid("00000000-0000-0000-0000-000000000000") is None
    assert nvme.canonical_uuid("nope") is None
    assert nvme.canonical_nguid(NGUID_SYSFS) == NGUID
    assert nvme.canonical_nguid(NGUID.upper()) == NGUID
    assert nvme.canonical_nguid("eui." + NGUID) == NGUID
    assert nvme.canonical_nguid("0" * 32) is None
    assert nvme.canonical_nguid("abc") is None
    assert nvme.head_name("nvme0c1n1") == "nvme0n1"
    assert nvme.head_name("nvme3n2") == "nvme3n2"


def test_controllers(fake):
    _native(fake)
    _non_native(fake)
    ctrls = nvme.nvme_controllers(fake.roots)
    assert [c.name for c in ctrls] == ["nvme0", "nvme1", "nvme2"]
    c0 = ctrls[0]
    assert c0.subsysnqn == NQN and c0.transport == "tcp"
    assert (c0.traddr, c0.trsvcid, c0.src_addr) == ("127.0.0.1", "4420", "127.0.0.1")
    assert c0.host_traddr is None and c0.host_iface is None
    assert c0.state == "live" and c0.live
    assert c0.cntlid == 1 and c0.hostnqn == HOSTNQN
    assert c0.subsystem_name == "nvme-subsys0"
    assert c0.namespaces == ("nvme0c0n1",)
    assert ctrls[1].state == "connecting" and not ctrls[1].live
    c2 = ctrls[2]
    assert c2.transport == "rdma" and c2.traddr == "fd00::10" and c2.hostnqn is None
    assert c2.subsystem_name == "nvme-subsys1" and c2.namespaces == ("nvme2n1",)


def test_subsystems(fake):
    _native(fake)
    _non_native(fake)
    subs = nvme.nvme_subsystems(fake.roots)
    assert [(s.name, s.nqn, s.controllers, s.namespaces) for s in subs] == [
        ("nvme-subsys0", NQN, ("nvme0", "nvme1"), ("nvme0n1",)),
        ("nvme-subsys1", "nqn.2014-08.org.example:other", ("nvme2",), ()),
    ]
    assert subs[0].iopolicy == "numa"


def test_namespaces_native_and_not(fake):
    _native(fake)
    _non_native(fake)
    nss = {ns.name: ns for ns in nvme.nvme_namespaces(fake.roots)}
    assert set(nss) == {"nvme0n1", "nvme2n1"}  # per-path devices are not user devices
    head = nss["nvme0n1"]
    assert head.native_multipath
    assert head.nsid == 1 and head.uuid == UUID and head.nguid == NGUID
    assert head.wwid == "uuid." + UUID
    assert head.size_bytes == 8192 * 512
    assert head.subsystem_name == "nvme-subsys0"
    assert head.controllers == ("nvme0", "nvme1")
    assert head.paths == ("nvme0c0n1", "nvme0c1n1")
    assert head.devpath == fake.roots.devfs("nvme0n1")
    flat = nss["nvme2n1"]
    assert not flat.native_multipath
    assert flat.uuid is None  # 'uuid' showed the NGUID: no real UUID
    assert flat.nguid == NGUID and flat.nsid == 3
    assert flat.controllers == ("nvme2",) and flat.paths == ("nvme2n1",)
    assert flat.subsystem_name == "nvme-subsys1"


def test_uuid_fallback_without_wwid(fake):
    c = fake.nvme_ctrl(4, None, NQN)
    fake.nvme_ns(c, "nvme4n1", 1, uuid=NGUID_SYSFS, nguid=NGUID_SYSFS)
    (ns,) = nvme.nvme_namespaces(fake.roots)
    assert ns.uuid is None and ns.nguid == NGUID and ns.subsystem_name is None


def test_paths_with_ana(fake):
    _native(fake)
    paths = {p.name: p for p in nvme.nvme_paths(fake.roots)}
    assert paths["nvme0c0n1"].ana_state == "optimized" and paths["nvme0c0n1"].ana_grpid == 1
    assert paths["nvme0c1n1"].ana_state == "inaccessible"
    assert paths["nvme0c1n1"].head == "nvme0n1" and paths["nvme0c1n1"].controller == "nvme1"


def test_find_controllers(fake):
    _native(fake)
    _non_native(fake)
    r = fake.roots
    assert [c.name for c in nvme.find_controllers(r, nqn=NQN)] == ["nvme0", "nvme1"]
    assert [
        c.name
        for c in nvme.find_controllers(
            r, nqn=NQN, traddr="127.0.0.2", trsvcid=4420, transport="TCP"
        )
    ] == ["nvme1"]
    assert nvme.find_controllers(r, nqn=NQN, traddr="127.0.0.3") == []
    assert nvme.find_controllers(r, nqn=NQN, hostnqn="nqn.other") == []
    # a controller without a hostnqn attribute matches any hostnqn
    assert [c.name for c in nvme.find_controllers(r, traddr="[FD00:0::10]", hostnqn="nqn.x")] == [
        "nvme2"
    ]


def test_find_namespaces(fake):
    _native(fake)
    _non_native(fake)
    r = fake.roots
    assert [n.name for n in nvme.find_namespaces(r, uuid=UUID.upper())] == ["nvme0n1"]
    assert [n.name for n in nvme.find_namespaces(r, nguid=NGUID_SYSFS)] == ["nvme0n1", "nvme2n1"]
    assert [n.name for n in nvme.find_namespaces(r, nqn=NQN, nguid=NGUID)] == ["nvme0n1"]
    assert [n.name for n in nvme.find_namespaces(r, nsid=3)] == ["nvme2n1"]
    assert nvme.find_namespaces(r, uuid="not-a-uuid") == []
    assert nvme.find_namespaces(r, uuid="11111111-2222-3333-4444-555555555555") == []


def test_native_multipath_flag(fake):
    assert nvme.native_multipath_enabled(fake.roots) is False
    fake.attr("sys/module/nvme_core/parameters/multipath", "N")
    assert nvme.native_multipath_enabled(fake.roots) is False
    fake.attr("sys/module/nvme_core/parameters/multipath", "Y")
    assert nvme.native_multipath_enabled(fake.roots) is True


def test_controller_vanishing(fake):
    _native(fake)
    import shutil

    shutil.rmtree(fake.p("sys/devices/virtual/nvme-fabrics/ctl/nvme1"))
    assert [c.name for c in nvme.nvme_controllers(fake.roots)] == ["nvme0"]
    (head,) = nvme.nvme_namespaces(fake.roots)
    assert head.paths == ("nvme0c0n1",)
