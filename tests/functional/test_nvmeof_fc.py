"""Scenario 8: NVMe over FC through nvme-fcloop (lab kernel 6.12 only).

    tools/kernel-lab/lab run --kernel 6.12 -- \
        tools/kernel-lab/guest-pytest tests/functional/test_nvmeof_fc.py -q

fcloop has no SCSI fc_host, so the local port is given to the connector
(``fc_local_ports``); on real HBAs it comes from /sys/class/fc_host.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from brick_agent import privileged
from brick_agent.connectors.nvmeof import NVMeOFConnector
from tests.functional.lab import NvmetSubsystem
from tests.functional.test_nvmeof import ctrls, dev_uuid, io_roundtrip, make_conf, read

pytestmark = pytest.mark.realkernel

LOCAL = ("0x10001100aa000001", "0x20001100aa000001")
REMOTE = ("0x10001100ab000001", "0x20001100ab000001")
CTL = "/sys/class/fcloop/ctl"
NVME_TARGET_ROLE = 0x20  # FC_PORT_ROLE_NVME_TARGET


def fc_addr(wwnn: str, wwpn: str) -> str:
    return f"nn-{wwnn}:pn-{wwpn}"


def _w(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def fc_target():
    if subprocess.run(["modprobe", "nvme-fcloop"], capture_output=True).returncode != 0:
        pytest.skip("nvme-fcloop not available (needs the 6.12 lab kernel: --kernel 6.12)")
    subprocess.run(["modprobe", "-a", "nvmet", "nvmet-fc", "nvme-fc"], check=True)
    _w(f"{CTL}/add_target_port", f"wwnn={REMOTE[0]},wwpn={REMOTE[1]}")
    _w(f"{CTL}/add_local_port", f"wwnn={LOCAL[0]},wwpn={LOCAL[1]}")
    _w(f"{CTL}/add_remote_port",
       f"wwnn={REMOTE[0]},wwpn={REMOTE[1]},lpwwnn={LOCAL[0]},lpwwpn={LOCAL[1]},"
       f"roles={NVME_TARGET_ROLE}")  # without the role nvme-fc refuses (EBADR)
    sub = NvmetSubsystem(namespaces=1, ports=()).create()
    port = os.path.join("/sys/kernel/config/nvmet/ports", str(sub._free_port_id()))
    os.mkdir(port)
    try:
        _w(f"{port}/addr_trtype", "fc")
        _w(f"{port}/addr_adrfam", "fc")
        _w(f"{port}/addr_traddr", fc_addr(*REMOTE))
        os.symlink(sub.subsys_dir, f"{port}/subsystems/{sub.nqn}")
        yield sub
    finally:
        link = f"{port}/subsystems/{sub.nqn}"
        if os.path.islink(link):
            os.unlink(link)
        os.rmdir(port)
        sub.destroy()
        for ctl, ids in (("del_local_port", LOCAL), ("del_remote_port", REMOTE),
                         ("del_target_port", REMOTE)):
            try:
                _w(f"{CTL}/{ctl}", f"wwnn={ids[0]},wwpn={ids[1]}")
            except FileNotFoundError:  # already gone with its peer
                pass


def test_8_nvme_fc_attach_io_detach(tmp_path, fc_target):
    conf = make_conf(tmp_path)
    privileged.init(conf)
    conn = NVMeOFConnector(None, None, conf=conf, fc_local_ports=[fc_addr(*LOCAL)])
    ns = fc_target.namespaces[1]
    props = {"target_nqn": fc_target.nqn, "vol_uuid": ns.uuid, "ns_id": 1,
             "portals": [[fc_addr(*REMOTE), None, "fc"]]}
    info = conn.connect_volume(props)
    assert dev_uuid(info["path"]) == ns.uuid
    (c,) = ctrls(fc_target.nqn)
    assert read(f"/sys/class/nvme/{c}/transport") == "fc"
    assert read(f"/sys/class/nvme/{c}/address").startswith(f"traddr={fc_addr(*REMOTE)}")
    io_roundtrip(info["path"])
    vol = [v for v in conn.get_all_available_volumes() if v["subsysnqn"] == fc_target.nqn]
    assert vol[0]["controllers"][0]["transport"] == "fc"
    info2 = conn.connect_volume(props)  # reuse: the fc controller matches the portal
    assert info2 == info and ctrls(fc_target.nqn) == [c]
    conn.disconnect_volume(props, info)
    assert ctrls(fc_target.nqn) == []
