"""Read-only view of NVMe subsystems, controllers and namespaces from sysfs (no nvme-cli).

Layout read (kernel 6.x)::

    /sys/class/nvme/nvmeC -> ../../devices/virtual/nvme-fabrics/ctl/nvmeC
            (fabrics; PCIe under pci)
        subsysnqn, transport (tcp/rdma/fc/loop/pcie), address, state, cntlid, hostnqn, hostid
        nvmeScCnN/   per-path namespace device (native multipath, hidden from /dev)
        nvmeCnN/     the namespace device itself (native multipath disabled)
    /sys/class/nvme-subsystem/nvme-subsysS -> ../../devices/virtual/nvme-subsystem/nvme-subsysS
        subsysnqn, model, serial, iopolicy
        nvmeC -> controller links;  nvmeSnN/  namespace head (the /dev/nvmeSnN users open)
    namespace dirs: nsid, uuid, nguid, wwid, eui, size (512-byte sectors);
        paths also ana_state, ana_grpid
    /sys/module/nvme_core/parameters/multipath: 'Y' when native multipath is on

Naming: a head is ``nvme<subsys instance>n<ns instance>``; its path through
controller C is ``nvme<subsys>c<C>n<ns>`` (so dropping ``c<C>`` gives the head).

Formats confirmed in the kernel's drivers/nvme/host sysfs code:

* ``address``: comma-separated ``key=value``: ``traddr=..`` then ``trsvcid=..``,
  ``host_traddr=..``, ``host_iface=..`` when set, and for a live TCP queue
  ``src_addr=<local ip>`` (newer kernels).  FC: ``traddr=nn-0x<16 hex>:pn-0x<16 hex>``
  and ``host_traddr`` in the same form, no trsvcid.  RDMA: like TCP without src_addr.
  Values are what was passed to ``nvme connect`` (FC case kept as given).
* ``nguid``: printed with ``%pU``: 16 bytes as a lowercase hyphenated UUID-style
  string ``xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx``; the attribute is hidden when the
  NGUID is all zero.  Canonical form here: 32 lowercase hex digits, no hyphens.
* ``uuid``: ``%pU`` lowercase hyphenated; **when the namespace has no UUID the
  kernel prints the NGUID here** (backward compatibility).  We report
  ``uuid=None`` in that case (detected from ``wwid``, which starts with
  ``uuid.`` only when a real UUID exists).
* ``wwid``: ``uuid.<uuid>``, else ``eui.<32 hex nguid>``, else ``eui.<16 hex eui64>``,
  else ``nvme.<vid>-<serial hex>-<model hex>-<nsid>``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import threading
import uuid as uuidlib

from brick_agent.host import sysfs
from brick_agent.host.iscsi import normalize_address
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

SECTOR = 512
_CTRL_RE = re.compile(r"nvme(\d+)")
_SUBSYS_RE = re.compile(r"nvme-subsys(\d+)")
_HEAD_RE = re.compile(r"nvme(\d+)n(\d+)")
_PATH_RE = re.compile(r"nvme(\d+)c(\d+)n(\d+)")
_NS_RE = re.compile(r"nvme\d+(?:c\d+)?n\d+")


@dataclasses.dataclass(frozen=True)
class NvmeController:
    name: str  # 'nvme0'
    subsysnqn: str | None
    transport: str | None  # 'tcp', 'rdma', 'fc', 'loop', 'pcie'
    traddr: str | None
    trsvcid: str | None
    host_traddr: str | None
    host_iface: str | None
    state: str | None  # 'live', 'connecting', 'resetting', 'deleting', 'dead', ...
    cntlid: int | None
    hostnqn: str | None
    address: str | None  # raw 'address' attribute
    subsystem_name: str | None  # 'nvme-subsys0'
    src_addr: str | None = None
    hostid: str | None = None
    # block devices under the controller ('nvme0c0n1' or 'nvme0n1')
    namespaces: tuple[str, ...] = ()
    sysfs_path: str | None = None

    @property
    def live(self) -> bool:
        return self.state == "live"


@dataclasses.dataclass(frozen=True)
class NvmePath:
    """One controller's view of a namespace (``nvme0c1n1``, or ``nvme1n1`` without native
    multipath)."""

    name: str
    controller: str
    head: str | None  # the head's name under native multipath, else None
    nsid: int | None
    ana_state: str | None  # 'optimized', 'non-optimized', 'inaccessible', ... (ANA only)
    ana_grpid: int | None


@dataclasses.dataclass(frozen=True)
class NvmeNamespace:
    # the device users open: head 'nvme0n1' (native) or 'nvme1n1' (per controller)
    name: str
    nsid: int | None
    uuid: str | None  # lowercase hyphenated, None if the namespace has none
    nguid: str | None  # 32 lowercase hex, None if absent/zero
    wwid: str | None
    size_bytes: int | None
    subsystem_name: str | None
    controllers: tuple[str, ...]
    paths: tuple[str, ...]  # per-path devices (native) or (name,) (non-native)
    native_multipath: bool = False
    devpath: str | None = None
    sysfs_path: str | None = None
    eui64: str | None = None


@dataclasses.dataclass(frozen=True)
class NvmeSubsystem:
    name: str  # 'nvme-subsys0'
    nqn: str | None
    controllers: tuple[str, ...]
    namespaces: tuple[str, ...]  # head devices (native multipath); empty otherwise
    model: str | None = None
    serial: str | None = None
    iopolicy: str | None = None
    sysfs_path: str | None = None


# ---------------------------------------------------------------- formats


def parse_address(raw: str | None) -> dict[str, str]:
    """``'traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1'`` -> dict (unknown keys kept)."""
    out: dict[str, str] = {}
    if not raw:
        return out
    for item in raw.strip().split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def canonical_uuid(text: str | None) -> str | None:
    """Lowercase hyphenated UUID; ``None`` if empty, invalid or all zero."""
    if not text:
        return None
    t = text.strip()
    if t.lower().startswith("uuid."):
        t = t[5:]
    try:
        u = uuidlib.UUID(t)
    except ValueError:
        return None
    return None if u.int == 0 else str(u)


def canonical_nguid(text: str | None) -> str | None:
    """32 lowercase hex digits (hyphens/``eui.`` dropped); ``None`` if empty, invalid or zero."""
    if not text:
        return None
    t = text.strip().lower()
    if t.startswith("eui."):
        t = t[4:]
    t = t.replace("-", "").replace(":", "")
    if len(t) != 32 or not re.fullmatch(r"[0-9a-f]{32}", t) or int(t, 16) == 0:
        return None
    return t


def normalize_traddr(traddr: str | None, transport: str | None = None) -> str | None:
    """Comparable traddr: IP literals canonical, FC ``nn-0x..:pn-0x..`` lowercased."""
    if traddr is None:
        return None
    if (transport or "").lower() == "fc" or traddr.lower().startswith("nn-"):
        return traddr.strip().lower()
    return normalize_address(traddr)


def head_name(path_name: str) -> str:
    """``nvme0c1n1`` -> ``nvme0n1``; other names unchanged."""
    m = _PATH_RE.fullmatch(path_name)
    return f"nvme{m.group(1)}n{m.group(3)}" if m else path_name


def native_multipath_enabled(roots: HostRoots = DEFAULT_ROOTS) -> bool:
    """nvme_core's ``multipath`` parameter is ``Y`` (False when the module is absent)."""
    value = _read(roots.sysfs("module", "nvme_core", "parameters", "multipath"))
    return (value or "").upper() in ("Y", "1")


# ---------------------------------------------------------------- readers

# Lean primitives: these readers run on every attach, often from many threads at
# once, where each syscall gives up the GIL.  Same results as sysfs.read_attr /
# list_dir + isdir / resolve, in fewer syscalls (no fstat/ioctl per open, d_type
# instead of a stat per entry, one readlink instead of an lstat per component).


def _read(path: str) -> str | None:
    """:func:`sysfs.read_attr` in three syscalls (a sysfs attribute is one page at most)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in sysfs._UNREADABLE:  # noqa: SLF001 - one module's policy
            return None
        raise
    try:
        data = os.read(fd, 65536)
    except OSError as exc:
        if exc.errno in sysfs._UNREADABLE:  # noqa: SLF001
            return None
        raise
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace").strip()


def _int(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text, 10)
    except ValueError:
        return None


def _entries(path: str, rx: re.Pattern[str], dirs: bool = False) -> list[str]:
    """Sorted entries of ``path`` full-matching ``rx`` (only directories, following
    symlinks like ``os.path.isdir``, when ``dirs``); ``[]`` if missing."""
    try:
        with os.scandir(path) as it:
            names = [e.name for e in it if rx.fullmatch(e.name) and (not dirs or e.is_dir())]
    except OSError as exc:
        if exc.errno in sysfs._UNREADABLE:  # noqa: SLF001
            return []
        raise
    return sorted(names, key=sysfs.natural_key)


def _resolve_in(real_base: str, name: str) -> str | None:
    """Canonical directory of entry ``name`` of the canonical directory ``real_base``
    (a class directory of links into /sys/devices): one readlink and one stat."""
    path = os.path.join(real_base, name)
    try:
        link = os.readlink(path)
    except OSError:
        return sysfs.resolve(path)  # not a link (or gone): the general way
    target = os.path.normpath(os.path.join(real_base, link))
    if os.path.isabs(link) or not os.path.isdir(target):
        return sysfs.resolve(path)
    return target


@functools.lru_cache(maxsize=32)
def _resolved_class_dir(path: str) -> str | None:
    return sysfs.resolve(path)


def _class_dir(path: str) -> str | None:
    """Canonical path of a sysfs class directory: resolved once per process (it never
    moves; ``realpath`` costs an lstat per path component on every attach)."""
    real = _resolved_class_dir(path)
    if real is None:  # not there (yet): the class appears when its module loads
        _resolved_class_dir.cache_clear()
    return real


def _subsystem_dirs(roots: HostRoots) -> dict[str, str]:
    base = roots.sysfs("class", "nvme-subsystem")
    return {e: os.path.join(base, e) for e in sysfs.list_dir(base, _SUBSYS_RE)}


def _controller_to_subsystem(roots: HostRoots) -> dict[str, str]:
    mapping = {}
    for sname, sdir in _subsystem_dirs(roots).items():
        for entry in sysfs.list_dir(sdir, _CTRL_RE):
            mapping[entry] = sname
    return mapping


#: Controller attributes an attach needs (``read_controller(..., lean=True)``).
LEAN_CONTROLLER_FIELDS = ("subsysnqn", "transport", "address", "state", "hostnqn")


def read_controller(
    roots: HostRoots,
    name: str,
    subsystem_name: str | None = None,
    *,
    lean: bool = False,
    subsysnqn: str | None = None,
    real: str | None = None,
) -> NvmeController | None:
    """Controller ``name`` (None when gone).

    ``lean``: only :data:`LEAN_CONTROLLER_FIELDS` and the namespace entries are read
    (``cntlid`` and ``hostid`` are None; a controller without a readable ``state`` is
    taken as gone: None); ``subsysnqn``, when given, is the NQN of the
    subsystem the caller found the controller linked under (the kernel prints the
    subsystem's NQN for the controller too), so it is not read again.
    ``real``: the controller's canonical sysfs directory when the caller resolved it.
    """
    if real is None:
        real = sysfs.resolve(roots.sysfs("class", "nvme", name))
    if real is None:
        return None

    def attr(n: str) -> str | None:
        return _read(os.path.join(real, n)) or None

    state = attr("state")
    if lean and state is None:
        return None  # every controller shows a state: it is being removed
    raw = attr("address")
    addr = parse_address(raw)
    if subsystem_name is None:
        subsystem_name = _controller_to_subsystem(roots).get(name)
    return NvmeController(
        name=name,
        subsysnqn=subsysnqn if subsysnqn is not None else attr("subsysnqn"),
        transport=attr("transport"),
        traddr=addr.get("traddr"),
        trsvcid=addr.get("trsvcid"),
        host_traddr=addr.get("host_traddr"),
        host_iface=addr.get("host_iface"),
        state=state,
        cntlid=None if lean else _int(os.path.join(real, "cntlid")),
        hostnqn=attr("hostnqn"),
        address=raw,
        subsystem_name=subsystem_name,
        src_addr=addr.get("src_addr"),
        hostid=None if lean else attr("hostid"),
        namespaces=tuple(_entries(real, _NS_RE, dirs=True)),
        sysfs_path=real,
    )


def controller_state(roots: HostRoots, name: str) -> str | None:
    """Controller ``name``'s ``state`` ('live', 'deleting', ...); None when it is gone."""
    return _read(roots.sysfs("class", "nvme", name, "state"))


def nvme_controllers(roots: HostRoots = DEFAULT_ROOTS) -> list[NvmeController]:
    """All NVMe controllers (fabrics and PCIe), by number; vanished ones skipped."""
    mapping = _controller_to_subsystem(roots)
    out = []
    for name in sysfs.list_dir(roots.sysfs("class", "nvme"), _CTRL_RE):
        ctrl = read_controller(roots, name, mapping.get(name))
        if ctrl is not None:
            out.append(ctrl)
    return out


def nvme_subsystems(roots: HostRoots = DEFAULT_ROOTS) -> list[NvmeSubsystem]:
    out = []
    for sname, sdir in _subsystem_dirs(roots).items():
        real = sysfs.resolve(sdir)
        if real is None:
            continue
        out.append(
            NvmeSubsystem(
                name=sname,
                nqn=sysfs.read_attr(os.path.join(real, "subsysnqn")) or None,
                controllers=tuple(sysfs.list_dir(real, _CTRL_RE)),
                namespaces=tuple(
                    e
                    for e in sysfs.list_dir(real, _HEAD_RE)
                    if os.path.isdir(os.path.join(real, e))
                ),
                model=sysfs.read_attr(os.path.join(real, "model")) or None,
                serial=sysfs.read_attr(os.path.join(real, "serial")) or None,
                iopolicy=sysfs.read_attr(os.path.join(real, "iopolicy")) or None,
                sysfs_path=real,
            )
        )
    return out


def _ns_ids(
    path: str,
    wwid: str | None = None,
) -> tuple[int | None, str | None, str | None, str | None]:
    """(nsid, uuid, nguid, wwid) of a namespace directory, canonical
    (``wwid``: the attribute as the caller just read it)."""
    nsid = _int(os.path.join(path, "nsid"))
    if wwid is None:
        wwid = _read(os.path.join(path, "wwid")) or None
    nguid = canonical_nguid(_read(os.path.join(path, "nguid")))
    raw_uuid = _read(os.path.join(path, "uuid"))
    uuid = canonical_uuid(raw_uuid)
    if uuid is not None:
        if wwid is not None:
            if not wwid.lower().startswith("uuid."):
                uuid = None  # the kernel printed the NGUID as uuid (no real UUID)
        elif nguid is not None and uuid.replace("-", "") == nguid:
            uuid = None
    return nsid, uuid, nguid, wwid


def _ns_identity(
    path: str,
    wwid: str | None = None,
) -> tuple[int | None, str | None, str | None, str | None, str | None]:
    """(nsid, uuid, nguid, wwid, eui64) of a namespace directory, canonical
    (``wwid``: the attribute as the caller just read it)."""
    nsid, uuid, nguid, wwid = _ns_ids(path, wwid)
    eui = _read(os.path.join(path, "eui"))
    eui64 = eui.replace(" ", "").lower() if eui else None
    if eui64 is not None and (not re.fullmatch(r"[0-9a-f]+", eui64) or int(eui64, 16) == 0):
        eui64 = None
    return nsid, uuid, nguid, wwid, eui64


def nvme_paths(roots: HostRoots = DEFAULT_ROOTS) -> list[NvmePath]:
    """Every per-controller namespace device, with its ANA state."""
    out = []
    for name in sysfs.list_dir(roots.sysfs("class", "nvme"), _CTRL_RE):
        cdir = sysfs.resolve(roots.sysfs("class", "nvme", name))
        if cdir is None:
            continue
        for entry in sysfs.list_dir(cdir, _NS_RE):
            pdir = os.path.join(cdir, entry)
            if not os.path.isdir(pdir):
                continue
            out.append(
                NvmePath(
                    name=entry,
                    controller=name,
                    head=head_name(entry) if _PATH_RE.fullmatch(entry) else None,
                    nsid=sysfs.read_int(os.path.join(pdir, "nsid")),
                    ana_state=sysfs.read_attr(os.path.join(pdir, "ana_state")) or None,
                    ana_grpid=sysfs.read_int(os.path.join(pdir, "ana_grpid")),
                )
            )
    return out


def nvme_namespaces(roots: HostRoots = DEFAULT_ROOTS) -> list[NvmeNamespace]:
    """The namespace devices users open.

    Native multipath: one entry per head (``nvme0n1`` under the subsystem) with
    its per-controller path devices.  Without it: one entry per controller
    namespace device (``nvme1n1``), with itself as the only path.
    """
    paths = nvme_paths(roots)
    out = []
    for sub in nvme_subsystems(roots):
        if sub.sysfs_path is None:  # read from sysfs, a subsystem always has one
            continue
        for head in sub.namespaces:
            hdir = os.path.join(sub.sysfs_path, head)
            if not os.path.isdir(hdir):
                continue
            nsid, uuid, nguid, wwid, eui64 = _ns_identity(hdir)
            mine = [p for p in paths if p.head == head and p.controller in sub.controllers]
            out.append(
                NvmeNamespace(
                    name=head,
                    nsid=nsid,
                    uuid=uuid,
                    nguid=nguid,
                    wwid=wwid,
                    size_bytes=_size(hdir),
                    subsystem_name=sub.name,
                    controllers=tuple(p.controller for p in mine),
                    paths=tuple(p.name for p in mine),
                    native_multipath=True,
                    devpath=roots.devfs(head),
                    sysfs_path=hdir,
                    eui64=eui64,
                )
            )
    mapping = _controller_to_subsystem(roots)
    for p in paths:
        if p.head is not None:
            continue
        cdir = sysfs.resolve(roots.sysfs("class", "nvme", p.controller))
        if cdir is None:
            continue
        ndir = os.path.join(cdir, p.name)
        if not os.path.isdir(ndir):
            continue
        nsid, uuid, nguid, wwid, eui64 = _ns_identity(ndir)
        out.append(
            NvmeNamespace(
                name=p.name,
                nsid=nsid,
                uuid=uuid,
                nguid=nguid,
                wwid=wwid,
                size_bytes=_size(ndir),
                subsystem_name=mapping.get(p.controller),
                controllers=(p.controller,),
                paths=(p.name,),
                native_multipath=False,
                devpath=roots.devfs(p.name),
                sysfs_path=ndir,
                eui64=eui64,
            )
        )
    return out


def _size(path: str) -> int | None:
    sectors = _int(os.path.join(path, "size"))
    return None if sectors is None else sectors * SECTOR


# ---------------------------------------------------------------- lookups


def find_controllers(
    roots: HostRoots = DEFAULT_ROOTS,
    nqn: str | None = None,
    traddr: str | None = None,
    trsvcid: str | int | None = None,
    transport: str | None = None,
    hostnqn: str | None = None,
    host_traddr: str | None = None,
) -> list[NvmeController]:
    """Controllers matching every given criterion (addresses compared normalised).

    A controller that does not expose ``hostnqn`` matches any ``hostnqn``.
    """
    out = []
    for c in nvme_controllers(roots):
        if nqn is not None and c.subsysnqn != nqn:
            continue
        if transport is not None and (c.transport or "").lower() != transport.lower():
            continue
        if traddr is not None and (
            normalize_traddr(c.traddr, c.transport)
            != normalize_traddr(traddr, transport or c.transport)
        ):
            continue
        if trsvcid is not None and c.trsvcid != str(trsvcid):
            continue
        if host_traddr is not None and (
            normalize_traddr(c.host_traddr, c.transport)
            != normalize_traddr(host_traddr, transport or c.transport)
        ):
            continue
        if hostnqn is not None and c.hostnqn is not None and c.hostnqn != hostnqn:
            continue
        out.append(c)
    return out


def find_namespaces(
    roots: HostRoots = DEFAULT_ROOTS,
    nqn: str | None = None,
    uuid: str | None = None,
    nguid: str | None = None,
    nsid: int | None = None,
) -> list[NvmeNamespace]:
    """Namespaces matching every given identity (uuid/nguid compared canonical)."""
    want_uuid = canonical_uuid(uuid) if uuid is not None else None
    want_nguid = canonical_nguid(nguid) if nguid is not None else None
    if uuid is not None and want_uuid is None:
        return []
    if nguid is not None and want_nguid is None:
        return []
    nqn_of = {s.name: s.nqn for s in nvme_subsystems(roots)} if nqn is not None else {}
    out = []
    for ns in nvme_namespaces(roots):
        if nqn is not None and nqn_of.get(ns.subsystem_name or "") != nqn:
            continue
        if want_uuid is not None and ns.uuid != want_uuid:
            continue
        if want_nguid is not None and ns.nguid != want_nguid:
            continue
        if nsid is not None and ns.nsid != int(nsid):
            continue
        out.append(ns)
    return out


# ---------------------------------------------------------------- one subsystem


def subsystem_view(
    roots: HostRoots,
    nqn: str,
    uuid: str | None = None,
    *,
    lean: bool = False,
    nsid: int | None = None,
    after_removal: bool = False,
) -> tuple[list[NvmeController], list[NvmeNamespace]]:
    """Controllers and namespace devices of the subsystem(s) with NQN ``nqn`` only.

    Same objects as :func:`nvme_controllers` / :func:`nvme_namespaces` return for
    that subsystem, but only its own sysfs directories are read (cost independent
    of how many other subsystems and namespaces the host has).  Controllers are
    the ones linked under the subsystem (the kernel links each one once it has
    identified the subsystem, whether or not native multipath is on).

    ``uuid``: only namespaces that may carry this UUID are returned; one whose
    ``wwid`` shows it has another UUID or none is skipped after that one read, and
    the heads' scan stops at the one that has it (``nsid``: the head to try first).
    ``lean``: controllers are read with ``read_controller(lean=True)`` (what an
    attach needs; ``cntlid``/``hostid`` None).
    ``after_removal``: the caller just deleted controllers of ``nqn`` and asks what is
    left of them; when the subsystem entry :data:`SUBSYSTEM_NAMES` remembers is gone
    (or now another NQN's), nothing is: the subsystem went with its last controller
    and no other is read.
    """
    ctrls: list[NvmeController] = []
    namespaces: list[NvmeNamespace] = []
    wanted = canonical_uuid(uuid)
    want_wwid = None if wanted is None else f"uuid.{wanted}"
    class_base = _class_dir(roots.sysfs("class", "nvme-subsystem"))
    ctrl_base = _class_dir(roots.sysfs("class", "nvme"))
    if class_base is None:
        return ctrls, namespaces
    found: list[str] = []
    for sname in SUBSYSTEM_NAMES.candidates(class_base, nqn, after_removal=after_removal):
        real = _resolve_in(class_base, sname)
        if real is None or (_read(os.path.join(real, "subsysnqn")) or None) != nqn:
            continue
        found.append(sname)
        mine = _linked_controllers(roots, real, ctrl_base, sname, nqn, lean)
        ctrls += mine
        namespaces += _head_namespaces(roots, real, sname, mine, want_wwid, nsid)
        namespaces += _controller_namespaces(roots, sname, mine, want_wwid)
    SUBSYSTEM_NAMES.remember(class_base, nqn, found)
    return ctrls, namespaces


class SubsystemNames:
    """Which ``nvme-subsysS`` entry carries an NQN, remembered between lookups.

    sysfs has no index by NQN: finding a subsystem means reading ``subsysnqn`` of
    every other one, and an attach+detach looks its subsystem up several times.  The
    kernel keeps one subsystem per NQN (a new controller of a known NQN joins its
    subsystem; only discovery controllers, never a volume's, get one each), so a
    remembered entry that still reads the NQN is the answer, one read instead of one
    per subsystem.  An entry that reads another NQN or is gone (instance names are
    reused) is forgotten and every entry is read, as is the case of an NQN not seen.
    """

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._names: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def candidates(self, class_base: str, nqn: str, *, after_removal: bool = False) -> list[str]:
        """The entries of ``class_base`` that may be subsystem ``nqn``, read through
        their class links (the caller checks each one's canonical directory);
        ``after_removal``: see :func:`subsystem_view`."""
        with self._lock:
            known = self._names.get((class_base, nqn))
        if known is not None:
            if (_read(os.path.join(class_base, known, "subsysnqn")) or None) == nqn:
                return [known]
            self.remember(class_base, nqn, [])
            if after_removal:
                return []
        return [
            sname
            for sname in _entries(class_base, _SUBSYS_RE)
            if (_read(os.path.join(class_base, sname, "subsysnqn")) or None) == nqn
        ]

    def suggest(self, class_base: str, nqn: str, sname: str) -> None:
        """``sname`` is likely subsystem ``nqn`` (unless another entry is remembered)."""
        with self._lock:
            known = self._names.get((class_base, nqn))
        if known is None:
            self.remember(class_base, nqn, [sname])

    def remember(self, class_base: str, nqn: str, found: list[str]) -> None:
        """What a lookup of ``nqn`` found (one entry remembered; none or several: none)."""
        with self._lock:
            if len(found) == 1:
                self._names.pop((class_base, nqn), None)
                self._names[(class_base, nqn)] = found[0]
                while len(self._names) > self._size:  # the oldest first
                    del self._names[next(iter(self._names))]
            else:
                self._names.pop((class_base, nqn), None)


#: The process's memory of subsystem entries by NQN (validated on every use).
SUBSYSTEM_NAMES = SubsystemNames()


def note_new_controller(roots: HostRoots, nqn: str, ctrl_name: str) -> None:
    """Controller ``ctrl_name`` of subsystem ``nqn`` was just created: a new subsystem
    takes the instance of its first controller (``nvme3`` -> ``nvme-subsys3``), so
    that entry is the first one a lookup of ``nqn`` tries (validated like any other)."""
    m = _CTRL_RE.fullmatch(ctrl_name)
    class_base = _class_dir(roots.sysfs("class", "nvme-subsystem"))
    if m is not None and class_base is not None:
        SUBSYSTEM_NAMES.suggest(class_base, nqn, f"nvme-subsys{m.group(1)}")


def _may_carry(path: str, want_wwid: str | None) -> tuple[bool, str | None]:
    """(the namespace at ``path`` may carry the wanted UUID, the wwid read to decide)."""
    if want_wwid is None:
        return True, None
    wwid = _read(os.path.join(path, "wwid"))
    return (not wwid or wwid.lower() == want_wwid), (wwid or None)


def _linked_controllers(
    roots: HostRoots, real: str, ctrl_base: str | None, sname: str, nqn: str, lean: bool
) -> list[NvmeController]:
    """The controllers linked under the subsystem's directory ``real``."""
    mine = []
    for cname in _entries(real, _CTRL_RE):
        creal = _resolve_in(ctrl_base, cname) if ctrl_base is not None else None
        ctrl = (
            read_controller(
                roots, cname, sname, lean=lean, real=creal, subsysnqn=nqn if lean else None
            )
            if creal is not None
            else None
        )
        if ctrl is not None:
            mine.append(ctrl)
    return mine


def _head_namespaces(
    roots: HostRoots,
    real: str,
    sname: str,
    mine: list[NvmeController],
    want_wwid: str | None,
    hint: int | None,
) -> list[NvmeNamespace]:
    """The subsystem's namespace heads (native multipath), in name order; with
    ``want_wwid`` the scan stops at the head that has it (``hint``: the NSID to try first)."""
    heads = _entries(real, _HEAD_RE, dirs=True)
    if hint is not None and want_wwid is not None:
        # the likely head first (instances follow NSIDs on a first scan)
        guess = f"nvme{sname[len('nvme-subsys') :]}n{hint}"
        heads.sort(key=lambda h: h != guess)
    found: list[NvmeNamespace] = []
    for head in heads:
        hdir = os.path.join(real, head)
        ok, seen = _may_carry(hdir, want_wwid)
        if not ok:
            continue
        nsid, ns_uuid, nguid, wwid, eui64 = _ns_identity(hdir, seen)
        paths = [
            (c.name, p)
            for c in mine
            for p in c.namespaces
            if _PATH_RE.fullmatch(p) and head_name(p) == head
        ]
        found.append(
            NvmeNamespace(
                name=head,
                nsid=nsid,
                uuid=ns_uuid,
                nguid=nguid,
                wwid=wwid,
                size_bytes=_size(hdir),
                subsystem_name=sname,
                controllers=tuple(c for c, _ in paths),
                paths=tuple(p for _, p in paths),
                native_multipath=True,
                devpath=roots.devfs(head),
                sysfs_path=hdir,
                eui64=eui64,
            )
        )
        if seen is not None and ns_uuid is not None:
            break  # the kernel refuses a second head with the same UUID in a subsystem
    return sorted(found, key=lambda ns: sysfs.natural_key(ns.name))


def _controller_namespaces(
    roots: HostRoots, sname: str, mine: list[NvmeController], want_wwid: str | None
) -> list[NvmeNamespace]:
    """The namespace devices of each controller itself (native multipath off)."""
    namespaces = []
    for c in mine:
        for p in c.namespaces:
            if _PATH_RE.fullmatch(p) or c.sysfs_path is None:
                continue
            ndir = os.path.join(c.sysfs_path, p)
            ok, seen = _may_carry(ndir, want_wwid)
            if not ok:
                continue
            nsid, ns_uuid, nguid, wwid, eui64 = _ns_identity(ndir, seen)
            namespaces.append(
                NvmeNamespace(
                    name=p,
                    nsid=nsid,
                    uuid=ns_uuid,
                    nguid=nguid,
                    wwid=wwid,
                    size_bytes=_size(ndir),
                    subsystem_name=sname,
                    controllers=(c.name,),
                    paths=(p,),
                    native_multipath=False,
                    devpath=roots.devfs(p),
                    sysfs_path=ndir,
                    eui64=eui64,
                )
            )
    return namespaces


def read_namespace(
    roots: HostRoots, ns: NvmeNamespace, *, identity_only: bool = False
) -> NvmeNamespace | None:
    """``ns`` with its identity and size read again from its own sysfs directory
    (None when the directory is gone).  ``identity_only``: nsid, uuid, nguid and
    wwid only (size and EUI-64 kept from ``ns``: a check before returning a device)."""
    path = ns.sysfs_path
    if path is None or not os.path.isdir(path):
        return None
    if identity_only:
        nsid, uuid, nguid, wwid = _ns_ids(path)
        if nsid is None and wwid is None:
            return None
        return dataclasses.replace(ns, nsid=nsid, uuid=uuid, nguid=nguid, wwid=wwid)
    nsid, uuid, nguid, wwid, eui64 = _ns_identity(path)
    if nsid is None and wwid is None:
        return None
    return dataclasses.replace(
        ns, nsid=nsid, uuid=uuid, nguid=nguid, wwid=wwid, size_bytes=_size(path), eui64=eui64
    )
