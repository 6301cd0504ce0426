"""brick_agent.os_brick_compat.enable(): the installed os-brick, patched in place.

Checks what Nova 34 and Cinder 29 rely on (research/issue14-callers.md): the
factory's classes per protocol and architecture, patch targets that keep
resolving, os_brick.setup(conf), guard_connection's lock (the one os-brick
takes), is_multipath_running and the connector object's keys.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
import time
from unittest import mock

import pytest

os_brick = pytest.importorskip("os_brick")

from os_brick import exception as ob_exc  # noqa: E402
from os_brick.initiator import connector  # noqa: E402
from os_brick.initiator import linuxscsi  # noqa: E402
from os_brick.initiator import utils as ob_utils  # noqa: E402
from os_brick.initiator.connectors import fibre_channel as ob_fc  # noqa: E402
from os_brick.initiator.connectors import iscsi as ob_iscsi  # noqa: E402

from brick_agent import config, locking, os_brick_compat  # noqa: E402
from brick_agent.host import iscsiadm  # noqa: E402
from brick_agent.os_brick_compat import connectors as compat  # noqa: E402
from brick_agent.os_brick_compat import patch, properties  # noqa: E402

ROOT_HELPER = "sudo nova-rootwrap /etc/nova/rootwrap.conf"
ORIGINAL_FACTORY = connector.InitiatorConnector.__dict__["factory"]


@pytest.fixture
def enabled():
    os_brick_compat.enable()
    yield
    os_brick_compat.disable()


# ------------------------------------------------------------------ enable / disable
def test_importing_the_package_patches_nothing():
    assert not os_brick_compat.is_enabled()
    assert connector.InitiatorConnector.__dict__["factory"] is ORIGINAL_FACTORY
    assert (
        "brick_agent.os_brick_compat.connectors.ISCSIConnector" not in connector.unix_connector_list
    )


@pytest.mark.usefixtures("enabled")
@pytest.mark.parametrize(
    "protocol,cls,aliases",
    [
        ("ISCSI", compat.ISCSIConnector, ("ISCSIConnector",)),
        ("iscsi", compat.ISCSIConnector, ("ISCSIConnector",)),
        ("NVME", compat.NVMeOFConnector, ("NVMeOFConnector",)),
        ("nvmeof", compat.NVMeOFConnector, ("NVMeOFConnector",)),
        ("FIBRE_CHANNEL", compat.FibreChannelConnector, ("FibreChannelConnector",)),
    ],
)
def test_factory_builds_brick_agent_connectors_that_are_os_brick_classes(protocol, cls, aliases):
    conn = connector.InitiatorConnector.factory(
        protocol, ROOT_HELPER, use_multipath=True, device_scan_attempts=5
    )
    assert type(conn) is cls
    for alias in aliases:  # Nova's tests: assertIsInstance(drv.connector, connector.X)
        assert isinstance(conn, getattr(connector, alias))
    assert conn.use_multipath is True and conn.device_scan_attempts == 5


@pytest.mark.usefixtures("enabled")
def test_callers_exact_factory_calls_are_accepted():
    f = connector.InitiatorConnector.factory
    # nova/virt/libvirt/volume/iscsi.py, nvme.py, fibrechannel.py
    iscsi = f(
        "ISCSI",
        ROOT_HELPER,
        use_multipath=False,
        device_scan_attempts=5,
        transport="default",
        enforce_multipath=False,
    )
    nvme = f(
        "NVME", ROOT_HELPER, use_multipath=True, device_scan_attempts=5, enforce_multipath=True
    )
    fc = f(
        "FIBRE_CHANNEL",
        ROOT_HELPER,
        use_multipath=False,
        device_scan_attempts=5,
        enforce_multipath=False,
    )
    # cinder/volume/volume_utils.py brick_get_connector, backup manager
    cinder = f(
        "iscsi",
        ROOT_HELPER,
        driver=None,
        use_multipath=False,
        device_scan_attempts=3,
        conn={"driver_volume_type": "iscsi"},
        expect_raw_disk=True,
    )
    assert [type(c) for c in (iscsi, nvme, fc, cinder)] == [
        compat.ISCSIConnector,
        compat.NVMeOFConnector,
        compat.FibreChannelConnector,
        compat.ISCSIConnector,
    ]
    # cinder/volume/flows/manager/create_volume.py REKEY_SUPPORTED_CONNECTORS
    rekey = (ob_iscsi.ISCSIConnector, ob_fc.FibreChannelConnector)
    assert any(isinstance(cinder, c) for c in rekey) and isinstance(fc, rekey)
    assert not isinstance(nvme, rekey)


@pytest.mark.usefixtures("enabled")
@pytest.mark.parametrize(
    "protocol,kwargs,expected",
    [
        ("ISER", {}, ob_iscsi.ISCSIConnector),
        ("ISCSI", {"transport": "iser"}, ob_iscsi.ISCSIConnector),  # Nova's iSER driver
        ("ISCSI", {"transport": "bnx2i"}, ob_iscsi.ISCSIConnector),
        ("RBD", {}, None),
        ("NFS", {"nfs_mount_point_base": "/mnt"}, None),
    ],
)
def test_other_protocols_and_transports_stay_os_brick(protocol, kwargs, expected, monkeypatch):
    monkeypatch.setattr(ob_iscsi.ISCSIConnector, "_validate_iface_transport", lambda self, t: t)
    conn = connector.InitiatorConnector.factory(protocol, ROOT_HELPER, **kwargs)
    assert type(conn).__module__.startswith("os_brick.")
    if expected is not None:
        assert type(conn) is expected


@pytest.mark.usefixtures("enabled")
@pytest.mark.parametrize(
    "machine,cls",
    [
        ("s390x", "FibreChannelConnectorS390X"),
        ("s390", "FibreChannelConnectorS390X"),
        ("ppc64le", "FibreChannelConnectorPPC64"),
    ],
)
def test_arch_specific_fc_stays_os_brick_and_is_chosen_at_call_time(machine, cls):
    with mock.patch.object(platform, "machine", return_value=machine):
        conn = connector.InitiatorConnector.factory("FIBRE_CHANNEL", ROOT_HELPER)
        iscsi = connector.InitiatorConnector.factory("ISCSI", ROOT_HELPER)
    assert type(conn) is getattr(connector, cls)
    assert type(iscsi) is compat.ISCSIConnector


@pytest.mark.usefixtures("enabled")
def test_unknown_protocol_raises_os_brick_invalid_connector_protocol():
    with pytest.raises(ob_exc.InvalidConnectorProtocol) as info:
        connector.InitiatorConnector.factory("AOE", ROOT_HELPER)
    assert isinstance(info.value, ValueError)  # nova/virt/libvirt/driver.py catches this


def test_enable_for_some_protocols_only_and_disable_restores_os_brick():
    os_brick_compat.enable(["nvmeof"])
    try:
        assert type(connector.InitiatorConnector.factory("NVMEOF", None)) is compat.NVMeOFConnector
        assert type(connector.InitiatorConnector.factory("ISCSI", None)) is ob_iscsi.ISCSIConnector
        os_brick_compat.enable()  # a new set replaces the old one
        assert type(connector.InitiatorConnector.factory("ISCSI", None)) is compat.ISCSIConnector
        with pytest.raises(ValueError):
            os_brick_compat.enable(["RBD"])
    finally:
        os_brick_compat.disable()
    assert not os_brick_compat.is_enabled()
    assert connector.InitiatorConnector.__dict__["factory"].__func__ is ORIGINAL_FACTORY.__func__
    assert type(connector.InitiatorConnector.factory("ISCSI", None)) is ob_iscsi.ISCSIConnector
    assert connector.get_connector_properties is patch.original("get_connector_properties")
    assert ob_utils.guard_connection is patch.original("guard_connection")
    assert os_brick.setup is patch.original("setup")
    assert not any(p.startswith("brick_agent") for p in connector.unix_connector_list)


@pytest.mark.usefixtures("enabled")
def test_patch_targets_of_nova_and_cinder_tests_still_resolve_and_restore():
    fake = mock.Mock(name="factory")
    with mock.patch("os_brick.initiator.connector.InitiatorConnector.factory", fake):
        assert connector.InitiatorConnector.factory("NVME", "sudo") is fake.return_value
    assert type(connector.InitiatorConnector.factory("NVME", "sudo")) is compat.NVMeOFConnector
    for target in (
        "os_brick.initiator.connector.get_connector_properties",
        "os_brick.initiator.linuxscsi.LinuxSCSI.is_multipath_running",
        "os_brick.initiator.utils.guard_connection",
        "os_brick.initiator.connectors.iscsi.ISCSIConnector.connect_volume",
    ):
        with mock.patch(target) as m:
            assert m is not None


@pytest.mark.usefixtures("enabled")
def test_every_unix_connector_list_entry_resolves_with_the_contract_methods():
    """Nova's OSBrickFixture stubs connect/disconnect/extend of every listed class."""
    from oslo_utils import importutils

    paths = list(connector.unix_connector_list)
    assert set(patch.ADDED_CONNECTORS) <= set(paths)
    for path in paths:
        cls = importutils.import_class(path)
        for name in ("connect_volume", "disconnect_volume", "extend_volume"):
            assert hasattr(cls, name), path
    with mock.patch(
        "brick_agent.os_brick_compat.connectors.ISCSIConnector.connect_volume",
        return_value={"path": "/dev/sda"},
    ):
        conn = connector.InitiatorConnector.factory("ISCSI", "sudo")
        assert conn.connect_volume({}) == {"path": "/dev/sda"}


# ------------------------------------------------------------------ os_brick.setup
def test_setup_registers_brick_agent_options_on_the_service_conf(enabled, tmp_path, monkeypatch):
    from oslo_config import cfg
    from oslo_concurrency import lockutils
    from os_brick import opts as ob_opts
    from brick_agent import privileged

    conf = cfg.ConfigOpts()
    conf.register_opts(ob_opts._opts, group="os_brick")
    conf.register_opts(lockutils._opts, group="oslo_concurrency")
    cfg_file = tmp_path / "nova.conf"
    cfg_file.write_text(
        f"[oslo_concurrency]\nlock_path = {tmp_path}/oslo\n"
        f"[brick_agent]\nlock_path = {tmp_path}/ba\ndevice_wait_timeout = 7\n"
    )
    conf(args=["--config-file", str(cfg_file)], project="nova")
    inits = []
    monkeypatch.setattr(privileged, "init", inits.append)
    monkeypatch.setattr(config, "_DEFAULT_CONF", None)
    monkeypatch.setattr(locking, "_configured_lock_path", None)
    os_brick.setup(conf)  # nova/cmd/compute.py
    assert conf.os_brick.lock_path == f"{tmp_path}/oslo"  # os-brick's own setup ran
    assert conf.brick_agent.device_wait_timeout == 7
    assert config.default_conf() is conf and inits == [conf]
    assert locking._lock_path(None) == f"{tmp_path}/ba"
    conn = connector.InitiatorConnector.factory("ISCSI", None)
    conn._agent = None
    assert conn.agent.opts.device_wait_timeout == 7


# ------------------------------------------------------------------ guard_connection
class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return mock.MagicMock()


@pytest.mark.usefixtures("enabled")
@pytest.mark.parametrize(
    "volume,theirs_scan,ours_scan,expected",
    [
        ({"service_uuid": "s1"}, False, False, (False, False)),
        ({"shared_targets": False, "service_uuid": "s1"}, False, False, (False, False)),
        ({"shared_targets": None, "service_uuid": "s1"}, True, True, (True, True)),
        ({"shared_targets": True, "service_uuid": "s1"}, True, True, (False, False)),
        ({"shared_targets": True, "service_uuid": "s1"}, False, True, (True, False)),
        ({"shared_targets": True, "service_uuid": "s1"}, True, False, (True, True)),
    ],
)
def test_guard_connection_takes_os_brick_lock_when_either_side_would(
    monkeypatch, volume, theirs_scan, ours_scan, expected
):
    monkeypatch.setattr(ob_utils, "ISCSI_SUPPORTS_MANUAL_SCAN", theirs_scan)
    iscsiadm.set_manual_scan_override(ours_scan)
    theirs, ours = _Recorder(), _Recorder()
    monkeypatch.setattr("oslo_concurrency.lockutils.lock", theirs)
    monkeypatch.setattr(locking, "external_lock", ours)
    try:
        with ob_utils.guard_connection(volume):  # nova/virt/block_device.py
            pass
    finally:
        iscsiadm.set_manual_scan_override(None)
    assert (bool(theirs.calls), bool(ours.calls)) == expected
    if theirs.calls:
        assert theirs.calls == [(("s1", "os-brick-"), {"external": True})]
    if ours.calls:
        assert ours.calls[0][0] == (locking.guard_lock_name("s1"),)


@pytest.mark.usefixtures("enabled")
def test_guard_connection_reads_objects_and_needs_service_uuid(monkeypatch):
    monkeypatch.setattr("oslo_concurrency.lockutils.lock", _Recorder())

    class VolumeOvo:  # Cinder passes an OVO, which has .get()
        def __init__(self, **fields):
            self.fields = fields

        def get(self, key, default=None):
            return self.fields.get(key, default)

    with ob_utils.guard_connection(VolumeOvo(shared_targets=False)):
        pass
    with pytest.raises(KeyError):
        with ob_utils.guard_connection({"shared_targets": None}):
            pass


def test_guard_connection_serialises_with_a_process_running_os_brick(enabled, tmp_path):
    """os-brick's own guard_connection in another process holds; ours waits for it."""
    from oslo_concurrency import lockutils

    locks = tmp_path / "locks"
    locks.mkdir()
    child = textwrap.dedent(f"""
        import sys, time
        from oslo_concurrency import lockutils
        lockutils.set_defaults({str(locks)!r})
        from os_brick.initiator import utils
        with utils.guard_connection({{"shared_targets": None, "service_uuid": "svc-1"}}):
            print("held", flush=True)
            time.sleep(1.5)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        lockutils.set_defaults(str(locks))
        locking.set_default_lock_path(str(tmp_path / "ba"))
        start = time.monotonic()
        with ob_utils.guard_connection({"shared_targets": None, "service_uuid": "svc-1"}):
            waited = time.monotonic() - start
        assert waited > 0.5
        assert (locks / "os-brick-svc-1").exists()
    finally:
        proc.wait(timeout=30)
        lockutils.set_defaults(None)
        locking.set_default_lock_path(None)


# ------------------------------------------------------------------ is_multipath_running
@pytest.mark.usefixtures("enabled")
def test_is_multipath_running_is_brick_agents_unless_an_executor_is_given(monkeypatch):
    monkeypatch.setattr(
        "brick_agent.connectors.scsi.actions.multipathd_running", lambda roots: True
    )
    # nova/virt/libvirt/driver.py _check_multipath
    assert linuxscsi.LinuxSCSI.is_multipath_running(root_helper="sudo") is True
    calls = []

    def execute(*cmd, **kwargs):
        calls.append(cmd)
        return "error receiving packet", ""

    assert linuxscsi.LinuxSCSI.is_multipath_running("sudo", execute=execute) is False
    assert calls == [("multipathd", "show", "status")]


# ------------------------------------------------------------------ connector object
@pytest.mark.usefixtures("enabled")
def test_connector_properties_have_os_brick_keys_and_other_connectors_keys(monkeypatch):
    ours = {
        "platform": "x86_64",
        "os_type": "linux",
        "ip": "192.0.2.5",
        "host": "cmp1",
        "multipath": True,
        "enforce_multipath": True,
        "initiator": "iqn.x:1",
        "nqn": "nqn.2014-08.org.nvmexpress:uuid:1",
        "nvme_hostid": "1",
        "nvme_native_multipath": False,
        "uuid": "fs",
        "system uuid": "dmi",
    }
    seen = []

    def ours_fn(root_helper, my_ip, multipath, enforce_multipath, host=None):
        seen.append((root_helper, my_ip, multipath, enforce_multipath, host))
        return dict(ours)

    monkeypatch.setattr(properties, "brick_agent_properties", ours_fn)
    from os_brick.initiator.connectors import lightos, scaleio

    monkeypatch.setattr(
        lightos.LightOSConnector,
        "get_connector_properties",
        staticmethod(lambda *a, **k: {"nqn": "nqn.lightos", "found_dsc": "", "host_ips": []}),
    )
    monkeypatch.setattr(
        scaleio.ScaleIOConnector,
        "get_connector_properties",
        staticmethod(lambda *a, **k: {"sdc_guid": "g"}),
    )
    for cls_path in properties.SERVED:  # never asked: brick_agent serves their keys
        from oslo_utils import importutils

        monkeypatch.setattr(
            importutils.import_class(cls_path),
            "get_connector_properties",
            staticmethod(pytest.fail),
        )
    # nova/virt/libvirt/driver.py get_volume_connector
    props = connector.get_connector_properties(
        ROOT_HELPER, "192.0.2.5", True, enforce_multipath=True, host="cmp1"
    )
    assert seen == [(ROOT_HELPER, "192.0.2.5", True, True, "cmp1")]
    assert props["do_local_attach"] is False and props["sdc_guid"] == "g"
    assert props["nqn"] == "nqn.lightos"  # later connectors win, as in os-brick
    assert {k: props[k] for k in ("uuid", "system uuid", "initiator", "nvme_hostid")} == {
        "uuid": "fs",
        "system uuid": "dmi",
        "initiator": "iqn.x:1",
        "nvme_hostid": "1",
    }
    # cinder/volume/volume_utils.py brick_get_connector_properties: all positional
    assert "platform" in connector.get_connector_properties(ROOT_HELPER, "1.2.3.4", False, False)


def test_brick_agent_properties_from_a_fake_host(tmp_path, monkeypatch):
    from brick_agent.host.roots import HostRoots

    roots = HostRoots.under(str(tmp_path / "host"))
    os.makedirs(roots.etcfs("iscsi"))
    with open(roots.etcfs("iscsi", "initiatorname.iscsi"), "w") as fh:
        fh.write("InitiatorName=iqn.1993-08.org.debian:01:abc\n")
    os.makedirs(roots.sysfs("class", "dmi", "id"))
    with open(roots.sysfs("class", "dmi", "id", "product_uuid"), "w") as fh:
        fh.write("4c4c4544-0035-4b10-8044-b3c04f4b4d32\n")
    os.makedirs(roots.devfs("disk", "by-uuid"))
    open(roots.devfs("vda1"), "w").close()
    os.symlink("../../vda1", roots.devfs("disk", "by-uuid", "0f6b5c1e-aaaa-bbbb-cccc-8d7e6f5a4b3c"))
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 1 252:1 / / rw - ext4 /dev/vda1 rw\n")
    monkeypatch.setattr(
        "brick_agent.connector_properties._nvme_properties",
        lambda roots, create: {"nvme_native_multipath": False},
    )
    props = properties.brick_agent_properties(
        "sudo", "192.0.2.5", False, False, "h", roots=roots, mountinfo=str(mountinfo)
    )
    assert props["initiator"] == "iqn.1993-08.org.debian:01:abc"
    assert props["uuid"] == "0f6b5c1e-aaaa-bbbb-cccc-8d7e6f5a4b3c"
    assert props["system uuid"] == "4c4c4544-0035-4b10-8044-b3c04f4b4d32"
    assert {"platform", "os_type", "ip", "host", "multipath", "enforce_multipath"} <= set(props)


def test_enable_warns_about_an_untested_os_brick(monkeypatch, caplog):
    monkeypatch.setattr(patch, "_os_brick_version", lambda: "6.10.0")
    with caplog.at_level("WARNING", logger=patch.__name__):
        os_brick_compat.enable()
        os_brick_compat.disable()
    assert "os-brick 6.10.0 is installed" in caplog.text


# ------------------------------------------------------------------ log levels
@pytest.fixture
def clean_log_levels():
    import logging

    loggers = [logging.getLogger(n) for n in logging.root.manager.loggerDict] + [logging.root]
    before = [(lg, lg.level, list(lg.handlers)) for lg in loggers if isinstance(lg, logging.Logger)]
    yield
    for lg, level, handlers in before:  # oslo.log's setup reconfigures many loggers
        lg.setLevel(level)
        lg.handlers[:] = handlers


def test_brick_agent_logs_at_the_level_the_service_set_for_os_brick(
    enabled, clean_log_levels, monkeypatch
):
    """Nova's ``[cinder] debug = True`` (nova/config.py) sets os_brick=DEBUG through
    oslo.log's default_log_levels; nova-manage sets os_brick=ERROR: brick_agent follows."""
    import logging
    from oslo_config import cfg
    from oslo_log import log as oslo_log
    from brick_agent import privileged

    monkeypatch.setattr(privileged, "init", lambda conf: None)
    monkeypatch.setattr(config, "_DEFAULT_CONF", None)
    monkeypatch.setattr(locking, "_configured_lock_path", None)
    ours = logging.getLogger("brick_agent")
    assert ours.level == logging.NOTSET

    from oslo_concurrency import lockutils

    conf = cfg.ConfigOpts()
    oslo_log.register_options(conf)
    conf.register_opts(lockutils._opts, group="oslo_concurrency")
    from os_brick import opts as ob_opts

    conf.register_opts(ob_opts._opts, group="os_brick")
    conf(args=[], project="nova")
    conf.set_override("default_log_levels", oslo_log.get_default_log_levels() + ["os_brick=DEBUG"])
    oslo_log.setup(conf, "nova")  # nova/cmd/compute.py, before os_brick.setup
    os_brick.setup(conf)
    assert ours.getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("brick_agent.connectors.iscsi.connector").isEnabledFor(logging.DEBUG)

    logging.getLogger("os_brick").setLevel(logging.ERROR)  # nova-manage's level
    connector.InitiatorConnector.factory("ISCSI", None)  # re-read when a connector is built
    assert ours.level == logging.ERROR

    ours.setLevel(logging.INFO)  # brick_agent=INFO set by the operator wins
    connector.InitiatorConnector.factory("ISCSI", None)
    assert ours.level == logging.INFO


def test_disable_gives_the_brick_agent_logger_back(clean_log_levels):
    import logging

    os_brick_compat.enable()
    logging.getLogger("os_brick").setLevel(logging.DEBUG)
    connector.InitiatorConnector.factory("ISCSI", None)
    assert logging.getLogger("brick_agent").level == logging.DEBUG
    os_brick_compat.disable()
    assert logging.getLogger("brick_agent").level == logging.NOTSET
