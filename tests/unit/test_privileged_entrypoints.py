"""Privileged entrypoints: argument validation and the writes they do on a fake host tree.

The plain ``do_*`` functions are called with tmp roots and a recording runner;
nothing here needs root.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import stat
import threading
import time

import pytest

from brick_agent import commands
from brick_agent.errors import CommandFailed, DeviceNotFound, InvalidArgument
from brick_agent.host import iscsiadm
from brick_agent.host.roots import HostRoots
from brick_agent import privileged
from brick_agent.privileged import block, diag, iscsi, links, md, multipath, nvme, scsi
from tests.unit.host.fakehost import FakeHost

IQN = "iqn.2003-01.org.linux-iscsi.lab:sn.0123456789ab"
NQN = "nqn.2014-08.org.nvmexpress:uuid:4c4c4544-0035-4b10-8044-b3c04f4b4d32"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77"
PW = "-Ch4p pass;$(x)"

OPTION_LIKE = ["-x", "--foo", "-", "--value=1"]
META = [
    "a;b",
    "a b",
    "a|b",
    "a`b`",
    "$(id)",
    "a\nb",
    "a&b",
    "a>b",
    "a'b",
    'a"b',
    "a\\b",
    "a*",
    "a\x00b",
]


@pytest.fixture
def roots(tmp_path):
    return HostRoots.under(str(tmp_path / "host"))


def _iscsi_host(roots, number):
    """Make SCSI host ``number`` an iSCSI transport host (``/sys/class/iscsi_host``)."""
    os.makedirs(roots.sysfs("class", "iscsi_host", f"host{number}"), exist_ok=True)


def _mkfile(path, content=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)
    return path


class Recorder:
    """A runner recording argv/kwargs and answering with a fixed result."""

    def __init__(self, returncode=0, stdout=""):
        self.calls = []
        self.returncode = returncode
        self.stdout = stdout

    def flush(self, dev, timeout):
        """The block flush (done in the daemon, no command): recorded like one."""
        self.calls.append((["flush", dev], {"timeout": timeout}))

    def __call__(self, argv, **kwargs):
        self.calls.append((list(argv), kwargs))
        return commands.CommandResult(
            argv=list(argv),
            returncode=self.returncode,
            stdout=self.stdout,
            stderr="",
            duration=0.01,
        )


# ------------------------------------------------------------------ structure
ENTRYPOINT_MODULES = [scsi, block, iscsi, nvme, multipath, md, diag, links]


def _entrypoints():
    for mod in ENTRYPOINT_MODULES:
        for name, obj in vars(mod).items():
            if privileged.default.is_entrypoint(obj):
                yield f"{mod.__name__}.{name}", obj


def test_every_entrypoint_is_in_our_context_and_takes_no_roots_or_runner():
    eps = dict(_entrypoints())
    assert len(eps) >= 20
    for name, ep in eps.items():
        func = ep.args[0].__wrapped__
        params = inspect.signature(func).parameters
        assert "roots" not in params and "run" not in params, name
        assert func.__module__.startswith("brick_agent.privileged"), name


def test_no_generic_execute_entrypoint():
    for name, ep in _entrypoints():
        params = inspect.signature(ep.args[0].__wrapped__).parameters
        for p in params.values():
            assert p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD), name
            assert p.name not in ("cmd", "argv", "command", "args", "path"), name


def test_in_process_mode_calls_plain_function(roots, monkeypatch):
    privileged.set_in_process(True)
    try:
        with pytest.raises(InvalidArgument):
            scsi.delete_scsi_device("../../etc:0:0:0")
    finally:
        privileged.set_in_process(False)


def test_command_failed_survives_the_channel_format():
    err = privileged.PrivilegedCommandFailed(["iscsiadm", "-m", "node"], 21, "No records")
    rebuilt = type(err)(*err.args)  # what oslo.privsep does on the client side
    assert isinstance(rebuilt, CommandFailed)
    assert rebuilt.returncode == 21 and rebuilt.stderr == "No records"
    assert str(rebuilt) == str(err) == "iscsiadm -m node exited 21: No records"


def test_init_applies_config(tmp_path):
    from oslo_config import cfg
    from brick_agent import config

    conf = config.new_conf()
    conf.set_override("privsep_in_process", True, group="brick_agent")
    conf.set_override("privsep_helper_command", "sudo -n privsep-helper", group="brick_agent")
    privileged.init(conf)
    try:
        assert privileged.default.client_mode is False
        assert cfg.CONF[privileged.CFG_SECTION].helper_command == "sudo -n privsep-helper"
        cmd = privileged.default.helper_command("/tmp/x.sock")
        assert cmd == [
            "sudo",
            "-n",
            "privsep-helper",
            "--privsep_context",
            "brick_agent.privileged.default",
            "--privsep_sock_path",
            "/tmp/x.sock",
        ]
    finally:
        cfg.CONF.clear_override("helper_command", group=privileged.CFG_SECTION)
        privileged.set_in_process(False)


def test_helper_command_default_as_root_skips_sudo(monkeypatch, tmp_path):
    from brick_agent import config

    helper = tmp_path / "privsep-helper"
    helper.write_text("#!/bin/sh\n")
    helper.chmod(0o755)
    monkeypatch.setattr(privileged.sys, "executable", str(tmp_path / "python3"))
    conf = config.new_conf()
    monkeypatch.setattr(privileged.os, "geteuid", lambda: 0)
    assert privileged.helper_command(conf) == str(helper)
    monkeypatch.setattr(privileged.os, "geteuid", lambda: 1000)
    assert privileged.helper_command(conf) is None  # oslo.privsep's sudo default applies


# ------------------------------------------------------------------ scsi
def test_scan_writes_triple(roots):
    scan = _mkfile(roots.sysfs("class", "scsi_host", "host3", "scan"))
    _iscsi_host(roots, 3)
    scsi.do_scan_scsi_target(roots, 3, 0, 1, 2)
    assert open(scan).read() == "0 1 2"
    scsi.do_scan_scsi_target(roots, 3, "-", "-", 7)
    assert open(scan).read() == "- - 7"


def test_scan_follows_in_tree_symlinks(roots):
    real = _mkfile(roots.sysfs("devices", "platform", "host5", "scsi_host", "host5", "scan"))
    os.makedirs(roots.sysfs("class", "scsi_host"))
    os.symlink(
        "../../devices/platform/host5/scsi_host/host5", roots.sysfs("class", "scsi_host", "host5")
    )
    _iscsi_host(roots, 5)
    assert scsi.do_scan_scsi_target(roots, 5, 0, 0, 1) == os.path.realpath(real)
    assert open(real).read() == "0 0 1"


def test_scan_refuses_symlink_out_of_root(roots, tmp_path):
    outside = _mkfile(str(tmp_path / "outside" / "scan"), "untouched")
    os.makedirs(roots.sysfs("class", "scsi_host"))
    os.symlink(str(tmp_path / "outside"), roots.sysfs("class", "scsi_host", "host4"))
    _iscsi_host(roots, 4)
    with pytest.raises(InvalidArgument):
        scsi.do_scan_scsi_target(roots, 4, 0, 0, 0)
    assert open(outside).read() == "untouched"


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0, 0, 0),
        ("3", 0, 0, 0),
        (True, 0, 0, 0),
        (3.0, 0, 0, 0),
        (3, -1, 0, 0),
        (3, "0", 0, 0),
        (3, 0, "1; reboot", 0),
        (3, 0, 0, "--"),
        (3, 0, 0, None),
        (3, 0, 0, "*"),
    ],
)
def test_scan_rejects_bad_arguments(roots, args):
    scan = _mkfile(roots.sysfs("class", "scsi_host", "host3", "scan"), "untouched")
    with pytest.raises(InvalidArgument):
        scsi.do_scan_scsi_target(roots, *args)
    assert open(scan).read() == "untouched"


def test_scan_of_missing_host_creates_nothing(roots):
    with pytest.raises(DeviceNotFound):
        scsi.do_scan_scsi_target(roots, 9, 0, 0, 0)
    assert not os.path.exists(roots.sysfs("class", "scsi_host", "host9"))


def test_delete_and_rescan_device(roots):
    delete = _mkfile(roots.sysfs("class", "scsi_device", "2:0:0:1", "device", "delete"))
    rescan = _mkfile(roots.sysfs("class", "scsi_device", "2:0:0:1", "device", "rescan"))
    _iscsi_host(roots, 2)
    scsi.do_delete_scsi_device(roots, "2:0:0:1")
    scsi.do_rescan_scsi_device(roots, (2, 0, 0, 1))
    assert open(delete).read() == "1" and open(rescan).read() == "1"


@pytest.mark.parametrize(
    "hctl",
    [
        "2:0:0",
        "2:0:0:1:5",
        "-2:0:0:1",
        "2:0:0:x",
        "2:0:0:1/../../../../etc",
        "../2:0:0:1",
        "2:0:0:-1",
        " 2:0:0:1",
        "２:0:0:1",
        (2, 0, 0),
        (2, 0, 0, "1"),
        (2, 0, 0, -1),
        2001,
        None,
    ],
)
def test_delete_rejects_bad_hctl(roots, hctl):
    with pytest.raises(InvalidArgument):
        scsi.do_delete_scsi_device(roots, hctl)


def test_delete_missing_device(roots):
    with pytest.raises(DeviceNotFound):
        scsi.do_delete_scsi_device(roots, "7:0:0:0")


# ------------------------------------------------------------------ block
def test_flush_flushes_the_dev_path(roots, tmp_path):
    fh = FakeHost(tmp_path / "host")  # fabric volumes: an iSCSI LUN, its map, an NVMe/TCP one
    session = fh.iscsi_session(1, 2, IQN, "192.0.2.10")
    fh.scsi_disk(session, "2:0:0:1", "sdb", wwid="naa.6001405aa6d2dc160f6b68a70cef7b43")
    run = Recorder()
    block.do_flush_block_device(roots, "sdb", timeout=5, flush=run.flush)
    assert run.calls == [(["flush", roots.devfs("sdb")], {"timeout": 5.0})]
    fh.attr("etc/nvme/hostnqn", HOSTNQN)
    fh.nvme_ns(fh.nvme_ctrl(1, None, NQN, hostnqn=HOSTNQN), "nvme1n2", 2)
    fh.dm(3, "mpatha", "mpath-36001405aa6d2dc160f6b68a70cef7b43", ["sdb"])
    block.do_flush_block_device(roots, "nvme1n2", flush=run.flush)
    block.do_flush_block_device(roots, "dm-3", flush=run.flush)
    assert [c[0][-1] for c in run.calls[1:]] == [roots.devfs("nvme1n2"), roots.devfs("dm-3")]


@pytest.mark.parametrize(
    "name",
    [
        "../sda",
        "/dev/sda",
        "-sda",
        "--all",
        "sda;reboot",
        "loop0",
        "sda1",
        "sd",
        "dm-",
        "nvme0",
        "",
        "SDA",
        "sda\n",
        5,
        None,
    ],
)
def test_flush_rejects_bad_names(roots, name):
    run = Recorder()
    with pytest.raises(InvalidArgument):
        block.do_flush_block_device(roots, name, flush=run.flush)
    assert run.calls == []


def test_flush_missing_device(roots):
    run = Recorder()
    with pytest.raises(DeviceNotFound):
        block.do_flush_block_device(roots, "sdz", flush=run.flush)
    assert run.calls == []


@pytest.mark.parametrize("timeout", [0, -1, True, "5", 10**6])
def test_flush_rejects_bad_timeout(roots, timeout):
    os.makedirs(roots.sysfs("block", "sdb"))
    with pytest.raises(InvalidArgument):
        block.do_flush_block_device(roots, "sdb", timeout=timeout, flush=Recorder().flush)


# ------------------------------------------------------------------ iscsi
def test_node_ops_argv(roots):
    run = Recorder()
    iscsi.do_node_create(IQN, "192.0.2.10:3260", run=run)
    iscsi.do_node_login(IQN, "[2001:db8::1]:3260", "iface0", timeout=10, run=run)
    iscsi.do_node_logout(roots, IQN, "192.0.2.10:3260", run=run)
    iscsi.do_node_delete(roots, IQN, "target.example.com:3260", run=run)
    base = ["iscsiadm", "-m", "node", "-T", IQN, "-p"]
    assert run.calls[0][0] == base + ["192.0.2.10:3260", "-I", "default", "--op", "new"]
    assert run.calls[1][0] == base + ["[2001:db8::1]:3260", "-I", "iface0", "--login"]
    assert run.calls[1][1]["ok_codes"] == (0, iscsiadm.ERR_SESS_EXISTS)
    assert run.calls[2][0][-1] == "--logout"
    assert run.calls[2][1]["ok_codes"] == (0, iscsiadm.ERR_NO_OBJS_FOUND)
    assert run.calls[3][0][-2:] == ["--op", "delete"]


def test_node_update_keeps_chap_passwords_off_the_argv():
    """A password on iscsiadm's argv is world-readable in /proc/PID/cmdline: refused."""
    run = Recorder()
    iscsi.do_node_update(
        IQN,
        "192.0.2.10:3260",
        "default",
        [
            ("node.session.scan", "manual"),
            ("node.session.auth.authmethod", "CHAP"),
            ("node.session.auth.username", "user name"),
        ],
        run=run,
    )
    ((argv, kwargs),) = run.calls  # one exec for every setting
    assert argv == [
        "iscsiadm",
        "-m",
        "node",
        "-T",
        IQN,
        "-p",
        "192.0.2.10:3260",
        "-I",
        "default",
        "--op",
        "update",
        "-n",
        "node.session.scan",
        "-v",
        "manual",
        "-n",
        "node.session.auth.authmethod",
        "-v",
        "CHAP",
        "-n",
        "node.session.auth.username",
        "--value=user name",
    ]
    for name in ("node.session.auth.password", "node.session.auth.password_in"):
        with pytest.raises(InvalidArgument) as ei:
            iscsi.do_node_update(IQN, "192.0.2.10:3260", "default", [(name, PW)], run=run)
        assert PW not in str(ei.value)
    assert len(run.calls) == 1


def test_chap_password_never_reaches_a_command_or_log(tmp_path, monkeypatch, caplog):
    fake = tmp_path / "bin" / "iscsiadm"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "iscsiadm: cannot set $*" >&2\nexit 7\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidArgument) as ei:
        iscsi.do_node_update(IQN, "192.0.2.10:3260", "default", {"node.session.auth.password": PW})
    assert PW not in str(ei.value)
    assert all(PW not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "settings",
    [
        {"iface.ipaddress": "1.2.3.4"},
        {"node.session.auth.chap_algs": "MD5"},
        {"node.session.scan": "-v"},
        {"node.session.scan": "everything"},
        {"node.startup": "manual; reboot"},
        {"node.session.timeo.replacement_timeout": "--foo"},
        {"node.session.timeo.replacement_timeout": "99999999"},
        {"node.session.auth.password": ""},
        {"node.session.auth.password": "a\nb"},
        {"discovery.sendtargets.auth.password": "x"},  # discovery param on a node
        {},
        [("node.session.scan",)],
    ],
)
def test_node_update_rejects(settings):
    run = Recorder()
    with pytest.raises(InvalidArgument) as ei:
        iscsi.do_node_update(IQN, "192.0.2.10:3260", "default", settings, run=run)
    assert run.calls == []
    assert "a\nb" not in str(ei.value)


@pytest.mark.parametrize(
    "iqn, portal, iface",
    [
        ("--foo", "192.0.2.10:3260", "default"),
        ("-T", "192.0.2.10:3260", "default"),
        ("iqn.2003-01.org:tgt;reboot", "192.0.2.10:3260", "default"),
        ("not-an-iqn", "192.0.2.10:3260", "default"),
        (IQN, "-p", "default"),
        (IQN, "192.0.2.10", "default"),
        (IQN, "192.0.2.10:0", "default"),
        (IQN, "192.0.2.10:3260,1", "default"),
        (IQN, "192.0.2.10:3260;id", "default"),
        (IQN, "$(id):3260", "default"),
        (IQN, "[2001:db8::1:3260", "default"),
        (IQN, "2001:db8::1:3260", "default"),
        (IQN, "192.0.2.10:3260", "-I"),
        (IQN, "192.0.2.10:3260", "--all"),
        (IQN, "192.0.2.10:3260", "if ace"),
    ],
)
def test_node_ops_reject_bad_identity(roots, iqn, portal, iface):
    run = Recorder()
    for op in (
        iscsi.do_node_create,
        iscsi.do_node_login,
        functools.partial(iscsi.do_node_logout, roots),
        functools.partial(iscsi.do_node_delete, roots),
    ):
        with pytest.raises(InvalidArgument):
            op(iqn, portal, iface, run=run)
    assert run.calls == []


def test_discovery_plain_and_with_chap():
    run = Recorder(stdout="192.0.2.10:3260,1 " + IQN + "\n")
    res = iscsi.do_discover("192.0.2.10:3260", run=run)
    assert run.calls[0][0] == [
        "iscsiadm",
        "-m",
        "discovery",
        "-t",
        "sendtargets",
        "-p",
        "192.0.2.10:3260",
        "-I",
        "default",
    ]
    assert IQN in res["stdout"]
    run = Recorder()
    set_auth: list = []
    iscsi.do_discover(
        "192.0.2.10:3260",
        "default",
        [
            ("discovery.sendtargets.auth.authmethod", "CHAP"),
            ("discovery.sendtargets.auth.username", "u"),
            ("discovery.sendtargets.auth.password", PW),
        ],
        run=run,
        set_auth=lambda portal, items: set_auth.append((portal, items)),
    )
    argvs = [c[0] for c in run.calls]
    assert argvs[0][2] == "discoverydb" and argvs[0][-2:] == ["--op", "new"]
    assert argvs[-1][-1] == "--discover" and len(argvs) == 2
    assert not any(PW in arg for argv in argvs for arg in argv)  # in the record file
    assert set_auth == [
        (
            "192.0.2.10:3260",
            [
                ("discovery.sendtargets.auth.authmethod", "CHAP"),
                ("discovery.sendtargets.auth.username", "u"),
                ("discovery.sendtargets.auth.password", PW),
            ],
        )
    ]
    with pytest.raises(InvalidArgument):
        iscsi.do_discover(
            "192.0.2.10:3260", "default", {"node.session.auth.password": PW}, run=Recorder()
        )


# ------------------------------------------------------------------ nvme
HOSTID = "0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77"


class FabricsDevice:
    """Stands in for ``/dev/nvme-fabrics``: records writes, answers like the kernel."""

    def __init__(self, reply="instance=3,cntlid=1\n", error=None, gate=None):
        self.reply, self.error, self.gate = reply, error, gate
        self.writes = []

    def __call__(self, device, options):
        self.writes.append((device, options))
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        return self.reply


def test_nvme_connect_writes_validated_options_to_dev_nvme_fabrics(roots):
    _mkfile(roots.etcfs("nvme", "hostnqn"), HOSTNQN + "\n")  # this host's identity
    _mkfile(roots.etcfs("nvme", "hostid"), HOSTID + "\n")
    dev = FabricsDevice()
    res = nvme.do_connect(
        roots,
        "tcp",
        "192.0.2.20",
        4420,
        NQN,
        hostnqn=HOSTNQN,
        hostid=HOSTID,
        ctrl_loss_tmo=-1,
        reconnect_delay=10,
        keep_alive_tmo=5,
        fast_io_fail_tmo=4,
        io=dev,
    )
    assert res["controller"] == "nvme3"
    assert dev.writes == [
        (
            roots.devfs("nvme-fabrics"),
            f"nqn={NQN},transport=tcp,traddr=192.0.2.20,trsvcid=4420,"
            f"hostnqn={HOSTNQN},hostid={HOSTID},ctrl_loss_tmo=-1,"
            f"reconnect_delay=10,keep_alive_tmo=5,fast_io_fail_tmo=4",
        )
    ]
    nvme.do_connect(
        roots,
        "fc",
        "nn-0x200000109b1c1204:pn-0x100000109b1c1204",
        None,
        NQN,
        host_traddr="nn-0x200000109b1c1205:pn-0x100000109b1c1205",
        io=dev,
    )
    assert dev.writes[1][1] == (
        f"nqn={NQN},transport=fc,"
        "traddr=nn-0x200000109b1c1204:pn-0x100000109b1c1204,"
        "host_traddr=nn-0x200000109b1c1205:pn-0x100000109b1c1205"
    )


def test_nvme_connect_resolves_a_host_name_before_the_kernel_sees_it(roots):
    dev = FabricsDevice()
    nvme.do_connect(
        roots, "tcp", "array-a.example", 4420, NQN, io=dev, resolve=lambda name: "192.0.2.33"
    )
    assert dev.writes[0][1] == f"nqn={NQN},transport=tcp,traddr=192.0.2.33,trsvcid=4420"


def test_nvme_connect_reports_the_kernel_errno(roots):
    res = nvme.do_connect(
        roots, "tcp", "192.0.2.20", 4420, NQN, io=FabricsDevice(error=errno.EALREADY)
    )
    assert res["errno"] == errno.EALREADY and "controller" not in res
    res = nvme.do_connect(
        roots, "tcp", "192.0.2.20", 4420, NQN, io=FabricsDevice(error=errno.ECONNREFUSED)
    )
    assert res["errno"] == errno.ECONNREFUSED and res["error"] == "Connection refused"
    res = nvme.do_connect(roots, "tcp", "192.0.2.20", 4420, NQN, io=FabricsDevice(reply="?"))
    assert "controller" not in res and "unexpected reply" in res["error"]


def test_nvme_connect_that_finishes_after_its_timeout_deletes_its_controller(roots):
    """The caller was told the connect failed: a late controller would be an orphan."""
    base = _nvme_ctrl(roots, "nvme3", "tcp")
    gate = threading.Event()
    dev = FabricsDevice(gate=gate)
    res = nvme.do_connect(roots, "tcp", "192.0.2.20", 4420, NQN, io=dev, timeout=0.05)
    assert res["timed_out"] is True
    assert open(os.path.join(base, "delete_controller")).read() == ""
    gate.set()
    for _ in range(200):
        if open(os.path.join(base, "delete_controller")).read() == "1":
            break
        time.sleep(0.01)
    assert open(os.path.join(base, "delete_controller")).read() == "1"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(transport="pcie"),
        dict(transport="-t"),
        dict(traddr="-a"),
        dict(traddr="192.0.2.20;reboot"),
        dict(traddr="--host-traddr=x"),
        dict(trsvcid="-s"),
        dict(traddr="192.0.2.20,hostnqn=nqn.2014-08.x:y"),
        dict(nqn=NQN + ",traddr=192.0.2.9"),
        dict(trsvcid=0),
        dict(trsvcid=70000),
        dict(nqn="--nqn"),
        dict(nqn="nqn.2014-08.x y"),
        dict(nqn="iqn.2003-01.org:x"),
        dict(hostnqn="-q"),
        dict(hostid="not-a-uuid"),
        dict(hostid="--hostid"),
        dict(ctrl_loss_tmo="600"),
        dict(ctrl_loss_tmo=-2),
        dict(ctrl_loss_tmo=True),
        dict(reconnect_delay=0),
        dict(keep_alive_tmo=1.5),
        dict(fast_io_fail_tmo=-2),
        dict(fast_io_fail_tmo="5"),
        dict(nr_io_queues=1),
        dict(transport="fc", traddr="192.0.2.20"),
        dict(timeout=0),
    ],
)
def test_nvme_connect_rejects(roots, kwargs):
    args = dict(transport="tcp", traddr="192.0.2.20", trsvcid=4420, nqn=NQN)
    args.update(kwargs)
    dev = FabricsDevice()
    with pytest.raises(InvalidArgument):
        nvme.do_connect(
            roots,
            args.pop("transport"),
            args.pop("traddr"),
            args.pop("trsvcid"),
            args.pop("nqn"),
            io=dev,
            **args,
        )
    assert dev.writes == []


def _nvme_ctrl(roots, name, transport):
    """Controller ``name`` made with this host's NQN."""
    base = roots.sysfs("class", "nvme", name)
    _mkfile(os.path.join(base, "transport"), transport + "\n")
    _mkfile(os.path.join(base, "hostnqn"), HOSTNQN + "\n")
    _mkfile(roots.etcfs("nvme", "hostnqn"), HOSTNQN + "\n")
    _mkfile(os.path.join(base, "delete_controller"))
    _mkfile(os.path.join(base, "rescan_controller"))
    return base


def test_nvme_disconnect_and_rescan(roots):
    base = _nvme_ctrl(roots, "nvme2", "tcp")
    nvme.do_rescan_controller(roots, "nvme2")
    assert open(os.path.join(base, "rescan_controller")).read() == "1"
    nvme.do_disconnect(roots, "nvme2")
    assert open(os.path.join(base, "delete_controller")).read() == "1"


def test_nvme_disconnect_refuses_pcie_controller(roots):
    base = _nvme_ctrl(roots, "nvme0", "pcie")
    with pytest.raises(InvalidArgument):
        nvme.do_disconnect(roots, "nvme0")
    assert open(os.path.join(base, "delete_controller")).read() == ""


@pytest.mark.parametrize("name", ["nvme0n1", "-nvme0", "../nvme0", "nvme", "nvme0;x", ""])
def test_nvme_disconnect_rejects_names(roots, name):
    _nvme_ctrl(roots, "nvme0", "tcp")
    with pytest.raises(InvalidArgument):
        nvme.do_disconnect(roots, name)


def test_nvme_disconnect_missing(roots):
    with pytest.raises(DeviceNotFound):
        nvme.do_disconnect(roots, "nvme7")


def test_host_identity_written_once(roots):
    hostid = "0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77"
    assert nvme.do_write_host_identity(roots, HOSTNQN, hostid) == {"hostnqn": True, "hostid": True}
    assert open(roots.etcfs("nvme", "hostnqn")).read() == HOSTNQN + "\n"
    assert open(roots.etcfs("nvme", "hostid")).read() == hostid + "\n"
    other = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
    assert nvme.do_write_host_identity(roots, other, "11111111-2222-4333-8444-555555555555") == {
        "hostnqn": False,
        "hostid": False,
    }
    assert open(roots.etcfs("nvme", "hostnqn")).read() == HOSTNQN + "\n"
    assert sorted(os.listdir(roots.etcfs("nvme"))) == ["hostid", "hostnqn"]


@pytest.mark.parametrize(
    "hostnqn, hostid", [("-x", None), ("nqn bad", None), (HOSTNQN, "--foo"), (HOSTNQN, "1234")]
)
def test_host_identity_rejects(roots, hostnqn, hostid):
    with pytest.raises(InvalidArgument):
        nvme.do_write_host_identity(roots, hostnqn, hostid)
    assert not os.path.exists(roots.etcfs("nvme", "hostnqn"))


# ------------------------------------------------------------------ multipath
def test_multipath_argv(roots):
    run = Recorder()
    wwid = "36001405a3b7c2f1e4d5e6f708192a3b4"
    multipath.do_flush_map(roots, wwid, run=run)
    multipath.do_add_path(roots, "sdc", run=run)
    multipath.do_del_path(roots, "sdc", run=run)
    multipath.do_add_wwid(wwid, run=run)
    multipath.do_remove_wwid(wwid, run=run)
    multipath.do_resize_map(roots, "mpatha", run=run)
    assert [c[0] for c in run.calls] == [
        ["multipath", "-f", wwid],
        ["multipathd", "add", "path", "sdc"],
        ["multipathd", "del", "path", "sdc"],
        ["multipath", "-a", wwid],
        ["multipath", "-w", wwid],
        ["multipathd", "resize", "map", "mpatha"],
    ]


@pytest.mark.parametrize("bad", OPTION_LIKE + META + ["", "../x"])
def test_multipath_rejects(roots, bad):
    run = Recorder()
    with_roots = [
        functools.partial(op, roots)
        for op in (
            multipath.do_flush_map,
            multipath.do_add_path,
            multipath.do_del_path,
            multipath.do_resize_map,
        )
    ]
    for op in (*with_roots, multipath.do_add_wwid, multipath.do_remove_wwid):
        with pytest.raises(InvalidArgument):
            op(bad, run=run)
    assert run.calls == []


@pytest.mark.parametrize("device", ["dm-0", "nvme0c1n1", "nvme0", "loop0", "md127"])
def test_multipath_path_must_be_a_scsi_disk_or_nvme_namespace(roots, device):
    with pytest.raises(InvalidArgument):
        multipath.do_add_path(roots, device, run=Recorder())


def test_multipath_accepts_a_non_native_nvme_namespace_path(roots):
    run = Recorder()
    multipath.do_add_path(roots, "nvme1n2", run=run)
    assert run.calls[0][0] == ["multipathd", "add", "path", "nvme1n2"]


@pytest.mark.parametrize("bad", OPTION_LIKE + META)
def test_option_like_and_meta_rejected_everywhere(roots, bad):
    run = Recorder()
    with pytest.raises(InvalidArgument):
        block.do_flush_block_device(roots, bad, flush=run.flush)
    with pytest.raises(InvalidArgument):
        scsi.do_delete_scsi_device(roots, bad)
    with pytest.raises(InvalidArgument):
        nvme.do_disconnect(roots, bad)
    with pytest.raises(InvalidArgument):
        iscsi.do_node_login(bad, "192.0.2.10:3260", run=run)
    with pytest.raises(InvalidArgument):
        nvme.do_connect(roots, "tcp", bad, 4420, NQN, io=FabricsDevice(error=errno.EIO))
    assert run.calls == []


def _stuck_attr(path: str) -> None:
    """A FIFO with no reader: opening it for writing blocks, like a ``delete_controller``
    write the kernel holds while its target is gone (60-93 s measured on 6.1)."""
    os.unlink(path)
    os.mkfifo(path)


def _release(path: str) -> None:
    """Let the abandoned writer finish (open the FIFO's read end, drain it)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            if os.read(fd, 16):
                break
        except BlockingIOError:
            pass
        time.sleep(0.01)
    os.close(fd)


def test_nvme_disconnect_stuck_in_the_kernel_is_abandoned_at_its_timeout(roots):
    from brick_agent.errors import KernelActionTimeout

    base = _nvme_ctrl(roots, "nvme4", "tcp")
    attr = os.path.join(base, "delete_controller")
    _stuck_attr(attr)
    start = time.monotonic()
    with pytest.raises(KernelActionTimeout, match="delete_controller"):
        nvme.do_disconnect(roots, "nvme4", timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 1.0
    _release(attr)


def test_scsi_delete_stuck_in_the_kernel_is_abandoned_at_its_timeout(roots):
    from brick_agent.errors import KernelActionTimeout

    _iscsi_host(roots, 3)
    attr = roots.sysfs("class", "scsi_device", "3:0:0:1", "device", "delete")
    _mkfile(attr)
    _stuck_attr(attr)
    start = time.monotonic()
    with pytest.raises(KernelActionTimeout):
        scsi.do_delete_scsi_device(roots, "3:0:0:1", timeout=0.3)
    assert time.monotonic() - start < 1.0
    _release(attr)


def test_bounded_write_still_raises_the_kernels_error(roots):
    base = _nvme_ctrl(roots, "nvme5", "tcp")
    attr = os.path.join(base, "delete_controller")
    os.unlink(attr)
    os.mkdir(attr)  # EISDIR, even for root: the worker's error reaches the caller
    with pytest.raises(IsADirectoryError):
        nvme.do_disconnect(roots, "nvme5", timeout=1.0)
