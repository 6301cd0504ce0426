"""Privileged md RAID1 entrypoints: validation, assemble-before-create, no forced create."""

from __future__ import annotations

import os

import pytest

from brick_agent import commands
from brick_agent.errors import CommandFailed, DeviceNotFound, InvalidArgument
from brick_agent.host.roots import HostRoots
from brick_agent.privileged import md
from tests.unit.host.fakehost import FakeHost


HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77"


@pytest.fixture
def roots(tmp_path):
    r = HostRoots.under(str(tmp_path / "host"))
    fh = FakeHost(tmp_path / "host")  # the members: namespaces of our NVMe/TCP controllers
    fh.attr("etc/nvme/hostnqn", HOSTNQN)
    for n in (0, 1):
        fh.nvme_ns(
            fh.nvme_ctrl(n, None, "nqn.2016-06.io.example:r", hostnqn=HOSTNQN), f"nvme{n}n1", 1
        )
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
    assert (
        md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme1n1"], run=run) == "created"
    )
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
    assert (
        md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme1n1"], run=run)
        == "assembled"
    )
    ops = [argv[1] for argv, _ in run.calls]
    assert "--create" not in ops
    assert run.calls[-1][0] == [
        "mdadm",
        "--assemble",
        "--run",
        roots.devfs("md", "vol-1"),
        roots.devfs("nvme0n1"),
        roots.devfs("nvme1n1"),
    ]


@pytest.mark.parametrize("name", ["-x", "--force", "a b", "a;b", "../etc", "", "x" * 65])
def test_bad_names_are_refused_before_mdadm_runs(roots, name):
    run = Mdadm()
    with pytest.raises(InvalidArgument):
        md.do_create_or_assemble_raid1(roots, name, ["nvme0n1", "nvme1n1"], run=run)
    with pytest.raises(InvalidArgument):
        md.do_stop_raid(roots, name, run=run)
    assert run.calls == []


@pytest.mark.parametrize(
    "devices",
    [
        ["nvme0n1"],  # not a mirror
        [None, None],  # nothing present
        ["nvme0n1", "nvme0n1"],  # same member twice
        ["sda", "nvme1n1"],  # not an NVMe namespace
        ["nvme0c0n1", "nvme1n1"],  # a hidden per-path node
        ["../nvme0n1", "nvme1n1"],
        ["--zero-superblock", "nvme1n1"],
        "nvme0n1",
    ],
)
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


def _hold(roots, member, md_name, state):
    os.makedirs(roots.sysfs("block", member, "holders"), exist_ok=True)
    os.symlink(f"../../{md_name}", roots.sysfs("block", member, "holders", md_name))
    os.makedirs(roots.sysfs("block", md_name, "md"), exist_ok=True)
    with open(roots.sysfs("block", md_name, "md", "array_state"), "w") as f:
        f.write(state + "\n")
    open(roots.devfs(md_name), "w").close()


def test_array_udev_assembled_inactive_is_started_not_recreated(roots):
    _hold(roots, "nvme1n1", "md127", "inactive")
    run = Mdadm(superblocks={"nvme0n1", "nvme1n1"})
    assert (
        md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme1n1"], run=run) == "adopted"
    )
    assert [argv for argv, _ in run.calls] == [
        ["mdadm", "--run", os.path.realpath(roots.devfs("md127"))]
    ]


def test_array_udev_assembled_and_running_is_kept_as_is(roots):
    _hold(roots, "nvme0n1", "md127", "clean")
    run = Mdadm(superblocks={"nvme0n1", "nvme1n1"})
    assert (
        md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme1n1"], run=run) == "adopted"
    )
    assert run.calls == []


class RefusingRun(Mdadm):
    """``mdadm --run`` refused (EINVAL) while udev is still assembling; after
    ``refusals`` attempts udev has started the array itself (``then`` state)."""

    def __init__(self, roots, refusals, then=None, **kw):
        super().__init__(**kw)
        self.roots, self.refusals, self.then = roots, refusals, then

    def __call__(self, argv, **kwargs):
        if argv[1] == "--run":
            self.calls.append((list(argv), kwargs))
            self.refusals -= 1
            if self.refusals == 0 and self.then:
                with open(self.roots.sysfs("block", "md127", "md", "array_state"), "w") as f:
                    f.write(self.then + "\n")
            raise CommandFailed(argv, 1, "mdadm: failed to run array /dev/md127: Invalid argument")
        return super().__call__(argv, **kwargs)


def test_run_refused_while_udev_assembles_is_retried_until_the_array_runs(roots):
    _hold(roots, "nvme1n1", "md127", "inactive")
    run = RefusingRun(roots, refusals=2, then="clean", superblocks={"nvme0n1", "nvme1n1"})
    assert (
        md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme1n1"], run=run) == "adopted"
    )
    assert [argv[1] for argv, _ in run.calls] == ["--run", "--run"]


def test_run_refused_for_good_is_reported(roots, monkeypatch):
    monkeypatch.setattr(md, "ADOPT_SETTLE", 0.3)
    _hold(roots, "nvme1n1", "md127", "inactive")
    run = RefusingRun(roots, refusals=10**6, superblocks={"nvme0n1", "nvme1n1"})
    with pytest.raises(CommandFailed, match="Invalid argument"):
        md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme1n1"], run=run)
    assert len(run.calls) >= 2


def test_udev_winning_the_race_during_assemble_is_adopted(roots):
    class Racing(Mdadm):
        def __call__(self, argv, **kwargs):
            if argv[1] == "--assemble":  # udev grabbed the member meanwhile
                self.calls.append((list(argv), kwargs))
                _hold(roots, "nvme0n1", "md126", "active")
                raise CommandFailed(argv, 2, "mdadm: /dev/nvme0n1 is busy - skipping")
            return super().__call__(argv, **kwargs)

    run = Racing(superblocks={"nvme0n1"})
    assert md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", None], run=run) == "adopted"


def test_assemble_failure_without_a_holder_is_reported(roots):
    run = Mdadm(superblocks={"nvme0n1"}, fail="--assemble")
    with pytest.raises(CommandFailed):
        md.do_create_or_assemble_raid1(roots, "vol-1", ["nvme0n1", "nvme1n1"], run=run)
