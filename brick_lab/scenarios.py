"""Lab scenarios: a target built with brick_lab and attached with the
stock initiator CLIs (never brick_agent), waited for until the host shows all of
it, torn down on exit. Shared by tests/functional/test_lab_fixtures.py and
tools/kernel-lab/capture_scenarios.py (which captures sysfs inside them).

    with iscsi_dm_multipath(luns=2) as t:
        ...   # every LUN has a dm map with two paths
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from brick_lab import FcLoop, FcoeTarget, LioIscsiTarget, NvmetSubsystem, wait_for
from brick_lab.initiator import iscsi_login, iscsi_logout, nvme_connect, nvme_disconnect, sh
from brick_lab.rawhost import (
    disks_with,
    maps_with,
    multipathd_running,
    nvme_ctrls_of,
    nvme_heads_with,
    read,
)

ISCSI_PORTALS = ("127.0.0.1:3260", "127.0.0.2:3260")
NVME_PORTS = ("127.0.0.1:4420", "127.0.0.2:4420")


@contextlib.contextmanager
def iscsi_logged_in(t: LioIscsiTarget, portals: Sequence[str] | None = None) -> Iterator[None]:
    """Logged in to ``t`` on ``portals`` (default: all of its portals) until exit."""
    try:
        for portal in portals or t.portals:
            iscsi_login(t.iqn, portal)
        yield
    finally:
        iscsi_logout(t.iqn)


@contextlib.contextmanager
def iscsi_single(iqn: str | None = None) -> Iterator[LioIscsiTarget]:
    """One session to a one-LUN target: its disk and by-path link are there."""
    with LioIscsiTarget(iqn=iqn, luns=1) as t, iscsi_logged_in(t):
        wait_for(lambda: disks_with(t.luns[0].wwid), 30, "disk")
        link = f"/dev/disk/by-path/ip-{t.portals[0]}-iscsi-{t.iqn}-lun-0"
        wait_for(lambda: os.path.exists(link), 20, link)
        yield t


@contextlib.contextmanager
def iscsi_dm_multipath(
    iqn: str | None = None, luns: int = 1, initiators: Sequence[str] | None = None
) -> Iterator[LioIscsiTarget]:
    """A target on two portals, one session each, multipathd running: every LUN has
    two disks and one dm map (two slaves, by-id link)."""
    with (
        multipathd_running(),
        LioIscsiTarget(iqn=iqn, luns=luns, portals=ISCSI_PORTALS, initiators=initiators) as t,
        iscsi_logged_in(t),
    ):
        try:
            for lun in t.luns.values():
                wait_for(
                    lambda lun=lun: len(disks_with(lun.wwid)) == 2,
                    30,
                    f"2 paths of LUN {lun.lun_id}",
                )
                dm = wait_for(
                    lambda lun=lun: maps_with(lun.scsi_id), 30, f"dm map of LUN {lun.lun_id}"
                )[0]
                wait_for(
                    lambda dm=dm: len(os.listdir(f"/sys/block/{dm}/slaves")) == 2, 30, "2 slaves"
                )
                wait_for(
                    lambda lun=lun: os.path.exists(f"/dev/disk/by-id/dm-uuid-mpath-{lun.scsi_id}"),
                    20,
                    "dm by-id link",
                )
            yield t
        finally:
            for lun in t.luns.values():
                sh("multipath", "-f", lun.scsi_id, check=False)


@contextlib.contextmanager
def nvme_tcp_multipath(
    nqn: str | None = None, namespaces: int = 1, connect_opts: Sequence[str] = ()
) -> Iterator[NvmetSubsystem]:
    """A subsystem on two TCP ports, connected through both (``nvme connect`` +
    ``connect_opts``): two live controllers, every namespace's device and by-id link."""
    with NvmetSubsystem(nqn=nqn, namespaces=namespaces, ports=NVME_PORTS) as s:
        try:
            for port in s.ports:
                nvme_connect(s.nqn, port, *connect_opts)

            def ready() -> bool:
                live = [
                    c for c in nvme_ctrls_of(s.nqn) if read(f"/sys/class/nvme/{c}/state") == "live"
                ]
                return len(live) == 2 and all(
                    nvme_heads_with(ns.uuid) for ns in s.namespaces.values()
                )

            wait_for(ready, 30, f"2 controllers, {namespaces} namespace(s)")
            for ns in s.namespaces.values():
                wait_for(
                    lambda ns=ns: os.path.exists(f"/dev/disk/by-id/nvme-uuid.{ns.uuid}"),
                    20,
                    "by-id",
                )
            yield s
        finally:
            nvme_disconnect(s.nqn)
            wait_for(lambda: not nvme_ctrls_of(s.nqn), 20, "disconnect")


@contextlib.contextmanager
def fcoe_luns(luns: int = 1, fabrics: int = 1) -> Iterator[FcoeTarget]:
    """An FCoE target whose every LUN has a disk on every initiator host (LUNs the
    login scan missed are scanned)."""
    with FcoeTarget(luns=luns, fabrics=fabrics) as t:
        want = len(t.fabrics)
        for lun in t.luns.values():
            if lun.lun_id and len(disks_with(lun.wwid)) < want:
                for i in range(want):
                    t.scan_lun(lun.lun_id, i)
            wait_for(
                lambda lun=lun: len(disks_with(lun.wwid)) == want,
                40,
                f"LUN {lun.lun_id} on {want} host(s)",
            )
        yield t


@contextlib.contextmanager
def nvmet_over_fcloop(namespaces: int = 1) -> Iterator[tuple[FcLoop, NvmetSubsystem]]:
    """A subsystem exported on an nvme-fcloop target port (6.12 lab kernel only);
    connect from ``fc.host_traddr`` to ``fc.target_traddr``."""
    with FcLoop() as fc, NvmetSubsystem(namespaces=namespaces, ports=()) as s:
        s.add_port(fc.target_traddr, trtype="fc")
        yield fc, s
