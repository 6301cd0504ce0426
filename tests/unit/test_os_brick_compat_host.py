"""Host identifiers of the os-brick compat connector object, and the privileged reads.

Fake trees only; nothing here needs os-brick or root.
"""

from __future__ import annotations

import inspect
import os

import pytest

from brick_agent import privileged
from brick_agent.errors import InvalidArgument, NotOwned
from brick_agent.host.roots import HostRoots
from brick_agent.os_brick_compat import host_ids
from brick_agent.privileged import reads

SUUID = "4c4c4544-0035-4b10-8044-b3c04f4b4d32"
FSUUID = "0f6b5c1e-3a9d-4e44-b1c2-8d7e6f5a4b3c"
IQN = "iqn.1993-08.org.debian:01:abcdef012345"


def _write(path: str, content: str = "") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(content)
    return path


@pytest.fixture
def roots(tmp_path):
    return HostRoots.under(str(tmp_path / "host"))


def _mountinfo(tmp_path, *lines: str) -> str:
    return _write(str(tmp_path / "mountinfo"), "\n".join(lines) + "\n")


def _root_disk(roots: HostRoots, name: str = "sda2", fs_uuid: str = FSUUID) -> None:
    _write(roots.devfs(name))
    os.makedirs(roots.devfs("disk", "by-uuid"), exist_ok=True)
    os.symlink(f"../../{name}", roots.devfs("disk", "by-uuid", fs_uuid))
    _write(roots.devfs("sdb"))
    os.symlink("../../sdb", roots.devfs("disk", "by-uuid", "11111111-2222-3333-4444-555555555555"))


# ------------------------------------------------------------------ uuid (root filesystem)
def test_root_fs_uuid_from_mountinfo_and_by_uuid_links(roots, tmp_path):
    _root_disk(roots)
    info = _mountinfo(
        tmp_path,
        "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro",
        "23 22 0:21 / /proc rw shared:5 - proc proc rw",
    )
    assert host_ids.root_fs_uuid(roots, info) == FSUUID


def test_root_fs_uuid_last_mount_on_slash_wins_and_escapes_decode(roots, tmp_path):
    _root_disk(roots, name="dm-0")
    info = _mountinfo(
        tmp_path,
        "1 0 8:1 / / ro - ext4 /dev/sda1 ro",
        "30 1 253:0 / / rw - xfs /dev/dm-0 rw",
        r"31 30 0:40 / /mnt/with\040space rw - tmpfs tmpfs rw",
    )
    assert host_ids.root_source(info) == "/dev/dm-0"
    assert host_ids.root_fs_uuid(roots, info) == FSUUID


@pytest.mark.parametrize(
    "line",
    [
        "1 0 0:50 / / rw - overlay overlay rw,lowerdir=/a",
        "1 0 0:50 / / rw - nfs4 10.0.0.1:/export rw",
        "garbage line",
    ],
)
def test_root_fs_uuid_none_for_a_root_that_is_not_a_block_device(roots, tmp_path, line):
    _root_disk(roots)
    assert host_ids.root_fs_uuid(roots, _mountinfo(tmp_path, line)) is None


def test_root_fs_uuid_none_without_a_by_uuid_link(roots, tmp_path):
    _write(roots.devfs("sda2"))
    info = _mountinfo(tmp_path, "22 1 8:2 / / rw - ext4 /dev/sda2 rw")
    assert host_ids.root_fs_uuid(roots, info) is None
    assert host_ids.root_fs_uuid(roots, str(tmp_path / "missing")) is None


def test_root_fs_uuid_from_the_udev_database_without_links(roots, tmp_path):
    _write(roots.devfs("vda"))
    _write(roots.sysfs("class", "block", "vda", "dev"), "254:0\n")
    _write(
        roots.runfs("udev", "data", "b254:0"),
        f"S:disk/by-path/virtio-pci-0000:00:04.0\nE:ID_FS_TYPE=ext4\nE:ID_FS_UUID={FSUUID}\n",
    )
    info = _mountinfo(tmp_path, "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw")
    assert host_ids.root_fs_uuid(roots, info) == FSUUID


# ------------------------------------------------------------------ system uuid (DMI)
def test_system_uuid_read_from_sysfs(roots):
    _write(roots.sysfs(*host_ids.DMI_PRODUCT_UUID), SUUID + "\n")
    assert host_ids.system_uuid(roots) == SUUID


@pytest.mark.parametrize("content", ["", "Not Settable", "1234"])
def test_system_uuid_none_when_absent_or_not_a_uuid(roots, content):
    assert host_ids.system_uuid(roots) is None
    _write(roots.sysfs(*host_ids.DMI_PRODUCT_UUID), content)
    assert host_ids.system_uuid(roots) is None


def test_system_uuid_unreadable_file_goes_through_the_privileged_reader(roots, monkeypatch):
    path = _write(roots.sysfs(*host_ids.DMI_PRODUCT_UUID), SUUID)
    real_open = open

    def deny(p, *a, **k):
        if p == path:
            raise PermissionError(13, "Permission denied", p)
        return real_open(p, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    assert host_ids.system_uuid(roots, privileged_read=lambda: SUUID) == SUUID
    # a fake tree never reaches the real privileged reader
    assert host_ids.system_uuid(roots) is None

    def broken() -> str:
        raise OSError("privsep daemon did not start")

    assert host_ids.system_uuid(roots, privileged_read=broken) is None


def test_host_ids_has_only_known_keys(roots, tmp_path):
    info = _mountinfo(tmp_path, "1 0 0:50 / / rw - overlay overlay rw")
    assert host_ids.host_ids(roots, info) == {}
    _root_disk(roots)
    _write(roots.sysfs(*host_ids.DMI_PRODUCT_UUID), SUUID)
    info = _mountinfo(tmp_path, "22 1 8:2 / / rw - ext4 /dev/sda2 rw")
    assert host_ids.host_ids(roots, info) == {"uuid": FSUUID, "system uuid": SUUID}


# ------------------------------------------------------------------ privileged reads
def test_reads_entrypoints_are_narrow_and_in_our_context():
    eps = {name: obj for name, obj in vars(reads).items() if privileged.default.is_entrypoint(obj)}
    assert set(eps) == {
        "block_device_readable",
        "volume_devices_users",
        "dmi_product_uuid",
        "iscsi_initiator_name",
    }
    for name, ep in eps.items():
        params = inspect.signature(ep.args[0].__wrapped__).parameters
        assert not set(params) & {"roots", "run", "path", "cmd", "argv"}, name


@pytest.mark.parametrize(
    "name", ["../../etc/shadow", "sda1", "mem", "loop0", "md", "md0p1", "", 3, None]
)
def test_block_device_readable_refuses_what_is_not_a_volume_device_name(roots, name):
    with pytest.raises(InvalidArgument):
        reads.do_block_device_readable(roots, name)


def test_block_device_readable_false_when_the_kernel_has_no_such_disk(roots):
    _write(roots.devfs("sdb"), "x" * 10)
    assert reads.do_block_device_readable(roots, "sdb") is False


@pytest.fixture
def owned(tmp_path):
    """The host of test_privileged_ownership: local, boot, fabric and mixed devices."""
    from tests.unit.host.fakehost import FakeHost
    from tests.unit.test_privileged_ownership import build

    return build(FakeHost(tmp_path / "owned")).roots


@pytest.mark.parametrize("name", ["sda", "nvme0n1", "md127", "dm-2"])
def test_block_device_readable_refuses_devices_no_fabric_volume_owns(owned, name):
    """local disk, PCIe namespace, md array with a local member, map over a local disk"""
    with pytest.raises(NotOwned):
        reads.do_block_device_readable(owned, name)


@pytest.mark.parametrize("name", ["sdb", "sdg", "nvme1n1", "md126", "dm-0"])
def test_block_device_readable_reads_fabric_volume_devices_only_if_block_devices(
    owned, name, monkeypatch
):
    """iSCSI LUN, FC LUN, fabric namespace, md array of fabric namespaces, map over a
    fabric LUN: a fake tree's /dev node is a plain file (refused); a block device reads."""
    with open(owned.devfs(name), "wb") as fh:
        fh.write(b"\0" * 8192)
    with pytest.raises(InvalidArgument, match="not a block device"):
        reads.do_block_device_readable(owned, name)
    monkeypatch.setattr(reads.stat, "S_ISBLK", lambda mode: True)
    assert reads.do_block_device_readable(owned, name) is True


def test_block_device_readable_never_follows_a_dev_symlink(owned, tmp_path, monkeypatch):
    monkeypatch.setattr(reads.stat, "S_ISBLK", lambda mode: True)
    os.unlink(owned.devfs("sdb")) if os.path.lexists(owned.devfs("sdb")) else None
    os.symlink(_write(str(tmp_path / "secret"), "s"), owned.devfs("sdb"))
    with pytest.raises(InvalidArgument):  # resolves outside /dev
        reads.do_block_device_readable(owned, "sdb")


def test_dmi_product_uuid_and_initiator_name(roots):
    assert reads.do_dmi_product_uuid(roots) is None
    assert reads.do_iscsi_initiator_name(roots) is None
    _write(roots.sysfs(*reads.DMI_PRODUCT_UUID), SUUID + "\n")
    _write(roots.etcfs("iscsi", "initiatorname.iscsi"), f"## generated\nInitiatorName={IQN}\n")
    assert reads.do_dmi_product_uuid(roots) == SUUID
    assert reads.do_iscsi_initiator_name(roots) == IQN
    _write(roots.sysfs(*reads.DMI_PRODUCT_UUID), "$(reboot)")
    _write(roots.etcfs("iscsi", "initiatorname.iscsi"), "InitiatorName=not an iqn;\n")
    assert reads.do_dmi_product_uuid(roots) is None
    assert reads.do_iscsi_initiator_name(roots) is None


# ------------------------------------------------------------------ users of volume devices
@pytest.mark.parametrize("name", ["sda", "nvme0n1", "md127", "dm-2"])
def test_volume_devices_users_refuses_devices_no_fabric_volume_owns(owned, name):
    with pytest.raises(NotOwned):
        reads.do_volume_devices_users(owned, ["sdb", name])


@pytest.mark.parametrize(
    "names, grace",
    [
        ([], 0.0),
        ("sdb", 0.0),
        (["../sda"], 0.0),
        (["sdb"] * 1025, 0.0),
        (["sdb"], -1),
        (["sdb"], 11.0),
        (["sdb"], True),
        (["sdb"], "1"),
    ],
)
def test_volume_devices_users_validates_before_reading(owned, names, grace):
    with pytest.raises(InvalidArgument):
        reads.do_volume_devices_users(owned, names, grace)


def test_volume_devices_users_names_the_uses_of_fabric_devices(owned):
    """A map over a fabric LUN mounted, a fabric LUN used as swap, a free one; a name
    the kernel no longer has is skipped, not refused."""
    users = reads.do_volume_devices_users(owned, ["dm-1", "sdd", "sdb", "sdz"])
    assert any("dm-1" in u and "/srv/data" in u for u in users), users
    assert any("sdd" in u and "swap" in u for u in users), users
    assert reads.do_volume_devices_users(owned, ["sdb", "sdz"]) == []


def test_a_caller_that_is_not_root_asks_the_privileged_side_for_users(monkeypatch):
    """Another user's /proc/PID/fd is unreadable (a use, failing closed): a service user
    asks the privileged side; root, or a fake tree, reads the host itself."""
    from brick_agent.connectors import actions
    from brick_agent.host import usage
    from brick_agent.host.roots import DEFAULT_ROOTS

    asked: list[tuple[list[str], float]] = []
    monkeypatch.setattr(reads, "volume_devices_users", lambda n, g: asked.append((n, g)) or [])
    read_here: list[list[str]] = []
    monkeypatch.setattr(
        usage, "devices_users", lambda roots, n, udev_grace=0.0: read_here.append(list(n)) or []
    )
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert actions.volume_devices_users(DEFAULT_ROOTS, ["nvme1n2"], udev_grace=3.0) == []
    assert asked == [(["nvme1n2"], 3.0)] and read_here == []
    assert actions.volume_devices_users(DEFAULT_ROOTS, []) == [] and len(asked) == 1
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    actions.volume_devices_users(DEFAULT_ROOTS, ["nvme1n2"])
    assert read_here == [["nvme1n2"]] and len(asked) == 1
