"""Ownership checks of the privileged entrypoints: act only on what a fabric volume owns.

The callers of the entrypoints are the least trusted part of the host, so every
destructive entrypoint checks, from the host tree it is given, that its object is
brick_agent's kind of object and that the host itself does not depend on it:

* SCSI hosts and devices: on an iSCSI or FC transport host (``iscsi_host`` /
  ``fc_host`` class member, or a LUN below an iSCSI session or an FC rport);
* NVMe controllers: a fabrics transport (``tcp``, ``rdma``, ``fc``, ``loop``: made
  through ``/dev/nvme-fabrics``), never ``pcie``; a disconnect also needs this
  host's NQN (``/etc/nvme/hostnqn``);
* NVMe namespaces: reached only through such controllers;
* multipath maps and md arrays: every path/member one of the above;
* never the firmware's iSCSI boot target, nor a device that (or whose partitions or
  stacked devices) holds the root filesystem, swap or a mounted filesystem.

Every refusal is a :class:`~brick_agent.errors.NotOwned` naming the object and why.
An object that does not exist is left to the caller (its write or command fails
with DeviceNotFound / CommandFailed as before).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from brick_agent.errors import NotOwned
from brick_agent.host import iscsi as hiscsi
from brick_agent.host import multipath as hmultipath
from brick_agent.host import nvme_identity, sysfs, usage
from brick_agent.host.nvme import head_name
from brick_agent.host.roots import HostRoots
from brick_agent.host.scsi import Hctl, hctl_of_path, lun_disk_name

#: SCSI transport classes whose hosts carry fabric volumes.
FABRIC_SCSI_CLASSES = ("iscsi_host", "fc_host")
#: NVMe controllers made through /dev/nvme-fabrics (``loop``: nvmet's loopback host).
FABRIC_NVME_TRANSPORTS = frozenset({"tcp", "rdma", "fc", "loop"})
_FABRIC_LUN_PATH = re.compile(r"/(?:session\d+|rport-\d+:\d+-\d+)/")
_SUBSYS_HEAD = re.compile(r"/nvme-subsys\d+/nvme\d+n\d+$")
_CTRL_RE = re.compile(r"nvme\d+")
_NS_DEV = re.compile(r"nvme\d+(?:c\d+)?n\d+")


# ------------------------------------------------------------------ host use
def require_unused(roots: HostRoots, what: str, names: Iterable[str]) -> None:
    """Refuse when the host uses any of ``names`` (or what is stacked on them)."""
    found = usage.uses_of(roots, [n for n in names if n])
    if found:
        raise NotOwned(what, "the host uses it (" + "; ".join(found) + ")")


# ------------------------------------------------------------------ SCSI
def scsi_host_transport(roots: HostRoots, host: int) -> str | None:
    """``iscsi_host`` / ``fc_host`` when SCSI host ``host`` is in that class, else None."""
    for cls in FABRIC_SCSI_CLASSES:
        if os.path.isdir(roots.sysfs("class", cls, f"host{host}")):
            return cls
    return None


def _driver(roots: HostRoots, host: int) -> str:
    name = sysfs.read_attr(roots.sysfs("class", "scsi_host", f"host{host}", "proc_name"))
    return name or "unknown driver"


def require_fabric_scsi_host(roots: HostRoots, host: int) -> None:
    """Refuse a SCSI host that is not an iSCSI or FC transport host."""
    if scsi_host_transport(roots, host) is None:
        raise NotOwned(f"SCSI host{host}", f"not an iSCSI or FC host ({_driver(roots, host)})")


def _lun_dir(roots: HostRoots, hctl: Hctl) -> str | None:
    for path in (
        roots.sysfs("class", "scsi_device", str(hctl), "device"),
        roots.sysfs("bus", "scsi", "devices", str(hctl)),
    ):
        real = sysfs.resolve(path)
        if real is not None:
            return real
    return None


def require_fabric_scsi_device(roots: HostRoots, hctl: Hctl, *, unused: bool = False) -> None:
    """Refuse a LUN that is not on an iSCSI/FC host (or, with ``unused``, that the
    host uses); a LUN that does not exist passes (its write fails as not found)."""
    lun = _lun_dir(roots, hctl)
    if lun is None:
        return
    what = f"SCSI device {hctl}"
    if scsi_host_transport(roots, hctl.host) is None and not _FABRIC_LUN_PATH.search(lun):
        raise NotOwned(what, f"not on an iSCSI or FC host ({_driver(roots, hctl.host)})")
    if unused:
        name = lun_disk_name(lun)
        require_unused(roots, what, [name] if name else [])


# ------------------------------------------------------------------ NVMe
def own_identity(roots: HostRoots) -> tuple[str | None, str | None]:
    """This host's (hostnqn, hostid) from ``/etc/nvme``; None for a missing file."""
    return nvme_identity.read_identity(roots)


def controller_problem(roots: HostRoots, name: str, *, owned: bool) -> str | None:
    """Why controller ``name`` is not brick_agent's to act on (None: it is).

    ``owned``: also require this host's NQN (a controller made with another host
    identity belongs to whoever made it).
    """
    base = roots.sysfs("class", "nvme", name)
    transport = sysfs.read_attr(os.path.join(base, "transport"))
    if transport not in FABRIC_NVME_TRANSPORTS:
        return f"transport {transport or 'unknown'} is not a fabrics transport"
    if not owned:
        return None
    hostnqn = sysfs.read_attr(os.path.join(base, "hostnqn"))
    mine, _ = own_identity(roots)
    if mine is None:
        return "this host has no NVMe host NQN (/etc/nvme/hostnqn)"
    if hostnqn != mine:
        return f"made with host NQN {hostnqn or 'unknown'}, not this host's {mine}"
    return None


def namespace_controllers(roots: HostRoots, name: str) -> list[str] | None:
    """Controllers through which block device ``name`` (``nvmeXnY``) is reached;
    None when it is not an NVMe namespace device."""
    real = sysfs.resolve(roots.sysfs("class", "block", name))
    if real is None:
        return None
    if _SUBSYS_HEAD.search(real):  # native multipath head: every controller of its subsystem
        return sysfs.list_dir(os.path.dirname(real), _CTRL_RE)
    parent = os.path.basename(os.path.dirname(real))
    return [parent] if _CTRL_RE.fullmatch(parent) else None


def require_fabric_namespace(roots: HostRoots, name: str) -> None:
    """Refuse an NVMe namespace device not reached only through our fabrics controllers."""
    ctrls = namespace_controllers(roots, name)
    if not ctrls:
        raise NotOwned(f"NVMe namespace {name}", "no fabrics controller reaches it")
    for ctrl in ctrls:
        problem = controller_problem(roots, ctrl, owned=True)
        if problem:
            raise NotOwned(f"NVMe namespace {name}", f"its controller {ctrl}: {problem}")


def controller_devices(roots: HostRoots, name: str) -> list[str]:
    """Block devices that depend on controller ``name``: its namespace devices and heads."""
    real = sysfs.resolve(roots.sysfs("class", "nvme", name))
    if real is None:
        return []
    return [head_name(entry) for entry in sysfs.list_dir(real, _NS_DEV)]


# ------------------------------------------------------------------ block / maps
def require_fabric_block(roots: HostRoots, name: str) -> None:
    """Refuse a block device (sdX, nvmeXnY, dm-N) that is not a fabric volume's:
    a dm device must be a multipath map over fabric paths only."""
    if name.startswith("sd"):
        real = sysfs.resolve(roots.sysfs("class", "block", name, "device"))
        hctl = hctl_of_path(real)
        if hctl is None:
            raise NotOwned(f"block device {name}", "not a SCSI LUN")
        try:
            require_fabric_scsi_device(roots, hctl)
        except NotOwned as exc:
            raise NotOwned(f"block device {name} ({exc.obj})", exc.reason) from None
    elif name.startswith("nvme"):
        require_fabric_namespace(roots, name)
    else:
        mp = hmultipath.read_map(roots, name)
        if mp is None:
            raise NotOwned(f"block device {name}", "not a multipath map")
        require_fabric_map(roots, mp)


def require_fabric_map(roots: HostRoots, mp: hmultipath.MultipathMap) -> None:
    """Refuse a multipath map with a path that is not a fabric volume's."""
    for slave in mp.slaves:
        try:
            require_fabric_block(roots, slave)
        except NotOwned as exc:
            raise NotOwned(
                f"multipath map {mp.name or mp.dm_name}", f"path {slave}: {exc.reason}"
            ) from None


def find_map(roots: HostRoots, name: str) -> hmultipath.MultipathMap | None:
    """The map ``multipath``/``multipathd`` would take ``name`` for (map name or WWID)."""
    return hmultipath.map_by_name(roots, name) or hmultipath.map_for_wwid(roots, name)


# ------------------------------------------------------------------ iSCSI
def require_releasable_node(roots: HostRoots, iqn: str, portal: str) -> None:
    """Refuse to log out or delete the node record of a boot target or of a session
    whose LUNs the host uses (root, swap, a mounted filesystem)."""
    what = f"iSCSI node {iqn} {portal}"
    address, port = hiscsi.split_portal(portal)
    if usage.is_boot_target(roots, iqn, address, port):
        raise NotOwned(what, "it is the firmware's boot target (iBFT)")
    ip = address if usage.is_ip(address) else None  # a host name: every portal of iqn
    for session in hiscsi.find_sessions(roots, iqn, ip, port if ip else None):
        devices = [d.name for d in hiscsi.session_devices(roots, session) if d.name]
        require_unused(roots, f"{what} ({session.name})", devices)


# ------------------------------------------------------------------ wwids
def wwid_holder(roots: HostRoots, wwid: str) -> str | None:
    """What present object has WWID ``wwid`` (a map, a SCSI device, an NVMe namespace);
    None when nothing does (its wwids entry is stale)."""
    from brick_agent.host import nvme, scsi

    mp = hmultipath.map_for_wwid(roots, wwid)
    if mp is not None:
        return f"multipath map {mp.name or mp.dm_name}"
    for dev in scsi.scsi_devices(roots):
        if dev.wwid and scsi.same_wwid(dev.wwid, wwid):
            return f"SCSI device {dev.hctl}" + (f" ({dev.name})" if dev.name else "")
    for ns in nvme.nvme_namespaces(roots):
        if ns.wwid and ns.wwid.strip().lower() == wwid.strip().lower():
            return f"NVMe namespace {ns.name}"
    return None
