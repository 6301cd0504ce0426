"""host.usage: what the host itself uses, read from a fake /proc and sysfs."""

from __future__ import annotations

from brick_agent.host import usage
from brick_agent.host.usage import device_users
from tests.unit.host.fakehost import FakeHost


def _host(tmp_path):
    fh = FakeHost(tmp_path / "h")
    sess = fh.iscsi_session(1, 2, "iqn.2003-01.org.example:t", "192.0.2.1")
    for lun, name in ((1, "sdb"), (2, "sdc"), (3, "sdd")):
        fh.scsi_disk(sess, f"2:0:0:{lun}", name, wwid=f"naa.6001405{lun:025x}")
    fh.partition("sdb", "sdb1")
    return fh


def test_mountinfo_by_device_number_even_as_dev_root_and_escaped(tmp_path):
    fh = _host(tmp_path)
    devnum = fh.p("sys/class/block/sdb1/dev").read_text().strip()
    sdc = fh.p("sys/class/block/sdc/dev").read_text().strip()
    fh.attr(
        "proc/self/mountinfo",
        "\n".join(
            [
                f"22 1 {devnum} / / rw - ext4 /dev/root rw",
                f"23 22 {sdc} / /srv/my\\040data rw shared:2 - xfs /dev/sdc rw",
                f"24 22 {sdc} /sub /bind rw - xfs /dev/sdc rw",  # a bind mount
                "25 22 0:33 / /vol rw - btrfs /dev/sdd rw",  # anonymous dev
                "26 22 0:5 / /dev rw - devtmpfs udev rw",
            ]
        ),
    )
    assert usage.mounted_devices(fh.roots) == {"sdb1": "/", "sdc": "/srv/my data", "sdd": "/vol"}


def test_swap_partitions_and_what_is_stacked_on_them(tmp_path):
    fh = _host(tmp_path)
    fh.swap("sdc")
    fh.attr("proc/swaps", fh.p("proc/swaps").read_text() + "/swapfile  file  1024  0  -3\n")
    fh.mount("sdb1", "/")
    fh.dm(0, "mpatha", "mpath-36001405", ["sdd"])
    fh.mount("dm-0", "/data")
    assert usage.uses_of(fh.roots, ["sdb"]) == ["sdb1: root filesystem"]
    assert usage.uses_of(fh.roots, ["sdc", "sdd"]) == [
        "sdc: swap",
        "dm-0: filesystem mounted at /data",
    ]


def test_no_mount_table_means_nothing_mounted(tmp_path):
    assert usage.host_uses(_host(tmp_path).roots) == {}


def test_boot_targets_match_by_name_then_address_when_both_are_known(tmp_path):
    fh = _host(tmp_path)
    fh.ibft_target(0, "iqn.2003-01.org.example:boot", "192.0.2.9", 3260)
    iqn = "iqn.2003-01.org.example:boot"
    assert usage.is_boot_target(fh.roots, iqn, "192.0.2.9", 3260)
    assert usage.is_boot_target(fh.roots, iqn.upper(), "boot.example.net", 3260)
    assert usage.is_boot_target(fh.roots, iqn, None, None)
    assert not usage.is_boot_target(fh.roots, iqn, "192.0.2.10", 3260)
    assert not usage.is_boot_target(fh.roots, iqn, "192.0.2.9", 3261)
    assert not usage.is_boot_target(fh.roots, "iqn.2003-01.org.example:t", "192.0.2.9", 3260)


# ---------------------------------------------------------------- device_users
def test_an_unused_device_has_no_users(tmp_path):
    fh = _host(tmp_path)
    fh.p("proc/77/fd").mkdir(parents=True)
    (fh.p("proc/77/fd") / "4").symlink_to("/dev/sdb10")  # a name that only starts alike
    assert device_users(fh.roots, "sdb") == []


def test_a_mounted_partition_a_holder_a_swap_and_an_open_file_are_users(tmp_path):
    fh = _host(tmp_path)
    fh.mount("sdb1", "/var/lib/data")
    fh.swap("sdc")
    fh.dm(0, "mpatha", "mpath-36001405", ["sdd"])
    fh.p("proc/77/fd").mkdir(parents=True)
    (fh.p("proc/77/fd") / "4").symlink_to("/dev/sdb")
    fh.attr("proc/77/comm", "qemu-img")
    assert device_users(fh.roots, "sdb") == [
        "sdb1: filesystem mounted at /var/lib/data",
        "sdb open by pid 77 (qemu-img)",
    ]
    assert device_users(fh.roots, "sdc") == ["sdc: swap"]
    assert device_users(fh.roots, "sdd") == ["sdd held by dm-0"]


def test_a_process_whose_descriptors_cannot_be_read_counts_as_a_user(tmp_path):
    fh = _host(tmp_path)
    fh.p("proc/88").mkdir(parents=True)
    fh.p("proc/88/fd").write_text("not a directory")  # listdir fails: ENOTDIR
    assert device_users(fh.roots, "sdb") == ["unknown (/proc/88/fd unreadable)"]


def test_udev_probing_a_new_device_is_waited_for_any_other_user_answers_at_once(tmp_path):
    """A detach right after an attach: udev's worker still has the device open for its
    probe.  That alone is waited for (bounded); any other user is a user at once."""
    fh = _host(tmp_path)
    fh.p("proc/55/fd").mkdir(parents=True)
    (fh.p("proc/55/fd") / "9").symlink_to("/dev/sdb")
    fh.attr("proc/55/comm", "(udev-worker)")
    slept: list[float] = []

    def probe_ends(seconds):  # the worker closes the device after the second look
        slept.append(seconds)
        if len(slept) == 2:
            (fh.p("proc/55/fd") / "9").unlink()

    assert usage.devices_users(fh.roots, ["sdb"], udev_grace=5.0, sleep=probe_ends) == []
    assert len(slept) == 2
    # without a grace, or past it, udev's open is reported like any other
    (fh.p("proc/55/fd") / "9").symlink_to("/dev/sdb")
    assert usage.devices_users(fh.roots, ["sdb"]) == ["sdb open by pid 55 ((udev-worker))"]
    assert usage.devices_users(fh.roots, ["sdb"], udev_grace=0.1, sleep=lambda s: None) == [
        "sdb open by pid 55 ((udev-worker))"
    ]
    # another process besides udev: no waiting at all
    fh.p("proc/77/fd").mkdir(parents=True)
    (fh.p("proc/77/fd") / "4").symlink_to("/dev/sdb")
    fh.attr("proc/77/comm", "qemu-img")
    waited: list[float] = []
    users = usage.devices_users(fh.roots, ["sdb"], udev_grace=5.0, sleep=waited.append)
    assert waited == [] and "sdb open by pid 77 (qemu-img)" in users
