"""iSCSI connection properties: accepted shapes and every rejection class."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from brick_agent.errors import InvalidConnectionProperties
from brick_agent.properties import (
    AddressingMode,
    IscsiProperties,
    Portal,
    parse_iscsi,
    parse_portal,
)
from brick_agent.secrets import Secret
from tests.unit.test_properties_support import (
    DISC_SECRET,
    DROP,
    LVM_LIO_ISCSI,
    NETAPP_ISCSI,
    PURE_ISCSI,
    SECRET,
    VOL,
    invalid,
    with_,
)

IQN = f"iqn.2010-10.org.openstack:volume-{VOL}"
SINGLE = {"target_portal": "10.0.0.1:3260", "target_iqn": IQN}


# ---------------------------------------------------------------- accepted shapes


def test_lvm_lio_full_dict():
    before = copy.deepcopy(LVM_LIO_ISCSI)
    props = parse_iscsi(LVM_LIO_ISCSI, use_multipath=True)
    assert LVM_LIO_ISCSI == before
    assert isinstance(props, IscsiProperties)
    assert props.primary.portal == Portal("192.168.122.10", 3260)
    assert props.primary.iqn == IQN and props.primary.lun == 0
    assert [t.portal.address for t in props.targets] == [
        "192.168.122.10:3260",
        "192.168.123.10:3260",
    ]
    assert props.auth.username == "hJ4bQwGdTtkmmmUy"
    assert isinstance(props.auth.password, Secret) and props.auth.password.reveal() == SECRET
    assert props.discovery_auth is None
    assert props.volume_id == VOL and props.access_mode == "rw" and props.encrypted is False
    assert props.enforce_multipath is True and props.device_path is None
    assert props.addressing_mode is AddressingMode.SAM
    assert props.use_multipath and props.plural_targets and not props.needs_discovery
    assert isinstance(props.targets, tuple)


def test_minimal_single_defaults():
    props = parse_iscsi(SINGLE)
    assert props.targets == (props.primary,)
    assert props.primary.lun == 0
    assert props.access_mode == "rw" and props.encrypted is False
    assert props.auth is None and props.volume_id is None and props.enforce_multipath is None
    assert not props.plural_targets and not props.needs_discovery


def test_single_with_multipath_needs_discovery():
    assert parse_iscsi(SINGLE, use_multipath=True).needs_discovery


def test_netapp_plural_with_singular_primary():
    props = parse_iscsi(NETAPP_ISCSI)
    assert props.primary.portal.host == "10.63.165.215" and props.primary.lun == 4
    assert len(props.targets) == 2 and {t.lun for t in props.targets} == {4}


def test_pure_plural_only_ipv6_sam2():
    props = parse_iscsi(PURE_ISCSI)
    assert props.primary == props.targets[0]
    assert props.primary.portal == Portal("2001:db8::10", 3260)
    assert props.primary.portal.address == "[2001:db8::10]:3260"
    assert props.addressing_mode is AddressingMode.SAM2
    assert props.scsi_lun() == 300 + 16384


def test_duplicate_plural_targets_dropped():
    props = parse_iscsi(
        {
            "target_portals": ["10.0.0.1:3260", "10.0.0.2:3260", "10.0.0.1:3260"],
            "target_iqns": [IQN] * 3,
            "target_luns": [1, 1, 1],
        }
    )
    assert [t.portal.host for t in props.targets] == ["10.0.0.1", "10.0.0.2"]


def test_plural_without_target_luns_repeats_target_lun():
    props = parse_iscsi(
        {
            "target_portals": ["10.0.0.1:3260", "10.0.0.2:3260"],
            "target_iqns": [IQN, IQN],
            "target_lun": 7,
        }
    )
    assert [t.lun for t in props.targets] == [7, 7]
    props = parse_iscsi({"target_portals": ["10.0.0.1:3260"], "target_iqns": [IQN]})
    assert props.targets[0].lun == 0


@pytest.mark.parametrize(
    "text,host,port,address",
    [
        ("10.0.0.1:3260", "10.0.0.1", 3260, "10.0.0.1:3260"),
        ("[2001:DB8:0:0::1]:3261", "2001:db8::1", 3261, "[2001:db8::1]:3261"),
        ("[fe80::1%eth0]:3260", "fe80::1%eth0", 3260, "[fe80::1%eth0]:3260"),
        ("storage-a.example.com:3260", "storage-a.example.com", 3260, "storage-a.example.com:3260"),
        ("localhost:1", "localhost", 1, "localhost:1"),
        ("10.0.0.1:65535", "10.0.0.1", 65535, "10.0.0.1:65535"),
    ],
)
def test_portal_forms(text, host, port, address):
    portal = parse_portal(text, "p")
    assert (portal.host, portal.port, portal.address, str(portal)) == (host, port, address, address)


@pytest.mark.parametrize(
    "iqn",
    [
        "iqn.2010-10.org.openstack:volume-x",
        "iqn.1992-08.com.netapp:sn.8d6ec8d7:vs.3",
        "iqn.2001-05.com.equallogic:0-8a0906-83bcb3401-16e0002fd0a46f3d-vol1",
        "iqn.1992-04.com.emc:cx.apm00123456789.a0",
        "iqn.2003-01.org.linux-iscsi.host.x8664:sn.4a5b6c7d8e9f",
        "iqn.2016-04.com.example",
        "eui.02004567A425678D",
        "naa.52004567BA64678D",
        "naa.6001405abcdef0123456789abcdef012",
    ],
)
def test_iqn_forms(iqn):
    assert parse_iscsi({"target_portal": "10.0.0.1:3260", "target_iqn": iqn}).primary.iqn == iqn


def test_discovery_chap_and_case_insensitive_method():
    props = parse_iscsi(
        with_(
            SINGLE,
            auth_method="chap",
            auth_username="u",
            auth_password="p",
            discovery_auth_method="CHAP",
            discovery_auth_username="du",
            discovery_auth_password=DISC_SECRET,
        )
    )
    assert props.auth.method == "CHAP" and props.auth.password.reveal() == "p"
    assert props.discovery_auth.username == "du"
    assert props.discovery_auth.password.reveal() == DISC_SECRET


@pytest.mark.parametrize("method", [None, "", "None", "none"])
def test_no_auth_methods(method):
    assert parse_iscsi(with_(SINGLE, auth_method=method, auth_username="ignored")).auth is None


def test_password_with_shell_characters_is_fine():
    # It goes to iscsiadm as one argv item, never through a shell.
    pw = "a$b;c'd\"e|f`g"
    props = parse_iscsi(with_(SINGLE, auth_method="CHAP", auth_username="u", auth_password=pw))
    assert props.auth.password.reveal() == pw


def test_secrets_never_in_repr_str_or_dict():
    props = parse_iscsi(
        with_(
            LVM_LIO_ISCSI,
            discovery_auth_method="CHAP",
            discovery_auth_username="du",
            discovery_auth_password=DISC_SECRET,
        )
    )
    for text in (
        repr(props),
        str(props),
        repr(props.auth),
        json.dumps(props.to_dict()),
        json.dumps(props.redacted()),
    ):
        assert SECRET not in text and DISC_SECRET not in text
    assert props.to_dict()["auth"]["password"] == "***"
    assert props.to_dict()["addressing_mode"] == "SAM"
    assert json.loads(json.dumps(props.to_dict())) == props.to_dict()


def test_models_are_frozen_and_hashable():
    props = parse_iscsi(LVM_LIO_ISCSI)
    with pytest.raises(dataclasses.FrozenInstanceError):
        props.access_mode = "ro"
    with pytest.raises(dataclasses.FrozenInstanceError):
        props.primary.portal.port = 1
    assert hash(props) == hash(parse_iscsi(copy.deepcopy(LVM_LIO_ISCSI)))
    assert props == parse_iscsi(copy.deepcopy(LVM_LIO_ISCSI))


def test_scsi_lun_per_addressing_mode():
    def lun(mode, n):
        return parse_iscsi(with_(SINGLE, addressing_mode=mode, target_lun=n)).scsi_lun()

    assert lun("SAM", 300) == 300 and lun("transparent", 300) == 300
    assert lun("SAM2", 255) == 255 and lun("SAM2", 256) == 256 + 0x4000
    assert lun("SAM3-flat", 0) == 0x4000 and lun("sam3-FLAT", 16383) == 0x7FFF
    assert lun("SAM", 2**64 - 1) == 2**64 - 1


def test_ignores_unknown_keys():
    props = parse_iscsi(
        with_(SINGLE, qos_specs={"x": [1, {2: 3}]}, cacheable=object(), random_key="; rm -rf /")
    )
    assert props.primary.iqn == IQN


# ---------------------------------------------------------------- rejections


def test_not_a_mapping():
    invalid(parse_iscsi, ["target_portal"], "<properties>")
    invalid(parse_iscsi, None, "<properties>")


def test_non_string_key():
    invalid(parse_iscsi, {**SINGLE, 3: "x"}, "<properties>")


@pytest.mark.parametrize(
    "drop,key", [("target_portal", "target_portal"), ("target_iqn", "target_iqn")]
)
def test_missing_required(drop, key):
    invalid(parse_iscsi, with_(SINGLE, **{drop: DROP}), key)


def test_nothing_given():
    invalid(parse_iscsi, {"volume_id": VOL}, "target_portal")


@pytest.mark.parametrize(
    "portal,fragment",
    [
        ("10.0.0.1", "no port"),
        ("[2001:db8::1]", "no port"),
        ("2001:db8::1:32a0", "[address]:port"),  # 'address:port' needs a decimal port
        ("2001:db8:0:0:0:0:0:1", "[address]:port"),  # no port: the rest is not an address
        ("2001:db8::", "[address]:port"),
        ("10.0.0.1:0", "1..65535"),
        ("10.0.0.1:65536", "1..65535"),
        ("10.0.0.1:32a", "port"),
        ("10.0.0.1:+3260", "port"),
        (":3260", "no host"),
        ("999.1.1.1:3260", "IP address"),
        ("10.0.0:3260", "IP address"),
        ("-evil.example.com:3260", "host name"),
        ("bad_host.example.com:3260", "host name"),
        ("a" * 64 + ".com:3260", "host name"),
        ("[10.0.0.1]:3260", "only for IPv6"),
        ("[fe80::1%e;th0]:3260", "zone"),
        ("[::1:3260", "unclosed"),
        ("10.0.0.1:3260,1", "port"),
    ],
)
def test_bad_portals(portal, fragment):
    err = invalid(parse_iscsi, with_(SINGLE, target_portal=portal), "target_portal")
    assert fragment in err.problem


@pytest.mark.parametrize(
    "value",
    [
        "10.0.0.1 :3260",
        "10.0.0.1:3260\n",
        "10.0.0.1:3260\x00",
        "\t10.0.0.1:3260",
        "",
    ],
)
def test_portal_whitespace_control(value):
    invalid(parse_iscsi, with_(SINGLE, target_portal=value), "target_portal")


@pytest.mark.parametrize(
    "iqn",
    [
        "iqn.2010-13.org.openstack:x",  # month
        "iqn.10-10.org.openstack:x",  # year
        "iqn.2010-10.-org.openstack:x",  # label starts with '-'
        "iqn.2010-10.org.openstack:x;reboot",  # shell metacharacter
        "iqn.2010-10.org.openstack:x y",  # whitespace
        "iqn.2010-10.org.openstack:$(id)",
        "-iqn.2010-10.org.openstack:x",  # option injection
        "eui.123",
        "naa.123456789012345678",
        "iscsi-target",
        "IQN",
        "iqn.2010-10.org.openstack:" + "a" * 200,  # > 223
    ],
)
def test_bad_iqns(iqn):
    invalid(parse_iscsi, with_(SINGLE, target_iqn=iqn), "target_iqn")


@pytest.mark.parametrize(
    "lun,mode",
    [
        (-1, "SAM"),
        (2**64, "SAM"),
        (16384, "SAM2"),
        (16384, "SAM3-flat"),
        (True, "SAM"),
        (False, "SAM"),
        ("1", "SAM"),
        (1.0, "SAM"),
        ([1], "SAM"),
    ],
)
def test_bad_luns(lun, mode):
    invalid(parse_iscsi, with_(SINGLE, target_lun=lun, addressing_mode=mode), "target_lun")


def test_bad_addressing_mode():
    invalid(parse_iscsi, with_(SINGLE, addressing_mode="SAM4"), "addressing_mode")
    invalid(parse_iscsi, with_(SINGLE, addressing_mode=2), "addressing_mode")


def test_plural_length_mismatch():
    invalid(parse_iscsi, with_(LVM_LIO_ISCSI, target_iqns=[IQN]), "target_iqns")
    invalid(parse_iscsi, with_(LVM_LIO_ISCSI, target_luns=[0, 0, 0]), "target_luns")


def test_plural_half_given():
    invalid(parse_iscsi, with_(LVM_LIO_ISCSI, target_iqns=DROP), "target_iqns")
    invalid(parse_iscsi, with_(LVM_LIO_ISCSI, target_portals=DROP), "target_portals")


def test_plural_types_and_indexed_paths():
    invalid(parse_iscsi, with_(LVM_LIO_ISCSI, target_portals="10.0.0.1:3260"), "target_portals")
    invalid(parse_iscsi, with_(LVM_LIO_ISCSI, target_portals=[]), "target_portals")
    invalid(
        parse_iscsi,
        with_(LVM_LIO_ISCSI, target_portals=["10.0.0.1:3260", "10.0.0.2"]),
        "target_portals[1]",
    )
    invalid(parse_iscsi, with_(LVM_LIO_ISCSI, target_iqns=[IQN, "bad iqn"]), "target_iqns[1]")
    invalid(parse_iscsi, with_(LVM_LIO_ISCSI, target_luns=[0, True]), "target_luns[1]")
    invalid(parse_iscsi, with_(LVM_LIO_ISCSI, target_luns=DROP, target_lun=-3), "target_lun")


def test_chap_problems_never_echo_secret():
    base = with_(SINGLE, auth_method="CHAP", auth_username="user", auth_password=SECRET)
    invalid(parse_iscsi, with_(base, auth_method="MD5"), "auth_method")
    invalid(parse_iscsi, with_(base, auth_method=1), "auth_method")
    invalid(parse_iscsi, with_(base, auth_username=DROP), "auth_username")
    invalid(parse_iscsi, with_(base, auth_username="-u"), "auth_username")
    invalid(parse_iscsi, with_(base, auth_username="a b"), "auth_username")
    invalid(parse_iscsi, with_(base, auth_password=DROP), "auth_password")
    invalid(parse_iscsi, with_(base, auth_password=""), "auth_password")
    bad = SECRET + "\n"
    err = invalid(parse_iscsi, with_(base, auth_password=bad), "auth_password", bad)
    assert "Sup3r" not in str(err)
    long_pw = SECRET * 20
    invalid(parse_iscsi, with_(base, auth_password=long_pw), "auth_password", long_pw)
    invalid(parse_iscsi, with_(base, auth_password=12345678), "auth_password", "12345678")
    invalid(
        parse_iscsi,
        with_(
            base,
            discovery_auth_method="CHAP",
            discovery_auth_username="d",
            discovery_auth_password="x\x00y",
        ),
        "discovery_auth_password",
        "x\x00y",
    )


@pytest.mark.parametrize(
    "key,value",
    [
        ("access_mode", "rwx"),
        ("access_mode", True),
        ("encrypted", "false"),
        ("encrypted", 0),
        ("enforce_multipath", "yes"),
        ("volume_id", "vol 1"),
        ("volume_id", "-rf"),
        ("volume_id", "a;b"),
        ("volume_id", "x" * 256),
        ("device_path", "dev/sda"),
        ("device_path", "/dev/../etc/passwd"),
        ("device_path", "/dev/sd a"),
        ("device_path", "/dev/$(reboot)"),
        ("device_path", 5),
    ],
)
def test_bad_common_fields(key, value):
    invalid(parse_iscsi, with_(SINGLE, **{key: value}), key)


def test_common_fields_accepted():
    props = parse_iscsi(
        with_(
            SINGLE,
            access_mode="ro",
            encrypted=True,
            enforce_multipath=False,
            device_path="/dev/disk/by-id/os-brick+dev+sdb",
            volume_id=VOL,
        )
    )
    assert (props.access_mode, props.encrypted, props.enforce_multipath) == ("ro", True, False)
    assert props.device_path == "/dev/disk/by-id/os-brick+dev+sdb"
    by_path = f"/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-{IQN}-lun-1"
    assert parse_iscsi(with_(SINGLE, device_path=by_path)).device_path == by_path


def test_long_values_truncated_in_messages():
    err = invalid(parse_iscsi, with_(SINGLE, target_iqn="iqn.x" + "A" * 150), "target_iqn")
    assert "A" * 70 not in str(err)


def test_error_type_is_value_error_too():
    with pytest.raises(ValueError):
        parse_iscsi({})
    with pytest.raises(InvalidConnectionProperties):
        parse_iscsi({})
