"""End-to-end demo in the kernel lab: attach → verify → I/O → detach → leftover audit.

Runs inside the lab VM (``bash tools/demo.sh`` boots it).  Everything goes through
the operator-facing ``brick-agent`` command, whose privileged work runs in a
separate privsep daemon, against real targets: LIO over iSCSI (with CHAP) and
nvmet over NVMe/TCP.  Exits non-zero if any step fails or anything is left behind.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import tempfile
import time

from brick_lab import LioIscsiTarget, NvmetSubsystem

BRICK_AGENT = os.path.join(os.path.dirname(sys.executable), "brick-agent")
BLOCK = 4096
CHAP_USER, CHAP_SECRET = "demo-user", "Demo-Chap-Secret-2026"


def step(text: str) -> float:
    print(f"\n==> {text}", flush=True)
    return time.monotonic()


def brick(*args: str, stdin: dict | None = None, expect: tuple[int, ...] = (0,)) -> object:
    """Run brick-agent, echo its JSON, check its exit code; secrets must never show."""
    proc = subprocess.run(
        [BRICK_AGENT, "--config-file", CONFIG, *args],
        input=json.dumps(stdin) if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=180,
    )
    for stream in (proc.stdout, proc.stderr):
        if CHAP_SECRET in stream:
            raise SystemExit("FAIL: the CHAP secret appeared in brick-agent's output")
    if proc.stderr.strip():
        print("   " + proc.stderr.strip().replace("\n", "\n   "))
    if proc.returncode not in expect:
        raise SystemExit(
            f"FAIL: brick-agent {' '.join(args)} exited {proc.returncode}, "
            f"expected {expect}\n{proc.stdout}"
        )
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def write_read(path: str, seed: int) -> None:
    data = bytes((seed + i) % 251 for i in range(BLOCK))
    out, back = mmap.mmap(-1, BLOCK), mmap.mmap(-1, BLOCK)
    out.write(data)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        os.pwritev(fd, [out], 0)
        os.fsync(fd)
        os.preadv(fd, [back], 0)
    finally:
        os.close(fd)
    if bytes(back) != data:
        raise SystemExit(f"FAIL: read back from {path} differs from what was written")


def volume_round_trip(protocol: str, props: dict, seed: int) -> dict:
    t0 = step(f"{protocol}: connect")
    info = brick("connect", protocol, stdin=props)
    attach = time.monotonic() - t0
    print(f"   device_info {json.dumps(info)}  ({attach:.2f} s)")
    paths = brick("paths", protocol, stdin=props)
    print(f"   paths {paths}")
    if not paths:
        raise SystemExit(f"FAIL: {protocol} volume attached but get_volume_paths is empty")
    step(f"{protocol}: O_DIRECT write + read back through {info['path']}")
    write_read(info["path"], seed)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(info, f)
    t0 = step(f"{protocol}: disconnect")
    brick("disconnect", protocol, "--device-info", f.name, stdin=props)
    detach = time.monotonic() - t0
    os.unlink(f.name)
    left = brick("paths", protocol, stdin=props)
    if left:
        raise SystemExit(f"FAIL: paths left after detach: {left}")
    print(f"   no paths left  ({detach:.2f} s)")
    return {"attach_s": round(attach, 2), "detach_s": round(detach, 2)}


def main() -> int:
    global CONFIG
    workdir = tempfile.mkdtemp(prefix="brick-demo-")
    CONFIG = os.path.join(workdir, "brick_agent.conf")
    with open(CONFIG, "w") as f:
        f.write(
            f"[brick_agent]\nlock_path = {workdir}/locks\n"
            f"ledger_path = {workdir}/attachments.json\n"
        )
    step("connector properties of this host (what a volume service's create_export gets)")
    print("   " + json.dumps(brick("connector", "--my-ip", "127.0.0.1")))
    step("leftover audit before")
    baseline = brick("audit", expect=(0, 6))
    results = {}
    with LioIscsiTarget(luns=1, chap=(CHAP_USER, CHAP_SECRET), initiators=["local"]) as t:
        props = {
            "target_portal": t.portals[0],
            "target_iqn": t.iqn,
            "target_lun": 0,
            "auth_method": "CHAP",
            "auth_username": CHAP_USER,
            "auth_password": CHAP_SECRET,
            "volume_id": "demo-iscsi",
        }
        results["ISCSI"] = volume_round_trip("ISCSI", props, 7)
    with NvmetSubsystem(namespaces=1) as s:
        ns = s.namespaces[1]
        props = {
            "target_nqn": s.nqn,
            "vol_uuid": ns.uuid,
            "portals": [[p.traddr, int(p.trsvcid), "tcp"] for p in s.ports],
        }
        results["NVMEOF"] = volume_round_trip("NVMEOF", props, 11)
    step("leftover audit after")
    report = brick("audit", expect=(0, 6))
    new = [f for f in report["findings"] if f not in baseline["findings"]]
    if new:
        raise SystemExit(f"FAIL: the demo left orphans behind: {json.dumps(new, indent=2)}")
    print("   clean: nothing left behind")
    step(f"done: {json.dumps(results)}")
    return 0


CONFIG = ""

if __name__ == "__main__":
    sys.exit(main())
