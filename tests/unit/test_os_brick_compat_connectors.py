"""The compat connector classes: os-brick's classes and shapes, brick_agent behind them.

A fake brick_agent connector stands behind each compat connector; the tests
check what a caller of os-brick sees (classes, return shapes, exception types)
and what reaches brick_agent.
"""

from __future__ import annotations

import os
import sys
import traceback
import types

import pytest

ob_exc = pytest.importorskip("os_brick.exception")

from os_brick.initiator.connectors import fibre_channel as ob_fc  # noqa: E402
from os_brick.initiator.connectors import iscsi as ob_iscsi  # noqa: E402
from os_brick.initiator.connectors import nvmeof as ob_nvmeof  # noqa: E402

from brick_agent import errors  # noqa: E402
from brick_agent.os_brick_compat import connectors as compat  # noqa: E402
from brick_agent.os_brick_compat import errors as cerrors  # noqa: E402

ISCSI_DATA = {
    "target_portal": "192.0.2.10:3260",
    "target_lun": 1,
    "volume_id": "v1",
    "target_iqn": "iqn.2010-10.org.openstack:volume-v1",
    "encrypted": False,
}
NVME_DATA = {
    "target_nqn": "nqn.2014-08.org.lab:sub",
    "portals": [("192.0.2.11", 4420, "tcp")],
    "vol_uuid": "8d6c2bbd-6b8f-4bd1-8a55-5f9d2a3ab3d5",
}
FC_DATA = {"target_wwn": ["500a098280feeba5"], "target_lun": 1}


class FakeAgent:
    """Stands in for a brick_agent connector: records calls, answers or raises."""

    def __init__(
        self, result=None, error: BaseException | None = None, rows=(), search="/dev/disk/by-path"
    ):
        self.calls: list[tuple] = []
        self.result = result
        self.error = error
        self.rows = list(rows)
        self.search = search
        self.use_multipath = False
        self.opts = types.SimpleNamespace(device_wait_timeout=1.0)  # a connector's options

    def _answer(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if self.error is not None:
            raise self.error
        return self.result

    def connect_volume(self, props):
        return self._answer("connect_volume", props)

    def disconnect_volume(self, props, device_info, force=False, ignore_errors=False):
        return self._answer(
            "disconnect_volume", props, device_info, force=force, ignore_errors=ignore_errors
        )

    def extend_volume(self, props):
        return self._answer("extend_volume", props)

    def get_volume_paths(self, props):
        return self._answer("get_volume_paths", props)

    def get_all_available_volumes(self, props=None):
        self.calls.append(("get_all_available_volumes", (props,), {}))
        return self.rows

    def get_search_path(self):
        return self.search

    def supports_multipath(self):
        return True


def _with(cls, agent, **kwargs):
    conn = cls("sudo nova-rootwrap /etc/nova/rootwrap.conf", **kwargs)
    conn._agent = agent
    return conn


# ------------------------------------------------------------------ classes and construction
@pytest.mark.parametrize(
    "cls,base",
    [
        (compat.ISCSIConnector, ob_iscsi.ISCSIConnector),
        (compat.FibreChannelConnector, ob_fc.FibreChannelConnector),
        (compat.NVMeOFConnector, ob_nvmeof.NVMeOFConnector),
    ],
)
def test_compat_classes_are_os_brick_classes_and_build_nothing(cls, base, monkeypatch):
    import subprocess

    monkeypatch.setattr(subprocess, "Popen", pytest.fail)
    monkeypatch.setattr("os_brick.privileged.rootwrap.execute", pytest.fail)
    monkeypatch.setattr("brick_agent.connectors.factory", pytest.fail)
    conn = cls(
        "sudo",
        driver=None,
        use_multipath=True,
        device_scan_attempts=5,
        transport="default",
        enforce_multipath=True,
        conn={"x": 1},
        expect_raw_disk=True,
    )
    assert isinstance(conn, base)
    assert conn.use_multipath is True and conn.device_scan_attempts == 5
    assert conn._agent is None  # the brick_agent connector is built on first use
    assert conn._root_helper == "sudo"
    assert conn.driver is not None  # os-brick's HostDriver, like os-brick's own


def test_agent_built_on_first_use_with_the_os_brick_arguments(monkeypatch):
    seen = []

    def fake_factory(protocol, root_helper, **kwargs):
        seen.append((protocol, root_helper, kwargs))
        return FakeAgent(result=[])

    monkeypatch.setattr("brick_agent.connectors.factory", fake_factory)
    conn = compat.ISCSIConnector(
        "sudo", use_multipath=False, device_scan_attempts=4, transport="tcp", enforce_multipath=True
    )
    assert conn.get_volume_paths(ISCSI_DATA) == []
    conn.use_multipath = True  # os-brick callers may flip the attribute
    conn.get_volume_paths(ISCSI_DATA)
    assert seen == [
        ("ISCSI", "sudo", {"use_multipath": False, "device_scan_attempts": 4, "transport": "tcp"})
    ]
    assert conn.agent.use_multipath is True


# ------------------------------------------------------------------ contract methods
def test_connect_volume_returns_brick_agent_device_info_unchanged():
    info = {"type": "block", "path": "/dev/sdb", "scsi_wwn": "360014051"}
    agent = FakeAgent(result=info)
    conn = _with(compat.ISCSIConnector, agent)
    assert conn.connect_volume(dict(ISCSI_DATA)) == info
    assert agent.calls == [("connect_volume", (ISCSI_DATA,), {})]


def test_disconnect_passes_dicts_and_none_and_drops_non_mappings():
    agent = FakeAgent()
    conn = _with(compat.FibreChannelConnector, agent)
    conn.disconnect_volume(FC_DATA, FC_DATA, force=True)  # Nova's FC driver
    conn.disconnect_volume(FC_DATA, None)  # Nova's iSCSI/NVMe drivers

    class VolumeOvo:  # Cinder's SPDK driver
        id = "v1"

    conn.disconnect_volume(FC_DATA, VolumeOvo(), ignore_errors=True)
    assert [c[1][1] for c in agent.calls] == [FC_DATA, None, None]
    assert [c[2] for c in agent.calls] == [
        {"force": True, "ignore_errors": False},
        {"force": False, "ignore_errors": False},
        {"force": False, "ignore_errors": True},
    ]


def test_extend_returns_bytes_and_paths_are_lists():
    agent = FakeAgent(result=4 << 30)
    conn = _with(compat.NVMeOFConnector, agent)
    assert conn.extend_volume(NVME_DATA) == 4 << 30
    agent.result = ("/dev/nvme0n1",)
    assert conn.get_volume_paths(NVME_DATA) == ["/dev/nvme0n1"]
    assert conn.supports_multipath() is True


def test_get_all_available_volumes_has_os_brick_shape_scsi_named_by_path(tmp_path):
    dev = tmp_path / "dev"
    by_path = dev / "disk" / "by-path"
    by_path.mkdir(parents=True)
    for name in ("sdb", "sdc", "sda"):
        (dev / name).write_text("")
    os.symlink("../../sdb", by_path / "ip-192.0.2.10:3260-iscsi-iqn.x-lun-1")
    os.symlink("../../sda", by_path / "pci-0000:00:1f.2-ata-1")  # not a volume of ours
    rows = [{"path": str(dev / "sdb"), "lun": 1}, {"path": str(dev / "sdc"), "lun": 2}]
    conn = _with(compat.ISCSIConnector, FakeAgent(rows=rows, search=str(by_path)))
    out = conn.get_all_available_volumes()
    assert out == sorted([str(by_path / "ip-192.0.2.10:3260-iscsi-iqn.x-lun-1"), str(dev / "sdc")])
    assert all(isinstance(p, str) for p in out)
    nvme = _with(
        compat.NVMeOFConnector, FakeAgent(rows=[{"path": "/dev/nvme1n1", "nsid": 1}], search="/dev")
    )
    assert nvme.get_all_available_volumes() == ["/dev/nvme1n1"]


def test_check_valid_device_in_process_and_through_privsep(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # a service user (root reads itself)
    conn = _with(compat.ISCSIConnector, FakeAgent())
    data = tmp_path / "disk"
    data.write_bytes(b"\0" * 8192)
    assert conn.check_valid_device(str(data), run_as_root=False) is True
    assert conn.check_valid_device(str(tmp_path / "missing"), False) is False
    asked = []
    monkeypatch.setattr(
        "brick_agent.privileged.reads.block_device_readable",
        lambda name: asked.append(name) or True,
    )
    link = tmp_path / "os-brick+dev+sdb"
    os.symlink("/dev/sdb", link)
    assert conn.check_valid_device(str(link)) is True  # Cinder: (path, True)
    assert conn.check_valid_device("/etc/passwd", True) is False
    md = tmp_path / "alias"
    os.symlink("/dev/md127", md)  # replicated NVMe (md RAID)
    assert conn.check_valid_device(str(md), True) is True
    assert asked == ["sdb", "md127"]

    def refuse(name):
        raise errors.NotOwned(f"block device {name}", "not a SCSI LUN")

    monkeypatch.setattr("brick_agent.privileged.reads.block_device_readable", refuse)
    assert conn.check_valid_device(str(link), True) is False  # a local disk: no


def test_get_initiator(monkeypatch):
    monkeypatch.setattr(
        "brick_agent.os_brick_compat.properties.iscsi_initiator",
        lambda: "iqn.1993-08.org.debian:01:abc",
    )
    assert compat.ISCSIConnector(None).get_initiator() == "iqn.1993-08.org.debian:01:abc"


# ------------------------------------------------------------------ encrypted volumes
def test_encrypted_attach_returns_os_brick_link_and_detach_gets_the_device_back(monkeypatch):
    links, unlinks = [], []
    monkeypatch.setattr(
        "os_brick.privileged.rootwrap.link_root",
        lambda src, dst, force=False: links.append((src, dst, force)),
    )
    monkeypatch.setattr(
        "os_brick.privileged.rootwrap.unlink_root", lambda *paths, **kw: unlinks.append(paths)
    )
    monkeypatch.setattr(os.path, "realpath", lambda p: p)
    data = {**ISCSI_DATA, "encrypted": True}
    agent = FakeAgent(result={"type": "block", "path": "/dev/sdb", "scsi_wwn": "36001"})
    conn = _with(compat.ISCSIConnector, agent)
    info = conn.connect_volume(data)
    assert info["path"] == "/dev/disk/by-id/os-brick+dev+sdb"
    assert links == [("/dev/sdb", "/dev/disk/by-id/os-brick+dev+sdb", True)]
    agent.result = None
    nova_data = {**data, "device_path": info["path"]}
    conn.disconnect_volume(nova_data, None)
    detach = agent.calls[-1]
    assert detach[1][0]["device_path"] == "/dev/sdb"  # brick_agent sees the device
    assert nova_data["device_path"] == info["path"]  # the caller's dict is untouched
    assert unlinks == [("/dev/disk/by-id/os-brick+dev+sdb",)]
    agent.result = 1 << 30
    assert conn.extend_volume(nova_data) == 1 << 30
    assert agent.calls[-1][1][0]["device_path"] == "/dev/sdb"


def test_encrypted_attach_detaches_when_the_link_cannot_be_made(monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("privsep: no")

    monkeypatch.setattr("os_brick.privileged.rootwrap.link_root", fail)
    agent = FakeAgent(result={"type": "block", "path": "/dev/sdb"})
    conn = _with(compat.ISCSIConnector, agent)
    with pytest.raises(OSError, match="privsep"):
        conn.connect_volume({**ISCSI_DATA, "encrypted": True})
    name, args, kwargs = agent.calls[-1]
    assert name == "disconnect_volume" and kwargs == {"force": True, "ignore_errors": True}


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "cls,op,error,expected",
    [
        (
            compat.ISCSIConnector,
            "connect_volume",
            errors.DeviceNotFound("LUN 1 did not appear"),
            [ob_exc.VolumeDeviceNotFound],
        ),
        (
            compat.FibreChannelConnector,
            "connect_volume",
            errors.DeviceNotFound("no LUN"),
            [ob_exc.VolumeDeviceNotFound, ob_exc.NoFibreChannelVolumeDeviceFound],
        ),
        (
            compat.ISCSIConnector,
            "connect_volume",
            errors.TargetUnreachable("login failed"),
            [ob_exc.FailedISCSITargetPortalLogin, ob_exc.TargetPortalsNotFound],
        ),
        (
            compat.ISCSIConnector,
            "connect_volume",
            errors.AuthenticationFailed("CHAP"),
            [ob_exc.FailedISCSITargetPortalLogin],
        ),
        (
            compat.NVMeOFConnector,
            "connect_volume",
            errors.TargetUnreachable("refused"),
            [ob_exc.VolumeDeviceNotFound],
        ),
        (
            compat.FibreChannelConnector,
            "connect_volume",
            errors.TargetUnreachable("no HBA"),
            [ob_exc.NoFibreChannelVolumeDeviceFound],
        ),
        (
            compat.ISCSIConnector,
            "connect_volume",
            errors.VolumeIdentityMismatch("WWID differs"),
            [ob_exc.VolumeDeviceNotFound],
        ),
        (
            compat.ISCSIConnector,
            "connect_volume",
            errors.InvalidConnectionProperties("target_lun", "must be an integer"),
            [ob_exc.InvalidParameterValue, ob_exc.Invalid, ValueError],
        ),
        (
            compat.NVMeOFConnector,
            "extend_volume",
            errors.CommandFailed(["nvme", "ns-rescan"], 1),
            [ob_exc.CommandExecutionFailed],
        ),
        (
            compat.NVMeOFConnector,
            "extend_volume",
            errors.NotSupported("no multipathd"),
            [ob_exc.BrickException],
        ),
    ],
)
def test_errors_are_also_the_os_brick_exceptions_callers_catch(cls, op, error, expected):
    conn = _with(cls, FakeAgent(error=error))
    data = {
        compat.ISCSIConnector: ISCSI_DATA,
        compat.FibreChannelConnector: FC_DATA,
        compat.NVMeOFConnector: NVME_DATA,
    }[cls]
    with pytest.raises(type(error)) as info:
        getattr(conn, op)(data)
    exc = info.value
    assert exc is not error
    assert all(isinstance(exc, c) for c in expected), type(exc).__mro__
    assert isinstance(exc, ob_exc.BrickException) and isinstance(exc, errors.BrickError)
    assert str(exc) == str(error) and exc.args == error.args
    assert exc.msg == str(error)  # BrickException's attributes
    tb = "".join(traceback.format_exception(exc))
    assert "in _answer" in tb  # the original traceback is kept


def test_device_not_found_names_the_target_and_nova_ignores_it_on_iscsi_detach():
    conn = _with(compat.ISCSIConnector, FakeAgent(error=errors.DeviceNotFound("gone")))
    # nova/virt/libvirt/volume/iscsi.py: disconnect_volume
    try:
        conn.disconnect_volume(ISCSI_DATA, None, force=False)
    except ob_exc.VolumeDeviceNotFound as exc:
        assert exc.kwargs["device"] == ISCSI_DATA["target_iqn"]
    else:
        pytest.fail("no VolumeDeviceNotFound")


@pytest.mark.parametrize(
    "error",
    [
        errors.LeftoversRemain("iSCSI detach incomplete", ["sdb (flush failed)", "session3"]),
        errors.VolumeIdentityMismatch("devices disagree on the WWID"),
    ],
)
def test_detach_failures_are_never_the_volume_device_not_found_nova_ignores(error):
    conn = _with(compat.ISCSIConnector, FakeAgent(error=error))
    with pytest.raises(ob_exc.BrickException) as info:
        conn.disconnect_volume(ISCSI_DATA, None)
    assert not isinstance(info.value, ob_exc.VolumeDeviceNotFound)
    assert isinstance(info.value, type(error))
    if isinstance(error, errors.LeftoversRemain):
        assert isinstance(info.value, ob_exc.VolumePathNotRemoved)
        assert info.value.leftovers == error.leftovers
        assert info.value.kwargs["volume_path"] == "sdb (flush failed), session3"


def test_cinder_exception_chainer_keeps_working():
    """cinder/volume/driver.py _detach_volume: chain, swallow with force, then raise."""
    leftovers = errors.LeftoversRemain("NVMe detach incomplete", ["nvme1n1"])
    conn = _with(compat.NVMeOFConnector, FakeAgent(error=leftovers))
    exc = ob_exc.ExceptionChainer()
    with exc.context(True, "Disconnect failed"):
        conn.disconnect_volume(NVME_DATA, {"path": "/dev/nvme1n1"}, force=True, ignore_errors=False)
    with exc.context(True, "Remove export failed"):
        pass
    assert exc
    with pytest.raises(ob_exc.ExceptionChainer) as info:
        raise exc
    assert "NVMe detach incomplete" in str(info.value)
    assert isinstance(exc._exceptions[0][1], errors.LeftoversRemain)


def test_errors_pass_through_when_not_ours_or_already_os_brick():
    conn = _with(compat.ISCSIConnector, FakeAgent(error=OSError("EIO")))
    with pytest.raises(OSError) as info:
        conn.connect_volume(ISCSI_DATA)
    assert not isinstance(info.value, ob_exc.BrickException)
    theirs = ob_exc.VolumeDeviceNotFound(device="x")
    assert cerrors.translate(theirs, "ISCSI", cerrors.ATTACH) is theirs


def test_invalid_connector_protocol_maps_to_os_brick_value_error_and_classes_are_cached():
    mine = errors.InvalidConnectorProtocol("no connector for 'AOE'")
    new = cerrors.translate(mine, "ISCSI", cerrors.ATTACH)
    assert isinstance(new, ob_exc.InvalidConnectorProtocol) and isinstance(new, ValueError)
    assert isinstance(new, errors.InvalidConnectorProtocol)
    again = cerrors.translate(errors.InvalidConnectorProtocol("x"), "NVMEOF", cerrors.ATTACH)
    assert type(again) is type(new)
    assert "brick_agent.os_brick_compat.errors" == type(new).__module__
    assert sys.modules[type(new).__module__] is cerrors


# ------------------------------------------------------------ with a real brick_agent connector
def test_nova_nvme_driver_sequence_over_brick_agent_on_a_fake_kernel(tmp_path):
    """nova/virt/libvirt/volume/nvme.py: connect, device_path, disconnect(data, None)."""
    import uuid as uuidlib
    from brick_agent import config
    from brick_agent.connectors.nvmeof.connector import NVMeOFConnector as AgentNVMe
    from brick_agent.host import nvme as hostnvme
    from brick_agent.host.roots import HostRoots
    from brick_agent.host.udev import DeviceWatch
    from tests.unit.connectors.nvmeof_fakes import FakeNs, FakeNvmeKernel

    roots = HostRoots.under(str(tmp_path / "host"))
    conf = config.new_conf(
        overrides={
            "lock_path": str(tmp_path / "locks"),
            "device_wait_timeout": 1.0,
            "nvme_ctrl_loss_tmo": -1,
        }
    )
    kernel = FakeNvmeKernel(roots)
    nqn, vol = "nqn.2014-08.org.example:subsys-a", str(uuidlib.UUID(int=0x1111))
    kernel.add_target(nqn, [("tcp", "127.0.0.1", "4420")], [FakeNs(1, vol, "a1" * 16)])
    conn = compat.NVMeOFConnector(
        "sudo", use_multipath=False, device_scan_attempts=5, enforce_multipath=False
    )
    conn._agent = AgentNVMe(
        None,
        None,
        conf=conf,
        roots=roots,
        actions=kernel,
        ledger=False,
        watch_factory=lambda: DeviceWatch(use_netlink=False, poll_interval=0.01, roots=roots),
    )
    data = {
        "target_nqn": nqn,
        "vol_uuid": vol,
        "portals": [("127.0.0.1", 4420, "tcp")],
        "qos_specs": None,
        "access_mode": "rw",
        "encrypted": False,
        "cacheable": False,
        "enforce_multipath": False,
    }
    info = conn.connect_volume(data)
    assert info == {"type": "block", "path": roots.devfs("nvme0n1")}
    data["device_path"] = info["path"]
    assert conn.get_volume_paths(data) == [info["path"]]
    assert conn.get_all_available_volumes() == [info["path"]]
    conn.disconnect_volume(data, None, force=False)
    assert hostnvme.nvme_controllers(roots) == []
    # an unreachable portal: the error Nova would see from os-brick
    bad = {**data, "portals": [("127.0.0.9", 4420, "tcp")]}
    with pytest.raises(ob_exc.VolumeDeviceNotFound) as exc:
        conn.connect_volume(bad)
    assert isinstance(exc.value, errors.TargetUnreachable)
    assert exc.value.kwargs["device"] == nqn
    with pytest.raises(ob_exc.InvalidParameterValue):
        conn.connect_volume({"target_nqn": nqn, "portals": "not a list"})


def test_cinder_iscsi_flow_over_brick_agent_on_a_fake_host(tmp_path):
    """cinder/volume/driver.py _connect_device/_detach_volume and Datera's login retry."""
    from brick_agent import config
    from brick_agent.connectors.iscsi.connector import ISCSIConnector as AgentISCSI
    from brick_agent.host import iscsi as host_iscsi
    from brick_agent.host.udev import DeviceWatch
    from tests.unit.connectors.scsi_fakes import FakeLun, wwid_of
    from tests.unit.connectors.test_iscsi_fakehost import FakeArray, FakeIscsi
    from tests.unit.host.fakehost import FakeHost

    host = FakeHost(tmp_path / "host")
    (tmp_path / "host" / "etc" / "iscsi").mkdir(parents=True)
    array = FakeArray()
    iqn, portals = "iqn.2003-01.org.linux-iscsi.lab:tgt-a", ["127.0.0.1:3260", "127.0.0.2:3260"]
    array.add(iqn, portals, {1: FakeLun(wwid_of(2))})
    conf = config.new_conf(
        overrides={
            "lock_path": str(tmp_path / "locks"),
            "device_wait_timeout": 1.0,
            "login_timeout": 0.5,
            "device_removal_timeout": 1.0,
        }
    )
    # cinder/volume/volume_utils.py brick_get_connector('iscsi', use_multipath=False, ...)
    conn = compat.ISCSIConnector(
        "sudo cinder-rootwrap /etc/cinder/rootwrap.conf",
        driver=None,
        use_multipath=False,
        device_scan_attempts=3,
        conn={"driver_volume_type": "iscsi"},
    )
    conn._agent = AgentISCSI(
        conf=conf,
        roots=host.roots,
        actions=FakeIscsi(host, array),
        ledger=False,
        watch_factory=lambda: DeviceWatch(roots=host.roots, use_netlink=False, poll_interval=0.005),
    )
    data = {
        "target_discovered": False,
        "target_portal": portals[0],
        "target_iqn": iqn,
        "target_lun": 1,
        "volume_id": "v1",
        "auth_method": None,
        "encrypted": False,
        "enforce_multipath": False,
    }
    device = conn.connect_volume(data)
    assert device["type"] == "block" and device["path"].startswith(host.roots.dev)
    assert conn.check_valid_device(device["path"], False) is True
    assert isinstance(conn, ob_iscsi.ISCSIConnector)  # rekey-capable for Cinder
    exc = ob_exc.ExceptionChainer()
    with exc.context(True, "Disconnect failed"):
        conn.disconnect_volume(data, device, force=True, ignore_errors=False)
    assert not exc
    assert host_iscsi.iscsi_sessions(host.roots) == []
    # datera_api21.py: retries connect_volume on FailedISCSITargetPortalLogin
    array.unreachable.update(portals)
    with pytest.raises(ob_exc.FailedISCSITargetPortalLogin):
        conn.connect_volume(data)
    assert host_iscsi.iscsi_sessions(host.roots) == []
