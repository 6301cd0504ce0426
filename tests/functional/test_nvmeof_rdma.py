"""NVMe over RDMA through soft-RoCE (rdma_rxe on a veth pair) against nvmet.

    tools/kernel-lab/lab run -- \
        tools/kernel-lab/guest-pytest tests/functional/test_nvmeof_rdma.py -m realkernel

The RDMA device, its netdev and the RDMA modules are set up per test and
removed afterwards (no leftovers for the other lab tests).  Assertions read
raw sysfs (independent of brick_agent.host).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator

import pytest

from brick_agent import privileged
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_lab import NvmetSubsystem, RxeLink, rxe_available
from brick_lab.rawhost import dev_uuid, io_roundtrip, nvme_ctrls_of, read
from tests.functional.conftest import make_conf

pytestmark = pytest.mark.realkernel

PORT = 4420


@pytest.fixture
def connector(tmp_path) -> NVMeOFConnector:
    conf = make_conf(tmp_path)
    privileged.init(conf)
    return NVMeOFConnector(None, None, conf=conf)


@pytest.fixture(autouse=True)
def no_leftover_controllers() -> Iterator[None]:
    before = set(glob.glob("/sys/class/nvme/nvme*"))
    yield
    extra = set(glob.glob("/sys/class/nvme/nvme*")) - before
    for c in extra:  # clean up for the next test, then fail this one
        with open(f"{c}/delete_controller", "w") as f:
            f.write("1")
    assert not extra, f"controllers left behind: {sorted(extra)}"


def _skip_unless_rxe() -> None:
    why = rxe_available()
    if why:
        pytest.skip(f"soft-RoCE (rdma_rxe) cannot be set up on this kernel: {why}")


@pytest.fixture
def rdma_target() -> Iterator[tuple[RxeLink, NvmetSubsystem]]:
    """(RxeLink, NvmetSubsystem): one namespace exported over rdma on the rxe address."""
    _skip_unless_rxe()
    with RxeLink() as rxe, NvmetSubsystem(ports=()) as sub:
        sub.add_port(f"{rxe.address}:{PORT}", trtype="rdma")
        yield rxe, sub
    assert rxe.leftovers() == []


def test_rdma_attach_io_detach_leaves_nothing(connector):
    _skip_unless_rxe()
    with RxeLink() as rxe, NvmetSubsystem(ports=()) as sub:
        sub.add_port(f"{rxe.address}:{PORT}", trtype="rdma")
        ns = sub.namespaces[1]
        props = {
            "target_nqn": sub.nqn,
            "vol_uuid": ns.uuid,
            "portals": [[rxe.address, PORT, "rdma"]],
        }
        t0 = time.monotonic()
        info = connector.connect_volume(props)
        attach = time.monotonic() - t0
        assert info["type"] == "block" and info["path"].startswith("/dev/nvme")
        assert dev_uuid(info["path"]) == ns.uuid
        (c,) = nvme_ctrls_of(sub.nqn)
        assert read(f"/sys/class/nvme/{c}/transport") == "rdma"
        assert read(f"/sys/class/nvme/{c}/address").startswith(
            f"traddr={rxe.address},trsvcid={PORT}"
        )
        assert read(f"/sys/class/nvme/{c}/state") == "live"
        io_roundtrip(info["path"])
        vols = [v for v in connector.get_all_available_volumes() if v["subsysnqn"] == sub.nqn]
        assert [v["uuid"] for v in vols] == [ns.uuid]
        assert vols[0]["controllers"][0]["transport"] == "rdma"
        assert vols[0]["controllers"][0]["traddr"] == rxe.address
        info2 = connector.connect_volume(props)  # reuse: the rdma controller matches the portal
        assert info2 == info and nvme_ctrls_of(sub.nqn) == [c]
        t0 = time.monotonic()
        connector.disconnect_volume(props, info)
        detach = time.monotonic() - t0
        assert nvme_ctrls_of(sub.nqn) == []
        assert not os.path.exists(info["path"])
        assert connector.get_volume_paths(props) == []
    assert rxe.leftovers() == []
    print(f"\nrdma attach {attach:.2f}s detach {detach:.2f}s")


@pytest.mark.parametrize("transport_type", ["rdma", "RoCEv2"])
def test_rdma_old_property_format(connector, rdma_target, transport_type):
    rxe, sub = rdma_target
    ns = sub.namespaces[1]
    old = {
        "nqn": sub.nqn,
        "transport_type": transport_type,
        "target_portal": rxe.address,
        "target_port": PORT,
        "volume_nguid": ns.nguid,
    }
    info = connector.connect_volume(old)
    assert dev_uuid(info["path"]) == ns.uuid
    (c,) = nvme_ctrls_of(sub.nqn)
    assert read(f"/sys/class/nvme/{c}/transport") == "rdma"
    io_roundtrip(info["path"])
    connector.disconnect_volume(old, info)
    assert nvme_ctrls_of(sub.nqn) == []
    assert not os.path.exists(info["path"])
