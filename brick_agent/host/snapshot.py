"""A structured, JSON-serialisable snapshot of what the host sees (for failure logs).

Connectors log ``host_snapshot(roots)`` when an attach or detach fails, so the
log shows the sessions, LUNs, maps, NVMe topology and FC ports at that moment.
Built only from the read-only views; no credentials are read anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from brick_agent.host import fc, iscsi, multipath, nvme, scsi
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

SECTIONS = ("iscsi", "scsi", "multipath", "nvme", "fc")


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if isinstance(obj, scsi.Hctl):
            return str(obj)
        return {
            f.name: _plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.name.endswith("sysfs_path") and f.name != "device_path"
        }
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    return obj


def host_snapshot(
    roots: HostRoots = DEFAULT_ROOTS, sections: Iterable[str] = SECTIONS
) -> dict[str, Any]:
    """Sessions, SCSI LUNs, multipath maps, NVMe controllers/namespaces and FC ports.

    A section that fails to read is reported as ``{"error": "..."}`` instead of
    raising: a snapshot must never hide the original failure.
    """
    readers = {
        "iscsi": lambda: iscsi.iscsi_sessions(roots),
        "scsi": lambda: scsi.scsi_devices(roots),
        "multipath": lambda: multipath.multipath_maps(roots),
        "nvme": lambda: {
            "controllers": nvme.nvme_controllers(roots),
            "namespaces": nvme.nvme_namespaces(roots),
        },
        "fc": lambda: {"hosts": fc.fc_hosts(roots), "remote_ports": fc.fc_remote_ports(roots)},
    }
    out: dict[str, Any] = {}
    for name in sections:
        reader = readers.get(name)
        if reader is None:
            raise ValueError(f"unknown snapshot section {name!r}; known: {', '.join(SECTIONS)}")
        try:
            value = reader()
        except Exception as exc:  # noqa: BLE001 - diagnostics must not raise
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        if isinstance(value, dict):
            out[name] = {k: _plain(v) for k, v in value.items()}
        else:
            out[name] = _plain(value)
    return out
