"""NVMeOFConnector on the sysfs tree captured from the lab (tests/unit/data/nvme-tcp).

The capture: subsystem nqn.2014-08.org.brick-lab:subsys-mp with 2 namespaces
reached through 2 live TCP controllers (native multipath).  Privileged writes go
through the real ``do_*`` functions of brick_agent.privileged.nvme with the
tree's roots, so a rescan or delete shows up as a write to the attribute file.
"""

from __future__ import annotations

import json
import os

import pytest

from brick_agent import config
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_agent.connectors.nvmeof.actions import ConnectRequest
from brick_agent.errors import TargetUnreachable
from brick_agent.host.udev import DeviceWatch
from brick_agent.privileged import nvme as priv_nvme
from tests.unit.sysfs_trees import extract_tree

NQN = "nqn.2014-08.org.brick-lab:subsys-mp"
NS1 = ("964a6693-bf18-4bff-8adb-7ec7def09573", "685b29a79bcb491dbf15d81215643e50")
NS2 = ("36196d86-9f26-4305-950e-0a15b43ad424", "74c88826ee994294826226db2a74d413")
PORTALS = [["127.0.0.1", 4420, "tcp"], ["127.0.0.2", 4420, "tcp"]]


class TreeActions:
    """Privileged actions on the captured tree: the real do_* writers, no commands."""

    def __init__(self, roots):
        self.roots = roots
        self.connects: list[ConnectRequest] = []
        self.flushed: list[str] = []

    def start_daemon(self):
        """In-process privileged code: no daemon to start."""

    def connect(self, request):
        self.connects.append(request)
        raise TargetUnreachable("no network in a captured tree")

    def disconnect(self, controller):
        priv_nvme.do_disconnect(self.roots, controller)

    def rescan(self, controller):
        priv_nvme.do_rescan_controller(self.roots, controller)

    def flush(self, device, timeout):
        self.flushed.append(device)

    def write_host_identity(self, hostnqn, hostid):
        priv_nvme.do_write_host_identity(self.roots, hostnqn, hostid)

    def md_create(self, name, devices):
        raise AssertionError("not replicated")

    def md_stop(self, name):
        raise AssertionError("not replicated")


@pytest.fixture
def tree(tmp_path):
    roots = extract_tree("nvme-tcp", tmp_path)
    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp_path / "locks"), group="brick_agent")
    conf.set_override("device_wait_timeout", 0.5, group="brick_agent")
    actions = TreeActions(roots)
    conn = NVMeOFConnector(
        None,
        None,
        conf=conf,
        roots=roots,
        actions=actions,
        watch_factory=lambda: DeviceWatch(use_netlink=False, poll_interval=0.01, roots=roots),
    )
    return roots, actions, conn


def attr(roots, *parts):
    with open(roots.sysfs(*parts)) as fh:
        return fh.read().strip()


def props(ns=NS1, nsid=1):
    return {
        "target_nqn": NQN,
        "vol_uuid": ns[0],
        "volume_nguid": ns[1],
        "ns_id": nsid,
        "portals": PORTALS,
    }


def test_capture_is_what_the_tests_assume(tree):
    roots, _, _ = tree
    note = json.load(open(os.path.join(os.path.dirname(roots.sys), "capture.json")))["note"]
    for ns in (NS1, NS2):
        assert ns[0] in note
    assert attr(roots, "class", "nvme", "nvme1", "address").startswith("traddr=127.0.0.2")


def test_attach_reuses_both_live_controllers_and_returns_head(tree):
    roots, actions, conn = tree
    info = conn.connect_volume(props())
    assert info == {"type": "block", "path": roots.devfs("nvme0n1")}
    assert actions.connects == []  # both portals already have live controllers
    for ctrl in ("nvme0", "nvme1"):  # the namespace is visible on both: no rescan
        assert attr(roots, "class", "nvme", ctrl, "rescan_controller") == ""
    # the host identity on the tree was used, not replaced
    assert conn.host_identity().hostnqn == attr(roots, "class", "nvme", "nvme0", "hostnqn")


def test_attach_second_namespace_by_nguid_only(tree):
    roots, _, conn = tree
    info = conn.connect_volume({"target_nqn": NQN, "volume_nguid": NS2[1], "portals": PORTALS})
    assert info["path"] == roots.devfs("nvme0n2")


def test_other_host_nqn_does_not_reuse_these_controllers(tree):
    roots, actions, conn = tree
    other = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001"
    with pytest.raises(TargetUnreachable):
        conn.connect_volume(props() | {"host_nqn": other})
    assert [r.hostnqn for r in actions.connects] == [other, other]
    assert attr(roots, "class", "nvme", "nvme0", "delete_controller") == ""


def test_detach_with_other_namespace_present_keeps_controllers(tree):
    roots, actions, conn = tree
    conn.disconnect_volume(props(), {"type": "block", "path": roots.devfs("nvme0n1")})
    assert actions.flushed == [roots.devfs("nvme0n1")]
    for ctrl in ("nvme0", "nvme1"):
        assert attr(roots, "class", "nvme", ctrl, "delete_controller") == ""


def test_paths_and_inventory(tree):
    roots, _, conn = tree
    assert conn.get_volume_paths(props()) == [roots.devfs("nvme0n1")]
    assert conn.get_volume_paths(props(NS2, 2)) == [roots.devfs("nvme0n2")]
    vols = conn.get_all_available_volumes()
    assert [(v["name"], v["uuid"], v["nguid"], v["nsid"], v["size"]) for v in vols] == [
        ("nvme0n1", NS1[0], NS1[1], 1, 131072 * 512),
        ("nvme0n2", NS2[0], NS2[1], 2, attr_size(roots, "nvme0n2")),
    ]
    assert [(c["name"], c["traddr"], c["trsvcid"], c["state"]) for c in vols[0]["controllers"]] == [
        ("nvme0", "127.0.0.1", "4420", "live"),
        ("nvme1", "127.0.0.2", "4420", "live"),
    ]
    assert all(v["subsysnqn"] == NQN and v["native_multipath"] for v in vols)


def attr_size(roots, name):
    return int(attr(roots, "class", "block", name, "size")) * 512
