"""Shared helpers and realistic driver outputs for the properties tests (no tests here)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from brick_agent.errors import InvalidConnectionProperties

SECRET = "Sup3rS3cretChapPw"
DISC_SECRET = "DiscoveryS3cretPw"
VOL = "0a5d7c6e-8f3b-4c2a-9d1e-7b6a5c4d3e2f"

# LVM + LIO (cinder target_helper=lioadm), CHAP on, secondary portal configured.
LVM_LIO_ISCSI = {
    "target_discovered": False,
    "target_portal": "192.168.122.10:3260",
    "target_iqn": f"iqn.2010-10.org.openstack:volume-{VOL}",
    "target_lun": 0,
    "target_portals": ["192.168.122.10:3260", "192.168.123.10:3260"],
    "target_iqns": [f"iqn.2010-10.org.openstack:volume-{VOL}"] * 2,
    "target_luns": [0, 0],
    "volume_id": VOL,
    "auth_method": "CHAP",
    "auth_username": "hJ4bQwGdTtkmmmUy",
    "auth_password": SECRET,
    "encrypted": False,
    "qos_specs": None,
    "access_mode": "rw",
    "cacheable": False,
    "discard": True,
    "enforce_multipath": True,
}

# NetApp ONTAP iSCSI: vserver IQN, several LIFs.
NETAPP_ISCSI = {
    "target_discovered": True,
    "target_portal": "10.63.165.215:3260",
    "target_iqn": "iqn.1992-08.com.netapp:sn.8d6ec8d7a1e011e6b5c400a09860e0ad:vs.3",
    "target_lun": 4,
    "target_portals": ["10.63.165.215:3260", "10.63.165.216:3260"],
    "target_iqns": ["iqn.1992-08.com.netapp:sn.8d6ec8d7a1e011e6b5c400a09860e0ad:vs.3"] * 2,
    "target_luns": [4, 4],
    "volume_id": VOL,
    "discard": True,
}

# Pure FlashArray iSCSI: SAM2 addressing, LUN above 255, IPv6 portal.
PURE_ISCSI = {
    "target_discovered": False,
    "discard": True,
    "addressing_mode": "SAM2",
    "target_portals": ["[2001:db8::10]:3260", "10.0.0.11:3260"],
    "target_iqns": ["iqn.2010-06.com.purestorage:flasharray.12345abc6789def0"] * 2,
    "target_luns": [300, 300],
    "wwn": "3624a9370abcdef0123456789",
}

# LVM + nvmet (cinder target_helper=nvmet), new format.
LVM_NVMET = {
    "target_nqn": f"nqn.nvme-subsystem-1-{VOL}",
    "vol_uuid": VOL,
    "portals": [["192.168.122.10", 4420, "tcp"]],
    "ns_id": 10,
    "volume_nguid": None,
    "host_nqn": None,
    "discard": True,
}

# Pure FlashArray NVMe/RoCE: NGUID identifies the namespace.
PURE_NVME = {
    "target_nqn": "nqn.2010-06.com.purestorage:flasharray.3a8a0d0a9b3c4f5e",
    "vol_uuid": None,
    "volume_nguid": "0024a93701aa4f0bbd15f4c90000a4c2",
    "portals": [("10.0.1.10", 4420, "RoCEv2"), ("10.0.1.11", 4420, "RoCEv2")],
}

# Dell PowerStore NVMe/TCP, dict portals, string port.
POWERSTORE_NVME = {
    "target_nqn": "nqn.1988-11.com.dell:powerstore:00:a1b2c3d4e5f6a7b8c9d0",
    "volume_nguid": "6a8b3c2d-1e0f-4a5b-8c7d-9e0f1a2b3c4d",
    "portals": [{"address": "172.16.1.5", "port": "4420", "transport": "tcp"}],
    "host_nqn": "nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0035-4b10-8032-b4c04f4e3432",
}

# Replicated (Kioxia/LightOS-style RAID1 over two backends).
REPLICATED_NVME = {
    "vol_uuid": VOL,
    "alias": f"md_{VOL}",
    "replica_count": 2,
    "volume_replicas": [
        {
            "target_nqn": "nqn.2020-01.com.example:sub-a",
            "vol_uuid": "11111111-2222-4333-8444-555555555555",
            "portals": [("10.1.0.1", "4420", "tcp")],
        },
        {
            "target_nqn": "nqn.2020-01.com.example:sub-b",
            "vol_uuid": "66666666-7777-4888-9999-aaaaaaaaaaaa",
            "portals": [("10.1.0.2", "4420", "tcp")],
        },
    ],
}

# Old format (SPDK target driver).
SPDK_OLD_NVME = {
    "nqn": "nqn.2016-06.io.spdk:cnode1",
    "transport_type": "rdma",
    "target_portal": "10.0.2.15",
    "target_port": "4420",
    "ns_id": "1",
}

# Pure FC: list target_wwn, single target_lun, initiator_target_map.
PURE_FC = {
    "target_discovered": True,
    "target_lun": 1,
    "target_wwn": ["52:4A:93:7D:F3:3E:20:01", "524a937df33e2011"],
    "initiator_target_map": {
        "21000024ff3c1e10": ["524A937DF33E2001", "524a937df33e2011"],
        "0x21000024ff3c1e11": "524a937df33e2011",
    },
    "addressing_mode": "SAM2",
    "discard": True,
}

# Dell PowerMax FC: target_wwns with per-WWN LUNs.
POWERMAX_FC = {
    "target_wwns": ["5000097358085c00", "5000097358085c04"],
    "target_luns": [17, 17],
    "enable_wildcard_scan": False,
    "volume_id": VOL,
    "access_mode": "ro",
}


def invalid(
    parse: Callable[..., Any], props: Any, key: str, *secrets: str, **kw: Any
) -> InvalidConnectionProperties:
    """Assert ``parse(props)`` raises for ``key``; input unchanged; no secret leaked."""
    before = copy.deepcopy(props)
    with pytest.raises(InvalidConnectionProperties) as info:
        parse(props, **kw)
    err = info.value
    assert err.key == key, f"expected key {key!r}, got {err.key!r}: {err}"
    for secret in (SECRET, DISC_SECRET) + secrets:
        assert secret not in str(err) and secret not in repr(err)
    assert props == before
    return err


DROP = object()


def with_(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with ``changes`` applied (value :data:`DROP` = delete)."""
    out = copy.deepcopy(dict(base))
    for k, v in changes.items():
        if v is DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out
