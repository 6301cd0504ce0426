"""dm-multipath over non-native NVMe paths: fake NVMe kernel + fake multipathd."""

from __future__ import annotations

import os

import pytest

from brick_agent.errors import DeviceNotFound, LeftoversRemain, NotSupported, VolumeIdentityMismatch
from brick_agent.host import multipath as host_mpath
from brick_agent.host.roots import HostRoots
from tests.unit.connectors.nvmeof_fakes import FakeNs
from tests.unit.connectors.test_nvmeof import G1, NQN, P1, P2, U1, make, props, tcp

TWO = (P1, P2)


@pytest.fixture
def roots(tmp_path):
    return HostRoots.under(str(tmp_path / "host"))


def setup(tmp_path, roots, ns=None, **kw):
    kernel, conn = make(tmp_path, roots, native=False, use_multipath=True, **kw)
    conn.multipath_grace = 0.05
    kernel.multipathd = True
    kernel.add_target(NQN, [tcp(), tcp("127.0.0.2")], [ns or FakeNs(1, U1, G1)])
    return kernel, conn


def test_attach_returns_map_over_every_controller_and_detach_removes_it(tmp_path, roots):
    kernel, conn = setup(tmp_path, roots)
    p = props(portals=TWO)
    info = conn.connect_volume(p)

    assert info == {"type": "block", "path": roots.devfs("dm-0"), "multipath_id": f"uuid.{U1}"}
    assert kernel.maps() == {"dm-0": ["nvme0n1", "nvme1n1"]}
    assert kernel.mp_log == []  # multipathd mapped them by itself
    assert conn.get_volume_paths(p) == [roots.devfs("dm-0")]

    conn.disconnect_volume(p, info)
    assert kernel.maps() == {}
    assert kernel.controller_names() == []
    assert roots.devfs("dm-0") in kernel.flushed  # the map was flushed before removal
    assert kernel.mp_log == [("remove", f"uuid.{U1}")]


def test_paths_are_added_when_multipathd_does_not_map_them(tmp_path, roots):
    kernel, conn = setup(tmp_path, roots)
    kernel.auto_map = False
    info = conn.connect_volume(props(portals=TWO))
    assert info["path"] == roots.devfs("dm-0")
    assert kernel.mp_log == [("add", f"uuid.{U1}", ("nvme0n1", "nvme1n1"))]
    assert kernel.maps() == {"dm-0": ["nvme0n1", "nvme1n1"]}


def test_one_portal_down_gives_a_map_with_the_live_path(tmp_path, roots):
    kernel, conn = setup(tmp_path, roots)
    kernel.auto_map = False  # a single path is not mapped by find_multipaths alone
    kernel.subsystems[NQN].portals.discard(tcp("127.0.0.2"))
    info = conn.connect_volume(props(portals=TWO))
    assert info["path"] == roots.devfs("dm-0")
    assert kernel.maps() == {"dm-0": ["nvme0n1"]}


def test_without_multipathd_falls_back_to_one_device_or_fails_when_enforced(tmp_path, roots):
    kernel, conn = setup(tmp_path, roots)
    kernel.multipathd = False
    info = conn.connect_volume(props(portals=TWO))
    assert info == {"type": "block", "path": roots.devfs("nvme0n1")}
    conn.disconnect_volume(props(portals=TWO), info)
    assert kernel.controller_names() == []

    with pytest.raises(NotSupported, match="multipathd is not running"):
        conn.connect_volume(props(portals=TWO, enforce_multipath=True))
    assert kernel.controller_names() == []  # the failed attach undid its controllers


def test_paths_disagreeing_on_identity_fail_closed(tmp_path, roots):
    kernel, conn = setup(tmp_path, roots)
    # the second controller's device carries the volume's UUID but another NGUID
    orig = kernel._ns_attrs

    def skewed(path, ns):
        orig(path, ns)
        if path.endswith("nvme1n1"):
            with open(os.path.join(path, "nguid"), "w") as fh:
                fh.write("b2b2b2b2-b2b2-b2b2-b2b2-b2b2b2b2b2b2\n")

    kernel._ns_attrs = skewed
    with pytest.raises(VolumeIdentityMismatch, match="disagree"):
        conn.connect_volume(props(portals=TWO))
    assert kernel.controller_names() == []


def test_map_holding_a_foreign_path_is_refused(tmp_path, roots):
    kernel, conn = setup(tmp_path, roots)
    kernel.auto_map = False
    real_add = kernel.multipath_add

    def add_and_foreign(wwid, devices):
        real_add(wwid, devices)
        os.makedirs(roots.sysfs("class", "block", "sdz", "holders"), exist_ok=True)
        os.symlink(
            roots.sysfs("class", "block", "sdz"),
            roots.sysfs("class", "block", "dm-0", "slaves", "sdz"),
        )

    kernel.multipath_add = add_and_foreign
    with pytest.raises(VolumeIdentityMismatch, match="sdz"):
        conn.connect_volume(props(portals=TWO))


def test_detach_keeps_controllers_when_the_map_cannot_be_removed(tmp_path, roots):
    kernel, conn = setup(tmp_path, roots)
    conn.multipath_removal_timeout = 0.2
    p = props(portals=TWO)
    info = conn.connect_volume(p)
    kernel.fail_map_remove = -1
    with pytest.raises(LeftoversRemain, match="remove map dm-0"):
        conn.disconnect_volume(p, info)
    assert kernel.controller_names() == ["nvme0", "nvme1"]  # no I/O lost under the map
    assert host_mpath.read_map(roots, "dm-0") is not None
    kernel.fail_map_remove = 0
    conn.disconnect_volume(p, info)
    assert kernel.maps() == {} and kernel.controller_names() == []


def test_extend_grows_the_paths_then_the_map(tmp_path, roots):
    kernel, conn = setup(tmp_path, roots)
    p = props(portals=TWO)
    info = conn.connect_volume(p)
    kernel.subsystems[NQN].namespaces[1].size = 2 << 30
    assert conn.extend_volume(p) == 2 << 30
    assert host_mpath.read_map(roots, "dm-0").size_bytes == 2 << 30
    assert ("resize", f"uuid.{U1}") in kernel.mp_log
    conn.disconnect_volume(p, info)


def test_no_map_in_time_falls_back_to_one_device_or_fails_when_enforced(tmp_path, roots):
    kernel, conn = setup(tmp_path, roots, multipath_wait_timeout=0.2)
    kernel.auto_map = False
    kernel.add_path_works = False  # e.g. a single path multipathd is not told about
    info = conn.connect_volume(props(portals=TWO))
    assert info == {"type": "block", "path": roots.devfs("nvme0n1")}
    assert kernel.maps() == {}
    conn.disconnect_volume(props(portals=TWO), info)

    with pytest.raises(DeviceNotFound, match="no multipath map"):
        conn.connect_volume(props(portals=TWO, enforce_multipath=True))
    assert kernel.controller_names() == []
