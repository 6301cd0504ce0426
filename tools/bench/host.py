"""The lab VM's state for the benchmarks and profilers: settle udev, read CPU time."""

from __future__ import annotations

import os
import subprocess


def udev_settle(timeout: int = 30) -> None:
    """Wait (untimed) until udev has processed every queued event: a timed step then starts
    on a settled host, as in real use where a detach comes long after its attach."""
    subprocess.run(
        ["udevadm", "settle", f"--timeout={timeout}"],
        check=False,
        capture_output=True,
        timeout=timeout + 30,
    )


def cpu_times() -> tuple[float, float, float, float]:
    """(user+nice, system, irq+softirq, idle+iowait) seconds of all CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    hz = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1]) / hz, v[2] / hz, (v[5] + v[6]) / hz, (v[3] + v[4]) / hz
