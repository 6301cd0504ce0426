"""Read-only FC topology helpers for the FC connector: which (HBA, target, LUN) addresses a
volume has.

Everything comes from sysfs (``fc_host``, ``fc_remote_ports``, ``fc_transport``,
the SCSI device tree); nothing depends on ``/dev/disk/by-path`` links, which
virtual HBAs (FCoE, NPIV without PCI parent) do not get.
"""

from __future__ import annotations

import dataclasses
import os
import re

from brick_agent.host import sysfs
from brick_agent.host.fc import FcHost, FcRemotePort, fc_hosts, normalize_wwn, read_remote_port
from brick_agent.host.roots import HostRoots
from brick_agent.host.scsi import Hctl, ScsiDevice, scsi_device, scsi_devices
from brick_agent.host.fc import fc_transport_targets
from brick_agent.properties.fc import FcProperties, FcTarget

_RPORT_RE = re.compile(r"rport-\d+:\d+-\d+")


@dataclasses.dataclass(frozen=True)
class FcAddress:
    """One path of a volume: LUN ``lun`` (as scanned) of target ``wwpn`` seen by ``host``."""

    host: int
    hba_wwpn: str | None
    wwpn: str
    channel: int
    target_id: int
    lun: int

    @property
    def hctl(self) -> Hctl:
        return Hctl(self.host, self.channel, self.target_id, self.lun)


@dataclasses.dataclass(frozen=True)
class ScanPlan:
    """What an attach scans: narrow addresses, and (HBA, scan LUN) pairs for wildcards."""

    hbas: tuple[FcHost, ...]
    addresses: tuple[FcAddress, ...]
    unknown: tuple[tuple[FcHost, FcTarget], ...]  # target not (yet) known on that HBA

    def wildcards(self, props: FcProperties) -> tuple[tuple[int, int], ...]:
        """(host, scan LUN) wildcard scans.

        Only when no target of the volume is known on any usable HBA (a known
        path means the fabric works; a wildcard would only pull in other
        arrays' LUNs) and ``enable_wildcard_scan`` is true.
        """
        if not props.enable_wildcard_scan or self.addresses:
            return ()
        out: dict[tuple[int, int], None] = {}
        for hba, target in self.unknown:
            out[(hba.host_number, props.scsi_lun(target.lun))] = None
        return tuple(out)


def usable_hbas(roots: HostRoots, props: FcProperties) -> list[FcHost]:
    """Online HBAs the initiator-target map allows (all online ones without a map)."""
    out = []
    for hba in fc_hosts(roots):
        if not hba.online or not hba.port_name:
            continue
        if not props.targets_for_initiator(hba.port_name):
            continue
        out.append(hba)
    return out


def target_ids(roots: HostRoots, host: int, wwpn: str) -> list[tuple[int, int]]:
    """(channel, target id) at which SCSI host ``host`` sees target port ``wwpn``.

    Same answer as :func:`brick_agent.host.fc.fc_targets_for` (remote ports
    with a ``scsi_target_id``, plus ``fc_transport`` targets: bug 2051237 taught
    that either may lack a target), read lean: two attributes per remote port
    of this host through the class links, no path resolution.  Attaches call
    this on every re-check of a wait, where the full view costs ~10 ms under
    emulation.
    """
    want = normalize_wwn(wwpn)
    found: set[tuple[int, int]] = set()
    if want is None:
        return []
    base = roots.sysfs("class", "fc_remote_ports")
    for name in sysfs.list_dir(base, rf"rport-{host}:\d+-\d+"):
        if normalize_wwn(sysfs.read_attr(os.path.join(base, name, "port_name"))) != want:
            continue
        tid = sysfs.read_int(os.path.join(base, name, "scsi_target_id"))
        if tid is not None and tid >= 0:
            found.add((int(name.split(":")[1].split("-")[0]), tid))
    base = roots.sysfs("class", "fc_transport")
    for name in sysfs.list_dir(base, rf"target{host}:\d+:\d+"):
        if normalize_wwn(sysfs.read_attr(os.path.join(base, name, "port_name"))) == want:
            _, c, t = name[len("target") :].split(":")
            found.add((int(c), int(t)))
    return sorted(found)


def addresses_for(
    roots: HostRoots, props: FcProperties, hbas: list[FcHost]
) -> tuple[list[FcAddress], list[tuple[FcHost, FcTarget]]]:
    """Known addresses of the volume on ``hbas``, and (HBA, target) pairs not known there."""
    found: list[FcAddress] = []
    unknown: list[tuple[FcHost, FcTarget]] = []
    for hba in hbas:
        for target in props.targets_for_initiator(hba.port_name or ""):
            pairs = target_ids(roots, hba.host_number, target.wwpn)
            if not pairs:
                unknown.append((hba, target))
            for channel, tid in pairs:
                addr = FcAddress(
                    hba.host_number,
                    hba.port_name,
                    target.wwpn,
                    channel,
                    tid,
                    props.scsi_lun(target.lun),
                )
                if addr not in found:
                    found.append(addr)
    return found, unknown


def plan(roots: HostRoots, props: FcProperties) -> ScanPlan:
    hbas = usable_hbas(roots, props)
    addrs, unknown = addresses_for(roots, props, hbas)
    return ScanPlan(tuple(hbas), tuple(addrs), tuple(unknown))


def rport_of(roots: HostRoots, dev: ScsiDevice) -> FcRemotePort | None:
    """The remote port a SCSI device sits under (``.../rport-H:C-R/targetH:C:T/H:C:T:L``)."""
    for part in reversed(dev.sysfs_path.split(os.sep)):
        if _RPORT_RE.fullmatch(part):
            return read_remote_port(roots, part)
    return None


def target_wwpn_of(roots: HostRoots, dev: ScsiDevice) -> str | None:
    """Target port WWPN of a SCSI device on an FC HBA (rport, else fc_transport), or None."""
    rport = rport_of(roots, dev)
    if rport is not None and rport.port_name:
        return rport.port_name
    for h, c, t, port_name in fc_transport_targets(roots):
        if (h, c, t) == (dev.hctl.host, dev.hctl.channel, dev.hctl.target):
            return port_name
    return None


def devices_at(roots: HostRoots, addresses: list[FcAddress]) -> list[tuple[FcAddress, ScsiDevice]]:
    """The SCSI devices present at ``addresses`` (any state)."""
    out = []
    for a in addresses:
        dev = scsi_device(roots, a.hctl)
        if dev is not None:
            out.append((a, dev))
    return out


def fc_scsi_devices(roots: HostRoots) -> list[tuple[FcHost, ScsiDevice, str | None]]:
    """(HBA, device, target WWPN) for every SCSI device whose host is an fc_host."""
    hbas = {h.host_number: h for h in fc_hosts(roots)}
    out = []
    for dev in scsi_devices(roots):
        hba = hbas.get(dev.hctl.host)
        if hba is None:
            continue
        out.append((hba, dev, target_wwpn_of(roots, dev)))
    return out


def host_luns(roots: HostRoots, host: int, lun: int) -> set[Hctl]:
    """Addresses of every device with LUN ``lun`` on SCSI host ``host``."""
    return {d.hctl for d in scsi_devices(roots, host) if d.hctl.lun == lun}
