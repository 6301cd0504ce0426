"""Read-only view of SCSI hosts and devices (LUNs) from sysfs.

Layout read (kernel 6.x)::

    /sys/class/scsi_host/hostH            -> ../../devices/.../hostH/scsi_host/hostH
        proc_name, scan
    /sys/bus/scsi/devices/H:C:T:L         -> ../../../devices/.../targetH:C:T/H:C:T:L
    /sys/class/scsi_device/H:C:T:L/device -> the same LUN directory
    <lun dir>/{vendor,model,rev,state,type,wwid}, <lun dir>/block/sdX

WWID formats
------------
``device/wwid`` is the kernel's pick from VPD page 0x83 (``scsi_vpd_lun_id``):
``naa.<lowercase hex>`` (8 or 16 bytes), ``eui.<hex>``, ``t10.<ascii>`` or a
raw SCSI name string.  Reading it fails with ENXIO when the LUN has no page
0x83 (e.g. an LIO LUN without ``vpd_unit_serial``): ``wwid`` is then ``None``.

udev (``scsi_id --whitelisted --replace-whitespace``, property ``ID_SERIAL``)
and multipath (uid_attribute ``ID_SERIAL``, dm uuid ``mpath-<wwid>``, the
wwids file) use the designator type as a one-digit prefix followed by the
identifier, binary ones in lowercase hex: ``3<naa hex>`` (type 3, NAA),
``2<eui hex>`` (type 2, EUI-64), ``1<vendor id + text>`` (type 1, T10 vendor
id, whitespace runs replaced by one ``_``), ``8<name>`` (SCSI name string).
``ID_WWN`` is ``0x`` + the first 16 hex digits of the NAA and
``ID_WWN_WITH_EXTENSION`` ``0x`` + all of it.  :func:`wwid_candidates` lists
all these spellings so a WWID from any source can be matched against sysfs.

Observed on the lab kernel (6.1, LIO fileio LUN with vpd_unit_serial): sysfs
``wwid`` ``naa.6001405aa6d2dc160f6b68a70cef7b43``; udev ``ID_SERIAL``
``36001405aa6d2dc160f6b68a70cef7b43``, ``ID_WWN`` ``0x6001405aa6d2dc16``,
``ID_WWN_WITH_EXTENSION`` ``0x6001405aa6d2dc160f6b68a70cef7b43``; by-id links
``scsi-<ID_SERIAL>``, ``wwn-0x<naa hex>``, ``scsi-1LIO-ORG_FILEIO:<serial>`` (the
T10 designator) and ``scsi-SLIO-ORG_FILEIO_<serial>`` (page 0x80); dm map uuid
``mpath-<ID_SERIAL>``; once multipath owns the paths, udev moves ``scsi-3...``
and ``wwn-0x...`` to the dm device.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping

from brick_agent.host import sysfs
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

_HCTL_RE = re.compile(r"(\d+):(\d+):(\d+):(\d+)")
_HOST_RE = re.compile(r"host(\d+)")


@dataclasses.dataclass(frozen=True, order=True)
class Hctl:
    """SCSI address host:channel:target:lun."""

    host: int
    channel: int
    target: int
    lun: int

    @classmethod
    def parse(cls, text: str) -> Hctl:
        """Parse ``'H:C:T:L'``; raises ``ValueError`` otherwise."""
        m = _HCTL_RE.fullmatch(text.strip())
        if not m:
            raise ValueError(f"not a SCSI address H:C:T:L: {text!r}")
        return cls(*(int(g) for g in m.groups()))

    @classmethod
    def try_parse(cls, text: str | None) -> Hctl | None:
        if not text:
            return None
        try:
            return cls.parse(text)
        except ValueError:
            return None

    @property
    def target_id(self) -> str:
        """``'H:C:T'`` as in ``targetH:C:T`` directory names."""
        return f"{self.host}:{self.channel}:{self.target}"

    def __str__(self) -> str:
        return f"{self.host}:{self.channel}:{self.target}:{self.lun}"


@dataclasses.dataclass(frozen=True)
class ScsiHost:
    number: int
    proc_name: str | None  # driver: 'iscsi_tcp', 'fcoe', 'scsi_debug', 'qla2xxx', ...
    scan_path: str  # where a privileged helper writes "C T L" to scan
    sysfs_path: str | None = None  # resolved .../hostH device directory


@dataclasses.dataclass(frozen=True)
class ScsiDevice:
    hctl: Hctl
    name: str | None  # 'sdb' once the disk is bound to sd, else None
    wwid: str | None  # kernel's device/wwid, stripped ('naa.6001405...'); None if unreadable
    state: str | None  # 'running', 'offline', 'blocked', 'transport-offline', ...
    sysfs_path: str  # resolved LUN directory
    scsi_type: int | None = None  # 0 = disk

    # What describes the LUN and decides nothing: read when asked (an attach reads its
    # LUN two or three times and needs none of it).
    @functools.cached_property
    def vendor(self) -> str | None:
        return sysfs.read_attr(os.path.join(self.sysfs_path, "vendor"))

    @functools.cached_property
    def model(self) -> str | None:
        return sysfs.read_attr(os.path.join(self.sysfs_path, "model"))

    @functools.cached_property
    def rev(self) -> str | None:
        return sysfs.read_attr(os.path.join(self.sysfs_path, "rev"))

    def wwid_candidates(self) -> tuple[str, ...]:
        """Spellings of this LUN's WWID used by the kernel, udev and multipath."""
        return wwid_candidates(self.wwid) if self.wwid else ()

    @property
    def udev_wwid(self) -> str | None:
        """WWID as udev's ID_SERIAL / multipath show it (``'36001405...'``)."""
        return scsi_wwid_to_udev(self.wwid) if self.wwid else None

    @property
    def devpath_name(self) -> str | None:
        return self.name


# ---------------------------------------------------------------- WWID forms

_HEX_RE = re.compile(r"[0-9a-fA-F]+")


def _udev_whitespace(text: str) -> str:
    """udev's replace-whitespace: trim, then every whitespace run -> one '_'."""
    return "_".join(text.split())


def scsi_wwid_to_udev(wwid: str) -> str:
    """Kernel ``wwid`` (``naa.X``/``eui.X``/``t10.X``) -> udev ID_SERIAL / multipath form.

    Unknown spellings (already udev form, SCSI name strings) are returned stripped.
    """
    w = wwid.strip()
    low = w.lower()
    if low.startswith("naa.") and _HEX_RE.fullmatch(w[4:]):
        return "3" + w[4:].lower()
    if low.startswith("eui.") and _HEX_RE.fullmatch(w[4:]):
        return "2" + w[4:].lower()
    if low.startswith("t10."):
        return "1" + _udev_whitespace(w[4:])
    return w


def wwid_candidates(wwid: str) -> tuple[str, ...]:
    """Every spelling under which this WWID may be found, most specific first.

    ``'naa.6001405abc'`` -> ``('naa.6001405abc', '36001405abc', '6001405abc',
    '0x6001405abc')``; ``'36001405abc'`` (udev/multipath form) gives the same set.
    Hex is lowercased; the input itself is always included.
    """
    w = wwid.strip()
    if not w:
        return ()
    out: list[str] = [w]
    low = w.lower()
    kind, ident = None, None
    if low.startswith(("naa.", "eui.")) and _HEX_RE.fullmatch(w[4:]):
        kind, ident = low[:3], w[4:].lower()
    elif low.startswith("0x") and _HEX_RE.fullmatch(w[2:]):
        kind, ident = "naa", w[2:].lower()
    elif w[0] in "23" and len(w) - 1 in (16, 24, 32) and _HEX_RE.fullmatch(w[1:]):
        kind, ident = ("naa" if w[0] == "3" else "eui"), w[1:].lower()
    elif low.startswith("t10."):
        out.append("1" + _udev_whitespace(w[4:]))
    elif w[0] == "1" and len(w) > 9:
        out.append("t10." + w[1:])
    elif _HEX_RE.fullmatch(w) and len(w) in (16, 32):
        kind, ident = "naa", w.lower()
    if kind and ident:
        prefix = "3" if kind == "naa" else "2"
        out += [f"{kind}.{ident}", prefix + ident, ident]
        if kind == "naa":
            out.append("0x" + ident)
    seen: list[str] = []
    for c in out:
        if c not in seen:
            seen.append(c)
    return tuple(seen)


def same_wwid(a: str | None, b: str | None) -> bool:
    """True if two WWIDs written in any supported spelling denote the same LUN."""
    if not a or not b:
        return False
    ca = {c.lower() for c in wwid_candidates(a)}
    return any(c.lower() in ca for c in wwid_candidates(b))


# ---------------------------------------------------------------- readers


def scsi_hosts(roots: HostRoots = DEFAULT_ROOTS) -> list[ScsiHost]:
    """All SCSI hosts, by number."""
    base = roots.sysfs("class", "scsi_host")
    hosts = []
    for entry in sysfs.list_dir(base, _HOST_RE):
        path = os.path.join(base, entry)
        real = sysfs.resolve(path)
        if real is None:
            continue  # vanished
        hosts.append(
            ScsiHost(
                number=int(entry[4:]),
                proc_name=sysfs.read_attr(os.path.join(path, "proc_name")),
                scan_path=os.path.join(path, "scan"),
                sysfs_path=sysfs.resolve(os.path.join(path, "device")),
            )
        )
    return hosts


def scsi_host(roots: HostRoots, number: int) -> ScsiHost | None:
    for h in scsi_hosts(roots):
        if h.number == number:
            return h
    return None


def _lun_dirs(roots: HostRoots) -> dict[str, str]:
    """H:C:T:L -> LUN directory (not resolved), from the bus and the class views."""
    found: dict[str, str] = {}
    bus = roots.sysfs("bus", "scsi", "devices")
    for entry in sysfs.list_dir(bus, _HCTL_RE):
        found[entry] = os.path.join(bus, entry)
    cls = roots.sysfs("class", "scsi_device")
    for entry in sysfs.list_dir(cls, _HCTL_RE):
        found.setdefault(entry, os.path.join(cls, entry, "device"))
    return found


def lun_disk_name(lun_dir: str) -> str | None:
    """The disk (``sdX``) of the canonical LUN directory ``lun_dir``; None if it has none."""
    names = sysfs.list_dir(os.path.join(lun_dir, "block"))
    if names:
        return names[0]
    for entry in sysfs.list_dir(lun_dir):  # pre-3.x style 'block:sdX' links
        if entry.startswith("block:"):
            return entry[len("block:") :]
    return None


def read_scsi_device(lun_dir: str, hctl: Hctl, resolved: bool = False) -> ScsiDevice | None:
    """Read one LUN directory; ``None`` if it vanished.

    ``resolved``: ``lun_dir`` is already canonical (a directory found by walking the
    device tree), so its path is not resolved again (a realpath costs a sysfs lookup
    per path component, ~12 for an iSCSI LUN).
    """
    if resolved:
        real: str | None = lun_dir if os.path.isdir(lun_dir) else None
    else:
        real = sysfs.resolve(lun_dir)
    if real is None:
        return None

    def attr(name: str) -> str | None:
        return sysfs.read_attr(os.path.join(real, name))

    return ScsiDevice(
        hctl=hctl,
        name=lun_disk_name(real),
        wwid=attr("wwid") or None,
        state=attr("state"),
        sysfs_path=real,
        scsi_type=sysfs.read_int(os.path.join(real, "type")),
    )


@dataclasses.dataclass(frozen=True)
class ListedLun:
    """What a listing needs of a LUN: its address, disk name and WWID (nothing else read)."""

    hctl: Hctl
    name: str | None
    wwid: str | None


def disks_by_hctl(roots: HostRoots) -> dict[str, str]:
    """``'H:C:T:L'`` -> disk name of every SCSI disk, from the ``/sys/class/block`` links.

    One ``readlink`` per block device (the link names the LUN directory:
    ``.../H:C:T:L/block/sdX``), for listings that need the disk of every LUN.
    """
    base = roots.sysfs("class", "block")
    out: dict[str, str] = {}
    for name in sysfs.list_dir(base, sort=False):
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue  # vanished, or not a link
        parts = target.rsplit("/", 3)
        if len(parts) == 4 and parts[2] == "block" and parts[3] == name:
            if _HCTL_RE.fullmatch(parts[1]):
                out[parts[1]] = name
    return out


def list_lun(lun_dir: str, hctl: Hctl, disks: Mapping[str, str] | None = None) -> ListedLun | None:
    """Disk name and WWID of the canonical LUN directory ``lun_dir``; ``None`` if it vanished.

    Two reads per LUN (``block/``, ``wwid``) instead of :func:`read_scsi_device`'s seven,
    one when ``disks`` (:func:`disks_by_hctl`) names its disk: listings walk every LUN.
    """
    name = disks.get(lun_dir.rsplit("/", 1)[-1]) if disks is not None else None
    if name is None:
        name = lun_disk_name(lun_dir)
    wwid = sysfs.read_attr(f"{lun_dir}/wwid") or None
    if name is None and wwid is None and not os.path.isdir(lun_dir):
        return None
    return ListedLun(hctl=hctl, name=name, wwid=wwid)


def scsi_devices(roots: HostRoots = DEFAULT_ROOTS, host: int | None = None) -> list[ScsiDevice]:
    """All SCSI LUNs (optionally of one host), sorted by address; vanished ones skipped."""
    out = []
    for text, path in _lun_dirs(roots).items():
        hctl = Hctl.parse(text)
        if host is not None and hctl.host != host:
            continue
        dev = read_scsi_device(path, hctl)
        if dev is not None:
            out.append(dev)
    return sorted(out, key=lambda d: d.hctl)


def scsi_device(roots: HostRoots, hctl: Hctl | str) -> ScsiDevice | None:
    """The LUN at ``hctl``, or ``None``."""
    if isinstance(hctl, str):
        hctl = Hctl.parse(hctl)
    text = str(hctl)
    for path in (
        roots.sysfs("bus", "scsi", "devices", text),
        roots.sysfs("class", "scsi_device", text, "device"),
    ):
        dev = read_scsi_device(path, hctl)
        if dev is not None:
            return dev
    return None


def scsi_device_by_name(roots: HostRoots, name: str) -> ScsiDevice | None:
    """The LUN behind block device ``name`` ('sdb'), via /sys/class/block/sdb/device."""
    real = sysfs.resolve(roots.sysfs("class", "block", os.path.basename(name), "device"))
    if real is None:
        return None
    hctl = Hctl.try_parse(os.path.basename(real))
    if hctl is None:
        return None
    return read_scsi_device(real, hctl)


def hctl_of_path(path: str | None) -> Hctl | None:
    """The last ``H:C:T:L`` component of a resolved sysfs path, if any."""
    if not path:
        return None
    for part in reversed(path.split(os.sep)):
        h = Hctl.try_parse(part)
        if h is not None:
            return h
    return None
