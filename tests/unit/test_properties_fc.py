"""Fibre Channel connection properties: pairing rules, WWPN normalisation, the map."""

from __future__ import annotations

import copy
import json

import pytest

from brick_agent.properties import AddressingMode, FcProperties, FcTarget, normalize_wwpn, parse_fc
from tests.unit.test_properties_support import DROP, POWERMAX_FC, PURE_FC, VOL, invalid, with_

W1, W2 = "524a937df33e2001", "524a937df33e2011"
I1, I2 = "21000024ff3c1e10", "21000024ff3c1e11"


def test_pure_list_target_wwn_single_lun_and_map():
    before = copy.deepcopy(PURE_FC)
    props = parse_fc(PURE_FC)
    assert PURE_FC == before
    assert isinstance(props, FcProperties)
    assert props.targets == (FcTarget(W1, 1), FcTarget(W2, 1))
    assert props.addressing_mode is AddressingMode.SAM2
    assert dict(props.initiator_target_map) == {I1: (W1, W2), I2: (W2,)}
    assert props.enable_wildcard_scan is True
    assert props.target_wwpns == (W1, W2)


def test_powermax_zip_luns():
    props = parse_fc(POWERMAX_FC)
    assert props.targets == (FcTarget("5000097358085c00", 17), FcTarget("5000097358085c04", 17))
    assert props.enable_wildcard_scan is False and props.access_mode == "ro"
    assert props.volume_id == VOL and props.initiator_target_map is None


def test_single_string_wwn():
    props = parse_fc({"target_wwn": "0x500601603EA01234", "target_lun": 0})
    assert props.targets == (FcTarget("500601603ea01234", 0),)


def test_target_wwns_preferred_over_target_wwn():
    props = parse_fc({"target_wwn": "bad", "target_wwns": [W1], "target_lun": 2})
    assert props.targets == (FcTarget(W1, 2),)


def test_target_luns_preferred_and_different_luns_per_wwpn():
    props = parse_fc({"target_wwns": [W1, W1], "target_luns": [1, 2], "target_lun": 9})
    assert props.targets == (FcTarget(W1, 1), FcTarget(W1, 2))


def test_duplicates_dropped():
    props = parse_fc({"target_wwn": [W1, W1.upper(), W2], "target_lun": 3})
    assert props.targets == (FcTarget(W1, 3), FcTarget(W2, 3))


def test_targets_for_initiator():
    props = parse_fc(PURE_FC)
    assert props.targets_for_initiator("0x21:00:00:24:FF:3C:1E:11") == (FcTarget(W2, 1),)
    assert props.targets_for_initiator(I1) == props.targets
    assert props.targets_for_initiator("2100000000000000") == ()
    assert props.targets_for_initiator("garbage") == ()
    assert parse_fc(POWERMAX_FC).targets_for_initiator(I1) == parse_fc(POWERMAX_FC).targets


def test_map_is_immutable():
    props = parse_fc(PURE_FC)
    with pytest.raises(TypeError):
        props.initiator_target_map[I1] = ()  # type: ignore[index]
    assert isinstance(props.initiator_target_map[I1], tuple)
    assert hash(props) == hash(parse_fc(copy.deepcopy(PURE_FC)))
    assert props == parse_fc(copy.deepcopy(PURE_FC))


def test_scsi_lun_and_to_dict():
    props = parse_fc(with_(PURE_FC, target_lun=256))
    assert props.scsi_lun(256) == 256 + 16384 and props.scsi_lun(5) == 5
    data = props.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["initiator_target_map"] == {I1: [W1, W2], I2: [W2]}
    assert data["targets"][0] == {"wwpn": W1, "lun": 256}


@pytest.mark.parametrize(
    "text,want",
    [
        ("524A937DF33E2001", W1),
        ("0x524a937df33e2001", W1),
        ("52:4a:93:7d:f3:3e:20:01", W1),
        ("0X52:4A:93:7D:F3:3E:20:01", W1),
        ("524a937df33e200", None),
        ("52-4a-93-7d-f3-3e-20-01", None),
        ("524a:937df33e2001", None),
        (5, None),
    ],
)
def test_normalize_wwpn(text, want):
    assert normalize_wwpn(text) == want


# ---------------------------------------------------------------- rejections


def test_missing_keys():
    invalid(parse_fc, {"target_lun": 1}, "target_wwn")
    invalid(parse_fc, {"target_wwn": W1}, "target_lun")
    invalid(parse_fc, 7, "<properties>")


@pytest.mark.parametrize(
    "value,key",
    [
        ("524a937df33e200", "target_wwn"),
        ("524a937df33e2001;id", "target_wwn"),
        ("0000000000000000", "target_wwn"),
        ([W1, "zz4a937df33e2001"], "target_wwn[1]"),
        ([], "target_wwn"),
        (12345, "target_wwn"),
        ([W1, 5], "target_wwn[1]"),
        ({"a": W1}, "target_wwn"),
    ],
)
def test_bad_wwns(value, key):
    invalid(parse_fc, {"target_wwn": value, "target_lun": 1}, key)


def test_bad_target_wwns_list():
    invalid(parse_fc, {"target_wwns": [W1, "x"], "target_lun": 1}, "target_wwns[1]")
    invalid(parse_fc, {"target_wwns": [W1] * 300, "target_lun": 1}, "target_wwns")


@pytest.mark.parametrize(
    "changes,key",
    [
        ({"target_lun": -1}, "target_lun"),
        ({"target_lun": True}, "target_lun"),
        ({"target_lun": "1"}, "target_lun"),
        ({"target_lun": 16384}, "target_lun"),  # SAM2 in PURE_FC
        ({"target_luns": [1, 2, 3]}, "target_luns"),  # 3 LUNs for 2 WWPNs
        ({"target_luns": [1, False]}, "target_luns[1]"),
        ({"target_luns": 1}, "target_luns"),
        ({"addressing_mode": "flat"}, "addressing_mode"),
        ({"enable_wildcard_scan": "false"}, "enable_wildcard_scan"),
        ({"enable_wildcard_scan": 0}, "enable_wildcard_scan"),
        ({"access_mode": "w"}, "access_mode"),
        ({"device_path": "relative/path"}, "device_path"),
    ],
)
def test_bad_values(changes, key):
    invalid(parse_fc, with_(PURE_FC, **changes), key)


def test_sam_allows_64_bit_lun():
    props = parse_fc(with_(PURE_FC, addressing_mode=DROP, target_lun=2**40))
    assert props.targets[0].lun == 2**40


@pytest.mark.parametrize(
    "itmap,key",
    [
        ([I1, W1], "initiator_target_map"),
        ({I1: W1, 5: [W1]}, "initiator_target_map"),
        ({"not-a-wwpn": [W1]}, "initiator_target_map['not-a-wwpn']"),
        ({I1: ["bad"]}, f"initiator_target_map.{I1}[0]"),
        ({I1: []}, f"initiator_target_map.{I1}"),
        ({I1: 7}, f"initiator_target_map.{I1}"),
    ],
)
def test_bad_initiator_target_map(itmap, key):
    invalid(parse_fc, with_(PURE_FC, initiator_target_map=itmap), key)
