"""What a run left behind: brick_agent's audit plus raw kernel counts, and a cleanup."""

from __future__ import annotations

import glob
import os
import subprocess
from typing import Any


def raw_state() -> dict[str, int]:
    """Counts of iSCSI sessions, sd disks, NVMe controllers, dm maps and by-path links."""
    return {
        "sessions": len(glob.glob("/sys/class/iscsi_session/session*")),
        "sd": len(glob.glob("/sys/class/block/sd*")),
        "nvme_ctrl": len(
            [c for c in glob.glob("/sys/class/nvme/nvme*") if os.path.basename(c)[4:].isdigit()]
        ),
        "dm": len(glob.glob("/sys/class/block/dm-*")),
        "by_path": len(glob.glob("/dev/disk/by-path/*")),
        "node_records": len(glob.glob("/etc/iscsi/nodes/*")),
    }


def snapshot() -> dict[str, Any]:
    """Raw counts plus the audit's findings (kinds only)."""
    from brick_agent import audit

    rep = audit.audit(expected=[], nvme_grace=1.0)
    return {
        "raw": raw_state(),
        "findings": sorted(f.kind for f in rep.findings),
        "volumes": len(rep.volumes),
        "errors": len(rep.errors),
    }


def leftovers(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Human-readable differences (empty list = nothing left)."""
    out = [
        f"{k} +{after['raw'][k] - before['raw'][k]}"
        for k in after["raw"]
        if after["raw"][k] > before["raw"].get(k, 0)
    ]
    new = [k for k in after["findings"] if k not in before["findings"]]
    out += [f"audit:{k} x{new.count(k)}" for k in sorted(set(new))]
    if after["volumes"] > before["volumes"]:
        out.append(f"audit:volumes +{after['volumes'] - before['volumes']}")
    return out


def cleanup() -> None:
    """Log out of everything and disconnect all NVMe controllers (between sections)."""
    for argv in (
        ["iscsiadm", "-m", "node", "-u"],
        ["iscsiadm", "-m", "node", "-o", "delete"],
        ["nvme", "disconnect-all"],
    ):
        subprocess.run(argv, capture_output=True, timeout=120, check=False)
