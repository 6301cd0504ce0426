"""NVMe-oF connection properties: the three os-brick shapes, ids, and rejections."""

from __future__ import annotations

import copy
import json

import pytest

from brick_agent.properties import (
    NvmeofProperties,
    NvmePortal,
    canonical_id,
    parse_nqn,
    parse_nvmeof,
    sysfs_id_matches,
)
from tests.unit.test_properties_support import (
    DROP,
    LVM_NVMET,
    POWERSTORE_NVME,
    PURE_NVME,
    REPLICATED_NVME,
    SPDK_OLD_NVME,
    VOL,
    invalid,
    with_,
)

NQN = "nqn.2020-01.com.example:sub-a"
NEW = {"target_nqn": NQN, "vol_uuid": VOL, "portals": [("10.0.0.1", 4420, "tcp")]}


# ---------------------------------------------------------------- accepted shapes


def test_lvm_nvmet_new_format():
    before = copy.deepcopy(LVM_NVMET)
    props = parse_nvmeof(LVM_NVMET)
    assert LVM_NVMET == before
    assert isinstance(props, NvmeofProperties) and props.format == "new"
    assert not props.replicated and props.replica_count == 1 and props.alias is None
    target = props.target
    assert target.nqn == f"nqn.nvme-subsystem-1-{VOL}"
    assert target.portals == (NvmePortal("192.168.122.10", 4420, "tcp"),)
    assert target.uuid == VOL and props.vol_uuid == VOL
    assert target.nsid == 10 and target.nguid is None and target.host_nqn is None
    assert target.identified and isinstance(props.targets, tuple)


def test_pure_rocev2_nguid():
    props = parse_nvmeof(PURE_NVME)
    target = props.target
    assert [p.transport for p in target.portals] == ["rdma", "rdma"]
    assert target.uuid is None and props.vol_uuid is None
    assert target.nguid == "0024a93701aa4f0bbd15f4c90000a4c2"
    assert target.nguid_sysfs == "0024a937-01aa-4f0b-bd15-f4c90000a4c2"


def test_powerstore_dict_portals_and_host_nqn():
    target = parse_nvmeof(POWERSTORE_NVME).target
    assert target.portals == (NvmePortal("172.16.1.5", 4420, "tcp"),)
    assert target.nguid == "6a8b3c2d1e0f4a5b8c7d9e0f1a2b3c4d"  # hyphens dropped
    assert target.host_nqn.startswith("nqn.2014-08.org.nvmexpress:uuid:")


def test_replicated():
    props = parse_nvmeof(REPLICATED_NVME)
    assert props.format == "replicated" and props.replicated and props.replica_count == 2
    assert props.alias == f"md_{VOL}" and props.vol_uuid == VOL
    assert [t.uuid for t in props.targets] == [
        "11111111-2222-4333-8444-555555555555",
        "66666666-7777-4888-9999-aaaaaaaaaaaa",
    ]
    assert props.targets[1].portals[0] == NvmePortal("10.1.0.2", 4420, "tcp")


def test_single_replica_is_still_replicated_format():
    single = with_(
        REPLICATED_NVME, replica_count=1, volume_replicas=REPLICATED_NVME["volume_replicas"][:1]
    )
    props = parse_nvmeof(single)
    assert props.replicated and props.replica_count == 1 and len(props.targets) == 1


def test_old_format_spdk():
    before = copy.deepcopy(SPDK_OLD_NVME)
    props = parse_nvmeof(SPDK_OLD_NVME)
    assert SPDK_OLD_NVME == before  # os-brick pops these keys; we must not
    assert props.format == "old"
    assert props.target.nqn == "nqn.2016-06.io.spdk:cnode1"
    assert props.target.portals == (NvmePortal("10.0.2.15", 4420, "rdma"),)
    assert props.target.nsid == 1


def test_old_format_without_identifier_is_unidentified():
    props = parse_nvmeof(with_(SPDK_OLD_NVME, ns_id=DROP))
    assert not props.target.identified


def test_new_format_without_identifier_is_unidentified():
    props = parse_nvmeof(with_(NEW, vol_uuid=None))
    assert props.vol_uuid is None and not props.target.identified


def test_fc_transport_portal():
    props = parse_nvmeof(
        with_(
            NEW,
            portals=[
                ["nn-0x20000090FA123456:pn-0x10000090fa123456", None, "FC"],
                {
                    "address": "nn-0x20000090fa123457:pn-0x10000090fa123457",
                    "port": "none",
                    "transport": "fc",
                },
            ],
        )
    )
    first = props.target.portals[0]
    assert first == NvmePortal("nn-0x20000090fa123456:pn-0x10000090fa123456", None, "fc")
    assert first.trsvcid == "none"


def test_ipv6_portal_and_duplicate_portals_dropped():
    props = parse_nvmeof(
        with_(NEW, portals=[("[2001:DB8::5]", 4420, "tcp"), ("2001:db8::5", "4420", "TCP")])
    )
    assert props.target.portals == (NvmePortal("2001:db8::5", 4420, "tcp"),)
    assert props.target.portals[0].trsvcid == "4420"


@pytest.mark.parametrize(
    "nqn",
    [
        "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        "nqn.1992-08.com.netapp:sn.8d6ec8d7a1e011e6b5c400a09860e0ad:subsystem.openstack_1",
        "nqn.2010-06.com.purestorage:flasharray.3a8a0d0a9b3c4f5e",
        "nqn.1988-11.com.dell:powerstore:00:a1b2c3d4e5f6a7b8c9d0",
        "nqn.2014-08.org.nvmexpress.discovery",
        f"nqn.nvme-subsystem-1-{VOL}",
        f"nqn.iqn.2010-10.org.openstack:-{VOL}",  # Cinder LVM + nvmet (issue 14)
        # the kernel's fabrics parser takes any of these (issue 14: accept what it accepts)
        "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid",
        "nqn.2014-13.com.example:x",
        "nqn.2014-08.-com.example:x",
        "nqn.2014-08.com.example:$(reboot)",
        "nqn.2014-08.com.example:" + "a" * 198,  # 222 bytes, the kernel's longest
    ],
)
def test_nqn_forms(nqn):
    assert parse_nqn(nqn, "k") == nqn


def test_to_dict_is_json_safe():
    props = parse_nvmeof(REPLICATED_NVME)
    data = props.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["targets"][0]["portals"][0] == {
        "address": "10.1.0.1",
        "port": 4420,
        "transport": "tcp",
    }
    assert data == props.redacted()


def test_hashable_equal():
    assert hash(parse_nvmeof(PURE_NVME)) == hash(parse_nvmeof(copy.deepcopy(PURE_NVME)))


# ---------------------------------------------------------------- sysfs id helpers


def test_sysfs_id_matching():
    nguid = parse_nvmeof(PURE_NVME).target.nguid
    assert sysfs_id_matches(nguid, "0024a937-01aa-4f0b-bd15-f4c90000a4c2\n")
    assert sysfs_id_matches(nguid, "eui.0024a93701aa4f0bbd15f4c90000a4c2\n")  # wwid form
    assert sysfs_id_matches(nguid, "0024A937-01AA-4F0B-BD15-F4C90000A4C2")
    assert not sysfs_id_matches(nguid, "0024a937-01aa-4f0b-bd15-f4c90000a4c3")
    assert not sysfs_id_matches(nguid, "")
    assert not sysfs_id_matches(None, "0024a937-01aa-4f0b-bd15-f4c90000a4c2")
    assert not sysfs_id_matches("0" * 32, "00000000-0000-0000-0000-000000000000")
    uuid = parse_nvmeof(LVM_NVMET).target.uuid
    assert sysfs_id_matches(uuid, VOL + "\n")
    assert sysfs_id_matches(uuid, f"uuid.{VOL}\n")  # wwid on kernels that prefer the UUID
    assert not sysfs_id_matches(uuid, "eui.0024a93701aa4f0b\n")  # EUI-64 is 8 bytes
    assert canonical_id("nvme.1b36-3132-514-00000001") is None


# ---------------------------------------------------------------- rejections


def test_no_format_recognised():
    invalid(parse_nvmeof, {"vol_uuid": VOL}, "target_nqn")
    invalid(parse_nvmeof, "target_nqn", "<properties>")


@pytest.mark.parametrize("drop,key", [("target_nqn", "target_nqn"), ("portals", "portals")])
def test_new_missing(drop, key):
    invalid(parse_nvmeof, with_(NEW, **{drop: DROP}), key)


@pytest.mark.parametrize(
    "nqn",
    [
        "nqn.2014-08.com.example:x,y",  # ',' breaks the fabrics option string
        "nqn.2014-08.com.example:x=y",
        "nqn.2014-08.com.example:a b",
        "nqn.2014-08.com.example:a\tb",
        "nqn.2014-08.com.example:a\x7f",
        "nqn.2014-08.com.example:" + "a" * 199,  # 223 bytes: the kernel wants < 223
        "nqn.",
        "iqn.2010-10.org.openstack:x",
        "-nqn.x",
        "NQN",
        "nqn.2014-08.com.example:" + "a" * 200,  # > 223 bytes
    ],
)
def test_bad_target_nqn(nqn):
    invalid(parse_nvmeof, with_(NEW, target_nqn=nqn), "target_nqn")


def test_bad_host_nqn():
    invalid(parse_nvmeof, with_(NEW, host_nqn="host;reboot"), "host_nqn")


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        "0a5d7c6e8f3b-4c2a-9d1e-7b6a5c4d3e2f",
        "{0a5d7c6e-8f3b-4c2a-9d1e-7b6a5c4d3e2f}",
        "urn:uuid:0a5d7c6e-8f3b-4c2a-9d1e-7b6a5c4d3e2f",
        "00000000-0000-0000-0000-000000000000",
        12345,
        True,
    ],
)
def test_bad_vol_uuid(value):
    invalid(parse_nvmeof, with_(NEW, vol_uuid=value), "vol_uuid")


@pytest.mark.parametrize(
    "value", ["0024a93701aa4f0b", "0" * 32, "g" * 32, 5, "eui.0024a93701aa4f0bbd15f4c90000a4c2"]
)
def test_bad_nguid(value):
    invalid(parse_nvmeof, with_(NEW, volume_nguid=value), "volume_nguid")


@pytest.mark.parametrize(
    "value", [0, -1, 2**32 - 1, 2**32, True, 1.5, "x1", "99999999999", "\u0661", " 1"]
)
def test_bad_nsid(value):
    invalid(parse_nvmeof, with_(NEW, ns_id=value), "ns_id")


@pytest.mark.parametrize(
    "portals,key",
    [
        ([], "portals"),
        ("10.0.0.1:4420", "portals"),
        ([("10.0.0.1", 4420)], "portals[0]"),
        ([("10.0.0.1", 4420, "tcp", "x")], "portals[0]"),
        ([42], "portals[0]"),
        ([("10.0.0.1", 4420, "tcp"), ("10.0.0.2", 4420, "iwarp")], "portals[1].transport"),
        ([("10.0.0.1", 4420, None)], "portals[0].transport"),
        ([("10.0.0.1", 0, "tcp")], "portals[0].port"),
        ([("10.0.0.1", 70000, "tcp")], "portals[0].port"),
        ([("10.0.0.1", True, "tcp")], "portals[0].port"),
        ([("10.0.0.1", None, "tcp")], "portals[0].port"),
        ([("10.0.0.1", "44 20", "tcp")], "portals[0].port"),
        ([("target.example.com", 4420, "tcp")], "portals[0].address"),
        ([("10.0.0.1;reboot", 4420, "tcp")], "portals[0].address"),
        ([("10.0.0.1", 4420, "fc")], "portals[0].address"),
        ([("nn-0x20000090fa123456:pn-0x10000090fa123456", 4420, "fc")], "portals[0].port"),
        ([{"address": "10.0.0.1", "port": 4420}], "portals[0].transport"),
        ([{"port": 4420, "transport": "tcp"}], "portals[0].address"),
        ([{"address": "10.0.0.1", "port": 4420, "transport": "tcp", 7: 1}], "portals[0]"),
    ],
)
def test_bad_portals(portals, key):
    invalid(parse_nvmeof, with_(NEW, portals=portals), key)


def test_replicated_errors_have_nested_paths():
    reps = copy.deepcopy(REPLICATED_NVME["volume_replicas"])
    reps[1]["portals"] = [
        ("10.1.0.2", "4420", "tcp"),
        ("10.1.0.3", "4420", "tcp"),
        ("10.1.0.4", "4420", "udp"),
    ]
    invalid(
        parse_nvmeof,
        with_(REPLICATED_NVME, volume_replicas=reps),
        "volume_replicas[1].portals[2].transport",
    )
    reps = copy.deepcopy(REPLICATED_NVME["volume_replicas"])
    reps[0]["vol_uuid"] = "nope"
    invalid(
        parse_nvmeof, with_(REPLICATED_NVME, volume_replicas=reps), "volume_replicas[0].vol_uuid"
    )
    reps = copy.deepcopy(REPLICATED_NVME["volume_replicas"])
    del reps[0]["target_nqn"]
    invalid(
        parse_nvmeof, with_(REPLICATED_NVME, volume_replicas=reps), "volume_replicas[0].target_nqn"
    )
    invalid(
        parse_nvmeof,
        with_(REPLICATED_NVME, volume_replicas=[REPLICATED_NVME, "x"]),
        "volume_replicas[0].target_nqn",
    )
    invalid(parse_nvmeof, with_(REPLICATED_NVME, volume_replicas=[NEW, "x"]), "volume_replicas[1]")
    invalid(parse_nvmeof, with_(REPLICATED_NVME, volume_replicas=[]), "volume_replicas")


@pytest.mark.parametrize(
    "changes,key",
    [
        ({"replica_count": 3}, "replica_count"),
        ({"replica_count": DROP}, "replica_count"),
        ({"replica_count": "2"}, "replica_count"),
        ({"replica_count": True}, "replica_count"),
        ({"alias": DROP}, "alias"),
        ({"alias": "../md0"}, "alias"),
        ({"alias": "md 0"}, "alias"),
        ({"alias": ".hidden"}, "alias"),
        ({"vol_uuid": "x"}, "vol_uuid"),
    ],
)
def test_replicated_top_level_errors(changes, key):
    invalid(parse_nvmeof, with_(REPLICATED_NVME, **changes), key)


@pytest.mark.parametrize(
    "changes,key",
    [
        ({"nqn": "bad"}, "nqn"),
        ({"transport_type": DROP}, "transport_type"),
        ({"transport_type": "carrier-pigeon"}, "transport_type"),
        ({"target_portal": DROP}, "target_portal"),
        ({"target_portal": "10.0.2.15:4420"}, "target_portal"),
        ({"target_port": DROP}, "target_port"),
        ({"target_port": "-1"}, "target_port"),
        ({"ns_id": "0"}, "ns_id"),
    ],
)
def test_old_format_errors(changes, key):
    invalid(parse_nvmeof, with_(SPDK_OLD_NVME, **changes), key)


def test_common_fields_validated_for_nvme():
    invalid(parse_nvmeof, with_(NEW, access_mode="RW"), "access_mode")
    invalid(parse_nvmeof, with_(NEW, encrypted="no"), "encrypted")
    assert parse_nvmeof(with_(NEW, access_mode="ro")).access_mode == "ro"


@pytest.mark.parametrize(
    "nqn",
    [
        f"nqn.nvme-subsystem-1-{VOL}",
        f"nqn.iqn.2010-10.org.openstack:-{VOL}",
        "nqn.2014-08.com.example:$(x)",
        "nqn.2014-08.com.example:" + "a" * 198,
        "nqn.2014-08.com.example:" + "a" * 199,
        "nqn.x,y",
        "nqn.x=y",
        "nqn.x y",
        "nqn.",
        "iqn.x",
        "nqn.é" + "a" * 216,
        "nqn.é" + "a" * 217,
    ],
)
def test_properties_privileged_and_host_identity_agree_on_nqns(nqn):
    """One rule (brick_agent.nqn): what a volume service may send is what the privileged
    connect writes and what the host identity may hold (issue 14)."""
    from brick_agent.errors import InvalidArgument, InvalidConnectionProperties
    from brick_agent.host.nvme_identity import valid_hostnqn
    from brick_agent.privileged import _validate

    try:
        parse_nqn(nqn, "k")
        props_ok = True
    except InvalidConnectionProperties:
        props_ok = False
    try:
        _validate.nqn(nqn)
        priv_ok = True
    except InvalidArgument:
        priv_ok = False
    assert props_ok == priv_ok == valid_hostnqn(nqn)
