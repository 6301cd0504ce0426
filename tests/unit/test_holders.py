"""Processes holding a device open: from a fake /proc tree and from real processes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from brick_agent.connectors.scsi.volume import in_use_error
from brick_agent.errors import DeviceBusy, DeviceInUse
from brick_agent.host.holders import open_holders
from brick_agent.host.roots import HostRoots
from tests.unit.connectors.test_fibre_channel_fakehost import udev_of
from tests.unit.connectors.test_scsi_volume import dev, env  # noqa: F401 - fixture


def fake_process(proc, pid: int, comm: str, fds: dict[int, str]) -> None:
    fd_dir = proc / str(pid) / "fd"
    fd_dir.mkdir(parents=True)
    (proc / str(pid) / "comm").write_text(comm + "\n")
    for fd, target in fds.items():
        os.symlink(target, fd_dir / str(fd))


@pytest.fixture
def roots(tmp_path):
    roots = HostRoots.under(str(tmp_path))
    os.makedirs(roots.proc)
    os.makedirs(roots.dev)
    return roots


def test_holders_from_a_fake_proc(tmp_path, roots):
    proc = tmp_path / "proc"
    fake_process(proc, 4242, "qemu-system-x86", {0: "/dev/null", 17: "/dev/dm-3"})
    fake_process(proc, 77, "blkid", {3: "/dev/sdb"})
    fake_process(proc, 900, "bash", {0: "/dev/pts/0", 1: "pipe:[123]"})
    (proc / "self").mkdir()  # not a pid
    os.makedirs(proc / "55")  # a process whose fds cannot be read
    assert open_holders(roots, ["dm-3"]) == [(4242, "qemu-system-x86")]
    assert open_holders(roots, ["dm-3", "sdb"]) == [(77, "blkid"), (4242, "qemu-system-x86")]
    assert open_holders(roots, ["sdc"]) == []
    assert open_holders(dataclasses.replace(roots, proc=str(tmp_path / "none")), ["sdb"]) == []


def test_holders_error_names_them_or_keeps_the_original(tmp_path, roots):
    fake_process(tmp_path / "proc", 4242, "qemu-system-x86", {17: "/dev/dm-3"})
    original = DeviceBusy("map dm-3 is busy")
    err = in_use_error(roots, ["dm-3"], "map dm-3 was not removed", original)
    assert isinstance(err, DeviceInUse) and isinstance(err, DeviceBusy)
    assert err.holders == [(4242, "qemu-system-x86")]
    assert "pid 4242 (qemu-system-x86)" in str(err)
    assert in_use_error(roots, ["sdq"], "x", original) is original


def test_a_real_child_process_holding_the_device_is_named(tmp_path, roots):
    node = os.path.join(roots.dev, "sdz")
    open(node, "w").close()
    real = dataclasses.replace(roots, proc="/proc")
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; f=open(sys.argv[1]); print(1, flush=True); time.sleep(60)",
            node,
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline().strip() == b"1"
        assert (child.pid, _comm(child.pid)) in open_holders(real, ["sdz"])
    finally:
        child.kill()
        child.wait()
    assert all(pid != child.pid for pid, _ in open_holders(real, ["sdz"]))


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_detach_refused_for_an_open_map_names_the_holders(env):
    """remove_volume: the map stays in use -> DeviceInUse with pid and command; nothing
    deleted."""
    h, fake, ops = env
    ops.map_removal_timeout = 0.2
    fake.scan_lun(1, 0, 0, 1)
    fake.multipath_add(udev_of(1), ["sda"])
    (dm,) = fake.maps()
    fake_process(h.base / "proc", 3131, "qemu-kvm", {21: f"/dev/{dm}"})
    fake.fail_map_remove = -1  # "map in use" for ever
    ours = [dev(h, "1:0:0:1")]
    with pytest.raises(DeviceInUse) as err:
        ops.remove_volume(ours, udev_of(1), {}, force=False)
    assert err.value.holders == [(3131, "qemu-kvm")]
    assert f"map {dm}" in str(err.value) and "pid 3131 (qemu-kvm)" in str(err.value)
    assert fake.hctls() == ["1:0:0:1"]  # the path was kept
    left = ops.remove_volume(ours, udev_of(1), {}, force=True)
    assert any("pid 3131 (qemu-kvm)" in x for x in left)
