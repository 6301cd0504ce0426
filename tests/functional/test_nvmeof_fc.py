"""Scenario 8: NVMe over FC through nvme-fcloop (lab kernel 6.12 only).

    tools/kernel-lab/lab run --kernel 6.12 -- \
        tools/kernel-lab/guest-pytest tests/functional/test_nvmeof_fc.py -q

fcloop has no SCSI fc_host, so the local port is given to the connector
(``fc_local_ports``); on real HBAs it comes from /sys/class/fc_host.
"""

from __future__ import annotations

import pytest

from brick_agent import privileged
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_lab import fcloop_available
from brick_lab.rawhost import dev_uuid, io_roundtrip, nvme_ctrls_of, read
from brick_lab.scenarios import nvmet_over_fcloop
from tests.functional.conftest import make_conf

pytestmark = pytest.mark.realkernel


@pytest.fixture
def fc_target():
    """(FcLoop, NvmetSubsystem): one namespace exported on the fcloop target port."""
    if not fcloop_available():
        pytest.skip("nvme-fcloop not available (needs the 6.12 lab kernel: --kernel 6.12)")
    with nvmet_over_fcloop() as target:
        yield target


def test_8_nvme_fc_attach_io_detach(tmp_path, fc_target):
    fc, sub = fc_target
    conf = make_conf(tmp_path)
    privileged.init(conf)
    conn = NVMeOFConnector(None, None, conf=conf, fc_local_ports=[fc.host_traddr])
    ns = sub.namespaces[1]
    props = {
        "target_nqn": sub.nqn,
        "vol_uuid": ns.uuid,
        "ns_id": 1,
        "portals": [[fc.target_traddr, None, "fc"]],
    }
    info = conn.connect_volume(props)
    assert dev_uuid(info["path"]) == ns.uuid
    (c,) = nvme_ctrls_of(sub.nqn)
    assert read(f"/sys/class/nvme/{c}/transport") == "fc"
    assert read(f"/sys/class/nvme/{c}/address").startswith(f"traddr={fc.target_traddr}")
    io_roundtrip(info["path"])
    vol = [v for v in conn.get_all_available_volumes() if v["subsysnqn"] == sub.nqn]
    assert vol[0]["controllers"][0]["transport"] == "fc"
    info2 = conn.connect_volume(props)  # reuse: the fc controller matches the portal
    assert info2 == info and nvme_ctrls_of(sub.nqn) == [c]
    conn.disconnect_volume(props, info)
    assert nvme_ctrls_of(sub.nqn) == []
