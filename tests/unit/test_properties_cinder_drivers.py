"""Every connection-properties dict the in-tree Cinder 29.0.0 drivers emit is accepted end
to end: parsed, then turned into the privileged arguments an attach would use (the NVMe
fabrics option string, iscsiadm's node argv and settings, the SCSI LUN to scan), without
running anything.

One dict per driver, shaped as /work/research/issue14-callers.md §5 records them (file:line
there), with the keys Cinder's volume manager adds (``qos_specs``, ``access_mode``,
``encrypted``, ``cacheable``, ``discard``, block sizes as strings, ``enforce_multipath``).
"""

from __future__ import annotations

import copy

import pytest

from brick_agent.connectors.iscsi.actions import NodeSettings
from brick_agent.connectors.iscsi.actions import PrivilegedIscsiActions, _chap_settings
from brick_agent.errors import InvalidConnectionProperties
from brick_agent.privileged import iscsi as piscsi
from brick_agent.privileged import iscsi_auth, iscsi_records
from brick_agent.privileged import nvme as pnvme
from brick_agent.privileged import _validate as v
from brick_agent.properties import parse_fc, parse_iscsi, parse_nvmeof

VOL = "4b1a8f7c-2e3d-4c5b-9a6f-7e8d9c0b1a2f"
NAME_ID = "0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:6b1e1f0e-2c55-4d6e-8f59-1f1d0c9a7b31"
HOSTID = "6b1e1f0e-2c55-4d6e-8f59-1f1d0c9a7b31"
MANAGER = {
    "qos_specs": None,
    "access_mode": "rw",
    "encrypted": False,
    "cacheable": False,
    "enforce_multipath": False,
}
OS_IQN = f"iqn.2010-10.org.openstack:volume-{VOL}"
PURE_IQN = "iqn.2010-06.com.purestorage:flasharray.12ab34cd56ef7890"

ISCSI = {
    "lvm_tgt_chap_multipath": {  # targets/iscsi.py _get_iscsi_properties; LVM always CHAP
        "target_discovered": False,
        "target_portal": "192.168.1.10:3260",
        "target_iqn": OS_IQN,
        "target_lun": 1,
        "volume_id": VOL,
        "auth_method": "CHAP",
        "auth_username": "x9KcT2mQ7vB4nR8pL1sD",
        "auth_password": "Zq8wE3rT6yU1iO4p",
        "target_portals": ["192.168.1.10:3260", "[fd00::5]:3260"],
        "target_iqns": [OS_IQN, OS_IQN],
        "target_luns": [1, 1],
        "physical_block_size": "4096",
        "logical_block_size": "512",
    },
    "lvm_lio_single": {  # lio.py: LUN 0
        "target_discovered": False,
        "target_portal": "[fd00::5]:3260",
        "target_iqn": OS_IQN,
        "target_lun": 0,
        "volume_id": VOL,
        "auth_method": "CHAP",
        "auth_username": "u" * 20,
        "auth_password": "p" * 16,
    },
    "pure_plural_only": {  # pure.py _build_connection_properties: no singular keys
        "target_discovered": False,
        "discard": True,
        "addressing_mode": "SAM2",
        "target_luns": [1, 1, 300, 300],
        "target_iqns": [PURE_IQN, PURE_IQN, PURE_IQN + "b", PURE_IQN + "b"],
        "target_portals": ["10.0.0.5:3260", "10.0.0.6:3260", "[fd00::7]:3260", "10.0.1.6:3260"],
        "wwn": "3624a93701234567890abcdef00011122",
        "auth_method": "CHAP",
        "auth_username": "compute-1",
        "auth_password": "s3cr3t",
    },
    "netapp_chap_discovery": {  # netapp utils.get_iscsi_connection_properties + CHAP
        "target_discovered": False,
        "target_portal": "10.1.1.1:3260",
        "target_iqn": "iqn.1992-08.com.netapp:sn.abc:vs.3",
        "target_lun": 0,
        "volume_id": VOL,
        "target_portals": ["10.1.1.1:3260", "[fd20::1]:3260"],
        "target_iqns": ["iqn.1992-08.com.netapp:sn.abc:vs.3"] * 2,
        "target_luns": [0, 0],
        "auth_method": "CHAP",
        "auth_username": "nova",
        "auth_password": "pw",
        "discovery_auth_method": "CHAP",
        "discovery_auth_username": "nova",
        "discovery_auth_password": "pw",
    },
    "powerstore_bracketless_ipv6": {  # powerstore utils.iscsi_portal_with_port: addr + ':3260'
        "target_discovered": False,
        "target_portal": "fd00::5:3260",
        "target_iqn": "iqn.2015-10.com.dell:dellemc-powerstore-fnm00190000000-a-1a2b3c4d",
        "target_lun": 1,
        "target_portals": ["fd00::5:3260", "10.2.2.2:3260"],
        "target_iqns": ["iqn.2015-10.com.dell:dellemc-powerstore-fnm00190000000-a-1a2b3c4d"] * 2,
        "target_luns": [1, 1],
    },
    "powermax": {  # powermax/iscsi.py: ip + ':3260', discard, volume_id
        "target_iqn": "iqn.1992-04.com.emc:600009700bca30c01e3e012e00000001",
        "target_portal": "10.3.3.3:3260",
        "target_discovered": True,
        "target_lun": 1,
        "volume_id": VOL,
        "discard": True,
        "target_portals": ["10.3.3.3:3260", "10.3.3.4:3260"],
        "target_iqns": [
            "iqn.1992-04.com.emc:600009700bca30c01e3e012e00000001",
            "iqn.1992-04.com.emc:600009700bca30c01e3e012e00000002",
        ],
        "target_luns": [1, 1],
    },
    "3par_single": {  # hpe_3par_iscsi.py: bracketed IPv6, encrypted
        "target_portal": "[fe80::1%eth0]:3260",
        "target_iqn": "iqn.2000-05.com.3pardata:21210002ac00383d",
        "target_lun": 1,
        "target_discovered": True,
        "encrypted": False,
    },
    "3par_multipath_plural_only": {
        "target_portals": ["10.4.4.4:3260", "[2001:db8::4]:3260"],
        "target_iqns": [
            "iqn.2000-05.com.3pardata:21210002ac00383d",
            "iqn.2000-05.com.3pardata:21220002ac00383d",
        ],
        "target_luns": [1, 1],
        "target_discovered": True,
        "encrypted": False,
    },
}

NVME = {
    "lvm_nvmet_v1": {  # targets/nvmeof.py v1: strings, undated NQN
        "target_portal": "192.168.1.10",
        "target_port": "4420",
        "nqn": f"nqn.nvme-subsystem-1-{VOL}",
        "transport_type": "tcp",
        "ns_id": "10",
    },
    "lvm_nvmet_v1_default_prefix": {  # target_prefix left at 'iqn.2010-10.org.openstack:'
        "target_portal": "192.168.1.10",
        "target_port": "4420",
        "nqn": f"nqn.iqn.2010-10.org.openstack:-{VOL}",
        "transport_type": "rdma",
        "ns_id": "10",
    },
    "lvm_nvmet_v2_rocev2": {  # v2: tuples, string port, 'rdma' -> 'RoCEv2'
        "target_nqn": f"nqn.nvme-subsystem-1-{VOL}",
        "vol_uuid": NAME_ID,
        "portals": [("192.168.1.10", "4420", "RoCEv2"), ("fd00::5", "4420", "tcp")],
        "ns_id": "10",
    },
    "lvm_nvmet_shared": {  # nvmet.py shared: int port and ns_id, NQN of the host
        "target_nqn": "nqn.nvme-subsystem-1-computehost1",
        "vol_uuid": NAME_ID,
        "portals": [("192.168.1.10", 4420, "tcp")],
        "ns_id": 11,
    },
    "spdk_v2": {  # spdknvmf.py: vol_uuid None
        "target_nqn": "nqn.2014-08.org.spdk:cnode1",
        "vol_uuid": None,
        "portals": [("127.0.0.1", "3262", "RoCEv2")],
        "ns_id": "1",
    },
    "spdk_v1": {
        "target_portal": "127.0.0.1",
        "target_port": "3262",
        "transport_type": "rdma",
        "nqn": "nqn.2016-06.io.spdk:cnode2",
        "ns_id": "1",
    },
    "pure": {  # pure.py: volume_nguid, int port
        "discard": True,
        "portals": [("10.0.0.7", 4420, "tcp"), ("10.0.0.8", 4420, "tcp")],
        "target_nqn": "nqn.2010-06.com.purestorage:flasharray.12ab34cd56ef7890",
        "volume_nguid": "0012ab34cd56ef7824a9370123456789",
    },
    "netapp": {  # nvme_library.py: host_nqn, vol_uuid
        "target_nqn": "nqn.1992-08.com.netapp:sn.0a1b2c3d:subsystem.openstack-1",
        "host_nqn": HOSTNQN,
        "portals": [("10.1.1.5", 4420, "tcp")],
        "vol_uuid": NAME_ID,
    },
    "powerstore": {
        "portals": [("10.2.2.3", 4420, "tcp")],
        "target_nqn": "nqn.1988-11.com.dell:powerstore:00:a1b2c3d4e5f60718293a",
        "volume_nguid": "4f8c2d1e6a7b3c9d5e0f1a2b3c4d5e6f",
        "discard": True,
    },
    "powermax": {
        "portals": [("10.3.3.4", 4420, "tcp")],
        "target_nqn": "nqn.1988-11.com.dell:PowerMax_2500:00:000120200352",
        "volume_nguid": "600009700bca30c01e3e012e00000001",
        "discard": True,
    },
}

FC = {
    "pure": {  # pure.py FC: target_wwn list + target_wwns, map, SAM2
        "target_discovered": True,
        "target_lun": 1,
        "target_luns": [1, 1, 1, 1],
        "target_wwn": [
            "524a937012345601",
            "524a937012345602",
            "524A937012345611",
            "524a937012345612",
        ],
        "target_wwns": [
            "524a937012345601",
            "524a937012345602",
            "524A937012345611",
            "524a937012345612",
        ],
        "initiator_target_map": {
            "21000024ff406cc3": ["524a937012345601", "524a937012345602"],
            "21000024ff406cc4": ["524A937012345611", "524a937012345612"],
        },
        "discard": True,
        "addressing_mode": "SAM2",
        "wwn": "3624a93701234567890abcdef000111",
    },
    "netapp": {
        "target_discovered": True,
        "target_lun": 1,
        "target_wwn": ["500a098280feeba5", "500a098290feeba5"],
        "initiator_target_map": {"21000024ff406cc3": ["500a098280feeba5", "500a098290feeba5"]},
    },
    "powerstore_no_map": {
        "target_discovered": False,
        "target_lun": 1,
        "target_wwn": ["58ccf09348a003a3", "58ccf09348a002a3"],
        "discard": True,
    },
    "powermax": {
        "target_lun": 1,
        "target_discovered": True,
        "target_wwn": ["5000097300000001"],
        "discard": True,
        "initiator_target_map": {"10000090fa534cd0": ["5000097300000001"]},
    },
    "3par_peer_persistence": {  # hpe_3par_fc.py replication: target_luns, concatenated wwns
        "encrypted": False,
        "target_luns": [1, 1, 2, 2],
        "target_discovered": True,
        "target_wwn": [
            "20210002ac00383d",
            "21210002ac00383d",
            "20210002ac00383e",
            "21210002ac00383e",
        ],
        "initiator_target_map": {
            "10000090fa534cd0": ["20210002ac00383d", "20210002ac00383e"],
            "10000090fa534cd1": ["21210002ac00383d", "21210002ac00383e"],
        },
    },
}


def _unmutated(build, driver_data: dict):
    """``build`` over the driver's dict plus the volume manager's keys; never mutated."""
    data = {**MANAGER, **driver_data}
    before = copy.deepcopy(data)
    out = build(data)
    assert data == before
    return out


def _iscsi_argv(data: dict) -> list[list[str]]:
    """Every iscsiadm argv the attach would run for ``data`` (CHAP goes to the record file)."""
    props = parse_iscsi(data, use_multipath=True)
    argvs = []
    for target in props.targets:
        node = NodeSettings(portal=target.portal.address, iqn=target.iqn, auth=props.auth)
        base = piscsi._node_argv(node.iqn, node.portal, node.iface)
        settings = PrivilegedIscsiActions._node_settings(node)
        argvs.append(base + ["--op", "new"])
        # every setting is valid for the record file (node_set_settings); one the record
        # lacks goes to --op update, never a CHAP one (those are added to the file)
        assert piscsi._settings(settings, piscsi.NODE_PARAMS)
        plain = [item for item in settings if ".auth." not in item[0]]
        argvs.append(piscsi._update_argv(base, piscsi._settings(plain, piscsi.NODE_PARAMS)))
        assert iscsi_records.address_port(node.portal)[1] == str(target.portal.port)
        v.int_arg(props.scsi_lun(target.lun), "lun", minimum=0, maximum=2**64 - 1)
    if props.discovery_auth is not None:
        items = _chap_settings("discovery.sendtargets.auth", props.discovery_auth)
        assert iscsi_auth._auth_items(items, piscsi.DISCOVERY_PARAMS)
    return argvs


@pytest.mark.parametrize("name", sorted(ISCSI))
def test_cinder_iscsi_dicts_build_iscsiadm_arguments(name):
    argvs = _unmutated(_iscsi_argv, ISCSI[name])
    assert argvs and all(a[0].endswith("iscsiadm") for a in argvs)
    for argv in argvs:
        portal = argv[argv.index("-p") + 1]
        assert portal.count(":") == 1 or portal.startswith("["), portal
        assert not any("password" in part.lower() and "=" in part for part in argv)


def test_bracketless_ipv6_portal_is_read_as_address_and_port():
    props = parse_iscsi(ISCSI["powerstore_bracketless_ipv6"], use_multipath=True)
    assert props.primary.portal.host == "fd00::5" and props.primary.portal.port == 3260
    assert props.primary.portal.address == "[fd00::5]:3260"  # what iscsiadm gets


def test_pure_sam2_lun_scans_with_flat_addressing():
    props = parse_iscsi(ISCSI["pure_plural_only"], use_multipath=True)
    assert [props.scsi_lun(t.lun) for t in props.targets] == [1, 1, 300 + 0x4000, 300 + 0x4000]
    assert props.volume_id is None and props.plural_targets


def _fabrics_options(data: dict) -> list[str]:
    props = parse_nvmeof(data)
    out = []
    for target in props.targets:
        for portal in target.portals:
            out.append(
                pnvme.fabrics_options(
                    portal.transport,
                    portal.address,
                    portal.port,
                    target.nqn,
                    hostnqn=target.host_nqn or HOSTNQN,
                    hostid=HOSTID,
                    ctrl_loss_tmo=600,
                    reconnect_delay=10,
                )
            )
    return out


@pytest.mark.parametrize("name", sorted(NVME))
def test_cinder_nvmeof_dicts_build_fabrics_options(name):
    options = _unmutated(_fabrics_options, NVME[name])
    assert options and all(o.startswith("nqn=nqn.") and ",hostnqn=nqn." in o for o in options)
    assert parse_nvmeof(NVME[name]).target.identified


def test_nvmet_string_and_int_shapes_mean_the_same():
    v1, v2, shared = (
        parse_nvmeof(NVME[k]) for k in ("lvm_nvmet_v1", "lvm_nvmet_v2_rocev2", "lvm_nvmet_shared")
    )
    assert v1.target.nsid == v2.target.nsid == 10 and shared.target.nsid == 11
    assert v1.target.portals[0].port == v2.target.portals[0].port == 4420
    assert v2.target.portals[0].transport == "rdma"  # RoCEv2 is rdma, as os-brick
    assert v2.target.uuid == NAME_ID and parse_nvmeof(NVME["spdk_v2"]).vol_uuid is None
    assert _fabrics_options(NVME["lvm_nvmet_v2_rocev2"])[0].startswith(
        f"nqn=nqn.nvme-subsystem-1-{VOL},transport=rdma,traddr=192.168.1.10,trsvcid=4420"
    )


@pytest.mark.parametrize("name", sorted(FC))
def test_cinder_fc_dicts_pair_wwpns_and_luns(name):
    props = _unmutated(parse_fc, FC[name])
    assert props.targets
    for target in props.targets:
        assert len(target.wwpn) == 16 and target.wwpn == target.wwpn.lower()
        v.int_arg(props.scsi_lun(target.lun), "lun", minimum=0, maximum=2**64 - 1)
    if props.initiator_target_map is not None:
        for initiator in props.initiator_target_map:
            assert props.targets_for_initiator(initiator)


def test_3par_peer_persistence_pairs_each_wwn_with_its_array_lun():
    props = parse_fc(FC["3par_peer_persistence"])
    assert [(t.wwpn[-4:], t.lun) for t in props.targets] == [
        ("383d", 1),
        ("383d", 1),
        ("383e", 2),
        ("383e", 2),
    ]


@pytest.mark.parametrize(
    "parser,data,key",
    [
        (parse_iscsi, {"target_portal": "fd00::5", "target_iqn": OS_IQN}, "target_portal"),
        (parse_iscsi, {"target_portal": "fd00::5:32a0", "target_iqn": OS_IQN}, "target_portal"),
        (
            parse_iscsi,
            {"target_portal": "2001:db8:0:0:0:0:0:1", "target_iqn": OS_IQN},
            "target_portal",
        ),
        (
            parse_nvmeof,
            {**NVME["lvm_nvmet_v2_rocev2"], "portals": [("10.0.0.1", "4420", "iwarp")]},
            "portals[0].transport",
        ),
        (parse_nvmeof, {**NVME["lvm_nvmet_v1"], "nqn": "nqn.x,hostnqn=evil"}, "nqn"),
        (
            parse_fc,
            {"target_wwn": ["500a098280feeba5", "500a0982"], "target_lun": 1},
            "target_wwn[1]",
        ),
    ],
)
def test_refusals_are_invalid_connection_properties_before_anything_runs(parser, data, key):
    with pytest.raises(InvalidConnectionProperties) as err:
        parser(data)
    assert err.value.key == key


class Untouchable:
    """Privileged actions that must not be reached: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"privileged action {name} reached before validation")


@pytest.mark.parametrize(
    "protocol,data",
    [
        ("ISCSI", {"target_portal": "fd00::5:32a0", "target_iqn": OS_IQN, "target_lun": 1}),
        ("ISCSI", {**ISCSI["pure_plural_only"], "target_luns": [1, 1, 1]}),
        ("NVMEOF", {**NVME["lvm_nvmet_v1"], "transport_type": "iwarp"}),
        ("NVMEOF", {**NVME["pure"], "volume_nguid": "not-a-nguid"}),
        ("FIBRE_CHANNEL", {"target_wwn": ["500a098280feeba5"], "target_luns": [1, 2]}),
    ],
)
def test_connectors_refuse_before_any_privileged_action(tmp_path, protocol, data):
    from brick_agent import config
    from brick_agent.connectors import factory
    from brick_agent.host.roots import HostRoots

    conf = config.new_conf(overrides={"lock_path": str(tmp_path / "locks")})
    conn = factory(
        protocol,
        conf=conf,
        roots=HostRoots.under(str(tmp_path)),
        ledger=False,
        actions=Untouchable(),
    )
    for call in (
        conn.connect_volume,
        conn.extend_volume,
        conn.get_volume_paths,
        lambda d: conn.disconnect_volume(d, None),
    ):
        with pytest.raises(InvalidConnectionProperties):
            call(data)
