"""A fake FC host for the FC connector's unit tests: a kernel-like ``ScsiActions``.

:class:`FakeFc` mutates a host tree (hand-built with ``FakeHost`` or captured
from the lab) the way the kernel, udev and multipathd would:

* ``scan_lun(h, c, t, l)`` creates ``sdX`` under ``rport-H:C-R/targetH:C:T`` of
  every matching remote port (``c``/``t`` None = wildcard over the host's FCP
  targets) whose array exports LUN ``l``;
* ``delete_device`` removes it (and the path from a map);
* ``rescan_device`` re-reads the WWID and size from the array model;
* ``multipath_add``/``multipath_remove``/``multipath_resize`` build/remove/resize
  ``dm-N`` maps; ``udev=True`` also writes the udev database entry and the
  ``by-id/wwn-0x...`` (and, under a PCI parent, ``by-path``) links.

The array model is ``{target_wwpn: {lun: FakeLun}}``.  Tests assert on the tree.
"""

from __future__ import annotations

import glob
import os
import re
import threading

from brick_agent.host import multipath as host_mpath
from brick_agent.host.scsi import Hctl, scsi_device
from tests.unit.connectors.scsi_fakes import FakeLun, FakeScsiKernel, udev_of, wwid_of  # noqa: F401 (re-exported)
from tests.unit.host.fakehost import FakeHost, sd_name

_PCI_RE = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]")


class FakeFc(FakeScsiKernel):
    """ScsiActions over a fake tree (see module doc)."""

    def __init__(
        self,
        host: FakeHost,
        array: dict[str, dict[int, FakeLun]],
        *,
        udev: bool = True,
        multipathd: bool = True,
        auto_map: bool = False,
    ) -> None:
        self.h = host
        self.array = array
        self.udev = udev
        self.multipathd = multipathd
        self.auto_map = auto_map  # multipathd maps a path on its own (find_multipaths)
        self.lock = threading.RLock()
        self.log: list[tuple] = []
        self.fail_flush: set[str] = set()
        self.fail_delete: set[str] = set()
        self._dm = 0
        if udev:
            self.h.attr("run/udev/control", "")

    def rports(self, host: int) -> list[tuple[str, int, int, str]]:
        """(rport real dir relative to base, channel, scsi_target_id, port_name) of FCP targets."""
        out = []
        for link in sorted(glob.glob(str(self.h.p(f"sys/class/fc_remote_ports/rport-{host}:*")))):
            cls = os.path.realpath(link)
            tid = int(
                self._read(os.path.relpath(os.path.join(cls, "scsi_target_id"), self.h.base)) or -1
            )
            if tid < 0:
                continue
            name = os.path.basename(cls)
            channel = int(name.split(":")[1].split("-")[0])
            port = (
                (self._read(os.path.relpath(os.path.join(cls, "port_name"), self.h.base)) or "")
                .removeprefix("0x")
                .zfill(16)
            )
            rdir = os.path.relpath(os.path.dirname(os.path.dirname(cls)), self.h.base)
            out.append((rdir, channel, tid, port))
        return out

    def _next_sd(self) -> str:
        used = {n for n in os.listdir(self.h.p("sys/class/block")) if n.startswith("sd")}
        i = 0
        while sd_name(i) in used:
            i += 1
        return sd_name(i)

    def devices(self) -> list[str]:
        return sorted(n for n in os.listdir(self.h.p("sys/class/block")) if n.startswith("sd"))

    def hctls(self) -> list[str]:
        return sorted(
            n
            for n in os.listdir(self.h.p("sys/bus/scsi/devices"))
            if re.fullmatch(r"\d+:\d+:\d+:\d+", n)
        )

    # ------------------------------------------------------------ udev model
    def _udev_add(self, name: str, wwid: str, hctl: str, port: str, rdir: str) -> None:
        devnum = self._read(f"sys/class/block/{name}/dev")
        ident = wwid[4:] if wwid.startswith("naa.") else None
        links = []
        if ident:
            self.h.disk_link("by-id", f"wwn-0x{ident}", name)
            links.append(f"disk/by-id/wwn-0x{ident}")
        pci = [p for p in rdir.split("/") if _PCI_RE.fullmatch(p)]
        if pci:
            lun = int(hctl.split(":")[3])
            link = f"pci-{pci[-1]}-fc-0x{port}-lun-{lun}"
            self.h.disk_link("by-path", link, name)
            links.append(f"disk/by-path/{link}")
        body = "".join(f"S:{s}\n" for s in links) + f"E:ID_SERIAL=3{ident}\n"
        self.h.attr(f"run/udev/data/b{devnum}", body.rstrip("\n"))

    def _udev_remove(self, name: str, devnum: str | None) -> None:
        for kind in ("by-id", "by-path"):
            for link in glob.glob(str(self.h.p(f"dev/disk/{kind}/*"))):
                if os.path.islink(link) and os.path.basename(os.readlink(link)) == name:
                    os.unlink(link)
        if devnum and os.path.exists(self.h.p(f"run/udev/data/b{devnum}")):
            os.unlink(self.h.p(f"run/udev/data/b{devnum}"))

    # ------------------------------------------------------------ ScsiActions
    def scan_lun(self, host, channel, target, lun) -> None:
        with self.lock:
            self.log.append(("scan", host, channel, target, lun))
            for rdir, c, t, port in self.rports(host):
                if (channel is not None and c != channel) or (target is not None and t != target):
                    continue
                luns = self.array.get(port, {})
                hctl = f"{host}:{c}:{t}:{lun}"
                if lun not in luns or scsi_device(self.h.roots, hctl) is not None:
                    continue
                name = self._next_sd()
                self.h.scsi_disk(rdir, hctl, name, wwid=luns[lun].wwid, sectors=luns[lun].sectors)
                if self.udev:
                    self._udev_add(name, luns[lun].wwid, hctl, port, rdir)
                if self.auto_map and self.multipathd:
                    self._map_path(name)

    def _port_of(self, hctl: Hctl) -> str | None:
        for _, c, t, port in self.rports(hctl.host):
            if (c, t) == (hctl.channel, hctl.target):
                return port
        return None

    def rescan_device(self, hctl: Hctl) -> None:
        with self.lock:
            self.log.append(("rescan", str(hctl)))
            self._reread(hctl, self.array.get(self._port_of(hctl) or "", {}).get(hctl.lun))

    # ------------------------------------------------------------ conveniences
    def scans(self) -> list[tuple]:
        return [e[1:] for e in self.log if e[0] == "scan"]

    def ops(self, op: str) -> list[tuple]:
        return [e[1:] for e in self.log if e[0] == op]

    def maps(self) -> list[str]:
        return [m.dm_name for m in host_mpath.multipath_maps(self.h.roots)]


# ---------------------------------------------------------------- the fake's own checks
def test_fake_scan_creates_disk_under_the_rport_target_and_delete_removes_it(tmp_path):
    from brick_agent.host import fc as host_fc

    h = FakeHost(tmp_path)
    d = h.fc_host(4, "0x1000000000000004", "0x2000000000000004")
    h.rport(d, 4, 0, 1, "0x500a098100000a01", "0x500a098000000a00", scsi_target_id=2)
    fake = FakeFc(h, {"500a098100000a01": {3: FakeLun(wwid_of(3))}})
    fake.scan_lun(4, 0, 2, 3)
    fake.scan_lun(4, 0, 2, 4)  # no such LUN: nothing
    dev = scsi_device(h.roots, "4:0:2:3")
    assert dev is not None and dev.name == "sda" and dev.wwid == wwid_of(3)
    assert "/rport-4:0-1/target4:0:2/4:0:2:3" in dev.sysfs_path
    assert host_fc.fc_targets_for(h.roots, 4, "500a098100000a01") == [(0, 2)]
    assert os.path.islink(h.p(f"dev/disk/by-id/wwn-0x{wwid_of(3)[4:]}"))
    fake.delete_device(Hctl(4, 0, 2, 3))
    assert fake.hctls() == [] and fake.devices() == []
    assert not os.path.lexists(h.p(f"dev/disk/by-id/wwn-0x{wwid_of(3)[4:]}"))
    fake.scan_lun(4, None, None, 3)  # wildcard reaches the same LUN
    assert fake.hctls() == ["4:0:2:3"]
