"""device_users on fake trees: holders, mounts, swap and open files, partitions included."""

from __future__ import annotations

import os

from brick_agent.host.roots import HostRoots
from brick_agent.host.usage import device_users


def _disk(roots: HostRoots, name: str, partitions: int = 0) -> None:
    base = roots.sysfs("class", "block", name)
    os.makedirs(os.path.join(base, "holders"))
    for n in range(1, partitions + 1):
        part = os.path.join(base, f"{name}p{n}")
        os.makedirs(os.path.join(part, "holders"))
        with open(os.path.join(part, "partition"), "w") as f:
            f.write(f"{n}\n")
        os.makedirs(roots.sysfs("class", "block", f"{name}p{n}", "holders"), exist_ok=True)


def test_an_unused_device_has_no_users(tmp_path):
    roots = HostRoots.under(str(tmp_path))
    _disk(roots, "nvme3n1", partitions=1)
    os.makedirs(roots.procfs("77", "fd"))
    os.symlink("/dev/nvme3n10", roots.procfs("77", "fd", "4"))   # a name that only starts alike
    assert device_users(roots, "nvme3n1") == []


def test_a_mounted_partition_a_swap_and_an_open_file_are_users(tmp_path):
    roots = HostRoots.under(str(tmp_path))
    _disk(roots, "nvme3n1", partitions=2)
    os.makedirs(roots.proc)
    with open(roots.procfs("mounts"), "w") as f:
        f.write("/dev/nvme3n1p1 /var/lib/data xfs rw 0 0\n")
    with open(roots.procfs("swaps"), "w") as f:
        f.write("Filename Type Size Used Priority\n/dev/nvme3n1p2 partition 1024 0 -2\n")
    os.makedirs(roots.procfs("77", "fd"))
    os.symlink("/dev/nvme3n1", roots.procfs("77", "fd", "4"))
    with open(roots.procfs("77", "comm"), "w") as f:
        f.write("qemu-img\n")
    assert device_users(roots, "nvme3n1") == [
        "nvme3n1p1 mounted on /var/lib/data", "nvme3n1p2 swap", "nvme3n1 open by pid 77 (qemu-img)"]
