#!/usr/bin/env python3
"""The attachment ledger's own CPU per attach+detach: the real reconcile rule, no kernel.

    .venv/bin/python tools/bench/ledger_cost.py [--volumes 16] [--cycles 40]
        [--threads 1] [--dir /dev/shm] [--profile]

A connector whose kernel part is free (its connect returns the device a fake host
tree already has, its disconnect does nothing) goes through ``records_attach`` and
``records_detach`` with a real ledger file: the per-volume lock, the identity reads,
the lock-free views, the write-ahead intent and both durable transactions of each
call.  ``--threads 16`` runs each cycle's attaches, then its detaches, 16 at a time
(group commit).  Prints the median CPU (user+system) per attach+detach over the
cycles after a warm-up cycle; ``--profile`` prints a cProfile of the cycles instead
(sequential only).  In the lab (``tools/kernel-lab/lab run -- .venv/bin/python
tools/bench/ledger_cost.py``) it gives the ledger's cost on the emulated CPUs
without the connectors' kernel work around it; ``BRICK_TREE=<dir>`` imports
brick_agent from another checkout (an A/B of two versions in one VM run).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(
    0,
    os.environ.get("BRICK_TREE")
    or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")),
)

from brick_agent import config, ledger  # noqa: E402
from brick_agent.connectors.base import Connector  # noqa: E402
from tests.unit.connectors.scsi_fakes import wwid_of  # noqa: E402
from tests.unit.host.fakehost import FakeHost  # noqa: E402


class FreeConnector(Connector):
    """An iSCSI connector whose kernel part costs nothing: the devices already exist."""

    protocol = "ISCSI"

    def __init__(self, devices: dict[tuple[str, int], tuple[str, str]], **kw: Any) -> None:
        super().__init__(**kw)
        self.devices = devices  # (iqn, lun) -> (kernel name, wwid)

    @ledger.records_attach
    def connect_volume(self, connection_properties):
        name, wwid = self.devices[
            (connection_properties["target_iqn"], connection_properties["target_lun"])
        ]
        return {"type": "block", "path": f"/dev/{name}", "scsi_wwn": wwid}

    @ledger.records_detach
    def disconnect_volume(
        self, connection_properties, device_info, force=False, ignore_errors=False
    ):
        return None

    def extend_volume(self, connection_properties):
        raise NotImplementedError

    def get_search_path(self) -> str:
        return "/dev/disk/by-path"

    def get_volume_paths(self, connection_properties) -> list[str]:
        return []

    def get_all_available_volumes(self, connection_properties=None) -> list[dict[str, Any]]:
        return []


def build(volumes: int, base: str) -> tuple[FreeConnector, list[dict[str, Any]]]:
    tmp = Path(tempfile.mkdtemp(prefix="brick-ledger-cost-", dir=base))
    host = FakeHost(tmp / "host")
    hdir = host.scsi_host(3, "iscsi_tcp")
    devices, items = {}, []
    for i in range(volumes):
        iqn, lun = f"iqn.2010-10.org.bench:t{i // 8}", i % 8
        name = "sd" + "".join(chr(97 + int(c)) for c in f"{i:03d}")
        host.scsi_disk(hdir, f"3:0:{i // 8}:{lun}", name, wwid_of(i + 1))
        devices[(iqn, lun)] = (name, wwid_of(i + 1))
        items.append(
            {
                "target_portal": f"192.0.2.{i // 8 + 1}:3260",
                "target_iqn": iqn,
                "target_lun": lun,
                "volume_id": f"vol-{i}",
            }
        )
    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp / "locks"), group="brick_agent")
    conf.set_override("ledger_path", str(tmp / "ledger.json"), group="brick_agent")
    conn = FreeConnector(devices, conf=conf, roots=host.roots, ledger=True)
    return conn, items


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volumes", type=int, default=16)
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    conn, items = build(args.volumes, args.dir)
    pool = concurrent.futures.ThreadPoolExecutor(args.threads) if args.threads > 1 else None

    def cycle() -> None:
        if pool is None:
            infos = [conn.connect_volume(i) for i in items]
            for props, info in zip(items, infos, strict=True):
                conn.disconnect_volume(props, info)
            return
        infos = list(pool.map(conn.connect_volume, items))
        list(pool.map(lambda pair: conn.disconnect_volume(*pair), zip(items, infos, strict=True)))

    cycle()  # warm-up: imports, caches, the ledger file and its lock file made
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.cycles):
            cycle()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(40)
        return 0
    per_call = []
    for _ in range(args.cycles):
        c0 = time.process_time()
        cycle()
        per_call.append((time.process_time() - c0) / len(items))
    if pool is not None:
        pool.shutdown()
    if conn.ledger is not None and conn.ledger.read()["volumes"]:
        print("the ledger still holds volumes after the detaches", file=sys.stderr)
        return 1
    print(
        f"ledger CPU per attach+detach ({args.volumes} volumes, {args.threads} thread(s), "
        f"{args.cycles} cycles): median {statistics.median(per_call) * 1000:.3f} ms, "
        f"min {min(per_call) * 1000:.3f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
