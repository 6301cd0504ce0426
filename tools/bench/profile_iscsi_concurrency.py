#!/usr/bin/env python3
"""Profile brick_agent's concurrent iSCSI attach/detach in the lab VM (where the time goes).

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/profile_iscsi_concurrency.py
        [--rounds N] [--no-ledger]

Two LIO targets of 8 LUNs, 16 threads attach then detach (as bench_compare's concurrency
section), then the bare floor that does what ours must (manual-scan logins, one scan per
LUN, all at once, until the 16 disks exist; the detach flushes each disk, deletes, logs
out).  Wraps the library's inner steps with timers (summed over threads) and
prints, per step, calls / total / max seconds.  For a CPU profile of the whole run, wrap
it in ``.venv/bin/py-spy record --format raw -o results/x.raw --``.
"""

from __future__ import annotations

import argparse
import sys
import time

import bench_iscsi  # beside this script
from host import concurrency_items, concurrency_targets, udev_settle
from profile_nvme_concurrency import STATS, common_args, ours, report, run_timed, timed, timed_cm


def instrument() -> None:
    from brick_agent.connectors.iscsi import actions as iscsi_actions
    from brick_agent.connectors.iscsi import connector as iscsi
    from brick_agent.connectors.iscsi import sessions as iscsi_sessions
    from brick_agent.connectors.scsi import actions as scsi_actions
    from brick_agent.connectors.scsi import volume as scsi_volume
    from brick_agent.host import udev
    from brick_agent.ledger import reconcile
    from brick_agent.ledger import store as ledger
    from brick_agent.privileged import iscsi as iscsi_bodies
    from brick_agent.privileged import iscsi_auth as record_bodies
    from brick_agent.privileged import scsi as scsi_bodies

    timed_cm(reconcile, "_volume_lock", "ledger volume lock")
    timed_cm(ledger.AttachmentLedger, "transaction", "ledger transaction")
    for owner, attrs, prefix in (
        (
            iscsi.ISCSIConnector,
            ("connect_volume", "disconnect_volume", "_volume_devices", "_attach_path", "_scan"),
            "iscsi.",
        ),
        (
            reconcile,
            ("_identities_now", "_rebuilt_identities", "_result_identity", "_apply_access"),
            "ledger.",
        ),
        (iscsi_sessions.IscsiSessions, ("logout_if_empty", "ensure"), "sessions."),
        (
            scsi_volume.ScsiVolumeOps,
            (
                "remove_volume",
                "_wait_removed",
                "udev_entries",
                "confirmed",
                "device_info",
                "revalidate",
            ),
            "ops.",
        ),
        (scsi_actions.PrivilegedScsiActions, ("flush", "delete_device", "scan_lun"), "actions."),
        (iscsi_actions.PrivilegedIscsiActions, ("login", "logout"), "actions."),
        (udev.DeviceWatch, ("open", "wait_for", "wait_gone"), "DeviceWatch."),
        (udev, ("_subscribe",), "udev."),
        (iscsi_bodies, ("do_node_login", "do_node_logout", "do_node_delete"), "body."),
        (iscsi_bodies, ("do_node_create", "do_node_update"), "body."),
        (record_bodies, ("do_node_set_settings",), "body."),
        (scsi_bodies, ("do_scan_scsi_lun", "do_delete_scsi_device"), "body."),
    ):
        for attr in attrs:
            if hasattr(owner, attr):
                timed(owner, attr, prefix + attr)
    timed_cm(iscsi_sessions.IscsiSessions, "_lock", "target/session lock")


def _timed_op(tool: object, op: str, items: list[dict], rnd: int, show: bool = False) -> dict:
    """Run the worker's ``attach_many``/``detach_many`` of ``items``; print wall, our CPU,
    the per-volume p50/max and the step timers (``show``: each thread's timeline too);
    the worker's answer."""
    cpu = time.process_time()
    res = run_timed(tool, op, "ISCSI", items, show)
    ts = sorted(r["t"] for r in res["results"])
    print(
        f"round {rnd} {op} wall {res['t']:.3f} cpu {time.process_time() - cpu:.3f} "
        f"p50 {ts[len(ts) // 2]:.3f} max {ts[-1]:.3f} ok={res['ok']}"
    )
    report(op)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    common_args(ap)
    ap.add_argument("--timeline", action="store_true", help="print each thread's steps")
    args = ap.parse_args()
    tool = ours(args)
    instrument()
    for rnd in range(args.rounds):
        for who in ("ours", "floor"):
            targets = concurrency_targets("ISCSI")
            try:
                for t in targets:
                    t.create()
                udev_settle()
                if who == "floor":
                    start = time.monotonic()
                    bench_iscsi.floor_attach_many(targets, 16, targeted=True)
                    attach = time.monotonic() - start
                    udev_settle()
                    start = time.monotonic()
                    bench_iscsi.floor_detach_many(targets, flush=True)
                    print(
                        f"round {rnd} floor attach {attach:.3f} "
                        f"detach {time.monotonic() - start:.3f}"
                    )
                    continue
                items = concurrency_items("ISCSI", targets)
                tool._conns.clear()
                STATS.clear()
                ra = _timed_op(tool, "attach", items, rnd, args.timeline)
                udev_settle()
                infos = [
                    dict(it, info=r.get("info")) for it, r in zip(items, ra["results"], strict=True)
                ]
                _timed_op(tool, "detach", infos, rnd, args.timeline)
            finally:
                for t in targets:
                    t.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
