#!/usr/bin/env python3
"""Does one attach+detach cost more on a dense host?  Fake host trees, no kernel.

    .venv/bin/python tools/bench/profile_host_scale.py [--sizes 0,64,256,1024] [-n 5]
        [--profile 1024] [--top 25]

For each size the fake host (the unit tests' FakeHost, FakeIscsi and FakeNvmeKernel:
the same sysfs layout as kernel 6.1) gets that many unrelated block devices: half
iSCSI LUNs (64 per session, other targets), half NVMe/TCP namespaces (32 per
controller, other subsystems), one multipath map per 64 devices, and as many
unrelated ledger entries.  Then one iSCSI and one NVMe/TCP attach+detach of another
volume run through the connectors with the ledger (fake kernel actions: only the
host reading, udev waits and ledger work remain).  Prints the median ms and the
sysfs work per attach+detach (directory entries listed, files opened, links read);
``--profile SIZE`` adds a cProfile of that size.  What grows with the size is a
per-attach cost proportional to the host.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import cProfile
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

PER_SESSION = 64
PER_CTRL = 32
OTHER_IQN = "iqn.2010-10.org.bench:other-{:03d}"
OTHER_NQN = "nqn.2014-08.org.bench:other-{:03d}"
IQN = "iqn.2010-10.org.bench:ours"
NQN = "nqn.2014-08.org.bench:ours"
ISCSI_PORTAL = "192.0.2.1:3260"
NVME_PORTAL = ("tcp", "192.0.2.2", "4420")


class Host:
    """One fake host: iSCSI and NVMe fakes on one tree, connectors with a ledger."""

    def __init__(self, base: str) -> None:
        from pathlib import Path

        from brick_agent import config
        from brick_agent.connectors.iscsi.connector import ISCSIConnector
        from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
        from brick_agent.host.udev import DeviceWatch
        from brick_agent.ledger import AttachmentLedger
        from tests.unit.connectors.nvmeof_fakes import FakeNvmeKernel
        from tests.unit.connectors.test_iscsi_fakehost import FakeArray, FakeIscsi
        from tests.unit.host.fakehost import FakeHost

        self.fh = FakeHost(Path(base) / "host")
        for d in (
            "etc/iscsi",
            "sys/class/nvme",
            "sys/class/nvme-subsystem",
            "sys/class/nvme-fabrics/ctl",
        ):
            self.fh.mkdir(d)
        roots = self.fh.roots
        self.array = FakeArray()
        self.iscsi = FakeIscsi(self.fh, self.array)
        self.nvme = FakeNvmeKernel(roots, native=True)
        conf = config.new_conf()
        for key, value in (
            ("lock_path", os.path.join(base, "locks")),
            ("device_wait_timeout", 5.0),
            ("nvme_ctrl_loss_tmo", -1),
        ):
            conf.set_override(key, value, group="brick_agent")
        self.ledger = AttachmentLedger(
            os.path.join(base, "state", "attachments.json"), lock_path=os.path.join(base, "locks")
        )

        def watch() -> DeviceWatch:
            return DeviceWatch(roots=roots, use_netlink=False, poll_interval=0.005)

        common: dict[str, Any] = {
            "conf": conf,
            "roots": roots,
            "ledger": self.ledger,
            "watch_factory": watch,
            "read_only_setter": lambda name, ro: None,
        }
        self.iscsi_conn = ISCSIConnector(actions=self.iscsi, **common)
        self.nvme_conn = NVMeOFConnector(None, None, actions=self.nvme, **common)

    # ------------------------------------------------------------ unrelated devices
    def fill(self, size: int) -> None:
        from tests.unit.connectors.nvmeof_fakes import FakeNs
        from tests.unit.connectors.scsi_fakes import FakeLun, wwid_of

        from brick_agent.connectors.iscsi.actions import NodeSettings
        from brick_agent.connectors.nvmeof.actions import ConnectRequest

        luns, namespaces = size // 2, size - size // 2
        for s in range(0, luns, PER_SESSION):
            iqn = OTHER_IQN.format(s // PER_SESSION)
            count = min(PER_SESSION, luns - s)
            self.array.add(
                iqn,
                ["198.51.100.1:3260"],
                {n: FakeLun(wwid_of(5000 + s + n)) for n in range(count)},
            )
            self.iscsi.login(NodeSettings("198.51.100.1:3260", iqn))
            host = self.iscsi._host
            for n in range(count):
                self.iscsi.scan_lun(host, 0, 0, n)
        for c in range(0, namespaces, PER_CTRL):
            nqn = OTHER_NQN.format(c // PER_CTRL)
            count = min(PER_CTRL, namespaces - c)
            nss = [FakeNs(n + 1, str(uuid.UUID(int=(c + n) * 7 + 99)), None) for n in range(count)]
            self.nvme.add_target(nqn, [("tcp", "198.51.100.2", "4420")], nss)
            self.nvme.connect(
                ConnectRequest(
                    transport="tcp",
                    traddr="198.51.100.2",
                    trsvcid="4420",
                    subsysnqn=nqn,
                    hostnqn="nqn.2014-08.org.nvmexpress:uuid:bench",
                    hostid="5f3c1e2a-0000-4000-8000-000000000001",
                )
            )
        self._maps(size)
        self._ledger_entries(size)

    def _maps(self, size: int) -> None:
        """One dm-multipath map per 64 devices, over single SCSI paths."""
        disks = sorted(n for n in os.listdir(self.fh.p("sys/class/block")) if n.startswith("sd"))
        for i, name in enumerate(disks[::PER_SESSION][: max(0, size // 64)]):
            self.fh.dm(900 + i, f"other{i}", f"mpath-3600140{i:025x}", [name])

    def _ledger_entries(self, size: int) -> None:
        with self.ledger.transaction() as data:
            for i in range(size):
                ident = f"naa.6001405{0x500000 + i:025x}"
                data["volumes"][f"ISCSI:{ident}"] = {
                    "protocol": "ISCSI",
                    "identity": ident,
                    "lookup": [f"iscsi:{OTHER_IQN.format(i // PER_SESSION)}:{i % PER_SESSION}"],
                    "volume_id": f"vol-other-{i}",
                    "device_info": {"type": "block", "path": f"/dev/sd-other-{i}"},
                    "attachments": {"default": {"access_mode": "rw", "since": 1.0}},
                }

    # ------------------------------------------------------------ the measured volume
    def targets(self) -> None:
        from tests.unit.connectors.nvmeof_fakes import FakeNs
        from tests.unit.connectors.scsi_fakes import FakeLun, wwid_of

        self.array.add(IQN, [ISCSI_PORTAL], {1: FakeLun(wwid_of(1))})
        self.nvme.add_target(NQN, [NVME_PORTAL], [FakeNs(1, str(uuid.UUID(int=1)), None)])

    def iscsi_cycle(self) -> None:
        props = {
            "target_portal": ISCSI_PORTAL,
            "target_iqn": IQN,
            "target_lun": 1,
            "volume_id": "v1",
        }
        info = self.iscsi_conn.connect_volume(props)
        self.iscsi_conn.disconnect_volume(props, info)

    def nvme_cycle(self) -> None:
        props = {
            "target_nqn": NQN,
            "vol_uuid": str(uuid.UUID(int=1)),
            "portals": [[NVME_PORTAL[1], NVME_PORTAL[2], NVME_PORTAL[0]]],
            "volume_id": "v2",
        }
        info = self.nvme_conn.connect_volume(props)
        self.nvme_conn.disconnect_volume(props, info)


@contextlib.contextmanager
def counted() -> Iterator[dict[str, int]]:
    """Count directory entries listed, files opened and links read meanwhile."""
    counts = {"listed": 0, "listdirs": 0, "opens": 0, "readlinks": 0}
    real_listdir, real_open, real_readlink, real_osopen = (
        os.listdir,
        builtins.open,
        os.readlink,
        os.open,
    )

    def listdir(path: Any = ".") -> list[str]:
        out = real_listdir(path)
        counts["listdirs"] += 1
        counts["listed"] += len(out)
        return out

    def opened(*a: Any, **kw: Any) -> Any:
        counts["opens"] += 1
        return real_open(*a, **kw)

    def osopen(*a: Any, **kw: Any) -> Any:
        counts["opens"] += 1
        return real_osopen(*a, **kw)

    def readlink(*a: Any, **kw: Any) -> Any:
        counts["readlinks"] += 1
        return real_readlink(*a, **kw)

    os.listdir, builtins.open, os.readlink, os.open = listdir, opened, readlink, osopen  # type: ignore[assignment]
    try:
        yield counts
    finally:
        os.listdir, builtins.open, os.readlink, os.open = (
            real_listdir,
            real_open,
            real_readlink,
            real_osopen,
        )  # type: ignore[assignment]


def measure(size: int, rounds: int, profile: bool, top: int) -> dict[str, Any]:
    base = tempfile.mkdtemp(prefix=f"host-scale-{size}-", dir="/var/tmp")
    try:
        h = Host(base)
        h.fill(size)
        h.targets()
        out: dict[str, Any] = {"size": size}
        for name, cycle in (("iscsi", h.iscsi_cycle), ("nvme", h.nvme_cycle)):
            cycle()  # warm-up
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                cycle()
                times.append(time.perf_counter() - t0)
            out[name] = statistics.median(times) * 1000
            with counted() as counts:
                cycle()
            out[name + "_io"] = counts
            if profile:
                _profile(name, size, cycle, top)
        return out
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _profile(name: str, size: int, cycle: Callable[[], None], top: int) -> None:
    prof = cProfile.Profile()
    prof.enable()
    cycle()
    prof.disable()
    print(f"\n## cProfile: {name} attach+detach, {size} unrelated devices")
    pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(top)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,64,256,1024")
    ap.add_argument("-n", type=int, default=5, help="rounds per size (median)")
    ap.add_argument("--profile", type=int, help="cProfile the cycles at this size")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    rows = [
        measure(int(s), args.n, int(s) == args.profile, args.top) for s in args.sizes.split(",")
    ]
    print(
        "| unrelated devices | iSCSI attach+detach (ms) | NVMe/TCP attach+detach (ms) "
        "| iSCSI sysfs work | NVMe sysfs work |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['iscsi']:.1f} | {r['nvme']:.1f} "
            f"| {_io(r['iscsi_io'])} | {_io(r['nvme_io'])} |"
        )
    return 0


def _io(c: dict[str, int]) -> str:
    return (
        f"{c['listed']} entries in {c['listdirs']} dirs, {c['opens']} opens, "
        f"{c['readlinks']} readlinks"
    )


if __name__ == "__main__":
    raise SystemExit(main())
