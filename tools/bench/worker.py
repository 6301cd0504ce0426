#!/usr/bin/env python3
"""Benchmark worker: one tool (``ours`` = brick_agent, ``osbrick`` = os-brick) in one process.

    <venv>/bin/python tools/bench/worker.py --tool ours|osbrick --lock-path DIR [--daemon]

Run with the python of the tool's own venv (os-brick lives in a separate venv so its
dependency pins do not touch ours).  Reads one JSON request per line on stdin, answers
one JSON line on stdout.  Timings are taken here, around the library call only, so
interpreter start and imports are never counted.  Requests::

    {"op": "attach", "protocol": "ISCSI"|"NVME", "props": {...}}
    {"op": "detach", "protocol": ..., "props": {...}, "info": {...}}
    {"op": "attach_many"|"detach_many", "protocol": ..., "items": [{"props":..,"info":..}]}
        -> concurrent, one thread per volume (as a compute service would do)
    {"op": "discover", "protocol": ..., "props": {...}, "repeat": N, "search_dir": DIR?}
        -> medians of get_all_available_volumes and get_volume_paths
    {"op": "quit"}

Answers carry ``ok``, ``t`` (seconds), ``error`` ("Type: message") on failure and
``info`` (the device info dict) on attach; ``*_many`` also ``cpu`` (the worker's CPU
seconds, all threads).  This file imports neither tool at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PROTOCOLS = {"ISCSI": "ISCSI", "NVME": "NVME"}


class Tool:
    """Builds connectors of one library, configured for in-process or daemon privsep."""

    def __init__(self, name: str, lock_path: str, daemon: bool, roots: str | None) -> None:
        self.name = name
        self.lock_path = lock_path
        self.daemon = daemon
        self.roots = roots
        self._conns: dict[str, Any] = {}
        os.makedirs(lock_path, exist_ok=True)
        if name == "ours":
            self._init_ours()
        else:
            self._init_osbrick()

    # ------------------------------------------------------------------ brick_agent
    def _init_ours(self) -> None:
        from brick_agent import config, privileged

        # daemon: as root, the default helper command starts the privsep-helper beside
        # this Python (brick_agent.privileged.helper_command)
        conf = config.new_conf(
            overrides={
                "lock_path": self.lock_path,
                "ledger_path": os.path.join(self.lock_path, "ledger.json"),
                "privsep_in_process": not self.daemon,
            }
        )
        privileged.init(conf)
        self.conf = conf

    def _ours(self, protocol: str) -> Any:
        kw: dict[str, Any] = {"conf": self.conf}
        if self.roots:
            from brick_agent.host.roots import HostRoots

            kw["roots"] = HostRoots.under(self.roots)
        if protocol == "ISCSI":
            from brick_agent.connectors.iscsi.connector import ISCSIConnector

            return ISCSIConnector(None, None, **kw)
        from brick_agent.connectors.nvmeof.connector import NVMeOFConnector

        return NVMeOFConnector(None, None, **kw)

    # ------------------------------------------------------------------ os-brick
    def _init_osbrick(self) -> None:
        from oslo_config import cfg
        from oslo_concurrency import lockutils
        import os_brick
        from os_brick import privileged as brick_priv

        conf = cfg.CONF
        conf([], project="brick-bench")
        lockutils.set_defaults(self.lock_path)  # oslo_concurrency.lock_path
        os_brick.setup(conf)  # os_brick.lock_path defaults to it
        if not self.daemon:
            # Run privileged entrypoints in this process (we are root in the lab).
            brick_priv.default.set_client_mode(False)
            brick_priv.brick_privsep_hide_output.set_client_mode(False)
        else:
            helper = os.path.join(os.path.dirname(sys.executable), "privsep-helper")
            # oslo.privsep appends --privsep_context/--privsep_sock_path itself (no sudo: root)
            conf.set_override("helper_command", helper, group="privsep_osbrick")

    def _osbrick(self, protocol: str) -> Any:
        from os_brick.initiator import connector

        proto = "ISCSI" if protocol == "ISCSI" else "NVMEOF"
        return connector.InitiatorConnector.factory(proto, "sudo", use_multipath=False)

    # ------------------------------------------------------------------ common
    def connector(self, protocol: str) -> Any:
        if protocol not in self._conns:
            self._conns[protocol] = (
                self._ours(protocol) if self.name == "ours" else self._osbrick(protocol)
            )
        return self._conns[protocol]


def _jsonable(info: Any) -> Any:
    try:
        json.dumps(info)
        return info
    except TypeError:
        return json.loads(json.dumps(info, default=str))


def _timed(fn: Callable[[], Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        res = fn()
        return {"ok": True, "t": time.monotonic() - t0, "result": res}
    except BaseException as exc:  # noqa: BLE001 - reported to the driver
        return {
            "ok": False,
            "t": time.monotonic() - t0,
            "error": f"{type(exc).__name__}: {str(exc)[:300]}",
        }


def handle(tool: Tool, req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    conn = tool.connector(req.get("protocol", "ISCSI"))
    if op == "attach":
        r = _timed(lambda: conn.connect_volume(req["props"]))
        r["info"] = _jsonable(r.pop("result", None))
        return r
    if op == "detach":
        r = _timed(lambda: conn.disconnect_volume(req["props"], req.get("info") or {}))
        r.pop("result", None)
        return r
    if op in ("attach_many", "detach_many"):
        items = req["items"]
        start = threading.Barrier(len(items))

        def one(item: dict[str, Any]) -> dict[str, Any]:
            start.wait()
            if op == "attach_many":
                r = _timed(lambda: conn.connect_volume(item["props"]))
                r["info"] = _jsonable(r.pop("result", None))
            else:
                r = _timed(lambda: conn.disconnect_volume(item["props"], item.get("info") or {}))
                r.pop("result", None)
            return r

        t0, cpu0 = time.monotonic(), time.process_time()
        with ThreadPoolExecutor(max_workers=len(items)) as pool:
            results = list(pool.map(one, items))
        return {
            "ok": all(r["ok"] for r in results),
            "t": time.monotonic() - t0,
            "cpu": time.process_time() - cpu0,
            "results": results,
        }
    if op == "discover":
        if req.get("search_dir"):
            conn.get_search_path = lambda: req["search_dir"]  # type: ignore[method-assign]
        out: dict[str, Any] = {"ok": True}
        for name, fn in (
            ("all", lambda: conn.get_all_available_volumes()),
            ("paths", lambda: conn.get_volume_paths(req["props"])),
        ):
            times, count = [], None
            for _ in range(int(req.get("repeat", 5))):
                r = _timed(fn)
                if not r["ok"]:
                    return {"ok": False, "t": r["t"], "error": f"{name}: {r['error']}"}
                times.append(r["t"])
                count = len(r["result"])
            out[name] = {"median": statistics.median(times), "count": count}
        return out
    raise ValueError(f"unknown op {op}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tool", choices=("ours", "osbrick"), required=True)
    ap.add_argument("--lock-path", required=True)
    ap.add_argument("--daemon", action="store_true", help="privileged calls via privsep daemon")
    ap.add_argument("--roots", help="fake host root (brick_agent only)")
    args = ap.parse_args()
    if args.tool == "ours":
        sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    out = sys.stdout
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol
    tool = Tool(args.tool, args.lock_path, args.daemon, args.roots)
    out.write(json.dumps({"ok": True, "ready": args.tool}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "quit":
            break
        try:
            resp = handle(tool, req)
        except BaseException as exc:  # noqa: BLE001
            resp = {"ok": False, "t": 0.0, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(resp, default=str) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
