"""A dense lab host: many unrelated block devices attached (issue 17 §1).

Half the devices are iSCSI LUNs (64 per target, each target on its own loopback
portal 127.0.0.1x, logged in with the default automatic scan), half NVMe/TCP
namespaces (32 per subsystem, one controller each), plus one dm linear map per 64
devices over one of the LUNs (a holder, as LVM would make).  Backing files are
sparse (1 MiB each).  Nothing here goes through brick_agent or os-brick.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import time
from typing import Any

from host import udev_settle

PER_TARGET = 64
PER_SUBSYS = 32
LUN_SIZE = 1 << 20


def _sh(*argv: str, timeout: int = 300) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=timeout)


class DenseHost:
    """Grows to ``size`` unrelated devices; :meth:`destroy` removes all of them."""

    def __init__(self) -> None:
        self.iscsi: list[Any] = []
        self.nvme: list[Any] = []
        self.maps: list[str] = []
        self.luns = 0
        self.namespaces = 0

    def grow(self, size: int, timeout: float = 900.0) -> dict[str, float]:
        """Add targets until ``size`` devices exist; returns what it took (s)."""
        t0 = time.monotonic()
        while self.luns < size // 2:
            self._add_iscsi(min(PER_TARGET, size // 2 - self.luns))
        while self.namespaces < size - size // 2:
            self._add_nvme(min(PER_SUBSYS, size - size // 2 - self.namespaces))
        self._wait_devices(time.monotonic() + timeout)
        t1 = time.monotonic()
        udev_settle(timeout=int(timeout))
        self._add_maps(size)
        udev_settle(timeout=int(timeout))
        return {"create": t1 - t0, "settle": time.monotonic() - t1}

    def _add_iscsi(self, luns: int) -> None:
        from brick_lab import LioIscsiTarget

        portal = f"127.0.0.{10 + len(self.iscsi)}:3260"
        t = LioIscsiTarget(luns=luns, lun_size=LUN_SIZE, initiators=["local"], portals=(portal,))
        t.create()
        self.iscsi.append(t)
        _sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", portal, "--op", "new")
        _sh("iscsiadm", "-m", "node", "-T", t.iqn, "-p", portal, "--login")
        self.luns += luns

    def _add_nvme(self, namespaces: int) -> None:
        from brick_lab import NvmetSubsystem

        s = NvmetSubsystem(namespaces=namespaces, ns_size=LUN_SIZE)
        s.create()
        self.nvme.append(s)
        hostnqn = open("/etc/nvme/hostnqn").read().strip()
        hostid = open("/etc/nvme/hostid").read().strip()
        _sh(
            "nvme",
            "connect",
            "-t",
            "tcp",
            "-a",
            "127.0.0.1",
            "-s",
            "4420",
            "-n",
            s.nqn,
            "-q",
            hostnqn,
            "-I",
            hostid,
        )
        self.namespaces += namespaces

    def _wait_devices(self, deadline: float) -> None:
        while True:
            sd = len(glob.glob("/sys/class/iscsi_session/session*/device/target*/*:*/block/*"))
            ns = len([n for n in os.listdir("/sys/class/block") if re.fullmatch(r"nvme\d+n\d+", n)])
            if sd >= self.luns and ns >= self.namespaces:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"dense host: {sd}/{self.luns} LUNs, {ns}/{self.namespaces} ns")
            time.sleep(0.2)

    def _add_maps(self, size: int) -> None:
        """One dm linear map per 64 devices, each over a LUN of the unrelated targets."""
        while len(self.maps) < size // 64:
            k = len(self.maps)
            t = self.iscsi[k % len(self.iscsi)]
            lun = k // len(self.iscsi)
            link = f"/dev/disk/by-path/ip-{t.portals[0]}-iscsi-{t.iqn}-lun-{lun}"
            name = f"bench-dense-{k}"
            _sh("dmsetup", "create", name, "--table", f"0 2048 linear {os.path.realpath(link)} 0")
            self.maps.append(name)

    def counts(self) -> dict[str, int]:
        return {"luns": self.luns, "namespaces": self.namespaces, "maps": len(self.maps)}

    def destroy(self) -> None:
        for name in self.maps:
            subprocess.run(["dmsetup", "remove", name], capture_output=True, check=False)
        for t in self.iscsi:
            for argv in (["--logout"], ["--op", "delete"]):
                subprocess.run(
                    ["iscsiadm", "-m", "node", "-T", t.iqn, "-p", t.portals[0], *argv],
                    capture_output=True,
                    check=False,
                    timeout=300,
                )
        for s in self.nvme:
            subprocess.run(["nvme", "disconnect", "-n", s.nqn], capture_output=True, check=False)
        udev_settle(timeout=300)
        for target in self.iscsi + self.nvme:
            try:
                target.destroy()
            except Exception as exc:  # noqa: BLE001 - keep tearing down the rest
                print(f"  dense host teardown: {exc}", flush=True)
        self.iscsi, self.nvme, self.maps = [], [], []
