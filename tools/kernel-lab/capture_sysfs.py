#!/usr/bin/env python3
"""Copy the storage-relevant parts of a live sysfs, /dev and /etc into a tree.

Run in the lab VM (root). Layout of the result: ``OUT/sys/...``, ``OUT/dev/...``,
``OUT/etc/...`` so ``HostRoots.under(OUT)`` reads it like a host.

- Class/bus directories (block, scsi_*, iscsi_*, nvme*, fc_*) are copied with
  their symlinks (kept as the kernel's relative link text, so
  ``os.path.realpath`` works inside the copy); every device directory they
  point to is copied recursively, and the plain attributes of its ancestors up
  to /sys/devices.
- Attribute files: small, readable, text only. Write-only attributes (scan,
  delete, rescan, ...) become empty files, so code under test can open and
  write them; they are listed in ``OUT/capture.json``. Binary, unreadable or
  huge attributes and noisy dirs (power/, mq/, trace/, ...) are skipped.
- /dev: disk/by-{id,path,uuid} links and mapper/* links kept; device nodes
  (sd*, nvme*, ng*, dm-*, mapper/control) become empty regular files.

Usage: capture_sysfs.py OUT [--tar OUT.tar.gz] [--name NAME] [--note TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import tarfile
import time

CLASSES = (
    "block",
    "scsi_host",
    "scsi_device",
    "scsi_disk",
    "iscsi_session",
    "iscsi_connection",
    "iscsi_host",
    "iscsi_transport",
    "nvme",
    "nvme-subsystem",
    "nvme-fabrics",
    "fc_host",
    "fc_remote_ports",
    "fc_transport",
)
LINK_DIRS = ["/sys/block", "/sys/bus/scsi/devices"] + [f"/sys/class/{c}" for c in CLASSES]
EXTRA_FILES = (
    "/sys/module/nvme_core/parameters/multipath",
    "/sys/module/scsi_mod/parameters/scan",
    "/sys/module/iscsi_tcp/parameters/debug_iscsi_tcp",
)
SKIP_DIRS = {
    "power",
    "mq",
    "trace",
    "msi_irqs",
    "wakeup",
    "statistics",
    "firmware_node",
    "integrity",
    "iosched",
    "hctx",
}
SKIP_DEVICES = (
    "/sys/devices/virtual/block/loop",
    "/sys/devices/virtual/block/ram",
    "/sys/devices/virtual/block/zram",
)
MAX_ATTR = 8192
DEV_GLOBS = ("sd", "nvme", "ng", "dm-")
ETC_FILES = (
    "iscsi/initiatorname.iscsi",
    "nvme/hostnqn",
    "nvme/hostid",
    "multipath/wwids",
    "multipath.conf",
)


class Capture:
    def __init__(self, out: str) -> None:
        self.out = out
        self.done_dirs: set[str] = set()
        self.done_files: set[str] = set()
        self.write_only: list[str] = []
        self.skipped = 0

    def dst(self, path: str) -> str:
        return os.path.join(self.out, path.lstrip("/"))

    def ensure_dir(self, path: str) -> None:
        os.makedirs(self.dst(path), exist_ok=True)

    def copy_link(self, path: str) -> None:
        d = self.dst(path)
        if os.path.lexists(d):
            return
        os.makedirs(os.path.dirname(d), exist_ok=True)
        os.symlink(os.readlink(path), d)

    def copy_attr(self, path: str, st: os.stat_result) -> None:
        if path in self.done_files:
            return
        self.done_files.add(path)
        data: bytes | None
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_ATTR + 1)
        except OSError:
            data = None
        d = self.dst(path)
        if data is None:
            if st.st_mode & 0o222 and not st.st_mode & 0o444:
                os.makedirs(os.path.dirname(d), exist_ok=True)
                open(d, "wb").close()
                self.write_only.append(path)
            else:
                self.skipped += 1
            return
        if len(data) > MAX_ATTR or b"\0" in data:
            self.skipped += 1
            return
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            self.skipped += 1
            return
        os.makedirs(os.path.dirname(d), exist_ok=True)
        with open(d, "wb") as f:
            f.write(data)

    def copy_dir_files(self, path: str) -> None:
        """Attributes and links directly in ``path`` (no recursion)."""
        self.ensure_dir(path)
        try:
            names = os.listdir(path)
        except OSError:
            return
        for n in names:
            p = os.path.join(path, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                self.copy_link(p)
            elif stat.S_ISREG(st.st_mode):
                self.copy_attr(p, st)

    def copy_tree(self, path: str) -> None:
        if path in self.done_dirs:
            return
        self.done_dirs.add(path)
        self.copy_dir_files(path)
        try:
            names = os.listdir(path)
        except OSError:
            return
        for n in names:
            p = os.path.join(path, n)
            if n in SKIP_DIRS or os.path.islink(p) or not os.path.isdir(p):
                continue
            self.copy_tree(p)

    def copy_device(self, real: str) -> None:
        """A device dir (recursively) plus its ancestors' plain attributes."""
        if not real.startswith("/sys/devices/") or real.startswith(SKIP_DEVICES):
            return
        self.copy_tree(real)
        parent = os.path.dirname(real)
        while parent.startswith("/sys/devices/"):
            if parent not in self.done_dirs:
                self.copy_dir_files(parent)
            parent = os.path.dirname(parent)

    def capture_sys(self) -> None:
        for d in LINK_DIRS:
            if not os.path.isdir(d):
                continue
            self.ensure_dir(d)
            for n in sorted(os.listdir(d)):
                p = os.path.join(d, n)
                if not os.path.islink(p):
                    continue
                real = os.path.realpath(p)
                if real.startswith(SKIP_DEVICES):
                    continue
                self.copy_link(p)
                self.copy_device(real)
        for f in EXTRA_FILES:
            if os.path.exists(f):
                self.copy_attr(f, os.stat(f))

    def capture_dev(self) -> None:
        for sub in ("disk/by-id", "disk/by-path", "disk/by-uuid", "mapper"):
            src = os.path.join("/dev", sub)
            if not os.path.isdir(src):
                continue
            self.ensure_dir(src)
            for n in sorted(os.listdir(src)):
                p = os.path.join(src, n)
                if os.path.islink(p):
                    self.copy_link(p)
                else:
                    open(self.dst(p), "wb").close()
        for n in sorted(os.listdir("/dev")):
            p = os.path.join("/dev", n)
            if n.startswith(DEV_GLOBS) and not os.path.isdir(p) and not os.path.islink(p):
                self.ensure_dir("/dev")
                open(self.dst(p), "wb").close()

    def capture_etc(self) -> None:
        for rel in ETC_FILES:
            p = os.path.join("/etc", rel)
            if os.path.isfile(p):
                d = self.dst(p)
                os.makedirs(os.path.dirname(d), exist_ok=True)
                with open(p, "rb") as src, open(d, "wb") as dst:
                    dst.write(src.read())


def capture(out: str, name: str = "", note: str = "") -> dict:
    os.makedirs(out, exist_ok=True)
    c = Capture(out)
    c.capture_sys()
    c.capture_dev()
    c.capture_etc()
    meta = {
        "name": name,
        "note": note,
        "kernel": os.uname().release,
        "captured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "write_only": sorted(c.write_only),
        "skipped_attributes": c.skipped,
    }
    with open(os.path.join(out, "capture.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    return meta


def make_tar(out: str, tar_path: str) -> None:
    """tar.gz of OUT's contents (members relative: sys/..., dev/..., etc/...)."""

    def clean(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        ti.mtime = 0
        return ti

    tmp = tar_path + ".tmp"
    with tarfile.open(tmp, "w:gz", compresslevel=9) as tf:
        for n in sorted(os.listdir(out)):
            tf.add(os.path.join(out, n), arcname=n, filter=clean)
    os.replace(tmp, tar_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--tar")
    ap.add_argument("--name", default="")
    ap.add_argument("--note", default="")
    a = ap.parse_args(argv)
    meta = capture(a.out, a.name, a.note)
    if a.tar:
        make_tar(a.out, a.tar)
        print(
            f"{a.tar}: {os.path.getsize(a.tar)} bytes, {len(meta['write_only'])} write-only attrs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
