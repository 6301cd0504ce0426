"""Privileged SCSI sysfs writes: targeted host scan, device delete, device rescan.

Only on iSCSI and FC transport hosts (see :mod:`._owned`); a delete also never
removes a LUN the host uses (root, swap, a mounted filesystem).
"""

from __future__ import annotations

import os

from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.errors import DeviceNotFound
from brick_agent.host.scsi import Hctl
from brick_agent.privileged import _owned
from brick_agent.privileged import _validate as v
from brick_agent.privileged import entrypoint
from brick_agent.privileged._files import write_attr


def do_scan_scsi_target(
    roots: HostRoots, host_number: int, channel: int | str, target: int | str, lun: int | str
) -> str:
    """Write ``"C T L"`` to ``<sys>/class/scsi_host/host<H>/scan`` ('-' = wildcard)."""
    host = v.int_arg(host_number, "SCSI host number", minimum=0, maximum=2**31 - 1)
    triple = " ".join(
        (
            v.scan_element(channel, "channel"),
            v.scan_element(target, "target"),
            v.scan_element(lun, "LUN"),
        )
    )
    scan = roots.sysfs("class", "scsi_host", f"host{host}", "scan")
    if not os.path.lexists(scan):
        raise DeviceNotFound(f"{scan} does not exist")
    _owned.require_fabric_scsi_host(roots, host)
    return write_attr(roots.sys, scan, triple)


def _device_attr(roots: HostRoots, hctl: object, attr: str, *, unused: bool) -> str:
    address = Hctl(*v.hctl(hctl))
    _owned.require_fabric_scsi_device(roots, address, unused=unused)
    return roots.sysfs("class", "scsi_device", str(address), "device", attr)


def do_delete_scsi_device(roots: HostRoots, hctl: object, timeout: float | None = None) -> str:
    """Write ``1`` to ``<sys>/class/scsi_device/H:C:T:L/device/delete``; ``timeout``: seconds
    the write may block (a disk of a dead target), then KernelActionTimeout."""
    timeout = None if timeout is None else v.timeout_arg(timeout)
    return write_attr(
        roots.sys, _device_attr(roots, hctl, "delete", unused=True), "1", timeout=timeout
    )


def do_rescan_scsi_device(roots: HostRoots, hctl: object) -> str:
    """Write ``1`` to ``<sys>/class/scsi_device/H:C:T:L/device/rescan`` (size change)."""
    return write_attr(roots.sys, _device_attr(roots, hctl, "rescan", unused=False), "1")


@entrypoint
def scan_scsi_target(
    host_number: int, channel: int | str, target: int | str, lun: int | str
) -> str:
    return do_scan_scsi_target(DEFAULT_ROOTS, host_number, channel, target, lun)


@entrypoint
def delete_scsi_device(hctl: str, timeout: float | None = None) -> str:
    return do_delete_scsi_device(DEFAULT_ROOTS, hctl, timeout)


@entrypoint
def rescan_scsi_device(hctl: str) -> str:
    return do_rescan_scsi_device(DEFAULT_ROOTS, hctl)
