import os

from brick_agent.host import sysfs


def test_read_attr_strips_and_tolerates_missing(tmp_path):
    f = tmp_path / "state"
    f.write_text("running\n")
    assert sysfs.read_attr(str(f)) == "running"
    assert sysfs.read_attr(str(tmp_path / "gone")) is None
    assert sysfs.read_attr(str(tmp_path / "gone" / "deeper")) is None


def test_read_attr_unreadable_directory_is_none(tmp_path):
    (tmp_path / "wwid").mkdir()
    assert sysfs.read_attr(str(tmp_path / "wwid")) is None


def test_read_attr_under_a_file_is_none(tmp_path):
    (tmp_path / "f").write_text("x")
    assert sysfs.read_attr(str(tmp_path / "f" / "child")) is None  # ENOTDIR


def test_read_attr_of_a_down_connection_is_none(tmp_path, monkeypatch):
    """A down iSCSI connection's current 'address' fails with ENOTCONN (real kernel: the
    attribute opens, its read fails)."""
    import errno

    (tmp_path / "address").write_text("10.0.0.1\n")
    (tmp_path / "persistent_address").write_text("10.0.0.1\n")
    real_read = os.read

    def kernel_read(fd, n):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/address"):
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", kernel_read)
    assert sysfs.read_attr(str(tmp_path / "address")) is None
    assert sysfs.read_attr(str(tmp_path / "persistent_address")) == "10.0.0.1"


def test_read_int(tmp_path):
    (tmp_path / "n").write_text("42\n")
    (tmp_path / "h").write_text("0x1f\n")
    (tmp_path / "bad").write_text("off\n")
    assert sysfs.read_int(str(tmp_path / "n")) == 42
    assert sysfs.read_int(str(tmp_path / "h"), base=0) == 31
    assert sysfs.read_int(str(tmp_path / "bad")) is None
    assert sysfs.read_int(str(tmp_path / "none")) is None


def test_read_lines_skips_blank(tmp_path):
    (tmp_path / "w").write_text("# c\n\n/a/\n /b/ \n")
    assert sysfs.read_lines(str(tmp_path / "w")) == ["# c", "/a/", "/b/"]
    assert sysfs.read_lines(str(tmp_path / "missing")) == []


def test_list_dir_natural_order_and_pattern(tmp_path):
    for n in ("host10", "host2", "host1", "other"):
        (tmp_path / n).mkdir()
    assert sysfs.list_dir(str(tmp_path)) == ["host1", "host2", "host10", "other"]
    assert sysfs.list_dir(str(tmp_path), r"host\d+") == ["host1", "host2", "host10"]
    assert sysfs.list_dir(str(tmp_path / "missing")) == []
    (tmp_path / "file").write_text("")
    assert sysfs.list_dir(str(tmp_path / "file")) == []


def test_resolve_and_link_name(tmp_path):
    (tmp_path / "devices" / "dm-0").mkdir(parents=True)
    (tmp_path / "holders").mkdir()
    os.symlink("../devices/dm-0", tmp_path / "holders" / "dm-0")
    os.symlink("../devices/gone", tmp_path / "holders" / "dm-9")
    assert sysfs.resolve(str(tmp_path / "holders" / "dm-0")) == str(
        (tmp_path / "devices" / "dm-0").resolve()
    )
    assert sysfs.resolve(str(tmp_path / "holders" / "dm-9")) is None
    assert sysfs.link_name(str(tmp_path / "holders" / "dm-0")) == "dm-0"
    assert sysfs.link_name(str(tmp_path / "devices")) is None


def test_resolve_is_realpath_through_link_chains_loops_device_nodes_and_removal(
    tmp_path, monkeypatch
):
    """The kernel's answer (an O_PATH descriptor's /proc link) equals realpath(strict)."""
    (tmp_path / "devices" / "platform" / "host2" / "session1").mkdir(parents=True)
    os.symlink("devices/platform", tmp_path / "bus")  # a link in the middle of the path
    (tmp_path / "class").mkdir()
    os.symlink("../bus/host2/session1", tmp_path / "class" / "session1")
    os.symlink("session1", tmp_path / "class" / "alias")  # link to a link
    os.symlink("loop-b", tmp_path / "class" / "loop-a")
    os.symlink("loop-a", tmp_path / "class" / "loop-b")
    cases = ["class/session1", "class/alias", "class/alias/../session1", "bus/host2", "."]
    for rel in cases:
        path = str(tmp_path / rel)
        assert sysfs.resolve(path) == os.path.realpath(path, strict=True), rel
    assert sysfs.resolve(str(tmp_path / "class" / "loop-a")) is None
    assert sysfs.resolve(str(tmp_path / "class" / "missing" / "x")) is None
    assert sysfs.resolve("/dev/null") == "/dev/null"  # a device node is not opened for I/O
    monkeypatch.chdir(tmp_path / "class")
    assert sysfs.resolve("alias") == str((tmp_path / "devices/platform/host2/session1").resolve())


def test_resolve_without_proc_falls_back_to_realpath(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    os.symlink("d", tmp_path / "l")
    real_readlink = os.readlink

    def no_proc(path, *a, **kw):
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(path)
        return real_readlink(path, *a, **kw)

    monkeypatch.setattr(os, "readlink", no_proc)
    assert sysfs.resolve(str(tmp_path / "l")) == str((tmp_path / "d").resolve())
    assert sysfs.resolve(str(tmp_path / "nothing")) is None


def test_rebase():
    assert sysfs.rebase("/dev/sdb", "/dev", "/t/dev") == "/t/dev/sdb"
    assert sysfs.rebase("/dev", "/dev", "/t/dev") == "/t/dev"
    assert sysfs.rebase("/t/dev/sdb", "/dev", "/t/dev") == "/t/dev/sdb"
    assert sysfs.rebase("/devices/x", "/dev", "/t/dev") == "/devices/x"
    assert sysfs.rebase("/dev/sdb", "/dev", "/dev") == "/dev/sdb"


def test_resolve_within_relative_absolute_and_loops(tmp_path):
    dev = tmp_path / "dev"
    (dev / "disk" / "by-id").mkdir(parents=True)
    (dev / "mapper").mkdir()
    (dev / "sdb").write_text("")
    (dev / "dm-0").write_text("")
    os.symlink("../../sdb", dev / "disk" / "by-id" / "scsi-36001")
    os.symlink("/dev/dm-0", dev / "mapper" / "mpatha")  # absolute target, real-host spelling
    os.symlink("../../sdz", dev / "disk" / "by-id" / "dangling")
    os.symlink("loop2", dev / "loop1")
    os.symlink("loop1", dev / "loop2")
    base = str(dev)
    assert sysfs.resolve_within("/dev/disk/by-id/scsi-36001", "/dev", base) == str(dev / "sdb")
    assert sysfs.resolve_within(str(dev / "disk/by-id/scsi-36001"), "/dev", base) == str(
        dev / "sdb"
    )
    assert sysfs.resolve_within("/dev/mapper/mpatha", "/dev", base) == str(dev / "dm-0")
    assert sysfs.resolve_within("/dev/sdb", "/dev", base) == str(dev / "sdb")
    assert sysfs.resolve_within("/dev/disk/by-id/dangling", "/dev", base) is None
    assert sysfs.resolve_within("/dev/loop1", "/dev", base) is None
    assert sysfs.resolve_within("/dev/nothing", "/dev", base) is None
