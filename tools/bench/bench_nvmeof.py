#!/usr/bin/env python3
"""NVMe-oF attach/detach latency of brick_agent vs the floor, in the lab VM.

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/bench_nvmeof.py -n 10 [--daemon]

Floor = a bare bash script (also ``FLOOR_*_MANY`` for bench_compare's concurrency
section): ``nvme connect`` then poll sysfs (builtins only, no
fork per check) until a block device with the namespace's UUID exists in /dev
(attach); ``nvme disconnect -n``
(detach, synchronous).  Timed inside bash ($EPOCHREALTIME) so interpreter start
is not counted.  brick_agent = ``connect_volume`` / ``disconnect_volume`` timed
around the call (privileged entrypoints in process, or through the privsep
daemon with --daemon).  Prints medians, the ratio and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from brick_agent import config, privileged
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_lab import NvmetSubsystem

FLOOR_ATTACH = r"""
set -u
exec 9<> <(:)   # an fd that never has data: 'read -t' on it is a fork-free sleep
t0=$EPOCHREALTIME
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$NQN" -q "$HOSTNQN" -I "$HOSTID" >/dev/null
while :; do
  for d in /sys/class/block/nvme*n*; do
    u=; read -r u < "$d/uuid" 2>/dev/null
    [ "$u" = "$UUID" ] && [ -b "/dev/${d##*/}" ] && break 2
  done
  read -r -t 0.005 -u 9 || :
done
echo "$t0 $EPOCHREALTIME ${d##*/}"
"""

FLOOR_DETACH = r"""
set -u
t0=$EPOCHREALTIME
nvme disconnect -n "$NQN" >/dev/null
echo "$t0 $EPOCHREALTIME"
"""

#: FLOOR_ATTACH on a host with many other namespaces: looks only under the subsystem of
#: ``$NQN`` (FLOOR_ATTACH's loop over every NVMe block device would grow with the host).
FLOOR_ATTACH_SUBSYS = r"""
set -u
exec 9<> <(:)
t0=$EPOCHREALTIME
nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$NQN" -q "$HOSTNQN" -I "$HOSTID" >/dev/null
for s in /sys/class/nvme-subsystem/nvme-subsys*; do
  n=; read -r n < "$s/subsysnqn" 2>/dev/null; [ "$n" = "$NQN" ] && break
done
while :; do
  for d in "$s"/nvme*n*; do
    u=; read -r u < "$d/uuid" 2>/dev/null
    [ "$u" = "$UUID" ] && [ -b "/dev/${d##*/}" ] && break 2
  done
  read -r -t 0.005 -u 9 || :
done
echo "$t0 $EPOCHREALTIME ${d##*/}"
"""

#: Floor of the concurrency section: connect every subsystem at once (``$NQNS``), wait
#: until each UUID of ``$UUIDS`` is a block device in /dev.
FLOOR_ATTACH_MANY = r"""
set -u
exec 9<> <(:)
t0=$EPOCHREALTIME
for n in $NQNS; do
  nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$n" -q "$HOSTNQN" -I "$HOSTID" >/dev/null &
done
wait
declare -A want; for u in $UUIDS; do want[$u]=1; done
while [ ${#want[@]} -gt 0 ]; do
  for d in /sys/class/block/nvme*n*; do
    u=; read -r u < "$d/uuid" 2>/dev/null
    [ -n "$u" ] && [ -n "${want[$u]:-}" ] && [ -b "/dev/${d##*/}" ] && unset "want[$u]"
  done
  [ ${#want[@]} -gt 0 ] && { read -r -t 0.005 -u 9 || :; }
done
echo "$t0 $EPOCHREALTIME"
"""

FLOOR_DETACH_MANY = r"""
set -u
t0=$EPOCHREALTIME
for n in $NQNS; do nvme disconnect -n "$n" >/dev/null & done
wait
echo "$t0 $EPOCHREALTIME"
"""

#: FLOOR_DETACH_MANY with the flush a detach owes each namespace first: ``blockdev
#: --flushbufs`` of every namespace device ($DEVS) at once, then both disconnects.
FLOOR_DETACH_MANY_FLUSH = r"""
set -u
t0=$EPOCHREALTIME
for d in $DEVS; do blockdev --flushbufs "$d" & done
wait
for n in $NQNS; do nvme disconnect -n "$n" >/dev/null & done
wait
echo "$t0 $EPOCHREALTIME"
"""


def _bash(script: str, env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10, help="iterations of each (default 10)")
    ap.add_argument(
        "--daemon",
        action="store_true",
        help="privileged calls through the privsep daemon (default: in process)",
    )
    args = ap.parse_args(argv)

    conf = config.new_conf(
        overrides={
            "lock_path": tempfile.mkdtemp(prefix="bench-locks-"),
            "privsep_in_process": not args.daemon,
        }
    )
    privileged.init(conf)
    conn = NVMeOFConnector(None, None, conf=conf)
    ident = conn.host_identity()

    results: dict[str, list[float]] = {
        "floor_attach": [],
        "floor_detach": [],
        "agent_attach": [],
        "agent_detach": [],
    }
    with NvmetSubsystem(namespaces=1) as sub:
        ns = sub.namespaces[1]
        props = {
            "target_nqn": sub.nqn,
            "vol_uuid": ns.uuid,
            "ns_id": 1,
            "portals": [["127.0.0.1", 4420, "tcp"]],
        }
        env = {"NQN": sub.nqn, "UUID": ns.uuid, "HOSTNQN": ident.hostnqn, "HOSTID": ident.hostid}
        # warm-up (page cache, module state, privsep daemon start)
        info = conn.connect_volume(props)
        conn.disconnect_volume(props, info)
        for _run in range(args.n):
            t0, t1, _ = _bash(FLOOR_ATTACH, env)
            results["floor_attach"].append(float(t1) - float(t0))
            t0, t1 = _bash(FLOOR_DETACH, env)
            results["floor_detach"].append(float(t1) - float(t0))
            t = time.monotonic()
            info = conn.connect_volume(props)
            results["agent_attach"].append(time.monotonic() - t)
            t = time.monotonic()
            conn.disconnect_volume(props, info)
            results["agent_detach"].append(time.monotonic() - t)

    med = {k: statistics.median(v) for k, v in results.items()}
    ratio = {
        "attach": med["agent_attach"] / med["floor_attach"],
        "detach": med["agent_detach"] / med["floor_detach"],
    }
    mode = "privsep daemon" if args.daemon else "in-process privileged"
    print(f"NVMe/TCP, n={args.n}, {mode}")
    for op in ("attach", "detach"):
        print(
            f"  {op}: brick_agent median {med['agent_' + op]:.3f}s  floor median "
            f"{med['floor_' + op]:.3f}s  ratio {ratio[op]:.2f}"
        )
    print(
        json.dumps({"n": args.n, "mode": mode, "median": med, "ratio": ratio, "samples": results})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
