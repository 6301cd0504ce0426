"""Privileged md RAID1 entrypoints: validation, assemble-before-create, no forced create."""

from __future__ import annotations

import os

import pytest

from brick_agent import commands
from brick_agent.errors import CommandFailed, DeviceNotFound, InvalidArgument
from brick_agent.host.roots import HostRoots
from brick_agent.privileged import md


@pytest.fixture
def roots(tmp_path):
    r = HostRoots.under(str(tmp_path / "host"))
    for name in ("nvme0n1", "nvme1n1"):
        os.makedirs(r.sysfs("block", name))
        os.makedirs(r.dev, exist_ok=True)
        open(r.devfs(name), "w").close()
    return r


class Mdadm:
    """A runner standing in for mdadm: members listed in ``superblocks`` have one."""

    def __init__(self, superblocks=(), fail=None):
        self.superblocks = set(superblocks)
        self.fail = fail
        self.calls = []

    def __call__(self, argv, **kwargs):
        self.calls.append((list(argv), kwargs))
        if self.fail and argv[1] == self.fail:
            raise CommandFailed(argv, 1, "mdadm: refused")
        out = ""
        if argv[1] == "--examine":  # as mdadm 4.2 answers: exit 0 either way
            assert md.NO_SUPERBLOCK in kwargs["ok_codes"]
            if os.path.basename(argv[-1]) in self.superblocks:
                out = "ARRAY /dev/md/vol-1  metadata=1.2 UUID=69be418e:d4a29726 name=any:vol-1\n"
        return commands.CommandResult(list(argv), 0, out, "", 0.01)


def test_blank_members_are_created_as_raid1_without_forcing(roots):
    run = Mdadm()
    assert md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme1n1"],
                                          run=run) == "created"
    argv, kwargs = run.calls[-1]
    assert argv[:3] == ["mdadm", "--create", roots.devfs("md", "vol-1")]
    assert "--level=1" in argv and "--raid-devices=2" in argv and "--assume-clean" in argv
    assert argv[-2:] == [roots.devfs("nvme0n1"), roots.devfs("nvme1n1")]
    # never suppress mdadm's "contains data, continue?" question: no --run, stdin closed
    assert "--run" not in argv and "-R" not in argv and kwargs["input"] == ""


def test_missing_replica_makes_a_degraded_array(roots):
    run = Mdadm()
    md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", None], run=run)
    assert run.calls[-1][0][-2:] == [roots.devfs("nvme0n1"), "missing"]


def test_members_with_a_superblock_are_assembled_never_recreated(roots):
    run = Mdadm(superblocks={"nvme1n1"})
    assert md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme1n1"],
                                          run=run) == "assembled"
    ops = [argv[1] for argv, _ in run.calls]
    assert "--create" not in ops
    assert run.calls[-1][0] == ["mdadm", "--assemble", "--run", roots.devfs("md", "vol-1"),
                                roots.devfs("nvme0n1"), roots.devfs("nvme1n1")]


@pytest.mark.parametrize("name", ["-x", "--force", "a b", "a;b", "../etc", "", "x" * 65])
def test_bad_names_are_refused_before_mdadm_runs(roots, name):
    run = Mdadm()
    with pytest.raises(InvalidArgument):
        md.do_create_or_assemble_raid1(roots, name, ["nvme0n1", "nvme1n1"], run=run)
    with pytest.raises(InvalidArgument):
        md.do_stop_raid(roots, name, run=run)
    assert run.calls == []


@pytest.mark.parametrize("devices", [
    ["nvme0n1"],                       # not a mirror
    [None, None],                      # nothing present
    ["nvme0n1", "nvme0n1"],            # same member twice
    ["sda", "nvme1n1"],                # not an NVMe namespace
    ["nvme0c0n1", "nvme1n1"],          # a hidden per-path node
    ["../nvme0n1", "nvme1n1"],
    ["--zero-superblock", "nvme1n1"],
    "nvme0n1",
])
def test_bad_member_lists_are_refused(roots, devices):
    run = Mdadm()
    with pytest.raises(InvalidArgument):
        md.do_create_or_assemble_raid1(roots, "vol-1", devices, run=run)
    assert run.calls == []


def test_absent_member_is_not_found(roots):
    with pytest.raises(DeviceNotFound):
        md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme7n1"], run=Mdadm())


def test_stop_is_a_no_op_without_the_array_and_reports_real_failures(roots):
    run = Mdadm(fail="--stop")
    md.do_stop_raid(roots, "vol-1", run=run)
    assert run.calls == []
    os.makedirs(roots.devfs("md"))
    open(roots.devfs("md127"), "w").close()
    os.symlink("../md127", roots.devfs("md", "vol-1"))
    with pytest.raises(CommandFailed):
        md.do_stop_raid(roots, "vol-1", run=run)
    assert run.calls[-1][0] == ["mdadm", "--stop", os.path.realpath(roots.devfs("md127"))]
