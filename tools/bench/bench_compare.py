#!/usr/bin/env python3
"""brick_agent vs os-brick, same lab VM, same targets, same run (guest side; see bench_compare.sh).

    tools/kernel-lab/lab run -- .venv/bin/python tools/bench/bench_compare.py \
        --osbrick-python /var/tmp/brick-bench/osbrick-venv/bin/python [-n 7] [--sections ...]
    .venv/bin/python tools/bench/bench_compare.py --synthetic     # host: fake sysfs/dev trees only

Each tool runs in its own long-lived worker process (tools/bench/worker.py) under its own
venv's python; times are taken inside the worker around the library call (no interpreter
start).  Floors are the bare scripts of tools/bench/bench_iscsi.py / tools/bench/bench_nvmeof.py.
Privileged work runs in-process for both tools (``--daemon``: both through privsep daemons).
Prints a markdown table and a ``BENCH_JSON`` line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# the other modules of tools/bench/, beside this script
import leftovers as lo
from client import Worker, WorkerTimeout
from host import concurrency_items, concurrency_targets, cpu_times, udev_settle

TOOLS = ("ours", "osbrick")
#: the NVMe concurrency floor whose detach first flushes each namespace, as ours does
FLUSHED_FLOOR = "floor+flush"
#: the iSCSI concurrency floor that does what ours must: manual-scan logins and one
#: targeted scan per LUN (never the whole target), a flush of each disk before its delete
TARGETED_FLOOR = "floor+targeted"
FAIL_CAP = 60.0  # seconds: a failure attempt still running then is reported as "> cap"
ROWS: list[dict[str, Any]] = []
LEFT: dict[str, dict[str, list[str]]] = {}


def p(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def row(section: str, what: str, cpu: dict[str, str] | None = None, **vals: Any) -> None:
    """Record a row; ``cpu``: the VM's CPU shares while it was measured (default: since
    the previous row or the section's start)."""
    vals.update(cpu if cpu is not None else cpu_shares(_WINDOW[0]))
    _WINDOW[0] = cpu_counters()
    ROWS.append({"section": section, "what": what, **vals})
    print(f"  [{section}] {what}: " + ", ".join(f"{k}={v}" for k, v in vals.items()), flush=True)
    if META:  # every row's result survives a VM killed later (bench_compare.sh reads it)
        print("BENCH_JSON_PARTIAL " + json.dumps(_doc(META), default=str), flush=True)


def cpu_counters() -> list[int]:
    """The guest's /proc/stat ``cpu`` line: user nice system idle iowait irq softirq steal."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return []


def cpu_shares(since: list[int]) -> dict[str, str]:
    """Idle (idle+iowait) and steal shares of all vCPUs since ``since``: a starved VM
    (steal) or an idle one tells noise from a regression."""
    now = cpu_counters()
    if not since or len(now) != len(since):
        return {}
    d = [b - a for a, b in zip(since, now, strict=True)]
    total = sum(d) or 1
    return {
        "vm_idle": f"{100 * (d[3] + d[4]) / total:.0f}%",
        "vm_steal": f"{100 * d[7] / total:.0f}%",
    }


_WINDOW: list[list[int]] = [cpu_counters()]
META: dict[str, Any] = {}  # the run's meta once known (lab runs)


def fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "–"


def check(section: str, tool: str, before: dict[str, Any], cleanup: bool = True) -> None:
    note_left(section, tool, lo.leftovers(before, lo.snapshot()))
    if cleanup:
        lo.cleanup()


def note_left(section: str, tool: str, found: list[str]) -> None:
    """Record leftovers; a section run several times keeps every distinct finding."""
    seen = LEFT.setdefault(section, {}).setdefault(tool, [])
    seen += [x for x in found if x not in seen]


def ok(r: dict[str, Any], what: str) -> dict[str, Any]:
    if not r.get("ok"):
        raise RuntimeError(f"{what}: {r.get('error') or r}")
    return r


# ------------------------------------------------------------------ 1. latency
def latency(workers: dict[str, Worker], n: int) -> None:
    from brick_lab import LioIscsiTarget, NvmetSubsystem
    import bench_iscsi as bi
    import bench_nvmeof as bn

    with LioIscsiTarget(luns=1, lun_size=1 << 20, initiators=["local"]) as t:
        portals = ["127.0.0.1:3260"]
        props = {"target_portal": portals[0], "target_iqn": t.iqn, "target_lun": 0}

        _latency_rounds(
            workers,
            n,
            "ISCSI",
            "iSCSI",
            "iSCSI single-path",
            props,
            (
                lambda: bi.timed(bi.floor_attach, t, portals),
                lambda: bi.timed(bi.floor_detach, t, portals),
            ),
        )

    with NvmetSubsystem(namespaces=1, ns_size=1 << 20) as sub:
        ns = sub.namespaces[1]
        props = {
            "target_nqn": sub.nqn,
            "vol_uuid": ns.uuid,
            "ns_id": 1,
            "portals": [["127.0.0.1", 4420, "tcp"]],
        }
        elapsed = _nvme_floor_timer(sub.nqn, ns.uuid)

        _latency_rounds(
            workers,
            n,
            "NVME",
            "NVMe",
            "NVMe/TCP",
            props,
            (lambda: elapsed(bn.FLOOR_ATTACH), lambda: elapsed(bn.FLOOR_DETACH)),
        )


def host_identity_env() -> dict[str, str]:
    """This host's NVMe identity for the floor scripts' ``nvme connect``."""
    return {
        "HOSTNQN": open("/etc/nvme/hostnqn").read().strip(),
        "HOSTID": open("/etc/nvme/hostid").read().strip(),
    }


def _nvme_floor_timer(nqn: str, uuid: str) -> Callable[[str], float]:
    """Seconds one floor script (bench_nvmeof's FLOOR_*) takes for namespace ``uuid``."""
    import bench_nvmeof as bn

    env = {"NQN": nqn, "UUID": uuid, **host_identity_env()}

    def elapsed(script: str) -> float:
        start, end = bn._bash(script, env)[:2]
        return float(end) - float(start)

    return elapsed


def _latency_rounds(
    workers: dict[str, Worker],
    n: int,
    protocol: str,
    name: str,
    label: str,
    props: dict[str, Any],
    floor: tuple[Callable[[], float], Callable[[], float]],
    section: str = "1 latency",
) -> None:
    """One warm-up round then ``n`` rounds of floor/ours/os-brick attach+detach (the order
    rotated so no one always goes first); records the latency rows of ``label``.

    Every detach starts on a settled udev (untimed ``udevadm settle``), as in real use
    where a detach comes long after its attach: an attach that returns before udev has
    finished the new disk (ours returns the kernel's /dev/sdX at once) would otherwise
    hand udev's tail of the attach to the detach, which must wait for udev's "remove"
    event queued behind it.  Attach times are unchanged by this."""
    samples: dict[str, list[float]] = {
        f"{w}_{op}": [] for w in ("floor",) + TOOLS for op in ("attach", "detach")
    }
    before = lo.snapshot()
    t0 = cpu_counters()
    for i in range(n + 1):  # round 0 = warm-up, not recorded
        order = ["floor", *TOOLS]
        order = order[i % 3 :] + order[: i % 3]
        for who in order:
            if who == "floor":
                a = floor[0]()
                udev_settle()
                d = floor[1]()
            else:
                ra = ok(
                    workers[who].call({"op": "attach", "protocol": protocol, "props": props}),
                    f"{who} {name} attach",
                )
                udev_settle()
                rd = ok(
                    workers[who].call(
                        {"op": "detach", "protocol": protocol, "props": props, "info": ra["info"]}
                    ),
                    f"{who} {name} detach",
                )
                a, d = ra["t"], rd["t"]
            if i:
                samples[f"{who}_attach"].append(a)
                samples[f"{who}_detach"].append(d)
    cpu = cpu_shares(t0)
    if section == "1 latency":
        check(f"1 {name} latency", "both", before)
    else:  # the dense host stays: only what this volume left
        check(f"{section} {name}", "both", before, cleanup=False)
    _latency_rows(label, samples, section, cpu)


def _latency_rows(
    label: str, s: dict[str, list[float]], section: str = "1 latency", cpu: Any = None
) -> None:
    for op in ("attach", "detach"):
        med = {w: statistics.median(s[f"{w}_{op}"]) for w in ("floor",) + TOOLS}
        row(
            section,
            f"{label} {op} (n={len(s['floor_' + op])})",
            cpu=cpu,
            floor=med["floor"],
            ours=med["ours"],
            osbrick=med["osbrick"],
            ours_p95=p(s[f"ours_{op}"], 0.95),
            osbrick_p95=p(s[f"osbrick_{op}"], 0.95),
            ours_vs_floor=ratio(med["ours"], med["floor"]),
            ours_vs_osbrick=ratio(med["ours"], med["osbrick"]),
            samples={k: [round(x, 3) for x in v] for k, v in s.items() if k.endswith(op)},
        )


# ------------------------------------------------------------------ 2. concurrency
class HostLoad:
    """What the whole VM did while a block ran: CPU seconds (all vCPUs, from
    /proc/stat) and the kernel's uevents by action (what udev had to process)."""

    def __enter__(self) -> HostLoad:
        import collections
        import threading
        import pyudev

        self.events: collections.Counter[str] = collections.Counter()
        self._monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
        self._monitor.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        self._cpu0 = _busy_idle()
        return self

    def _pump(self) -> None:
        while not self._stop.is_set():
            dev = self._monitor.poll(timeout=0.1)
            if dev is not None:
                self.events[f"{dev.action} {dev.subsystem}"] += 1

    def __exit__(self, *exc: object) -> None:
        self.busy, self.idle = [b - a for a, b in zip(self._cpu0, _busy_idle(), strict=True)]
        self._stop.set()
        self._thread.join()

    def summary(self, tool_cpu: float | None) -> dict[str, Any]:
        """Row fields: the tool's CPU seconds, the VM's busy share, uevents by kind."""
        return {
            "tool_cpu": tool_cpu,
            "vm_busy": f"{100 * self.busy / ((self.busy + self.idle) or 1):.0f}%",
            "uevents": ", ".join(f"{k}: {v}" for k, v in sorted(self.events.items())),
        }


def _busy_idle() -> tuple[float, float]:
    """(busy, idle) CPU seconds of all CPUs since boot."""
    user, system, irq, idle = cpu_times()
    return user + system + irq, idle


def concurrency(workers: dict[str, Worker], protocol: str, rounds: int = 1) -> None:
    """16 volumes over 2 targets, attached then detached by 16 threads; fresh targets per
    tool and round, each round started on a settled udev; rows give the median round.

    NVMe: a detach keeps a controller while it shows another namespace (both tools), so as
    a backend would after a detach, the target then unmaps the namespaces and leftovers are
    read again.  NVMe also has a floor: bare ``nvme connect`` of both subsystems at once.
    """
    results: dict[str, list[dict[str, Any]]] = {}
    floors = ("floor", FLUSHED_FLOOR) if protocol == "NVME" else ("floor", TARGETED_FLOOR)
    for rnd in range(rounds):
        order = floors + TOOLS
        for who in order[rnd % len(order) :] + order[: rnd % len(order)]:
            results.setdefault(who, []).append(_concurrency_round(workers, protocol, who))
    for who, runs in results.items():
        for op in ("detach",) if who == FLUSHED_FLOOR else ("attach", "detach"):
            walls = [r[op]["wall"] for r in runs]
            mid = sorted(runs, key=lambda r: r[op]["wall"])[(len(runs) - 1) // 2][op]
            ts = [t for r in runs for t in r[op]["times"]]
            row(
                "2 concurrency",
                f"{protocol} 16 volumes {op} [{who}]",
                wall=statistics.median(walls),
                p50=statistics.median(ts) if ts else None,
                p95=p(ts, 0.95) if ts else None,
                failures=sum(r["failures"] for r in runs),
                errors=sorted({e for r in runs for e in r["errors"]})[:2],
                **({k: mid[k] for k in ("tool_cpu", "vm_busy", "uevents") if k in mid}),
                rounds=[round(w, 3) for w in walls],
            )


def _concurrency_round(workers: dict[str, Worker], protocol: str, who: str) -> dict[str, Any]:
    """One round of one tool (or the NVMe floor): {"attach"/"detach": {"wall", "times",
    load fields}, "failures", "errors"}; leftovers go to LEFT."""
    targets = concurrency_targets(protocol)
    try:
        for t in targets:
            t.create()
        udev_settle()
        if who in ("floor", FLUSHED_FLOOR, TARGETED_FLOOR):
            if protocol == "NVME":
                return _nvme_floor_many(targets, flush=who == FLUSHED_FLOOR)
            return _iscsi_floor_many(targets, targeted=who == TARGETED_FLOOR)
        items = concurrency_items(protocol, targets)
        before = lo.snapshot()
        with HostLoad() as load:
            ra = workers[who].call(
                {"op": "attach_many", "protocol": protocol, "items": items}, timeout=300
            )
        infos = [dict(it, info=r.get("info")) for it, r in zip(items, ra["results"], strict=True)]
        udev_settle()
        rd = workers[who].call(
            {"op": "detach_many", "protocol": protocol, "items": infos}, timeout=300
        )
        out: dict[str, Any] = {
            "attach": {
                "wall": ra["t"],
                "times": [x["t"] for x in ra["results"]],
                **load.summary(ra.get("cpu")),
            },
            "detach": {"wall": rd["t"], "times": [x["t"] for x in rd["results"]]},
            "failures": sum(not r["ok"] for r in ra["results"] + rd["results"]),
            "errors": sorted({r["error"] for r in ra["results"] + rd["results"] if not r["ok"]}),
        }
        if protocol == "ISCSI":
            check(f"2 concurrency {protocol}", who, before)
        else:
            after = lo.snapshot()
            note_left(
                "2 concurrency NVMe, namespaces still exported", who, lo.leftovers(before, after)
            )
            for t in targets:
                for nsid in sorted(t.namespaces):
                    t.remove_namespace(nsid)
            time.sleep(2.0)
            check("2 concurrency NVMe, after the target unmapped them", who, before)
        return out
    finally:
        for t in targets:
            try:
                t.destroy()
            except Exception as exc:  # noqa: BLE001
                print(f"  target teardown: {exc}", flush=True)
        lo.cleanup()


def _nvme_floor_many(targets: list[Any], flush: bool = False) -> dict[str, Any]:
    """The kernel's share of the NVMe concurrency section: ``nvme connect`` of both
    subsystems at once until all 16 namespaces are block devices, then disconnect.
    ``flush``: the detach first flushes every namespace (``blockdev --flushbufs``, all at
    once), the guarantee a detach of ours keeps (:data:`FLUSHED_FLOOR`)."""
    import bench_nvmeof as bn

    env = {
        "NQNS": " ".join(t.nqn for t in targets),
        "UUIDS": " ".join(ns.uuid for t in targets for ns in t.namespaces.values()),
        **host_identity_env(),
    }
    with HostLoad() as load:
        start, end = bn._bash(bn.FLOOR_ATTACH_MANY, env)[:2]
    udev_settle()
    if flush:
        env["DEVS"] = " ".join(_namespace_devices(env["UUIDS"].split()))
    d0, d1 = bn._bash(bn.FLOOR_DETACH_MANY_FLUSH if flush else bn.FLOOR_DETACH_MANY, env)[:2]
    udev_settle()
    return {
        "attach": {"wall": float(end) - float(start), "times": [], **load.summary(None)},
        "detach": {"wall": float(d1) - float(d0), "times": []},
        "failures": 0,
        "errors": [],
    }


def _namespace_devices(uuids: list[str]) -> list[str]:
    """/dev paths of the NVMe namespace heads with these UUIDs (read from sysfs)."""
    from brick_lab.rawhost import nvme_heads_with

    out = sorted("/dev/" + name for uuid in uuids for name in nvme_heads_with(uuid))
    assert len(out) == len(set(uuids)), f"namespace devices {out} for {len(uuids)} UUIDs"
    return out


def _iscsi_floor_many(targets: list[Any], targeted: bool = False) -> dict[str, Any]:
    """The kernel's share of the iSCSI concurrency section: both logins at once (each
    scanning its target) until the 16 disks exist; the detach deletes them and logs out.
    ``targeted`` (:data:`TARGETED_FLOOR`): manual-scan logins, then one scan per LUN, all
    at once; the detach flushes every disk first."""
    import bench_iscsi as bi

    luns = sum(len(t.luns) for t in targets)
    with HostLoad() as load:
        t0 = time.monotonic()
        bi.floor_attach_many(targets, luns, targeted=targeted)
        attach = time.monotonic() - t0
    udev_settle()
    t0 = time.monotonic()
    bi.floor_detach_many(targets, flush=targeted)
    detach = time.monotonic() - t0
    udev_settle()
    return {
        "attach": {"wall": attach, "times": [], **load.summary(None)},
        "detach": {"wall": detach, "times": []},
        "failures": 0,
        "errors": [],
    }


# ------------------------------------------------------------------ 6. a dense host
def scale(workers: dict[str, Worker], sizes: list[int], n: int, teardown: bool = True) -> None:
    """One iSCSI and one NVMe/TCP attach+detach (floor, ours, os-brick; ``n`` rounds) on
    a host that already has ``size`` unrelated block devices (tools/bench/dense.py)."""
    from brick_lab import LioIscsiTarget, NvmetSubsystem
    import bench_iscsi as bi
    import bench_nvmeof as bn
    from dense import DenseHost

    host = DenseHost()
    try:
        with (
            LioIscsiTarget(luns=1, lun_size=1 << 20, initiators=["local"]) as t,
            NvmetSubsystem(namespaces=1, ns_size=1 << 20) as sub,
        ):
            for size in sizes:
                took = host.grow(size)
                print(f"  dense host: {host.counts()} ({took})", flush=True)
                _scale_rounds(workers, n, size, t, sub, bi, bn)
    finally:
        if teardown:
            host.destroy()
            lo.cleanup()


def _scale_rounds(
    workers: dict[str, Worker], n: int, size: int, t: Any, sub: Any, bi: Any, bn: Any
) -> None:
    portals = ["127.0.0.1:3260"]
    iprops = {"target_portal": portals[0], "target_iqn": t.iqn, "target_lun": 0}
    _latency_rounds(
        workers,
        n,
        "ISCSI",
        "iSCSI",
        f"iSCSI single-path, {size} unrelated",
        iprops,
        (
            lambda: bi.timed(bi.floor_attach, t, portals),
            lambda: bi.timed(bi.floor_detach, t, portals),
        ),
        section="6 scale",
    )
    ns = sub.namespaces[1]
    elapsed = _nvme_floor_timer(sub.nqn, ns.uuid)

    nprops = {
        "target_nqn": sub.nqn,
        "vol_uuid": ns.uuid,
        "ns_id": 1,
        "portals": [["127.0.0.1", 4420, "tcp"]],
    }
    _latency_rounds(
        workers,
        n,
        "NVME",
        "NVMe",
        f"NVMe/TCP, {size} unrelated",
        nprops,
        (lambda: elapsed(bn.FLOOR_ATTACH_SUBSYS), lambda: elapsed(bn.FLOOR_DETACH)),
        section="6 scale",
    )


# ------------------------------------------------------------------ 7. filling a host
def fill(workers: dict[str, Worker], protocol: str, volumes: int, batch: int) -> None:
    """Attach ``volumes`` volumes (4 targets/subsystems) ``batch`` at a time with ours,
    then detach them all the same way: per-volume p50/p95 of each quarter."""
    from brick_lab import LioIscsiTarget, NvmetSubsystem

    per = volumes // 4
    if protocol == "ISCSI":
        targets: list[Any] = [
            LioIscsiTarget(
                luns=per, lun_size=1 << 20, initiators=["local"], portals=(f"127.0.0.{k + 1}:3260",)
            )
            for k in range(4)
        ]
    else:
        targets = [NvmetSubsystem(namespaces=per, ns_size=1 << 20) for _ in range(4)]
    try:
        for tg in targets:
            tg.create()
        udev_settle(timeout=300)
        items = _fill_items(protocol, targets)
        before = lo.snapshot()
        attached = _in_batches(workers["ours"], protocol, "attach_many", items, batch)
        udev_settle(timeout=300)
        detached = _in_batches(workers["ours"], protocol, "detach_many", attached, batch)
        check(f"7 fill {protocol}", "ours", before)
        for op, done in (("attach", attached), ("detach", detached)):
            _quarter_row(
                protocol,
                op,
                [d["t"] for d in done],
                sum(not d["ok"] for d in done),
                sorted({str(d["error"]) for d in done if not d["ok"]})[:2],
            )
    finally:
        for tg in targets:
            try:
                tg.destroy()
            except Exception as exc:  # noqa: BLE001
                print(f"  target teardown: {exc}", flush=True)
        lo.cleanup()


def _fill_items(protocol: str, targets: list[Any]) -> list[dict[str, Any]]:
    if protocol == "ISCSI":
        return [
            {"props": {"target_portal": t.portals[0], "target_iqn": t.iqn, "target_lun": lun}}
            for lun in range(len(targets[0].luns))
            for t in targets
        ]
    return [
        {
            "props": {
                "target_nqn": t.nqn,
                "vol_uuid": t.namespaces[nsid].uuid,
                "ns_id": nsid,
                "portals": [["127.0.0.1", 4420, "tcp"]],
            }
        }
        for nsid in sorted(targets[0].namespaces)
        for t in targets
    ]


def _in_batches(
    w: Worker, protocol: str, op: str, items: list[dict[str, Any]], batch: int
) -> list[dict[str, Any]]:
    """Run ``op`` over ``items`` ``batch`` at a time; each item gets ``t``, ``ok``, ``info``."""
    out = []
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        r = w.call({"op": op, "protocol": protocol, "items": chunk}, timeout=600)
        if "results" not in r:
            raise RuntimeError(f"{op}: {r.get('error') or r}")
        for it, res in zip(chunk, r["results"], strict=True):  # failures are counted
            info = res.get("info") if op == "attach_many" else it.get("info")
            out.append(
                {**it, "t": res["t"], "ok": res["ok"], "info": info, "error": res.get("error")}
            )
    return out


def _quarter_row(
    protocol: str, op: str, times: list[float], failures: int, errors: list[str] | None = None
) -> None:
    q = max(1, len(times) // 4)
    quarters = [times[k * q : (k + 1) * q] for k in range(4)]
    vals: dict[str, Any] = {"failures": failures, "errors": list(errors or [])}
    for k, qt in enumerate(quarters, 1):
        vals[f"q{k}_p50"] = statistics.median(qt) if qt else None
        vals[f"q{k}_p95"] = p(qt, 0.95) if qt else None
    vals["last_vs_first_p50"] = ratio(vals["q4_p50"], vals["q1_p50"])
    vals["last_vs_first_p95"] = ratio(vals["q4_p95"], vals["q1_p95"])
    row("7 fill", f"{protocol} {len(times)} volumes {op}, 16 at a time [ours]", **vals)


# ------------------------------------------------------------------ 3. failure latency
def failures(workers: dict[str, Worker]) -> None:
    from brick_lab import LioIscsiTarget

    with LioIscsiTarget(luns=1, lun_size=1 << 20, initiators=["local"]) as t:
        cases = {
            "iSCSI refused portal (closed port)": (
                "ISCSI",
                {"target_portal": "127.0.0.1:3261", "target_iqn": t.iqn, "target_lun": 0},
            ),
            "iSCSI missing LUN": (
                "ISCSI",
                {"target_portal": "127.0.0.1:3260", "target_iqn": t.iqn, "target_lun": 7},
            ),
            "NVMe/TCP refused portal (closed port)": (
                "NVME",
                {
                    "target_nqn": "nqn.2014-08.org.bench:none",
                    "vol_uuid": "8f0b1c7e-0000-4000-8000-00000000beef",
                    "portals": [["127.0.0.1", 4499, "tcp"]],
                },
            ),
        }
        for label, (proto, props) in cases.items():
            vals: dict[str, Any] = {}
            for who in TOOLS:
                before = lo.snapshot()
                try:
                    r = workers[who].call(
                        {"op": "attach", "protocol": proto, "props": props}, timeout=FAIL_CAP
                    )
                    vals[who] = r["t"]
                    vals[f"{who}_error"] = "attached?!" if r["ok"] else r["error"][:120]
                    check(f"3 {label}", who, before)
                except WorkerTimeout:
                    vals[who] = f">{FAIL_CAP:.0f} (capped)"
                    vals[f"{who}_error"] = "none within cap"
                    check(f"3 {label} (worker killed at the cap, mid-attempt)", who, before)
            row("3 failure", label, **vals)


# ------------------------------------------------------------------ 4. discovery
def discovery_lab(workers: dict[str, Worker], sizes: list[int]) -> None:
    import subprocess
    from brick_lab import LioIscsiTarget

    with LioIscsiTarget(luns=sizes[0], lun_size=1 << 20, initiators=["local"]) as t:
        portal = "127.0.0.1:3260"
        props = {"target_portal": portal, "target_iqn": t.iqn, "target_lun": 0}
        base = f"/dev/disk/by-path/ip-{portal}-iscsi-{t.iqn}-lun-"
        subprocess.run(
            ["iscsiadm", "-m", "node", "-T", t.iqn, "-p", portal, "--op", "new"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["iscsiadm", "-m", "node", "-T", t.iqn, "-p", portal, "--login"],
            check=True,
            capture_output=True,
        )
        try:
            for size in sizes:
                while len(t.luns) < size:
                    t.add_lun(size=1 << 20)
                subprocess.run(["iscsiadm", "-m", "session", "-R"], capture_output=True)
                end = time.monotonic() + 120
                while sum(os.path.exists(base + str(i)) for i in range(size)) < size:
                    if time.monotonic() > end:
                        raise RuntimeError(f"only some of {size} LUNs appeared")
                    time.sleep(0.05)
                # measure a settled host: when the links exist udev is still busy with the
                # new LUNs (15 workers on 2 TCG vCPUs), which slows every sysfs read 10-20x
                udev_settle(timeout=120)
                vals: dict[str, Any] = {}
                for who in TOOLS:
                    r = ok(
                        workers[who].call(
                            {"op": "discover", "protocol": "ISCSI", "props": props, "repeat": 5}
                        ),
                        f"{who} discover",
                    )
                    vals[f"{who}_all"] = r["all"]["median"]
                    vals[f"{who}_all_n"] = r["all"]["count"]
                    vals[f"{who}_paths"] = r["paths"]["median"]
                row("4 discovery lab", f"{size} LUNs, 1 session", **vals)
        finally:
            lo.cleanup()


def discovery_synthetic(
    ours_python: str, osbrick_python: str | None, sizes: list[int], lock_dir: str
) -> None:
    import synthetic

    for size in sizes:
        base = tempfile.mkdtemp(prefix=f"bench-syn-{size}-", dir="/var/tmp")
        try:
            props = synthetic.build(base, size)
            vals: dict[str, Any] = {}
            w = Worker("ours", ours_python, lock_dir, roots=base)
            try:
                r = ok(
                    w.call({"op": "discover", "protocol": "ISCSI", "props": props, "repeat": 5}),
                    "ours synthetic",
                )
            finally:
                w.close()
            vals.update(
                ours_all=r["all"]["median"],
                ours_all_n=r["all"]["count"],
                ours_paths=r["paths"]["median"],
            )
            if osbrick_python:
                # os-brick has no injectable root: get_all_available_volumes globs its search
                # path, which we point at the fake by-path dir; get_volume_paths only stats
                # hard-coded /dev paths, so it is not measured here.
                w = Worker("osbrick", osbrick_python, lock_dir)
                try:
                    r = ok(
                        w.call(
                            {
                                "op": "discover",
                                "protocol": "ISCSI",
                                "props": props,
                                "repeat": 5,
                                "search_dir": os.path.join(base, "dev/disk/by-path"),
                            }
                        ),
                        "osbrick synthetic",
                    )
                finally:
                    w.close()
                vals.update(osbrick_all=r["all"]["median"], osbrick_all_n=r["all"]["count"])
            row("4 discovery synthetic", f"{size} paths", **vals)
        finally:
            shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ table
def _md_row(cells: list[Any]) -> str:
    return "| " + " | ".join(map(fmt, cells)) + " |"


def _md_table(head: list[str], body: list[list[Any]]) -> list[str]:
    """Markdown table lines: the header, its separator, one line per row of cells (fmt)."""
    return [_md_row(head), "|---" * len(head) + "|", *map(_md_row, body)]


def _rounds_label(r: dict[str, Any]) -> str:
    n = len(r.get("rounds") or [])
    return f"{r['what']} (median of {n})" if n > 1 else r["what"]


def _vm(r: dict[str, Any]) -> str:
    """The row's VM idle / steal shares (how starved the VM was while it was measured)."""
    return f"{r['vm_idle']} / {r['vm_steal']}" if "vm_idle" in r else "–"


def _scale_and_fill(L: list[str]) -> None:
    sc = [r for r in ROWS if r["section"] == "6 scale"]
    if sc:
        zero = {
            r["what"].split(",")[0] + r["what"].split("unrelated")[-1]: r["ours"]
            for r in sc
            if ", 0 unrelated" in r["what"]
        }
        body = []
        for r in sc:
            base = zero.get(r["what"].split(",")[0] + r["what"].split("unrelated")[-1])
            body.append(
                [r["what"], r["floor"], r["ours"], r["osbrick"], r["ours_vs_floor"]]
                + [ratio(r["ours"], base), r.get("ours_p95"), _vm(r)]
            )
        L += _md_table(
            [
                "6. dense host (median s)",
                "floor",
                "brick_agent",
                "os-brick",
                "ours/floor",
                "ours / ours at 0",
                "p95 ours",
                "VM idle / steal",
            ],
            body,
        )
        L.append("")
    fl = [r for r in ROWS if r["section"] == "7 fill"]
    if fl:
        keys = [f"q{k}_{x}" for k in range(1, 5) for x in ("p50", "p95")]
        L += _md_table(
            ["7. filling a host (s)"]
            + [k.replace("_", " ") for k in keys]
            + ["q4/q1 p50", "q4/q1 p95", "failures", "VM idle / steal"],
            [
                [r["what"]]
                + [r.get(k) for k in keys]
                + [r["last_vs_first_p50"], r["last_vs_first_p95"], r["failures"], _vm(r)]
                for r in fl
            ],
        )
        L.append("")


def table(meta: dict[str, Any]) -> str:
    L = [
        f"brick_agent vs os-brick {meta['osbrick_version']} — {meta['date']}, kernel "
        f"{meta['kernel']}, {meta['where']}, privileged work {meta['privsep']}",
        "",
    ]
    lat = [r for r in ROWS if r["section"] == "1 latency"]
    if lat:
        L += _md_table(
            [
                "1. latency (median s)",
                "floor",
                "brick_agent",
                "os-brick",
                "ours/floor",
                "ours/os-brick",
                "p95 ours",
                "p95 os-brick",
                "VM idle / steal",
            ],
            [
                [
                    r[k]
                    for k in (
                        "what",
                        "floor",
                        "ours",
                        "osbrick",
                        "ours_vs_floor",
                        "ours_vs_osbrick",
                        "ours_p95",
                        "osbrick_p95",
                    )
                ]
                + [_vm(r)]
                for r in lat
            ],
        )
        L.append("")
    con = [r for r in ROWS if r["section"] == "2 concurrency"]
    if con:
        L += _md_table(
            [
                "2. concurrency (s)",
                "wall",
                "per-volume p50",
                "per-volume p95",
                "failures",
                "tool CPU (s)",
                "VM CPU busy",
                "VM idle / steal",
            ],
            [
                [_rounds_label(r)]
                + [r.get(k) for k in ("wall", "p50", "p95", "failures", "tool_cpu", "vm_busy")]
                + [_vm(r)]
                for r in con
            ],
        )
        for proto in ("ISCSI", "NVME"):
            for op in ("attach", "detach"):
                w = {
                    who: next(
                        (r["wall"] for r in con if r["what"] == f"{proto} 16 volumes {op} [{who}]"),
                        None,
                    )
                    for who in ("floor", FLUSHED_FLOOR, TARGETED_FLOOR) + TOOLS
                }
                if w["ours"] and w["osbrick"]:
                    L.append(
                        f"| {proto} {op} speed-up os-brick/ours | "
                        f"{w['osbrick'] / w['ours']:.1f}x | | | | | | |"
                    )
                for floor in ("floor", FLUSHED_FLOOR, TARGETED_FLOOR):
                    if w["ours"] and w[floor]:
                        L.append(
                            f"| {proto} {op} ours/{floor} | {w['ours'] / w[floor]:.2f}x "
                            "| | | | | | |"
                        )
        L.append("")
        L += [
            f"- walls of the rounds, {r['what']}: " + ", ".join(f"{w:.3f}" for w in r["rounds"])
            for r in con
            if len(r.get("rounds") or []) > 1
        ]
        L += [
            f"- kernel uevents during {r['what']}: {r['uevents']}" for r in con if r.get("uevents")
        ]
        L.append("")
    fail = [r for r in ROWS if r["section"] == "3 failure"]
    if fail:
        L += _md_table(
            [
                "3. failure: time to error (s)",
                "brick_agent",
                "os-brick",
                "brick_agent error",
                "os-brick error",
                "VM idle / steal",
            ],
            [
                [r["what"], r["ours"], r["osbrick"], r["ours_error"][:60], r["osbrick_error"][:60]]
                + [_vm(r)]
                for r in fail
            ],
        )
        L.append("")
    disc = [r for r in ROWS if r["section"].startswith("4 discovery")]
    if disc:
        ms = lambda v: f"{v * 1000:.2f}" if isinstance(v, float) else "n/a"  # noqa: E731
        prev: dict[str, Any] = {}
        body = []
        for r in disc:
            last = prev.get(r["section"])
            grow = "–"
            if last and r.get("ours_all_n") == 2 * last.get("ours_all_n", 0):
                grow = f"{r['ours_all'] / last['ours_all']:.1f}x, " + (
                    f"{r['osbrick_all'] / last['osbrick_all']:.1f}x"
                    if r.get("osbrick_all") and last.get("osbrick_all")
                    else "–"
                )
            prev[r["section"]] = r
            body.append(
                [
                    f"{r['section'][12:]}: {r['what']}",
                    ms(r.get("ours_all")),
                    ms(r.get("osbrick_all")),
                    ms(r.get("ours_paths")),
                    ms(r.get("osbrick_paths")),
                    f"{r.get('ours_all_n')}/{r.get('osbrick_all_n', '–')}",
                    grow,
                ]
            )
        L += _md_table(
            [
                "4. discovery (median ms)",
                "ours all",
                "os-brick all",
                "ours paths",
                "os-brick paths",
                "found (ours/os-brick)",
                "growth per doubling: ours all, os-brick all",
            ],
            body,
        )
        L.append("")
    _scale_and_fill(L)
    out_of_time = [r for r in ROWS if r["what"] in ("OUT OF TIME", "FAILED")]
    if out_of_time:
        L += [f"- section {r['section']}: {r['what']} ({r.get('error', '')})" for r in out_of_time]
        L.append("")
    if LEFT:
        body = []
        for sec, d in LEFT.items():
            if "both" in d:
                body.append(
                    [
                        f"{sec} (all tools + floor in one loop)",
                        ", ".join(d["both"]) or "none",
                        "(same)",
                    ]
                )
            else:
                body.append(
                    [
                        sec,
                        ", ".join(d.get("ours", [])) or "none",
                        ", ".join(d.get("osbrick", [])) or "none",
                    ]
                )
        L += _md_table(
            ["5. leftovers (audit + raw counts, after the section)", "brick_agent", "os-brick"],
            body,
        )
    return "\n".join(L)


#: seconds per section (a lab run per section adds ~2 min of boot and setup)
BUDGETS = {
    "latency": 300.0,
    "concurrency": 600.0,  # 3 rounds of floor, floor+targeted, ours and os-brick
    "concurrency-nvme": 300.0,  # 3 rounds of floor, floor+flush, ours and os-brick
    "failures": 360.0,
    "discovery": 300.0,
    "scale": 1140.0,  # growing the host to 1024 devices took 585 s on 2026-12-07
    "fill-iscsi": 720.0,
    "fill-nvme": 600.0,
}


class OutOfTime(BaseException):
    """A section's budget ran out (raised by SIGALRM; not an Exception, so no section's
    own error handling swallows it)."""


def _budget(text: str) -> tuple[str, float]:
    name, _, secs = text.partition("=")
    return name, float(secs)


def run_section(
    name: str,
    fn: Callable[[], None],
    budget: float,
    workers: dict[str, Worker],
    teardown: bool = True,
) -> None:
    """Run one section within ``budget`` seconds; its rows so far are kept either way."""
    import signal

    def expire(signum: int, frame: Any) -> None:
        raise OutOfTime(name)

    t0 = time.monotonic()
    print(f"== {name} (budget {budget:.0f}s)", flush=True)
    _WINDOW[0] = cpu_counters()
    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        fn()
    except OutOfTime:
        print(f"!! {name} ran out of its {budget:.0f}s budget", flush=True)
        row(name, "OUT OF TIME", error=f"budget {budget:.0f}s")
        _restart(workers)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - keep the other sections
        print(f"!! {name} failed: {type(exc).__name__}: {exc}", flush=True)
        row(name, "FAILED", error=f"{type(exc).__name__}: {exc}"[:300])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if not (name == "scale" and not teardown):
        lo.cleanup()
    print(f"== {name} took {time.monotonic() - t0:.1f}s", flush=True)


def _restart(workers: dict[str, Worker]) -> None:
    """Workers may be mid-call after an interrupted section: start them afresh."""
    for w in workers.values():
        w.kill()
        w.start()


def _doc(meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "rows": ROWS, "leftovers": LEFT}


def render(paths: list[str]) -> int:
    """One table of several --json-out files (one lab run per section)."""
    meta: dict[str, Any] = {}
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        meta = meta or doc["meta"]
        ROWS.extend(doc["rows"])
        for sec, found in doc["leftovers"].items():
            LEFT.setdefault(sec, {}).update(found)
    if not meta:
        return 1
    print(table(meta))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=7)
    ap.add_argument("--osbrick-python", default="/var/tmp/brick-bench/osbrick-venv/bin/python")
    ap.add_argument(
        "--sections",
        default="latency,concurrency,concurrency-nvme,failures,discovery",
        help="comma list of latency,concurrency,concurrency-nvme,failures,discovery,"
        "scale,fill-iscsi,fill-nvme",
    )
    ap.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="SECTION=SECONDS",
        help="time budget of a section (default: BUDGETS); a section out of time keeps "
        "the rows it made, the next one starts",
    )
    ap.add_argument("--scale-sizes", default="0,64,256,1024")
    ap.add_argument("--scale-rounds", type=int, default=3)
    ap.add_argument(
        "--no-dense-teardown",
        action="store_true",
        help="leave the dense host's devices when the scale section ends (its own VM run: "
        "the VM goes anyway, and removing 1024 devices takes minutes under TCG)",
    )
    ap.add_argument("--fill-volumes", type=int, default=256)
    ap.add_argument("--discovery-sizes", default="16,32,64")
    ap.add_argument(
        "--iscsi-rounds",
        type=int,
        default=3,
        help="rounds of the iSCSI concurrency section (os-brick needs ~35 s each; the "
        "rows are the median round)",
    )
    ap.add_argument(
        "--nvme-rounds",
        type=int,
        default=3,
        help="rounds of the NVMe concurrency section (~6 s each per tool)",
    )
    ap.add_argument(
        "--synthetic",
        action="store_true",
        help="host only: synthetic sysfs/dev trees (no VM needed)",
    )
    ap.add_argument("--synthetic-sizes", default="256,512,1024,2048,4096")
    ap.add_argument("--daemon", action="store_true", help="both tools through privsep daemons")
    ap.add_argument("--json-out", help="also write rows/leftovers as JSON here")
    ap.add_argument(
        "--render",
        metavar="JSON",
        nargs="+",
        help="print the table of earlier --json-out files (several: one table)",
    )
    args = ap.parse_args()
    if args.render:
        return render(args.render)
    osb_ver = "?"
    try:
        import subprocess

        osb_ver = (
            subprocess.run(
                [
                    args.osbrick_python,
                    "-c",
                    "import importlib.metadata as m;print(m.version('os-brick'))",
                ],
                capture_output=True,
                text=True,
            ).stdout.strip()
            or "?"
        )
    except OSError:
        pass
    meta = {
        "date": datetime.date.today().isoformat(),
        "kernel": platform.release(),
        "osbrick_version": osb_ver,
        "privsep": "through privsep daemons" if args.daemon else "in-process",
        "where": "software-emulated QEMU TCG, 2 vCPU"
        if os.environ.get("BRICK_LAB")
        else "host (synthetic trees)",
    }
    if not args.synthetic:
        META.update(meta)
    lock_dir = tempfile.mkdtemp(prefix="bench-locks-", dir="/var/tmp")
    t_start = time.monotonic()
    if args.synthetic:
        discovery_synthetic(
            sys.executable,
            args.osbrick_python,
            [int(x) for x in args.synthetic_sizes.split(",")],
            lock_dir,
        )
    else:
        if not os.environ.get("BRICK_LAB"):
            print("run inside the lab VM (tools/bench/bench_compare.sh), or use --synthetic")
            return 2
        sections = args.sections.split(",")
        workers = {
            "ours": Worker("ours", sys.executable, os.path.join(lock_dir, "ours"), args.daemon),
            "osbrick": Worker(
                "osbrick", args.osbrick_python, os.path.join(lock_dir, "osbrick"), args.daemon
            ),
        }
        steps: list[tuple[str, Callable[[], None]]] = [
            ("latency", lambda: latency(workers, args.n)),
            (
                "scale",
                lambda: scale(
                    workers,
                    [int(x) for x in args.scale_sizes.split(",")],
                    args.scale_rounds,
                    teardown=not args.no_dense_teardown,
                ),
            ),
            ("fill-iscsi", lambda: fill(workers, "ISCSI", args.fill_volumes, 16)),
            ("fill-nvme", lambda: fill(workers, "NVME", args.fill_volumes, 16)),
            ("concurrency", lambda: concurrency(workers, "ISCSI", args.iscsi_rounds)),
            ("concurrency-nvme", lambda: concurrency(workers, "NVME", args.nvme_rounds)),
            ("failures", lambda: failures(workers)),
            (
                "discovery",
                lambda: discovery_lab(workers, [int(x) for x in args.discovery_sizes.split(",")]),
            ),
        ]
        budgets = {**BUDGETS, **dict(_budget(b) for b in args.budget)}
        try:
            for name, fn in steps:
                if name in sections:
                    run_section(
                        name, fn, budgets.get(name, 600.0), workers, not args.no_dense_teardown
                    )
                    print("BENCH_JSON_PARTIAL " + json.dumps(_doc(meta), default=str), flush=True)
        finally:
            for w in workers.values():
                w.close()
    print()
    print(table(meta))
    print(f"\n(total {time.monotonic() - t_start:.0f}s)")
    doc = _doc(meta)
    print("BENCH_JSON " + json.dumps(doc, default=str))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
