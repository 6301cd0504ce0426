"""The default (privileged) NVMe actions adapter: the kernel's answer mapped to results.

The privileged connect writes to ``/dev/nvme-fabrics`` and returns the new
controller, or the kernel's errno (pinned in the lab by
tests/functional/test_nvmeof.py::test_privileged_connect_contract_with_nvme_fabrics:
EALREADY for a duplicate, ECONNREFUSED for a closed port).
"""

from __future__ import annotations

import errno
import os

import pytest

from brick_agent.connectors.nvmeof.actions import (
    AlreadyConnected,
    ConnectRequest,
    PrivilegedNvmeActions,
)
from brick_agent.errors import InvalidArgument, TargetUnreachable
from brick_agent.host.roots import HostRoots
from brick_agent.privileged import nvme as priv_nvme
from tests.unit.connectors.nvmeof_fakes import FakeNs, FakeNvmeKernel

NQN = "nqn.2014-08.org.example:subsys-a"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
HOSTID = "11111111-2222-4333-8444-555555555555"
FC_TARGET = "nn-0x1000000000000001:pn-0x2000000000000001"
FC_HOST = "nn-0x1000000000000002:pn-0x2000000000000002"


@pytest.fixture
def env(tmp_path, monkeypatch):
    roots = HostRoots.under(str(tmp_path))
    kernel = FakeNvmeKernel(roots)
    kernel.add_target(NQN, [("tcp", "127.0.0.1", "4420")], [FakeNs(1, None, "ab" * 16)])
    calls = []

    def fake_connect(transport, traddr, trsvcid, nqn, **kw):
        """What the privileged connect returns for what the kernel would do."""
        calls.append((transport, traddr, trsvcid, nqn, kw))
        req = ConnectRequest(nqn, transport, traddr, trsvcid, kw["hostnqn"], kw["hostid"])
        if any(
            c["req"].traddr == traddr and c["req"].trsvcid == trsvcid for c in kernel.ctrls.values()
        ):
            return {"errno": errno.EALREADY, "error": os.strerror(errno.EALREADY)}
        if (transport, traddr, trsvcid) not in kernel.subsystems[nqn].portals:
            return {"errno": errno.ECONNREFUSED, "error": os.strerror(errno.ECONNREFUSED)}
        return {"controller": kernel.connect(req)}

    monkeypatch.setattr(priv_nvme, "connect", fake_connect)
    return roots, kernel, PrivilegedNvmeActions(roots), calls


def request(port="4420", **kw):
    return ConnectRequest(
        NQN,
        "tcp",
        "127.0.0.1",
        port,
        HOSTNQN,
        HOSTID,
        ctrl_loss_tmo=-1,
        reconnect_delay=5,
        keep_alive_tmo=15,
        timeout=7.5,
        **kw,
    )


def test_connect_returns_the_controller_the_kernel_created(env):
    roots, kernel, actions, calls = env
    assert actions.connect(request()) == "nvme0"
    transport, traddr, trsvcid, nqn, kw = calls[0]
    assert (transport, traddr, trsvcid, nqn) == ("tcp", "127.0.0.1", "4420", NQN)
    assert kw == {
        "hostnqn": HOSTNQN,
        "hostid": HOSTID,
        "host_traddr": None,
        "ctrl_loss_tmo": -1,
        "reconnect_delay": 5,
        "keep_alive_tmo": 15,
        "fast_io_fail_tmo": None,
        "timeout": 7.5,
    }


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
    monkeypatch.setattr(priv_nvme, "connect", lambda *a, **kw: {"timed_out": True})
    with pytest.raises(TargetUnreachable, match="timed out after 7.5s"):
        actions.connect(request())


def test_options_string_for_dev_nvme_fabrics():
    assert request(fast_io_fail_tmo=5).options() == (
        f"nqn={NQN},transport=tcp,traddr=127.0.0.1,trsvcid=4420,hostnqn={HOSTNQN},"
        f"hostid={HOSTID},ctrl_loss_tmo=-1,reconnect_delay=5,keep_alive_tmo=15,"
        f"fast_io_fail_tmo=5"
    )
    fc = ConnectRequest(NQN, "fc", FC_TARGET, "4420", HOSTNQN, HOSTID, host_traddr=FC_HOST)
    assert fc.options() == (
        f"nqn={NQN},transport=fc,traddr={FC_TARGET},"
        f"host_traddr={FC_HOST},hostnqn={HOSTNQN},hostid={HOSTID}"
    )


@pytest.mark.parametrize("field", ["subsysnqn", "traddr", "hostnqn", "hostid"])
def test_options_cannot_smuggle_another_option(field):
    """A value carrying ``,key=value`` is refused, not written to the kernel."""
    base = request()
    bad = ConnectRequest(**{**base.__dict__, field: getattr(base, field) + ",hostnqn=x"})
    with pytest.raises(InvalidArgument):
        bad.options()
