"""Protocol dispatch, LUN addressing and shared helpers of brick_agent.properties."""

from __future__ import annotations

import pytest

from brick_agent.errors import InvalidConnectionProperties
from brick_agent.properties import (
    AddressingMode,
    FcProperties,
    IscsiProperties,
    NvmeofProperties,
    max_lun,
    parse_properties,
    scsi_lun,
)
from brick_agent.properties._checks import shown
from tests.unit.test_properties_support import LVM_LIO_ISCSI, LVM_NVMET, PURE_FC


@pytest.mark.parametrize(
    "name,cls,props",
    [
        ("ISCSI", IscsiProperties, LVM_LIO_ISCSI),
        ("iscsi", IscsiProperties, LVM_LIO_ISCSI),
        ("NVMEOF", NvmeofProperties, LVM_NVMET),
        ("nvme", NvmeofProperties, LVM_NVMET),
        ("NVMeoF", NvmeofProperties, LVM_NVMET),
        ("FIBRE_CHANNEL", FcProperties, PURE_FC),
        ("fc", FcProperties, PURE_FC),
        ("fibre_channel", FcProperties, PURE_FC),
    ],
)
def test_parse_properties_dispatch(name, cls, props):
    assert isinstance(parse_properties(name, props), cls)


def test_parse_properties_passes_use_multipath():
    assert parse_properties("ISCSI", LVM_LIO_ISCSI, use_multipath=True).use_multipath
    assert isinstance(parse_properties("NVMEOF", LVM_NVMET, use_multipath=True), NvmeofProperties)
    assert isinstance(parse_properties("FC", PURE_FC, use_multipath=False), FcProperties)


@pytest.mark.parametrize("name", ["RBD", "", "iSER", None, 3])
def test_parse_properties_unknown_protocol(name):
    with pytest.raises(InvalidConnectionProperties) as info:
        parse_properties(name, LVM_LIO_ISCSI)
    assert info.value.key == "protocol"


def test_addressing_table():
    # Expected values follow os-brick's LinuxSCSI.lun_for_addressing (research section 2).
    assert [scsi_lun(n, "SAM") for n in (0, 255, 256, 16383)] == [0, 255, 256, 16383]
    assert [scsi_lun(n, "transparent") for n in (0, 256)] == [0, 256]
    assert [scsi_lun(n, "SAM2") for n in (0, 255, 256, 16383)] == [0, 255, 16640, 32767]
    assert [scsi_lun(n, AddressingMode.SAM3_FLAT) for n in (0, 255, 256)] == [16384, 16639, 16640]
    assert max_lun(AddressingMode.SAM) == 2**64 - 1
    assert max_lun(AddressingMode.SAM2) == max_lun(AddressingMode.SAM3_FLAT) == 16383
    with pytest.raises(ValueError):
        scsi_lun(16384, "SAM3-flat")
    with pytest.raises(ValueError):
        scsi_lun(-1, "SAM")
    assert str(AddressingMode.SAM3_FLAT) == "SAM3-flat"


def test_shown_truncates():
    assert len(shown("x" * 1000)) == 64
    assert shown("abc") == "'abc'"
