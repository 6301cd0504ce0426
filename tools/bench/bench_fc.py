#!/usr/bin/env python3
"""Benchmark FC attach/detach of FibreChannelConnector against a bare-script floor (lab VM only).

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/bench_fc.py [-n 7]

Target: tcm_fc over software FCoE (VN2VN, one veth pair), LUN 1 (LUN 0 is
auto-scanned at login and left alone).

Floor (a minimal script knowing the answer in advance, no checks):
  attach: write ``"C T 1"`` (channel/target id read once, outside the timing) to
          the initiator's ``scsi_host/hostN/scan`` and wait for udev's
          ``/dev/disk/by-id/wwn-0x...`` link (what the connector returns);
  detach: write ``1`` to the LUN's ``device/delete`` and wait until it is gone;
  detach+flush: the same after ``blockdev --flushbufs`` (what a *safe* script does,
          and what the connector does: it never deletes a device with unflushed buffers).
Ours: FibreChannelConnector.connect_volume / disconnect_volume, in-process privsep.
Prints medians, the ratio ours/floor, and a JSON line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

from brick_agent import config
from brick_agent.connectors.fc.connector import FibreChannelConnector
from brick_lab import FcoeTarget


def wait(pred, timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out: {what}")
        time.sleep(0.002)


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def lun_dir(host_n: str, channel: str, target: str, lun: int) -> str:
    return f"/sys/bus/scsi/devices/{host_n}:{channel}:{target}:{lun}"


def timed(fn, *args) -> float:
    start = time.monotonic()
    fn(*args)
    return time.monotonic() - start


def bench(n: int, trace: bool = False, profile: bool = False) -> dict:
    conf = config.new_conf()
    conf.set_override("lock_path", "/tmp/bench-fc-locks", group="brick_agent")
    conf.set_override("privsep_in_process", True, group="brick_agent")
    connector = FibreChannelConnector(conf=conf)
    out: dict[str, list[float]] = {
        "floor_attach": [],
        "floor_detach": [],
        "floor_detach_flush": [],
        "ours_attach": [],
        "ours_detach": [],
    }
    with FcoeTarget(luns=2) as t:
        host = t.initiator_hosts[0]
        host_n = host[len("host") :]
        rport = t.target_rport(t.fabrics[0])
        channel = rport.split(":")[1].split("-")[0]
        with open(f"/sys/class/fc_remote_ports/{rport}/scsi_target_id") as f:
            target = f.read().strip()
        lun = t.luns[1]
        link = "/dev/disk/by-id/wwn-0x" + lun.scsi_id[1:]
        ldir = lun_dir(host_n, channel, target, 1)

        def floor_attach() -> None:
            write(f"/sys/class/scsi_host/{host}/scan", f"{channel} {target} 1")
            wait(lambda: os.path.exists(link), what=link)

        def floor_detach() -> None:
            write(os.path.join(ldir, "delete"), "1")
            wait(lambda: not os.path.exists(ldir), what=f"removal of {ldir}")

        def floor_detach_flush() -> None:
            subprocess.run(["blockdev", "--flushbufs", link], check=True, timeout=60)
            floor_detach()

        props = {"target_wwn": t.target_wwpns[0], "target_lun": 1}
        # warm-up (first scan of a target, imports, privsep init): not measured
        connector.disconnect_volume(props, connector.connect_volume(props))
        floor_attach()
        floor_detach()
        wait(lambda: not os.path.lexists(link), what="link removal")
        for i in range(n):
            order = ("floor", "ours") if i % 2 == 0 else ("ours", "floor")
            for who in order:
                if who == "floor":
                    out["floor_attach"].append(timed(floor_attach))
                    out["floor_detach"].append(timed(floor_detach))
                    wait(lambda: not os.path.lexists(link), what="link removal")
                    floor_attach()
                    out["floor_detach_flush"].append(timed(floor_detach_flush))
                else:
                    start = time.monotonic()
                    info = connector.connect_volume(props)
                    out["ours_attach"].append(time.monotonic() - start)
                    assert info["path"] == link, info
                    out["ours_detach"].append(timed(connector.disconnect_volume, props, info))
                wait(lambda: not os.path.lexists(link), what="link removal")
        if profile:  # one attach/detach under cProfile, after the measurements
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            info = connector.connect_volume(props)
            connector.disconnect_volume(props, info)
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(35)
        if trace:  # one more attach/detach with debug logs, after the measurements
            import logging

            logging.getLogger().setLevel(logging.DEBUG)
            logging.getLogger("brick_agent").info("trace: attach")
            info = connector.connect_volume(props)
            logging.getLogger("brick_agent").info("trace: detach")
            connector.disconnect_volume(props, info)
            logging.getLogger("brick_agent").info("trace: done")
            logging.getLogger().setLevel(logging.WARNING)
        leftover = glob.glob(ldir)
        assert not leftover, leftover
    med = {k: statistics.median(v) for k, v in out.items()}
    return {
        "n": n,
        "median": {k: round(v, 3) for k, v in med.items()},
        "ratio_attach": round(med["ours_attach"] / med["floor_attach"], 2),
        "ratio_detach": round(med["ours_detach"] / med["floor_detach"], 2),
        "ratio_detach_vs_flush": round(med["ours_detach"] / med["floor_detach_flush"], 2),
        "samples": {k: [round(x, 3) for x in v] for k, v in out.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=7)
    ap.add_argument(
        "-v",
        action="store_true",
        help="after measuring, one attach/detach with timestamped debug logs",
    )
    ap.add_argument(
        "--profile", action="store_true", help="after measuring, one attach/detach under cProfile"
    )
    args = ap.parse_args()
    if args.v:
        import logging

        logging.basicConfig(
            level=logging.WARNING,
            stream=sys.stderr,
            format="%(relativeCreated)8.0f %(name)s %(message)s",
        )
    r = bench(args.n, args.v, args.profile)
    m = r["median"]
    print(
        f"FC attach: ours {m['ours_attach']:.3f}s floor {m['floor_attach']:.3f}s "
        f"ratio {r['ratio_attach']}  |  detach: ours {m['ours_detach']:.3f}s "
        f"floor {m['floor_detach']:.3f}s ratio {r['ratio_detach']} (floor with flush "
        f"{m['floor_detach_flush']:.3f}s ratio {r['ratio_detach_vs_flush']})"
    )
    print("BENCH_JSON " + json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
