"""NVMeOFConnector against a fake NVMe kernel acting on a fake sysfs/dev tree."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from brick_agent import config
from brick_agent.connectors import factory
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_agent.errors import (
    DeviceNotFound,
    InvalidConnectionProperties,
    LeftoversRemain,
    TargetUnreachable,
    VolumeIdentityMismatch,
)
from brick_agent.host import nvme as hostnvme
from brick_agent.host.roots import HostRoots
from brick_agent.host.udev import DeviceWatch
from tests.unit.connectors.nvmeof_fakes import FakeNs, FakeNvmeKernel

NQN = "nqn.2014-08.org.example:subsys-a"
NQN2 = "nqn.2014-08.org.example:subsys-b"
U1, U2, U3 = (str(uuid.UUID(int=i + 0x1111)) for i in range(3))
G1 = "a1" * 16
P1 = ("127.0.0.1", 4420, "tcp")
P2 = ("127.0.0.2", 4420, "tcp")


def _conf(tmp_path, **overrides):
    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp_path / "locks"), group="brick_agent")
    conf.set_override("device_wait_timeout", 1.0, group="brick_agent")
    conf.set_override("nvme_ctrl_loss_tmo", -1, group="brick_agent")
    for key, value in overrides.items():
        conf.set_override(key, value, group="brick_agent")
    return conf


@pytest.fixture
def roots(tmp_path):
    return HostRoots.under(str(tmp_path / "host"))


def make(tmp_path, roots, native=True, use_multipath=None, **overrides):
    kernel = FakeNvmeKernel(roots, native=native)
    conn = NVMeOFConnector(
        None,
        None,
        use_multipath=use_multipath,
        conf=_conf(tmp_path, **overrides),
        roots=roots,
        actions=kernel,
        watch_factory=lambda: DeviceWatch(use_netlink=False, poll_interval=0.01, roots=roots),
    )
    return kernel, conn


def props(nqn=NQN, vol_uuid=U1, portals=(P1,), **extra):
    d = {"target_nqn": nqn, "vol_uuid": vol_uuid, "portals": [list(p) for p in portals]}
    d.update(extra)
    return d


def tcp(addr="127.0.0.1", port="4420"):
    return ("tcp", addr, port)


def nvme_dirs(roots):
    return sorted(os.listdir(roots.sysfs("class", "nvme")))


# ------------------------------------------------------------------- attach


def test_attach_single_portal_returns_verified_namespace_and_stable_identity(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, G1)])
    given = props()
    snapshot = {k: (list(v) if isinstance(v, list) else v) for k, v in given.items()}

    info = conn.connect_volume(given)

    assert info == {"type": "block", "path": roots.devfs("nvme0n1")}
    assert given == snapshot  # caller's dict untouched
    ns = [n for n in hostnvme.nvme_namespaces(roots) if n.name == "nvme0n1"][0]
    assert ns.uuid == U1 and ns.controllers == ("nvme0",)
    # the identity used for the connect was created once and persisted
    hostnqn = open(roots.etcfs("nvme", "hostnqn")).read().strip()
    hostid = open(roots.etcfs("nvme", "hostid")).read().strip()
    req = kernel.requests[0]
    assert (req.hostnqn, req.hostid) == (hostnqn, hostid)
    assert req.ctrl_loss_tmo == -1 and req.reconnect_delay == 10
    assert "ctrl_loss_tmo=-1" in req.options() and "trsvcid=4420" in req.options()
    ctrl = hostnvme.find_controllers(roots, nqn=NQN)[0]
    assert (ctrl.traddr, ctrl.trsvcid, ctrl.hostnqn) == ("127.0.0.1", "4420", hostnqn)


def test_attach_reuses_live_controller_and_rescans(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    sub = kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props())
    sub.namespaces[2] = FakeNs(2, U2, None)  # mapped later, no AEN

    info = conn.connect_volume(props(vol_uuid=U2))

    assert len(kernel.requests) == 1  # no second connect
    assert kernel.rescans == ["nvme0"]
    assert info["path"] == roots.devfs("nvme0n2")
    assert nvme_dirs(roots) == ["nvme0"]


def test_attach_finds_by_nguid_then_nsid_old_format(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, None, G1), FakeNs(7, U2, None)])
    by_nguid = conn.connect_volume(
        {
            "nqn": NQN,
            "transport_type": "tcp",
            "target_portal": "127.0.0.1",
            "target_port": 4420,
            "volume_nguid": G1.upper(),
        }
    )
    by_nsid = conn.connect_volume(
        {
            "nqn": NQN,
            "transport_type": "tcp",
            "target_portal": "127.0.0.1",
            "target_port": 4420,
            "ns_id": 7,
        }
    )
    names = {n.name: n for n in hostnvme.nvme_namespaces(roots)}
    assert names[os.path.basename(by_nguid["path"])].nguid == G1
    assert names[os.path.basename(by_nsid["path"])].nsid == 7


def test_target_without_identity_is_refused(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    with pytest.raises(DeviceNotFound, match="refusing to guess"):
        conn.connect_volume(
            {"nqn": NQN, "transport_type": "tcp", "target_portal": "127.0.0.1", "target_port": 4420}
        )
    assert kernel.requests == []


def test_invalid_properties_raise_before_any_action(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    with pytest.raises(InvalidConnectionProperties):
        conn.connect_volume({"target_nqn": NQN, "portals": [["127.0.0.1", "x", "tcp"]]})
    assert kernel.requests == []


def test_native_multipath_connects_all_portals_one_device(tmp_path, roots):
    kernel, conn = make(tmp_path, roots, native=True)
    kernel.add_target(NQN, [tcp(), tcp("127.0.0.2")], [FakeNs(1, U1, None)])
    info = conn.connect_volume(props(portals=(P1, P2)))
    assert info["path"] == roots.devfs("nvme0n1")
    assert kernel.controller_names(NQN) == ["nvme0", "nvme1"]
    ns = [n for n in hostnvme.nvme_namespaces(roots) if n.uuid == U1]
    assert len(ns) == 1 and ns[0].controllers == ("nvme0", "nvme1")


def test_non_native_single_path_connects_first_working_portal_only(tmp_path, roots):
    kernel, conn = make(tmp_path, roots, native=False)
    kernel.add_target(NQN, [tcp(), tcp("127.0.0.2")], [FakeNs(1, U1, None)])
    info = conn.connect_volume(props(portals=(P1, P2)))
    assert info["path"] == roots.devfs("nvme0n1")
    assert kernel.controller_names() == ["nvme0"]


def test_non_native_with_use_multipath_one_device_per_controller(tmp_path, roots):
    kernel, conn = make(tmp_path, roots, native=False, use_multipath=True)
    kernel.add_target(NQN, [tcp(), tcp("127.0.0.2")], [FakeNs(1, U1, None)])
    info = conn.connect_volume(props(portals=(P1, P2)))
    assert kernel.controller_names() == ["nvme0", "nvme1"]
    assert sorted(conn.get_volume_paths(props(portals=(P1, P2)))) == [
        roots.devfs("nvme0n1"),
        roots.devfs("nvme1n1"),
    ]
    assert info["path"] in conn.get_volume_paths(props())


@pytest.mark.parametrize(
    "native, use_multipath, expected",
    [
        (False, True, 5),  # dm-multipath over non-native paths: lost-path I/O must fail over
        (False, None, None),  # single path: I/O waits for the reconnect (ctrl_loss_tmo)
        (True, True, None),  # native multipath fails over inside the kernel
    ],
)
def test_fast_io_fail_only_for_dm_multipath_paths(tmp_path, roots, native, use_multipath, expected):
    kernel, conn = make(tmp_path, roots, native=native, use_multipath=use_multipath)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props())
    assert [r.fast_io_fail_tmo for r in kernel.requests] == [expected]
    if expected is not None:
        assert f"fast_io_fail_tmo={expected}" in kernel.requests[0].options()


def test_unreachable_portal_does_not_fail_attach(tmp_path, roots):
    kernel, conn = make(tmp_path, roots, native=True)
    kernel.add_target(NQN, [tcp("127.0.0.2")], [FakeNs(1, U1, None)])  # .1 refuses
    info = conn.connect_volume(props(portals=(P1, P2)))
    assert info["path"] == roots.devfs("nvme0n1")
    assert {r.traddr for r in kernel.requests} == {"127.0.0.1", "127.0.0.2"}
    assert [c.traddr for c in hostnvme.find_controllers(roots, nqn=NQN)] == ["127.0.0.2"]


def test_all_portals_unreachable_raises_and_leaves_nothing(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [], [FakeNs(1, U1, None)])
    with pytest.raises(TargetUnreachable, match="127.0.0.1:4420"):
        conn.connect_volume(props(portals=(P1, P2)))
    assert nvme_dirs(roots) == []


def test_namespace_never_appears_undoes_created_controller(tmp_path, roots):
    kernel, conn = make(tmp_path, roots, device_wait_timeout=0.2)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U2, None)])
    with pytest.raises(DeviceNotFound):
        conn.connect_volume(props(vol_uuid=U3, ns_id=5))
    assert nvme_dirs(roots) == []


def test_failed_attach_keeps_controller_serving_other_volume(tmp_path, roots):
    kernel, conn = make(tmp_path, roots, device_wait_timeout=0.2)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props())
    with pytest.raises(DeviceNotFound):
        conn.connect_volume(props(vol_uuid=U3, ns_id=9))
    assert nvme_dirs(roots) == ["nvme0"]


def test_stale_namespace_with_other_uuid_is_never_returned(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    sub = kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props())  # host now has nsid 1 = U1
    sub.namespaces[1] = FakeNs(1, U2, None)  # backend reused nsid 1 for another volume

    info = conn.connect_volume(props(vol_uuid=U2, ns_id=1))

    ns = [n for n in hostnvme.nvme_namespaces(roots) if roots.devfs(n.name) == info["path"]]
    assert ns[0].uuid == U2
    assert not [n for n in hostnvme.nvme_namespaces(roots) if n.uuid == U1]


def test_stale_namespace_that_stays_raises_identity_mismatch(tmp_path, roots):
    kernel, conn = make(tmp_path, roots, device_wait_timeout=0.3)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props())
    with pytest.raises(VolumeIdentityMismatch):
        conn.connect_volume(props(vol_uuid=U2, ns_id=1))
    # the other volume's controller was not torn down
    assert nvme_dirs(roots) == ["nvme0"]


def test_host_nqn_from_properties_is_used(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    other = "nqn.2014-08.org.nvmexpress:uuid:" + U3
    conn.connect_volume(props(host_nqn=other))
    assert kernel.requests[0].hostnqn == other


# ------------------------------------------------------------------- detach


def test_detach_flushes_and_removes_controller(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    info = conn.connect_volume(props())
    conn.disconnect_volume(props(), info)
    assert kernel.flushed == [info["path"]]
    assert nvme_dirs(roots) == []
    assert not os.path.exists(info["path"])


def test_shared_subsystem_detach_keeps_controller_until_last(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    sub = kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None), FakeNs(2, U2, None)])
    a = conn.connect_volume(props(vol_uuid=U1))
    b = conn.connect_volume(props(vol_uuid=U2))
    assert len(kernel.requests) == 1

    conn.disconnect_volume(props(vol_uuid=U1), a)
    assert nvme_dirs(roots) == ["nvme0"]
    assert os.path.exists(b["path"])
    # the backend unmaps volume 1 (terminate_connection); AEN -> kernel rescan
    del sub.namespaces[1]
    kernel.rescan("nvme0")
    conn.disconnect_volume(props(vol_uuid=U2), b)
    assert nvme_dirs(roots) == []


def test_detach_flush_failure_without_force_keeps_everything(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    info = conn.connect_volume(props())
    kernel.fail_flush.add(info["path"])
    with pytest.raises(LeftoversRemain) as err:
        conn.disconnect_volume(props(), info)
    assert err.value.leftovers == [info["path"]]
    assert nvme_dirs(roots) == ["nvme0"]


def test_detach_force_disconnects_despite_flush_failure_and_reports(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    info = conn.connect_volume(props())
    kernel.fail_flush.add(info["path"])
    with pytest.raises(LeftoversRemain, match="flush"):
        conn.disconnect_volume(props(), info, force=True)
    assert nvme_dirs(roots) == []


def test_forced_detach_with_the_target_gone_returns_within_flush_timeout(tmp_path, roots):
    """The kernel holds delete_controller for a minute and more when the target is gone
    (60-93 s measured on 6.1): the detach abandons it at its deadline (flush_timeout)
    and reports the controller, which the kernel is still deleting."""
    kernel, conn = make(tmp_path, roots, flush_timeout=0.6)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props())
    kernel.stuck_disconnect.add("nvme0")
    start = time.monotonic()
    with pytest.raises(LeftoversRemain, match="delete_controller") as err:
        conn.disconnect_volume(props(), None, force=True)
    took = time.monotonic() - start
    assert took < 0.6 + 0.5, f"forced detach took {took:.2f}s"
    assert "controller nvme0" in err.value.leftovers and nvme_dirs(roots) == ["nvme0"]


def test_detach_disconnect_failure_reports_leftover_unless_ignored(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    info = conn.connect_volume(props())
    kernel.fail_disconnect.add("nvme0")
    with pytest.raises(LeftoversRemain) as err:
        conn.disconnect_volume(props(), info)
    assert "controller nvme0" in err.value.leftovers
    conn.disconnect_volume(props(), info, force=True, ignore_errors=True)  # no raise
    kernel.fail_disconnect.clear()
    conn.disconnect_volume(props(), info)
    assert nvme_dirs(roots) == []


def test_detach_of_absent_volume_is_a_no_op(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    conn.disconnect_volume(props(), None)
    assert kernel.flushed == []


# ------------------------------------------------------------------- replicated


def test_replicated_volume_builds_md_at_alias_degraded_when_replica_missing(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    kernel.add_target(NQN2, [], [FakeNs(1, U2, None)])  # replica 2 unreachable
    rprops = {
        "vol_uuid": U3,
        "alias": "vol-x",
        "replica_count": 2,
        "volume_replicas": [props(), props(nqn=NQN2, vol_uuid=U2, portals=(P2,))],
    }
    info = conn.connect_volume(rprops)
    assert info["path"] == roots.devfs("md", "vol-x")
    assert kernel.md_members == [roots.devfs("nvme0n1"), None]
    assert conn.get_volume_paths(rprops) == [info["path"]]
    conn.disconnect_volume(rprops, info)
    assert not os.path.exists(info["path"]) and nvme_dirs(roots) == []


# ------------------------------------------------------------------- queries / extend


def test_get_volume_paths_accepts_plain_dicts_of_every_format(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, G1)])
    assert conn.get_volume_paths(props()) == []
    info = conn.connect_volume(props())
    old = {
        "nqn": NQN,
        "transport_type": "tcp",
        "target_portal": "127.0.0.1",
        "target_port": "4420",
        "volume_nguid": G1,
    }
    assert conn.get_volume_paths(props()) == [info["path"]]
    assert conn.get_volume_paths(old) == [info["path"]]
    assert conn.get_volume_paths(props(vol_uuid=U2)) == []


def test_get_all_available_volumes_lists_nvme_namespaces_with_controllers(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp(), tcp("127.0.0.2")], [FakeNs(1, U1, G1)])
    kernel.add_target(NQN2, [tcp()], [FakeNs(3, U2, None)])
    conn.connect_volume(props(portals=(P1, P2)))
    conn.connect_volume(props(nqn=NQN2, vol_uuid=U2))
    vols = conn.get_all_available_volumes()
    assert [(v["subsysnqn"], v["uuid"], v["nsid"]) for v in vols] == [(NQN, U1, 1), (NQN2, U2, 3)]
    assert vols[0]["nguid"] == G1
    # the two portals connect in parallel: which one becomes nvme0 is not fixed
    assert sorted((c["traddr"], c["state"], c["transport"]) for c in vols[0]["controllers"]) == [
        ("127.0.0.1", "live", "tcp"),
        ("127.0.0.2", "live", "tcp"),
    ]
    assert [v["uuid"] for v in conn.get_all_available_volumes(props(nqn=NQN2))] == [U2]
    assert conn.get_search_path() == roots.dev


def test_extend_volume_rescans_and_returns_new_size(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    sub = kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None, size=1 << 30)])
    conn.connect_volume(props())
    sub.namespaces[1].size = 3 << 30
    assert conn.extend_volume(props()) == 3 << 30
    with pytest.raises(DeviceNotFound):
        conn.extend_volume(props(vol_uuid=U2))


def test_factory_builds_nvmeof_connector(tmp_path, roots):
    conn = factory("NVMEOF", conf=_conf(tmp_path), roots=roots)
    assert isinstance(conn, NVMeOFConnector) and conn.supports_multipath()


# ------------------------------------------------------------------- locking scope


def test_attaches_to_different_subsystems_run_concurrently(tmp_path, roots):
    """The lock is per subsystem NQN: two subsystems connect at the same time."""
    import threading

    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    kernel.add_target(NQN2, [tcp()], [FakeNs(1, U2, None)])
    conn.host_identity()
    kernel.connect_delay = 0.3
    results = {}
    threads = [
        threading.Thread(
            target=lambda k, p: results.__setitem__(k, conn.connect_volume(p)), args=(k, p)
        )
        for k, p in (("a", props()), ("b", props(nqn=NQN2, vol_uuid=U2)))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert kernel.max_in_connect == 2
    assert {os.path.basename(r["path"]) for r in results.values()} == {"nvme0n1", "nvme1n1"}


def test_attaches_to_one_subsystem_are_serialised_and_share_the_controller(tmp_path, roots):
    import threading

    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None), FakeNs(2, U2, None)])
    conn.host_identity()
    kernel.connect_delay = 0.2
    results = {}
    threads = [
        threading.Thread(
            target=lambda k, p: results.__setitem__(k, conn.connect_volume(p)), args=(k, p)
        )
        for k, p in (("a", props()), ("b", props(vol_uuid=U2)))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(kernel.requests) == 1 and kernel.max_in_connect == 1
    assert sorted(os.path.basename(r["path"]) for r in results.values()) == ["nvme0n1", "nvme0n2"]


def test_identity_rules():
    from brick_agent.connectors.nvmeof.connector import is_stale, matches
    from brick_agent.properties import NvmeTarget

    def ns(nsid, uuid=None, nguid=None):
        return hostnvme.NvmeNamespace(
            name="nvme0n1",
            nsid=nsid,
            uuid=uuid,
            nguid=nguid,
            wwid=None,
            size_bytes=0,
            subsystem_name="nvme-subsys0",
            controllers=("nvme0",),
            paths=("nvme0c0n1",),
        )

    t = NvmeTarget(NQN, (), uuid=U1, nguid=G1, nsid=1)
    assert matches(ns(1, U1, G1), t) and not is_stale(ns(1, U1, G1), t)
    assert matches(ns(1, U1, None), t)  # NGUID not reported: UUID decides
    assert not matches(ns(1, U2, G1), t) and is_stale(ns(1, U2, G1), t)
    assert not matches(ns(1, U1, "b2" * 16), t)  # conflicting NGUID: not ours
    assert matches(ns(4, U1, G1), t)  # moved NSID but same UUID/NGUID
    assert not matches(ns(2, U2, None), t) and not is_stale(ns(2, U2, None), t)
    only_nguid = NvmeTarget(NQN, (), nguid=G1)
    assert matches(ns(3, None, G1), only_nguid) and not matches(ns(3, U1, None), only_nguid)
    only_nsid = NvmeTarget(NQN, (), nsid=3)
    assert matches(ns(3, U2, None), only_nsid) and not matches(ns(2), only_nsid)
    assert not matches(ns(1), NvmeTarget(NQN, ()))  # nothing to identify by: never


def test_failed_attach_logs_a_snapshot_of_the_subsystem(tmp_path, roots, caplog):
    kernel, conn = make(tmp_path, roots, device_wait_timeout=0.2)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props())
    with caplog.at_level("WARNING"), pytest.raises(DeviceNotFound):
        conn.connect_volume(props(vol_uuid=U3, ns_id=4))
    text = caplog.text
    assert "host saw" in text and "'nvme0'" in text and U1 in text and "'live'" in text


def test_nvme_fc_connects_from_each_online_local_port(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    remote = "nn-0x20000090fa000001:pn-0x10000090fa000001"
    local = []
    for n, (wwnn, wwpn, state) in enumerate(
        (
            ("20000090fab00001", "10000090fab00001", "Online"),
            ("20000090fab00002", "10000090fab00002", "Online"),
            ("20000090fab00003", "10000090fab00003", "Linkdown"),
        )
    ):
        base = roots.sysfs("class", "fc_host", f"host{n}")
        os.makedirs(base)
        for attr, value in (
            ("node_name", "0x" + wwnn),
            ("port_name", "0x" + wwpn),
            ("port_state", state),
        ):
            with open(os.path.join(base, attr), "w") as fh:
                fh.write(value + "\n")
        local.append(f"nn-0x{wwnn}:pn-0x{wwpn}")
    kernel.add_target(NQN, [("fc", remote, "")], [FakeNs(1, U1, None)])
    info = conn.connect_volume(
        {"target_nqn": NQN, "vol_uuid": U1, "portals": [[remote, None, "fc"]]}
    )
    assert info["path"] == roots.devfs("nvme0n1")
    # the two connects run in parallel: their order is not part of the contract
    assert sorted((r.transport, r.traddr, r.trsvcid, r.host_traddr) for r in kernel.requests) == [
        ("fc", remote, None, local[0]),
        ("fc", remote, None, local[1]),
    ]
    assert "trsvcid" not in kernel.requests[0].options()


def test_nvme_fc_without_local_port_is_unreachable(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    remote = "nn-0x20000090fa000001:pn-0x10000090fa000001"
    kernel.add_target(NQN, [("fc", remote, "")], [FakeNs(1, U1, None)])
    with pytest.raises(TargetUnreachable, match="no online local FC port"):
        conn.connect_volume({"target_nqn": NQN, "vol_uuid": U1, "portals": [[remote, None, "fc"]]})
    assert kernel.requests == []


def test_reconnecting_controller_is_waited_for_not_duplicated(tmp_path, roots):
    """All paths 'connecting' (array reboot, ctrl_loss_tmo=-1): no second controller;
    the namespace device that stays present (I/O queued) is returned."""
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    info = conn.connect_volume(props())
    with open(roots.sysfs("class", "nvme", "nvme0", "state"), "w") as fh:
        fh.write("connecting\n")
    assert conn.connect_volume(props()) == info
    assert len(kernel.requests) == 1 and kernel.rescans == []


def test_reconnecting_controller_without_namespace_times_out_cleanly(tmp_path, roots):
    kernel, conn = make(tmp_path, roots, device_wait_timeout=0.2)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props())
    with open(roots.sysfs("class", "nvme", "nvme0", "state"), "w") as fh:
        fh.write("connecting\n")
    with pytest.raises(DeviceNotFound):
        conn.connect_volume(props(vol_uuid=U2, ns_id=2))
    assert len(kernel.requests) == 1 and nvme_dirs(roots) == ["nvme0"]


class CheckingKernel(FakeNvmeKernel):
    """The fake kernel behind the privileged connect's own checks (identity, options)."""

    def connect(self, req):
        from brick_agent.privileged import nvme as priv_nvme

        priv_nvme.fabrics_options(
            req.transport,
            req.traddr,
            req.trsvcid,
            req.subsysnqn,
            hostnqn=req.hostnqn,
            hostid=req.hostid,
        )
        priv_nvme._require_own_identity(self.roots, req.hostnqn, req.hostid)
        return super().connect(req)


def test_a_connect_the_privileged_side_refuses_is_invalid_properties_not_unreachable(
    tmp_path, roots
):
    """host_nqn naming another host: refused by the privileged connect (NotOwned), reported
    as the caller's bad property, and nothing is left behind (issue 14)."""
    kernel = CheckingKernel(roots)
    conn = NVMeOFConnector(
        None,
        None,
        conf=_conf(tmp_path),
        roots=roots,
        actions=kernel,
        watch_factory=lambda: DeviceWatch(use_netlink=False, poll_interval=0.01, roots=roots),
    )
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    other = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
    with pytest.raises(InvalidConnectionProperties) as err:
        conn.connect_volume(props(host_nqn=other))
    assert err.value.key == "host_nqn" and other in str(err.value)
    assert nvme_dirs(roots) == []
    info = conn.connect_volume(props())  # this host's identity: attached
    assert info["path"] == roots.devfs("nvme0n1")
