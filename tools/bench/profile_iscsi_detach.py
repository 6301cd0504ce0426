#!/usr/bin/env python3
"""Profile brick_agent's single-path iSCSI detach in the lab VM (where the time goes).

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/profile_iscsi_detach.py [-n 5]

One LIO LUN; ``n`` rounds of attach then detach (as bench_iscsi's single-path case).
Wraps the detach's inner steps with timers and prints, per step, calls / total / max
seconds, and the median detach.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

from profile_nvme_concurrency import STATS, report, timed  # beside this script


def instrument() -> None:
    from brick_agent.connectors.iscsi import actions as iscsi_privileged
    from brick_agent.connectors.iscsi import connector as iscsi
    from brick_agent.connectors.iscsi import sessions as iscsi_sessions
    from brick_agent.connectors.scsi import actions as scsi_privileged
    from brick_agent.connectors.scsi import volume as scsi_volume
    from brick_agent.host import udev

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
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(relativeCreated)7d %(threadName)s %(name)s %(message)s",
    )
    from brick_agent import config
    from brick_agent.connectors.iscsi.connector import ISCSIConnector
    from brick_lab import LioIscsiTarget

    conf = config.new_conf(
        overrides={"lock_path": tempfile.mkdtemp(prefix="brick-prof-"), "privsep_in_process": True}
    )
    connector = ISCSIConnector(conf=conf)
    portal = "127.0.0.1:3260"
    with LioIscsiTarget(luns=1, portals=[portal], initiators=["local"]) as t:
        props = {"target_portal": portal, "target_iqn": t.iqn, "target_lun": 0}
        connector.disconnect_volume(props, connector.connect_volume(props))  # warm-up
        instrument()
        STATS.clear()
        detaches = []
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
            STATS.clear()
            t0 = time.monotonic()
            connector.disconnect_volume(props, info)
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
                t0 = time.monotonic()
                bench_iscsi.floor_detach(t, [portal])
                print(f"  floor detach {time.monotonic() - t0:.3f}s")
                if events is not None:
                    time.sleep(0.5)
                    print(f"  floor uevents (detach started at {t0 - t_attach:.3f})")
                    events.show(t_attach)
        print(
            f"median detach {statistics.median(detaches):.3f}s  all "
            f"{[round(x, 3) for x in detaches]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
