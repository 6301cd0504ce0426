"""The privileged bodies act only on what a fabric volume owns (issue 13 §3).

One fake host holds what must never be touched: an AHCI root disk (``sda``, root on
``sda1``) and a second local disk under a local multipath map, a local PCIe NVMe
(``nvme0``), an NVMe/TCP controller made with another host NQN (``nvme2``), the
firmware's iSCSI boot target (iBFT), a fabric disk under a mounted multipath map
(``sdc`` -> ``mpathm`` at /srv/data), a fabric disk used as swap (``sdd``) and a fabric
NVMe namespace with a mounted filesystem (``nvme3n1``).  Beside them sit the fabric
volumes the agent may act on.  Tests assert on the tree (attribute files written or
not) and on the commands a recording runner was asked to run.
"""

from __future__ import annotations

import os

import pytest

from brick_agent import commands
from brick_agent.errors import DeviceNotFound, InvalidArgument, NotOwned
from brick_agent.privileged import block, iscsi, md, multipath, nvme, scsi
from tests.unit.host.fakehost import FakeHost

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77"
HOSTID = "0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77"
FOREIGN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
FOREIGN_ID = "11111111-2222-4333-8444-555555555555"
SUBSYS = "nqn.2016-06.io.example:vol"
BOOT_IQN = "iqn.2003-01.org.example:boot"
DATA_IQN = "iqn.2003-01.org.example:data"  # shared: a free volume, a mounted one, swap
FREE_IQN = "iqn.2003-01.org.example:free"
BOOT_PORTAL, DATA_PORTAL, FREE_PORTAL = "192.0.2.1:3260", "192.0.2.2:3260", "192.0.2.3:3260"


def _naa(n: int) -> str:
    return f"naa.6001405{n:025x}"


def _tcp(fh: FakeHost, number: int, hostnqn: str, mountpoint: str | None = None) -> None:
    cdir = fh.nvme_ctrl(
        number, None, SUBSYS, hostnqn=hostnqn, address=f"traddr=192.0.2.{20 + number},trsvcid=4420"
    )
    for attr in ("delete_controller", "rescan_controller"):
        fh.attr(f"{cdir}/{attr}", "")
    fh.nvme_ns(cdir, f"nvme{number}n1", 1, wwid=f"uuid.0000000{number}-0000-4000-8000-000000000000")
    if mountpoint:
        fh.mount(f"nvme{number}n1", mountpoint)


def _md(fh: FakeHost, number: int, name: str, members: list[str]) -> None:
    bdir = fh.block(f"sys/devices/virtual/block/md{number}", major=9)
    fh.attr(f"{bdir}/md/array_state", "clean")
    for member in members:
        mreal = os.path.relpath(os.path.realpath(fh.p(f"sys/class/block/{member}")), fh.base)
        fh.link(f"{bdir}/slaves/{member}", mreal)
        fh.link(f"{mreal}/holders/md{number}", bdir)
    fh.link(f"dev/md/{name}", f"dev/md{number}")


def _scsi_attrs(fh: FakeHost, ldir: str) -> None:
    for attr in ("delete", "rescan"):
        fh.attr(f"{ldir}/{attr}", "")


def build(fh: FakeHost) -> FakeHost:
    """The host described in the module docstring."""
    ahci = fh.scsi_host(0, "ahci", parent="sys/devices/pci0000:00/0000:00:1f.2/ata1")
    for hctl, name in (("0:0:0:0", "sda"), ("0:0:1:0", "sdh")):
        _scsi_attrs(fh, fh.scsi_disk(ahci, hctl, name, wwid=f"t10.ATA     {name}"))
    fh.partition("sda", "sda1")
    fh.mount("sda1", "/")
    fh.dm(2, "mpathl", "mpath-1ATA_sdh", ["sdh"])

    boot = fh.iscsi_session(1, 1, BOOT_IQN, "192.0.2.1")
    _scsi_attrs(fh, fh.scsi_disk(boot, "1:0:0:0", "sdf", wwid=_naa(1)))
    fh.ibft_target(0, BOOT_IQN, "192.0.2.1")

    data = fh.iscsi_session(2, 2, DATA_IQN, "192.0.2.2")
    for lun, name in ((1, "sdb"), (2, "sdc"), (3, "sdd")):
        _scsi_attrs(fh, fh.scsi_disk(data, f"2:0:0:{lun}", name, wwid=_naa(10 + lun)))
    fh.dm(1, "mpathm", f"mpath-3{_naa(12)[4:]}", ["sdc"])
    fh.mount("dm-1", "/srv/data")
    fh.swap("sdd")

    free = fh.iscsi_session(3, 3, FREE_IQN, "192.0.2.3")
    _scsi_attrs(fh, fh.scsi_disk(free, "3:0:0:1", "sde", wwid=_naa(20)))
    fh.dm(0, "mpatha", f"mpath-3{_naa(20)[4:]}", ["sde"])

    hba = fh.fc_host(4, "0x10000090fa000001", "0x20000090fa000001")
    rport = fh.rport(hba, 4, 0, 0, "0x500a098000000001", "0x500a098000000000")
    _scsi_attrs(fh, fh.scsi_disk(rport, "4:0:0:1", "sdg", wwid=_naa(30)))

    fh.attr("etc/nvme/hostnqn", HOSTNQN)
    fh.attr("etc/nvme/hostid", HOSTID)
    fh.nvme_ns(fh.pcie_nvme(0, "nqn.2014.08.org.nvmexpress:8086local"), "nvme0n1", 1)
    _tcp(fh, 1, HOSTNQN)
    _tcp(fh, 2, FOREIGN)
    _tcp(fh, 3, HOSTNQN, mountpoint="/var/lib/mounted")
    _tcp(fh, 4, HOSTNQN)
    _md(fh, 127, "local-mix", ["nvme1n1", "nvme0n1"])
    _md(fh, 126, "vol-1", ["nvme1n1", "nvme4n1"])
    fh.sys_block_links()
    return fh


@pytest.fixture
def fh(tmp_path):
    return build(FakeHost(tmp_path / "host"))


@pytest.fixture
def roots(fh):
    return fh.roots


class Runner:
    """Records argv; answers success (mdadm --examine: no superblock)."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        return commands.CommandResult(list(argv), 0, "", "", 0.01)

    def flush(self, dev, timeout):
        """The block flush (done in the daemon, no command): recorded like one."""
        self.calls.append(["flush", dev])


def _lun_attr(roots, hctl, attr):
    with open(roots.sysfs("class", "scsi_device", hctl, "device", attr)) as f:
        return f.read()


def _ctrl_attr(roots, ctrl, attr):
    with open(roots.sysfs("class", "nvme", ctrl, attr)) as f:
        return f.read().strip()


def _refused(call, *words):
    with pytest.raises(NotOwned) as err:
        call()
    for word in words:
        assert word in str(err.value), str(err.value)
    return err.value


# ------------------------------------------------------------------ SCSI
@pytest.mark.parametrize(
    "hctl, words",
    [
        ("0:0:0:0", ("0:0:0:0", "ahci")),  # the local root disk
        ("2:0:0:2", ("2:0:0:2", "/srv/data")),  # fabric, but under a mounted map
        ("2:0:0:3", ("2:0:0:3", "swap")),  # fabric, used as swap
    ],
)
def test_delete_refuses_local_mounted_and_swap_disks(roots, hctl, words):
    _refused(lambda: scsi.do_delete_scsi_device(roots, hctl), *words)
    assert _lun_attr(roots, hctl, "delete") == "\n"


def test_rescan_and_scan_refuse_a_local_host(roots):
    _refused(lambda: scsi.do_rescan_scsi_device(roots, "0:0:1:0"), "not on an iSCSI or FC")
    _refused(lambda: scsi.do_scan_scsi_target(roots, 0, 0, 0, 0), "host0", "ahci")
    assert _lun_attr(roots, "0:0:1:0", "rescan") == "\n"
    assert open(roots.sysfs("class", "scsi_host", "host0", "scan")).read() == "\n"


def test_fabric_luns_are_still_scanned_rescanned_and_deleted(roots):
    scsi.do_scan_scsi_target(roots, 2, 0, 0, 4)
    scsi.do_scan_scsi_target(roots, 4, 0, 0, 2)  # FC
    assert open(roots.sysfs("class", "scsi_host", "host2", "scan")).read() == "0 0 4"
    scsi.do_rescan_scsi_device(roots, "2:0:0:2")  # a size rescan of a used LUN is fine
    scsi.do_delete_scsi_device(roots, "2:0:0:1")  # its neighbour on the session is free
    scsi.do_delete_scsi_device(roots, "4:0:0:1")
    assert _lun_attr(roots, "2:0:0:1", "delete") == "1"
    assert _lun_attr(roots, "4:0:0:1", "delete") == "1"
    assert _lun_attr(roots, "2:0:0:2", "rescan") == "1"


def test_a_missing_lun_is_not_found_not_refused(roots):
    with pytest.raises(DeviceNotFound):
        scsi.do_delete_scsi_device(roots, "2:0:0:9")


# ------------------------------------------------------------------ block
@pytest.mark.parametrize(
    "name, words",
    [
        ("sda", ("sda", "ahci")),
        ("sdh", ("sdh", "ahci")),
        ("dm-2", ("mpathl", "sdh")),
        ("nvme0n1", ("nvme0n1", "pcie")),
        ("nvme2n1", ("nvme2n1", FOREIGN)),
    ],
)
def test_setro_and_flush_refuse_local_devices(roots, name, words):
    run = Runner()
    _refused(lambda: block.do_set_block_device_read_only(roots, name, True, run=run), *words)
    _refused(lambda: block.do_flush_block_device(roots, name, flush=run.flush), *words)
    assert run.calls == []


@pytest.mark.parametrize(
    "name, words",
    [
        ("sdc", ("/srv/data",)),
        ("dm-1", ("/srv/data",)),
        ("sdd", ("swap",)),
        ("nvme3n1", ("/var/lib/mounted",)),
    ],
)
def test_setro_refuses_what_the_host_uses(roots, name, words):
    run = Runner()
    _refused(lambda: block.do_set_block_device_read_only(roots, name, True, run=run), *words)
    assert run.calls == []


def test_fabric_devices_are_still_set_and_flushed(roots):
    run = Runner()
    for name in ("sdb", "sde", "dm-0", "nvme1n1", "sdg"):
        block.do_set_block_device_read_only(roots, name, True, run=run)
    block.do_flush_block_device(roots, "dm-1", flush=run.flush)  # a mounted map: harmless
    assert [c[-1] for c in run.calls] == [
        roots.devfs(n) for n in ("sdb", "sde", "dm-0", "nvme1n1", "sdg", "dm-1")
    ]


# ------------------------------------------------------------------ multipath
@pytest.mark.parametrize(
    "op, arg, words",
    [
        (multipath.do_flush_map, "mpathl", ("mpathl", "sdh")),
        (multipath.do_flush_map, "1ATA_sdh", ("mpathl",)),  # by WWID
        (multipath.do_flush_map, "mpathm", ("mpathm", "/srv/data")),
        (multipath.do_resize_map, "mpathl", ("mpathl",)),
        (multipath.do_add_path, "sda", ("sda", "ahci")),
        (multipath.do_del_path, "sdh", ("sdh",)),
        (multipath.do_del_path, "sdc", ("sdc", "/srv/data")),
        (multipath.do_del_path, "nvme0n1", ("pcie",)),
    ],
)
def test_map_operations_refuse_local_or_used_maps_and_paths(roots, op, arg, words):
    run = Runner()
    _refused(lambda: op(roots, arg, run=run), *words)
    assert run.calls == []


def test_fabric_maps_and_paths_are_still_managed(roots):
    run = Runner()
    multipath.do_flush_map(roots, "mpatha", run=run)
    multipath.do_resize_map(roots, "mpathm", run=run)  # extending a used volume is fine
    multipath.do_add_path(roots, "sdb", run=run)
    multipath.do_del_path(roots, "sde", run=run)
    multipath.do_flush_map(roots, "mpath-gone", run=run)  # no such map: multipath says so
    assert run.calls == [
        ["multipath", "-f", "mpatha"],
        ["multipathd", "resize", "map", "mpathm"],
        ["multipathd", "add", "path", "sdb"],
        ["multipathd", "del", "path", "sde"],
        ["multipath", "-f", "mpath-gone"],
    ]


# ------------------------------------------------------------------ iSCSI
@pytest.mark.parametrize(
    "iqn, portal, words",
    [
        (BOOT_IQN, BOOT_PORTAL, ("boot target",)),
        (BOOT_IQN, "boot.example.net:3260", ("boot target",)),  # a host name hides no address
        (DATA_IQN, DATA_PORTAL, ("session2", "/srv/data", "swap")),
    ],
)
def test_logout_and_delete_refuse_boot_and_used_sessions(roots, iqn, portal, words):
    run = Runner()
    for op in (iscsi.do_node_logout, iscsi.do_node_delete):
        _refused(lambda op=op: op(roots, iqn, portal, run=run), iqn, *words)
    assert run.calls == []


def test_free_sessions_and_records_are_still_released(roots):
    run = Runner()
    iscsi.do_node_logout(roots, FREE_IQN, FREE_PORTAL, run=run)
    iscsi.do_node_delete(roots, FREE_IQN, FREE_PORTAL, run=run)
    iscsi.do_node_delete(roots, "iqn.2003-01.org.example:never-logged-in", FREE_PORTAL, run=run)
    assert [c[-1] for c in run.calls] == ["--logout", "delete", "delete"]


# ------------------------------------------------------------------ NVMe
@pytest.mark.parametrize(
    "ctrl, words",
    [
        ("nvme0", ("pcie",)),
        ("nvme2", (FOREIGN,)),
        ("nvme3", ("/var/lib/mounted",)),
    ],
)
def test_disconnect_refuses_local_foreign_and_used_controllers(roots, ctrl, words):
    _refused(lambda: nvme.do_disconnect(roots, ctrl), ctrl, *words)
    if ctrl != "nvme0":
        assert _ctrl_attr(roots, ctrl, "delete_controller") == ""


def test_own_free_controllers_are_still_disconnected_and_any_fabric_one_rescanned(roots):
    nvme.do_disconnect(roots, "nvme1")
    nvme.do_rescan_controller(roots, "nvme2")
    assert _ctrl_attr(roots, "nvme1", "delete_controller") == "1"
    assert _ctrl_attr(roots, "nvme2", "rescan_controller") == "1"
    _refused(lambda: nvme.do_rescan_controller(roots, "nvme0"), "pcie")


class Fabrics:
    def __init__(self):
        self.writes = []

    def __call__(self, device, options):
        self.writes.append(options)
        return "instance=5,cntlid=1\n"


@pytest.mark.parametrize(
    "identity",
    [dict(hostnqn=FOREIGN), dict(hostid=FOREIGN_ID), dict(hostnqn=HOSTNQN, hostid=FOREIGN_ID)],
)
def test_connect_refuses_another_hosts_identity(roots, identity):
    io = Fabrics()
    _refused(
        lambda: nvme.do_connect(roots, "tcp", "192.0.2.30", 4420, SUBSYS, io=io, **identity),
        "this host's",
    )
    assert io.writes == []


def test_connect_with_this_hosts_identity(roots):
    io = Fabrics()
    res = nvme.do_connect(
        roots, "tcp", "192.0.2.30", 4420, SUBSYS, hostnqn=HOSTNQN, hostid=HOSTID.upper(), io=io
    )
    assert res["controller"] == "nvme5" and f"hostnqn={HOSTNQN}" in io.writes[0]


def test_connect_refuses_any_identity_on_a_host_without_one(roots):
    os.unlink(roots.etcfs("nvme", "hostnqn"))
    io = Fabrics()
    _refused(
        lambda: nvme.do_connect(roots, "tcp", "192.0.2.30", 4420, SUBSYS, io=io, hostnqn=HOSTNQN),
        "not set",
    )
    assert io.writes == []


# ------------------------------------------------------------------ md
@pytest.mark.parametrize(
    "members, words",
    [
        (["nvme1n1", "nvme0n1"], ("nvme0n1", "pcie")),
        (["nvme1n1", "nvme2n1"], ("nvme2n1", FOREIGN)),
        (["nvme1n1", "nvme3n1"], ("nvme3n1", "/var/lib/mounted")),
    ],
)
def test_raid_create_refuses_local_foreign_and_used_members(roots, members, words):
    run = Runner()
    _refused(lambda: md.do_create_or_assemble_raid1(roots, "vol-2", members, run=run), *words)
    assert run.calls == []


def test_raid_stop_refuses_an_array_with_a_local_member(roots):
    run = Runner()
    _refused(lambda: md.do_stop_raid(roots, "local-mix", run=run), "md127", "nvme0n1", "pcie")
    assert run.calls == []


def test_fabric_raids_are_still_created_and_stopped(roots, fh):
    run = Runner()
    for member, array in (("nvme1n1", "md126"), ("nvme1n1", "md127"), ("nvme4n1", "md126")):
        os.unlink(fh.p(f"sys/class/block/{member}/holders/{array}"))
    assert (
        md.do_create_or_assemble_raid1(roots, "vol-2", ["nvme1n1", "nvme4n1"], run=run) == "created"
    )
    md.do_stop_raid(roots, "vol-1", run=run)
    assert run.calls[-1] == ["mdadm", "--stop", os.path.realpath(roots.devfs("md126"))]


# ------------------------------------------------------------------ the error type
def test_not_owned_is_an_invalid_argument_rebuilt_intact_from_its_args(roots):
    err = _refused(lambda: scsi.do_delete_scsi_device(roots, "0:0:0:0"))
    assert isinstance(err, InvalidArgument)
    rebuilt = type(err)(*err.args)  # what oslo.privsep does on the client side
    assert type(rebuilt) is NotOwned and str(rebuilt) == str(err)
    assert (rebuilt.obj, rebuilt.reason) == (err.obj, err.reason)
