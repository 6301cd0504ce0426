#!/usr/bin/env python3
"""Profile brick_agent's single-path iSCSI detach in the lab VM (where the time goes).

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/profile_iscsi_detach.py [-n 5]

One LIO LUN; ``n`` rounds of attach then detach (as bench_iscsi's single-path case).
Wraps the detach's inner steps with timers and prints, per step, calls / total / max
seconds, and the median detach.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time

from host import udev_settle  # beside this script
from profile_nvme_concurrency import STATS, report, timed, timed_cm


def instrument() -> None:
    from brick_agent.connectors.iscsi import actions as iscsi_privileged
    from brick_agent.connectors.iscsi import connector as iscsi
    from brick_agent.connectors.iscsi import sessions as iscsi_sessions
    from brick_agent.connectors.scsi import actions as scsi_privileged
    from brick_agent.connectors.scsi import volume as scsi_volume
    from brick_agent.host import udev
    from brick_agent.privileged import iscsi as iscsi_privileged_bodies
    from brick_agent.ledger import reconcile
    from brick_agent.ledger import store as ledger_store

    timed(iscsi.ISCSIConnector, "_volume_devices", "iscsi._volume_devices")
    timed(scsi_volume.ScsiVolumeOps, "confirmed", "ops.confirmed")
    timed(scsi_volume.ScsiVolumeOps, "remove_volume", "ops.remove_volume")
    timed(scsi_volume.ScsiVolumeOps, "_wait_removed", "ops._wait_removed")
    timed(scsi_volume.ScsiVolumeOps, "udev_entries", "ops.udev_entries")
    timed(scsi_privileged.PrivilegedScsiActions, "flush", "actions.flush")
    timed(scsi_privileged.PrivilegedScsiActions, "delete_device", "actions.delete_device")
    timed(iscsi_sessions.IscsiSessions, "logout_if_empty", "sessions.logout_if_empty")
    timed(iscsi_privileged.PrivilegedIscsiActions, "logout", "actions.logout")
    timed(udev.DeviceWatch, "open", "DeviceWatch.open")
    timed(udev.DeviceWatch, "close", "DeviceWatch.close")
    timed(udev.DeviceWatch, "wait_for", "DeviceWatch.wait_for")
    timed(udev.DeviceWatch, "wait_gone", "DeviceWatch.wait_gone")
    timed_cm(ledger_store.AttachmentLedger, "transaction", "ledger.transaction")
    timed(reconcile, "_disconnect", "reconcile._disconnect (the whole detach)")
    timed(reconcile, "_detach_decision", "reconcile._detach_decision")
    # the privileged bodies (the entrypoints call them by name): iscsiadm's share
    timed(iscsi_privileged_bodies, "do_node_logout", "iscsiadm --logout (body)")
    timed(iscsi_privileged_bodies, "do_node_delete", "node record delete (body)")
    timed(iscsi_privileged_bodies, "_remove_static_record", "  of which: without iscsiadm")


class EventLog:
    """Every kernel and udev uevent with its time (to see what a detach waits on)."""

    def __init__(self) -> None:
        import pyudev
        import threading

        self.t0 = time.monotonic()
        self.events: list[tuple[float, str, str, str, str]] = []
        ctx = pyudev.Context()
        for source in ("kernel", "udev"):
            mon = pyudev.Monitor.from_netlink(ctx, source=source)
            mon.start()
            threading.Thread(target=self._pump, args=(mon, source), daemon=True).start()

    def _pump(self, mon, source: str) -> None:
        for dev in iter(mon.poll, None):
            self.events.append(
                (time.monotonic(), source, dev.action or "", dev.subsystem or "", dev.sys_name)
            )

    def show(self, since: float) -> None:
        for t, source, action, subsystem, name in self.events:
            if t >= since:
                print(f"    {t - since:7.3f} {source:6s} {action:7s} {subsystem:15s} {name}")
        self.events.clear()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--debug", action="store_true", help="library DEBUG log to stderr")
    ap.add_argument("--events", action="store_true", help="print the uevents of each detach")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also a floor round (bench_iscsi's shell steps) after each, with --events",
    )
    ap.add_argument(
        "--cprofile",
        type=int,
        default=0,
        metavar="TOP",
        help="also a cProfile of the detaches (their sum), the TOP functions by own time "
        "and by cumulative time",
    )
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(relativeCreated)7d %(threadName)s %(name)s %(message)s",
    )
    from brick_agent import config
    from brick_agent.connectors.iscsi.connector import ISCSIConnector
    from brick_lab import LioIscsiTarget

    lock_path = tempfile.mkdtemp(prefix="brick-prof-")
    conf = config.new_conf(
        overrides={
            "lock_path": lock_path,
            "ledger_path": os.path.join(lock_path, "ledger.json"),  # as the benchmark's
            "privsep_in_process": True,
        }
    )
    connector = ISCSIConnector(conf=conf)
    portal = "127.0.0.1:3260"
    with LioIscsiTarget(luns=1, portals=[portal], initiators=["local"]) as t:
        props = {"target_portal": portal, "target_iqn": t.iqn, "target_lun": 0}
        connector.disconnect_volume(props, connector.connect_volume(props))  # warm-up
        instrument()
        STATS.clear()
        detaches = []
        prof = cProfile.Profile() if args.cprofile else None
        events = EventLog() if args.events else None
        for _ in range(args.n):
            t_attach = time.monotonic()
            info = connector.connect_volume(props)
            if args.events:
                from brick_agent.host import udev

                name = os.path.basename(os.path.realpath(info["path"]))
                print(
                    f"  attached {info['path']} -> {name} in {time.monotonic() - t_attach:.3f}s; "
                    "udev db present: "
                    f"{os.path.exists(udev.udev_db_path(udev.DEFAULT_ROOTS, name) or '-')}"
                )
            udev_settle()  # as the benchmark: a detach comes long after its attach
            STATS.clear()
            t0 = time.monotonic()
            if prof is not None:
                prof.enable()
            connector.disconnect_volume(props, info)
            if prof is not None:
                prof.disable()
            detaches.append(time.monotonic() - t0)
            report(f"detach {detaches[-1]:.3f}s")
            if events is not None:
                time.sleep(0.5)
                print(f"  uevents from the attach (detach started at {t0 - t_attach:.3f})")
                events.show(t_attach)
            if args.floor:
                import bench_iscsi

                t_attach = time.monotonic()
                bench_iscsi.floor_attach(t, [portal])
                udev_settle()
                t0 = time.monotonic()
                bench_iscsi.floor_detach(t, [portal])
                print(f"  floor detach {time.monotonic() - t0:.3f}s")
                if events is not None:
                    time.sleep(0.5)
                    print(f"  floor uevents (detach started at {t0 - t_attach:.3f})")
                    events.show(t_attach)
        if prof is not None:
            for key in ("tottime", "cumulative"):
                print(f"\n## cProfile of {args.n} detaches, by {key}")
                pstats.Stats(prof, stream=sys.stdout).sort_stats(key).print_stats(args.cprofile)
        print(
            f"median detach {statistics.median(detaches):.3f}s  all "
            f"{[round(x, 3) for x in detaches]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
