"""Raw views of the lab VM's kernel for functional tests, independent of brick_agent.host.

Leftover and identity checks must not trust the code under test, so they read
sysfs and /dev directly here.  Also: O_DIRECT write/read round trips, a
polling wait that fails the test, and multipathd started for a test.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import mmap
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from brick_lab import wait_for

T = TypeVar("T")
BLOCK = 4096
MiB = 1024 * 1024


def read(path: str) -> str | None:
    """Stripped text of a sysfs attribute; None when it cannot be read (gone, down, ...)."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def sessions_of(iqn: str) -> list[str]:
    """iSCSI sessions ('session3') to target ``iqn``."""
    return sorted(
        os.path.basename(s)
        for s in glob.glob("/sys/class/iscsi_session/session*")
        if read(f"{s}/targetname") == iqn
    )


def disks_with(wwid: str) -> list[str]:
    """SCSI disks ('sdb') whose ``device/wwid`` is ``wwid`` (kernel spelling, 'naa.…')."""
    return sorted(
        w.split("/")[3] for w in glob.glob("/sys/block/sd*/device/wwid") if read(w) == wwid
    )


def maps_with(scsi_id: str) -> list[str]:
    """dm-multipath maps ('dm-0') of ``scsi_id`` (udev spelling, '36001405…')."""
    return sorted(
        u.split("/")[3]
        for u in glob.glob("/sys/block/dm-*/dm/uuid")
        if read(u) == f"mpath-{scsi_id}"
    )


def nvme_ctrls_of(nqn: str) -> list[str]:
    """NVMe controllers ('nvme0') connected to subsystem ``nqn``."""
    return sorted(
        os.path.basename(c)
        for c in glob.glob("/sys/class/nvme/nvme*")
        if read(f"{c}/subsysnqn") == nqn
    )


def nvme_heads_with(uuid: str) -> list[str]:
    """Namespace block devices ('nvme0n1', not the per-path 'nvme0c0n1') with ``uuid``."""
    return sorted(
        u.split("/")[3]
        for u in glob.glob("/sys/block/nvme*/uuid")
        if re.fullmatch(r"nvme\d+n\d+", u.split("/")[3]) and read(u) == uuid
    )


def dev_uuid(path: str) -> str | None:
    """The ``uuid`` attribute of the block device ``path`` resolves to."""
    return read(f"/sys/class/block/{os.path.basename(os.path.realpath(path))}/uuid")


def scsi_devices_of(host: str) -> list[str]:
    """H:C:T:L of every SCSI device on SCSI host ``host`` ('host3')."""
    n = host[len("host") :]
    return sorted(os.path.basename(p) for p in glob.glob(f"/sys/bus/scsi/devices/{n}:*:*:*"))


def write_read(path: str, seed: int, backing: str | None = None) -> None:
    """O_DIRECT write+read of one block through ``path``; optionally check the target's file."""
    data = bytes((seed + i) % 251 for i in range(BLOCK))
    buf = mmap.mmap(-1, BLOCK)
    buf.write(data)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        assert os.pwritev(fd, [buf], 0) == BLOCK
        os.fsync(fd)
        back = mmap.mmap(-1, BLOCK)
        assert os.preadv(fd, [back], 0) == BLOCK
        assert bytes(back) == data
    finally:
        os.close(fd)
    if backing:
        with open(backing, "rb") as f:
            assert f.read(BLOCK) == data, "data did not reach the target's backing file"


def io_roundtrip(path: str, offset_mib: int = 1, size_mib: int = 2) -> None:
    """Write random data with O_DIRECT (dd), read it back, compare."""
    data = os.urandom(size_mib * MiB)
    src = f"/tmp/nvme-io-{os.getpid()}-{threading.get_ident()}"
    with open(src, "wb") as f:
        f.write(data)
    try:
        subprocess.run(
            [
                "dd",
                f"if={src}",
                f"of={path}",
                "bs=1M",
                f"seek={offset_mib}",
                f"count={size_mib}",
                "oflag=direct",
                "conv=fsync,notrunc",
                "status=none",
            ],
            check=True,
            timeout=60,
        )
        out = subprocess.run(
            [
                "dd",
                f"if={path}",
                "bs=1M",
                f"skip={offset_mib}",
                f"count={size_mib}",
                "iflag=direct",
                "status=none",
            ],
            check=True,
            timeout=60,
            capture_output=True,
        ).stdout
    finally:
        os.unlink(src)
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest(), f"I/O mismatch on {path}"


def wait(pred: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``pred`` until it returns a truthy value, and return that; fail the test
    (AssertionError) after ``timeout`` seconds."""
    return wait_for(pred, timeout, what, interval, error=AssertionError)


_GUEST_MULTIPATHD = os.path.join(
    os.path.dirname(__file__), "..", "tools", "kernel-lab", "guest-multipathd"
)


@contextlib.contextmanager
def multipathd_running() -> Iterator[None]:
    """multipathd runs inside the block (tools/kernel-lab/guest-multipathd start/stop)."""
    subprocess.run([_GUEST_MULTIPATHD, "start"], check=True, capture_output=True, timeout=60)
    try:
        yield
    finally:
        subprocess.run([_GUEST_MULTIPATHD, "stop"], capture_output=True, timeout=60)
