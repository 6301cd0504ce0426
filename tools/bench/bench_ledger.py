#!/usr/bin/env python3
"""Cost of the attachment ledger's work for one attach and one detach, by ledger size.

    .venv/bin/python tools/bench/bench_ledger.py [--sizes 0,256,1024,4096] [-n 31] [--dir DIR]

For each size the ledger is filled with that many volumes, then ``n`` rounds of the
ledger work the reconcile rule does for one attach and one detach of another volume
(:mod:`brick_agent.ledger.reconcile`: lock-free reads, find the entry, the intent,
the record, the detach decision, the removal) are timed; medians in ms.  Real files and
``fsync`` (``--dir`` on the disk you care about; default /var/tmp).  No kernel work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from brick_agent.ledger import store as ledgermod  # noqa: E402
from brick_agent.ledger.store import AttachmentLedger  # noqa: E402


def _entry(i: int) -> tuple[str, dict[str, Any]]:
    ident = f"naa.6001405{i:025x}"
    keys = [f"iscsi:iqn.2010-10.org.bench:t{i // 64:04d}:{i % 64}"]
    return ledgermod.volume_key("ISCSI", ident), {
        "protocol": "ISCSI",
        "identity": ident,
        "lookup": keys,
        "volume_id": f"vol-{i:06d}",
        "device_info": {
            "type": "block",
            "path": f"/dev/disk/by-path/ip-x-lun-{i}",
            "scsi_wwn": ident,
        },
        "attachments": {"default": {"access_mode": "rw", "since": 1764160000.0 + i}},
        "read_only": False,
    }


def fill(led: AttachmentLedger, size: int) -> None:
    """``size`` volumes, written in batches of transactions as attaches would."""
    for start in range(0, size, 256):
        with led.transaction() as data:
            for i in range(start, min(size, start + 256)):
                key, entry = _entry(i)
                data["volumes"][key] = entry


def _snapshot(led: AttachmentLedger) -> Any:
    """What the reconcile rule reads without the lock (``view()``; ``read()`` before it
    existed, so the script measures older trees too)."""
    view = getattr(led, "view", None)
    return view() if view is not None else led.read()


def attach_detach(led: AttachmentLedger, i: int) -> dict[str, float]:
    """One attach and one detach of volume ``i``, the ledger's part; seconds per step."""
    key, entry = _entry(i)
    keys = entry["lookup"]
    t0 = time.perf_counter()
    ledgermod.find_entry(_snapshot(led), keys)  # _identities_now
    with led.transaction() as data:  # the intent
        ledgermod.find_entry(data, keys)
        ledgermod.drop_pending(data, keys)
        data["pending"].append({"lookup": keys, "attachment_id": "default", "since": 0.0})
    t1 = time.perf_counter()
    ledgermod.find_entry(_snapshot(led), keys)  # _entry_of_device on a snapshot
    with led.transaction() as data:  # the record
        ledgermod.drop_pending(data, keys, "default")
        ledgermod.find_entry(data, keys)
        data["volumes"][key] = entry
    t2 = time.perf_counter()
    ledgermod.find_entry(_snapshot(led), keys)  # detach: _identities_now, _rebuilt_identities
    with led.transaction() as data:  # the decision
        ledgermod.drop_pending(data, keys, "default")
        found = ledgermod.find_entry(data, keys)
        assert found is not None
        found[1]["attachments"].clear()
    t3 = time.perf_counter()
    with led.transaction() as data:  # the removal
        found = ledgermod.find_entry(data, keys)
        assert found is not None
        del data["volumes"][found[0]]
    t4 = time.perf_counter()
    steps = [t1 - t0, t2 - t1, t3 - t2, t4 - t3]
    return {"attach": t2 - t0, "detach": t4 - t2, "steps": steps}


def measure(base: str, size: int, rounds: int) -> dict[str, Any]:
    d = tempfile.mkdtemp(prefix=f"ledger-{size}-", dir=base)
    try:
        led = AttachmentLedger(os.path.join(d, "state", "attachments.json"), lock_path=d)
        fill(led, size)
        samples = [attach_detach(led, size + r) for r in range(rounds + 1)][1:]  # 1 warm-up
        out: dict[str, Any] = {"size": size}
        for name in ("attach", "detach"):
            out[name] = statistics.median(s[name] for s in samples) * 1000
        steps = sorted(t for s in samples for t in s["steps"])
        out["transaction"] = statistics.median(steps) * 1000
        out["transaction_max"] = steps[-1] * 1000
        out["bytes"] = sum(
            os.path.getsize(os.path.join(d, "state", n))
            for n in os.listdir(os.path.join(d, "state"))
        )
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,256,1024,4096")
    ap.add_argument("-n", type=int, default=31, help="rounds per size (median)")
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--json", action="store_true", help="one JSON line per size")
    args = ap.parse_args()
    rows = [measure(args.dir, int(s), args.n) for s in args.sizes.split(",")]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    print(
        "| ledger volumes | attach (ms) | detach (ms) | per transaction (ms) "
        "| slowest transaction (ms) | files (bytes) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['attach']:.2f} | {r['detach']:.2f} | {r['transaction']:.2f} "
            f"| {r['transaction_max']:.2f} | {r['bytes']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
