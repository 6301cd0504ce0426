"""The lab VM's state for the benchmarks and profilers: settle udev, read CPU time, our
connectors with their privileged work in this process."""

from __future__ import annotations

import os
import subprocess
from typing import Any


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


def in_process_connectors(lock_dir: str) -> tuple[Any, Any]:
    """brick_agent's iSCSI and NVMe-oF connectors, privileged work in this process, their
    locks and ledger in ``lock_dir`` (brick_agent imported from ``sys.path`` as it is)."""
    from brick_agent import config, privileged
    from brick_agent.connectors.iscsi.connector import ISCSIConnector
    from brick_agent.connectors.nvmeof.connector import NVMeOFConnector

    conf = config.new_conf(
        overrides={
            "lock_path": lock_dir,
            "ledger_path": os.path.join(lock_dir, "ledger.json"),
            "privsep_in_process": True,
        }
    )
    privileged.init(conf)
    return ISCSIConnector(None, None, conf=conf), NVMeOFConnector(None, None, conf=conf)


def concurrency_targets(protocol: str) -> list[Any]:
    """Section 2's two targets, not created yet: LIO iSCSI targets of 8 LUNs at portals
    127.0.0.1 and 127.0.0.2 (``ISCSI``), or nvmet subsystems of 8 namespaces (``NVME``)."""
    from brick_lab import LioIscsiTarget, NvmetSubsystem

    if protocol == "ISCSI":
        return [
            LioIscsiTarget(
                luns=8, lun_size=1 << 20, initiators=["local"], portals=(f"127.0.0.{k + 1}:3260",)
            )
            for k in range(2)
        ]
    return [NvmetSubsystem(namespaces=8, ns_size=1 << 20) for _ in range(2)]


def release_nvme_targets(targets: list[Any]) -> None:
    """Unmap every namespace of ``targets`` (nvmet subsystems), delete the controllers a
    shared-subsystem detach kept for them, destroy the subsystems (best effort)."""
    import contextlib
    import time

    from brick_agent.host import nvme as hostnvme

    for t in targets:
        for nsid in sorted(t.namespaces):
            with contextlib.suppress(Exception):
                t.remove_namespace(nsid)
    time.sleep(1.0)
    nqns = {t.nqn for t in targets}
    for c in hostnvme.nvme_controllers():
        if c.subsysnqn in nqns:
            with contextlib.suppress(OSError):
                with open(f"/sys/class/nvme/{c.name}/delete_controller", "w") as f:
                    f.write("1")
    for t in targets:
        with contextlib.suppress(Exception):
            t.destroy()


def concurrency_items(protocol: str, targets: list[Any]) -> list[dict[str, Any]]:
    """The worker's items (connection properties) of every volume of section 2's
    ``targets``: LIO iSCSI targets (``ISCSI``, every LUN at its first portal) or nvmet
    subsystems (``NVME``, each namespace by UUID and NSID over TCP at 127.0.0.1:4420)."""
    if protocol == "ISCSI":
        return [
            {"props": {"target_portal": t.portals[0], "target_iqn": t.iqn, "target_lun": lun}}
            for t in targets
            for lun in sorted(t.luns)
        ]
    return [
        {
            "props": {
                "target_nqn": t.nqn,
                "vol_uuid": ns.uuid,
                "ns_id": nsid,
                "portals": [["127.0.0.1", 4420, "tcp"]],
            }
        }
        for t in targets
        for nsid, ns in sorted(t.namespaces.items())
    ]
