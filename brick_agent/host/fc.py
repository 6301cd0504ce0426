"""Read-only view of Fibre Channel HBAs (fc_host), remote ports and FC SCSI targets.

Layout read (scsi_transport_fc, kernel 6.x)::

    /sys/class/fc_host/hostH -> ../../devices/.../hostH/fc_host/hostH
        port_name, node_name, fabric_name ('0x' + hex, no zero padding), port_state
        ('Online', 'Linkdown', ...), port_type ('NPort (fabric via point-to-point)', ...), speed
    /sys/class/fc_remote_ports/rport-H:B-R
            -> ../../devices/.../hostH/rport-H:B-R/fc_remote_ports/rport-H:B-R
        port_name, node_name, port_id, port_state, roles ('FCP Target', comma separated),
        scsi_target_id (-1 when the rport is not a SCSI target)
        the SCSI target lives at .../rport-H:B-R/targetH:B:<scsi_target_id>
    /sys/class/fc_transport/targetH:C:T -> .../targetH:C:T/fc_transport/targetH:C:T
        port_name, node_name, port_id

In ``rport-H:B-R`` B is the channel and R the rport number (not the target id).
WWNs are reported as 16 lowercase hex digits without ``0x``.
"""

from __future__ import annotations

import dataclasses
import os
import re

from brick_agent.host import sysfs
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

_HOST_RE = re.compile(r"host(\d+)")
_RPORT_RE = re.compile(r"rport-(\d+):(\d+)-(\d+)")
_TARGET_RE = re.compile(r"target(\d+):(\d+):(\d+)")


def normalize_wwn(value: str | int | None) -> str | None:
    """``'0x500a0981'``, ``'50:0a:09:81:...'``, ``'500A0981...'`` or an int -> 16 lowercase hex.

    ``None`` for empty, invalid, or all-zero (unknown) WWNs.
    """
    if value is None:
        return None
    if isinstance(value, int):
        text = f"{value:x}"
    else:
        text = value.strip().lower()
        if text.startswith("0x"):
            text = text[2:]
        text = text.replace(":", "").replace("-", "")
    if not text or len(text) > 16 or not re.fullmatch(r"[0-9a-f]+", text):
        return None
    if int(text, 16) == 0:
        return None
    return text.zfill(16)


@dataclasses.dataclass(frozen=True)
class FcHost:
    host_number: int
    port_name: str | None  # 16 lowercase hex
    node_name: str | None
    port_state: str | None  # 'Online', 'Linkdown', 'Offline', ...
    port_type: str | None
    fabric_name: str | None
    speed: str | None
    device_path: str | None = None  # resolved .../hostH (its parents: PCI device or net device)
    symbolic_name: str | None = None

    @property
    def online(self) -> bool:
        return self.port_state == "Online"


@dataclasses.dataclass(frozen=True)
class FcRemotePort:
    name: str  # 'rport-5:0-1'
    host_number: int
    channel: int
    number: int  # R of rport-H:B-R
    port_name: str | None
    node_name: str | None
    port_state: str | None  # 'Online', 'Blocked', 'Not Present', ...
    roles: tuple[str, ...]  # ('FCP Target',), ('FCP Initiator',), ...
    scsi_target_id: int | None  # None when the rport is no SCSI target (kernel prints -1)
    target: str | None  # 'H:C:T' when scsi_target_id is set
    port_id: str | None = None

    @property
    def is_fcp_target(self) -> bool:
        return any(r.lower() == "fcp target" for r in self.roles)


def read_fc_host(roots: HostRoots, number: int) -> FcHost | None:
    path = roots.sysfs("class", "fc_host", f"host{number}")
    real = sysfs.resolve(path)
    if real is None:
        return None

    def attr(name: str) -> str | None:
        return sysfs.read_attr(os.path.join(real, name)) or None

    return FcHost(
        host_number=number,
        port_name=normalize_wwn(attr("port_name")),
        node_name=normalize_wwn(attr("node_name")),
        port_state=attr("port_state"),
        port_type=attr("port_type"),
        fabric_name=normalize_wwn(attr("fabric_name")),
        speed=attr("speed"),
        device_path=sysfs.resolve(os.path.join(real, "device")),
        symbolic_name=attr("symbolic_name"),
    )


def fc_hosts(roots: HostRoots = DEFAULT_ROOTS) -> list[FcHost]:
    """All FC HBAs (SCSI fc_host), by host number."""
    out = []
    for entry in sysfs.list_dir(roots.sysfs("class", "fc_host"), _HOST_RE):
        host = read_fc_host(roots, int(entry[4:]))
        if host is not None:
            out.append(host)
    return out


def _roles(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(r.strip() for r in text.split(",") if r.strip() and r.strip().lower() != "unknown")


def read_remote_port(roots: HostRoots, name: str) -> FcRemotePort | None:
    m = _RPORT_RE.fullmatch(name)
    if not m:
        return None
    real = sysfs.resolve(roots.sysfs("class", "fc_remote_ports", name))
    if real is None:
        return None
    host, channel, number = (int(g) for g in m.groups())

    def attr(n: str) -> str | None:
        return sysfs.read_attr(os.path.join(real, n)) or None

    tid = sysfs.read_int(os.path.join(real, "scsi_target_id"))
    if tid is not None and tid < 0:
        tid = None
    return FcRemotePort(
        name=name,
        host_number=host,
        channel=channel,
        number=number,
        port_name=normalize_wwn(attr("port_name")),
        node_name=normalize_wwn(attr("node_name")),
        port_state=attr("port_state"),
        roles=_roles(attr("roles")),
        scsi_target_id=tid,
        target=None if tid is None else f"{host}:{channel}:{tid}",
        port_id=attr("port_id"),
    )


def fc_remote_ports(
    roots: HostRoots = DEFAULT_ROOTS, host_number: int | None = None
) -> list[FcRemotePort]:
    """All remote ports (optionally of one HBA), in host/channel/number order."""
    out = []
    for entry in sysfs.list_dir(roots.sysfs("class", "fc_remote_ports"), _RPORT_RE):
        m = _RPORT_RE.fullmatch(entry)
        assert m is not None  # list_dir returns matching names only
        if host_number is not None and int(m.group(1)) != host_number:
            continue
        rport = read_remote_port(roots, entry)
        if rport is not None:
            out.append(rport)
    return out


def fc_transport_targets(
    roots: HostRoots = DEFAULT_ROOTS,
) -> list[tuple[int, int, int, str | None]]:
    """(host, channel, target, port_name) for every /sys/class/fc_transport/targetH:C:T."""
    base = roots.sysfs("class", "fc_transport")
    out = []
    for entry in sysfs.list_dir(base, _TARGET_RE):
        m = _TARGET_RE.fullmatch(entry)
        assert m is not None  # list_dir returns matching names only
        h, c, t = (int(g) for g in m.groups())
        port_name = sysfs.read_attr(os.path.join(base, entry, "port_name"))
        out.append((h, c, t, normalize_wwn(port_name)))
    return out


def fc_targets_for(roots: HostRoots, host_number: int, target_wwpn: str) -> list[tuple[int, int]]:
    """(channel, target_id) pairs at which HBA ``host_number`` sees the target port ``target_wwpn``.

    Combines the remote ports (``scsi_target_id``) and fc_transport targets;
    used for narrow ``C T L`` scans instead of wildcards.
    """
    want = normalize_wwn(target_wwpn)
    if want is None:
        return []
    found: set[tuple[int, int]] = set()
    for rport in fc_remote_ports(roots, host_number):
        if rport.port_name == want and rport.scsi_target_id is not None:
            found.add((rport.channel, rport.scsi_target_id))
    for h, c, t, port_name in fc_transport_targets(roots):
        if h == host_number and port_name == want:
            found.add((c, t))
    return sorted(found)
