"""device_scan_attempts bounds the rescans of an NVMe-oF attach awaiting its namespace."""

from __future__ import annotations

import pytest

from brick_agent.errors import DeviceNotFound
from tests.unit.connectors.nvmeof_fakes import FakeNs
from tests.unit.connectors.test_nvmeof import (
    NQN,
    U1,
    U2,
    make,
    props,
    roots,  # noqa: F401  (a fixture)
    tcp,
)

U_ABSENT = "0f0e0d0c-0b0a-4908-8706-050403020100"


@pytest.mark.parametrize("attempts", [1, 3])
def test_rescans_while_waiting_stop_after_device_scan_attempts(tmp_path, roots, attempts):
    kernel, conn = make(tmp_path, roots, device_wait_timeout=0.8)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props(vol_uuid=U1))
    conn.device_scan_attempts = attempts
    conn.rescan_interval = 0.01

    with pytest.raises(DeviceNotFound):
        conn.connect_volume(props(vol_uuid=U_ABSENT))  # never mapped

    assert kernel.rescans == ["nvme0"] * (1 + attempts)  # the attach's own + the bound


def test_factory_passes_device_scan_attempts(tmp_path, roots):
    from brick_agent.connectors import factory

    kernel, conn = make(tmp_path, roots)
    built = factory(
        "NVME", None, device_scan_attempts=5, conf=conn.conf, roots=roots, actions=kernel
    )
    assert built.device_scan_attempts == 5


def test_a_late_namespace_is_still_found_by_the_bounded_rescans(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    sub = kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props(vol_uuid=U1))
    conn.device_scan_attempts = 2
    conn.rescan_interval = 0.01
    sub.namespaces[2] = FakeNs(2, U2, None)  # mapped, no AEN: only a rescan shows it

    info = conn.connect_volume(props(vol_uuid=U2))
    assert info["path"] == roots.devfs("nvme0n2") and len(kernel.rescans) <= 3
