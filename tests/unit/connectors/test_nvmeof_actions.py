"""The default (privileged) NVMe actions adapter: nvme-cli results mapped from sysfs.

nvme-cli 2.3 outputs pinned from the lab (tests/functional/test_nvmeof.py,
test_privileged_connect_contract_with_nvme_cli): a duplicate connect exits 1
with "already connected"; a refused portal exits 1 with
"Failed to write to /dev/nvme-fabrics: Connection refused".  The adapter never
parses that text: it decides from sysfs whether the controller exists.
"""

from __future__ import annotations

import pytest

from brick_agent.connectors.nvmeof_actions import (AlreadyConnected, ConnectRequest,
                                                   PrivilegedNvmeActions)
from brick_agent.errors import CommandFailed, TargetUnreachable
from brick_agent.host.roots import HostRoots
from brick_agent.privileged import nvme as priv_nvme
from tests.unit.connectors.nvmeof_fakes import FakeNs, FakeNvmeKernel

NQN = "nqn.2014-08.org.example:subsys-a"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
HOSTID = "11111111-2222-4333-8444-555555555555"
DUPLICATE = (1, "already connected\n")
REFUSED = (1, "Failed to write to /dev/nvme-fabrics: Connection refused\n"
              "could not add new controller: connection refused\n")


@pytest.fixture
def env(tmp_path, monkeypatch):
    roots = HostRoots.under(str(tmp_path))
    kernel = FakeNvmeKernel(roots)
    kernel.add_target(NQN, [("tcp", "127.0.0.1", "4420")], [FakeNs(1, None, "ab" * 16)])
    calls = []

    def fake_connect(transport, traddr, trsvcid, nqn, **kw):
        """What nvme-cli does: create the controller, or fail like 2.3 does."""
        calls.append((transport, traddr, trsvcid, nqn, kw))
        req = ConnectRequest(nqn, transport, traddr, trsvcid, kw["hostnqn"], kw["hostid"])
        if any(c["req"].traddr == traddr and c["req"].trsvcid == trsvcid
               for c in kernel.ctrls.values()):
            raise CommandFailed(["nvme", "connect"], *DUPLICATE)
        if (transport, traddr, trsvcid) not in kernel.subsystems[nqn].portals:
            raise CommandFailed(["nvme", "connect"], *REFUSED)
        kernel.connect(req)
        return {"returncode": 0, "stdout": "", "stderr": ""}

    monkeypatch.setattr(priv_nvme, "connect", fake_connect)
    return roots, kernel, PrivilegedNvmeActions(roots), calls


def request(port="4420", **kw):
    return ConnectRequest(NQN, "tcp", "127.0.0.1", port, HOSTNQN, HOSTID, ctrl_loss_tmo=-1,
                          reconnect_delay=5, keep_alive_tmo=15, timeout=7.5, **kw)


def test_connect_returns_the_new_controller_found_in_sysfs(env):
    roots, kernel, actions, calls = env
    assert actions.connect(request()) == "nvme0"
    transport, traddr, trsvcid, nqn, kw = calls[0]
    assert (transport, traddr, trsvcid, nqn) == ("tcp", "127.0.0.1", "4420", NQN)
    assert kw == {"hostnqn": HOSTNQN, "hostid": HOSTID, "host_traddr": None,
                  "ctrl_loss_tmo": -1, "reconnect_delay": 5, "keep_alive_tmo": 15,
                  "timeout": 7.5}


def test_duplicate_connect_is_already_connected(env):
    roots, kernel, actions, _ = env
    actions.connect(request())
    with pytest.raises(AlreadyConnected):
        actions.connect(request())
    assert kernel.controller_names() == ["nvme0"]


def test_refused_portal_is_target_unreachable_with_the_reason(env):
    _, kernel, actions, _ = env
    with pytest.raises(TargetUnreachable, match="Connection refused"):
        actions.connect(request(port="4499"))
    assert kernel.controller_names() == []


def test_timed_out_connect_is_target_unreachable(env, monkeypatch):
    _, _, actions, _ = env

    def hang(*a, **kw):
        raise CommandFailed(["nvme", "connect"], None, "", timed_out=True)

    monkeypatch.setattr(priv_nvme, "connect", hang)
    with pytest.raises(TargetUnreachable, match="timed out after 7.5s"):
        actions.connect(request())


def test_options_string_for_dev_nvme_fabrics():
    assert request().options() == (
        f"nqn={NQN},transport=tcp,traddr=127.0.0.1,trsvcid=4420,hostnqn={HOSTNQN},"
        f"hostid={HOSTID},ctrl_loss_tmo=-1,reconnect_delay=5,keep_alive_tmo=15")
    fc = ConnectRequest(NQN, "fc", "nn-0x1000000000000001:pn-0x2000000000000001", None,
                        HOSTNQN, HOSTID, host_traddr="nn-0x1:pn-0x2")
    assert "trsvcid" not in fc.options() and "host_traddr=nn-0x1:pn-0x2" in fc.options()
