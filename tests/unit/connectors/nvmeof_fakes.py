"""A fake NVMe-oF kernel for unit tests: NvmeActions that change a fake sysfs/dev tree.

The tree follows the layout brick_agent.host.nvme reads (kernel 6.1, checked
against the lab's captured tree): ``/sys/class/nvme/nvmeC`` (attributes and
per-path namespace dirs), ``/sys/class/nvme-subsystem/nvme-subsysS`` (controller
links and, with native multipath, head dirs), ``/dev/nvmeXnY`` nodes.  Kernel
behaviours that matter to the connector are modelled: lowest free controller
instance, subsystem instance = first controller's instance, EALREADY for an
identical controller, a refused portal, a namespace whose identifiers changed
is dropped on one scan and its successor added on the next.

With ``native=False`` a fake multipathd can run (``multipathd=True``): it maps
the per-controller devices of one ``wwid`` into ``dm-N`` (uuid ``mpath-<wwid>``,
name = wwid as with ``user_friendly_names no``) when a second path appears
(``find_multipaths yes``; ``auto_map=False`` models a multipathd that does not
pick them up), or when asked through ``multipath_add``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time

from brick_agent.connectors.nvmeof.actions import AlreadyConnected, ConnectRequest
from brick_agent.errors import DeviceBusy, KernelActionTimeout, TargetUnreachable
from brick_agent.host.roots import HostRoots


@dataclasses.dataclass
class FakeNs:
    nsid: int
    uuid: str | None
    nguid: str | None  # 32 hex
    size: int = 1 << 30


@dataclasses.dataclass
class FakeSubsys:
    nqn: str
    namespaces: dict[int, FakeNs]
    portals: set[tuple[str, str, str]]  # (transport, traddr, trsvcid) reachable


def _hyph(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text + "\n")


class FakeNvmeKernel:
    """Fake targets + the host kernel's NVMe fabrics behaviour, acting on ``roots``."""

    def __init__(self, roots: HostRoots, native: bool = True) -> None:
        self.roots = roots
        self.native = native
        self.subsystems: dict[str, FakeSubsys] = {}
        self.ctrls: dict[int, dict] = {}  # instance -> {nqn, req, subsys}
        self.subsys_inst: dict[str, int] = {}  # nqn -> subsystem instance
        self.heads: dict[str, dict[int, tuple[int, FakeNs]]] = {}  # nqn -> nsid -> (inst, ns)
        self.requests: list[ConnectRequest] = []
        self.flushed: list[str] = []
        self.rescans: list[str] = []
        self.fail_flush: set[str] = set()
        self.fail_disconnect: set[str] = set()
        self.stuck_disconnect: set[str] = set()  # delete_controller blocks (target gone)
        self.stuck_seconds = 5.0
        self.lock = threading.Lock()
        self.connect_delay = 0.0  # seconds a connect takes (outside the kernel lock)
        self.in_connect = 0
        self.max_in_connect = 0
        self.multipathd = False  # fake multipathd running
        self.auto_map = True  # it maps a second path of a wwid by itself
        self.add_path_works = True  # multipath_add maps the paths (else: only the wwid)
        self.fail_map_remove = 0  # next N map removals fail ("map in use"); -1: all
        self.mp_log: list[tuple] = []
        self._dm = 0
        self.daemon_starts = 0
        _write(
            roots.sysfs("module", "nvme_core", "parameters", "multipath"), "Y" if native else "N"
        )
        for d in (
            roots.sysfs("class", "nvme"),
            roots.sysfs("class", "nvme-subsystem"),
            roots.sysfs("class", "block"),
            roots.dev,
            roots.etc,
        ):
            os.makedirs(d, exist_ok=True)

    def start_daemon(self) -> None:
        self.daemon_starts += 1

    # ---------------------------------------------------------------- target side
    def add_target(
        self, nqn: str, portals: list[tuple[str, str, str]], namespaces: list[FakeNs]
    ) -> FakeSubsys:
        sub = FakeSubsys(nqn, {n.nsid: n for n in namespaces}, set(portals))
        self.subsystems[nqn] = sub
        return sub

    # ---------------------------------------------------------------- actions
    def connect(self, req: ConnectRequest) -> str:
        with self.lock:
            self.in_connect += 1
            self.max_in_connect = max(self.max_in_connect, self.in_connect)
        try:
            time.sleep(self.connect_delay)
            return self._connect(req)
        finally:
            with self.lock:
                self.in_connect -= 1

    def _connect(self, req: ConnectRequest) -> str:
        with self.lock:
            self.requests.append(req)
            sub = self.subsystems.get(req.subsysnqn)
            if sub is None or (req.transport, req.traddr, req.trsvcid or "") not in sub.portals:
                raise TargetUnreachable(f"connect {req.describe()}: Connection refused")
            for c in self.ctrls.values():
                r = c["req"]
                if (r.subsysnqn, r.transport, r.traddr, r.trsvcid, r.hostnqn) == (
                    req.subsysnqn,
                    req.transport,
                    req.traddr,
                    req.trsvcid,
                    req.hostnqn,
                ):
                    raise AlreadyConnected(req.describe())
            inst = next(i for i in range(1000) if i not in self.ctrls)
            self.ctrls[inst] = {"nqn": req.subsysnqn, "req": req}
            name = f"nvme{inst}"
            cdir = self._real_ctrl_dir(name)
            addr = f"traddr={req.traddr}"
            if req.transport != "fc":
                addr += f",trsvcid={req.trsvcid}"
            if req.host_traddr:
                addr += f",host_traddr={req.host_traddr}"
            if req.transport == "tcp":
                addr += ",src_addr=127.0.0.1"
            for attr, value in (
                ("subsysnqn", req.subsysnqn),
                ("transport", req.transport),
                ("address", addr),
                ("state", "live"),
                ("hostnqn", req.hostnqn),
                ("hostid", req.hostid),
                ("cntlid", str(inst + 1)),
                ("ctrl_loss_tmo", str(req.ctrl_loss_tmo)),
                ("reconnect_delay", str(req.reconnect_delay)),
            ):
                _write(os.path.join(cdir, attr), value)
            os.symlink(cdir, self.roots.sysfs("class", "nvme", name))
            if req.subsysnqn not in self.subsys_inst:
                self.subsys_inst[req.subsysnqn] = inst
                self.heads[req.subsysnqn] = {}
                sdir = self._subsys_dir(req.subsysnqn)
                _write(os.path.join(sdir, "subsysnqn"), req.subsysnqn)
                os.symlink(
                    sdir, self.roots.sysfs("class", "nvme-subsystem", os.path.basename(sdir))
                )
            os.symlink(cdir, os.path.join(self._subsys_dir(req.subsysnqn), name))
            self._scan(inst, passes=2)
            return name

    def disconnect(self, controller: str, timeout: float | None = None) -> None:
        """``stuck_disconnect``: the kernel holds the write (target gone) for
        ``stuck_seconds``; a caller's ``timeout`` abandons it (the controller stays)."""
        if controller in self.stuck_disconnect:
            held = self.stuck_seconds if timeout is None else min(timeout, self.stuck_seconds)
            time.sleep(held)
            if held < self.stuck_seconds:
                raise KernelActionTimeout(
                    f"delete_controller {controller}: abandoned after {held:.1f}s"
                )
        with self.lock:
            if controller in self.fail_disconnect:
                raise DeviceBusy(f"delete_controller {controller}: busy")
            inst = int(controller[4:])
            c = self.ctrls.pop(inst)
            nqn = c["nqn"]
            for nsid in list(self.heads[nqn]):
                self._remove_path(inst, nqn, nsid)
            os.unlink(self.roots.sysfs("class", "nvme", controller))
            os.unlink(os.path.join(self._subsys_dir(nqn), controller))
            shutil.rmtree(self._real_ctrl_dir(controller))
            if not any(x["nqn"] == nqn for x in self.ctrls.values()):
                for nsid in list(self.heads[nqn]):
                    self._remove_head(nqn, nsid)
                sdir = self._subsys_dir(nqn)
                os.unlink(self.roots.sysfs("class", "nvme-subsystem", os.path.basename(sdir)))
                shutil.rmtree(sdir)
                del self.subsys_inst[nqn]
                del self.heads[nqn]

    def rescan(self, controller: str) -> None:
        with self.lock:
            self.rescans.append(controller)
            self._scan(int(controller[4:]), passes=1)

    def flush(self, device: str, timeout: float) -> None:
        assert timeout > 0
        if device in self.fail_flush:
            raise DeviceBusy(f"flush {device}: device busy")
        self.flushed.append(device)

    def write_host_identity(self, hostnqn: str | None, hostid: str | None) -> None:
        for name, value in (("hostnqn", hostnqn), ("hostid", hostid)):
            path = self.roots.etcfs("nvme", name)
            if value is not None and not os.path.exists(path):
                _write(path, value)

    def md_create(self, name: str, devices: list[str | None]) -> None:
        self.md_members = list(devices)
        _write(self.roots.devfs("md", name), "md")

    def md_stop(self, name: str) -> None:
        os.unlink(self.roots.devfs("md", name))

    # ---------------------------------------------------------------- fake multipathd
    def multipathd_running(self) -> bool:
        return self.multipathd

    def multipath_add(self, wwid: str, devices: list[str]) -> None:
        with self.lock:
            self.mp_log.append(("add", wwid, tuple(devices)))
            if not self.add_path_works:
                return
            for dev in devices:
                self._map_path(os.path.basename(dev), force=True)

    def multipath_remove(self, map_name: str) -> None:
        with self.lock:
            self.mp_log.append(("remove", map_name))
            if self.fail_map_remove:
                self.fail_map_remove -= 1 if self.fail_map_remove > 0 else 0
                raise DeviceBusy(f"multipath -f {map_name}: map in use")
            for dm in os.listdir(self.roots.sysfs("class", "block")):
                if dm.startswith("dm-") and self._attr(dm, "dm", "name") == map_name:
                    self._remove_map(dm)

    def multipath_resize(self, map_name: str) -> None:
        with self.lock:
            self.mp_log.append(("resize", map_name))
            for dm in self.maps():
                if self._attr(dm, "dm", "name") == map_name:
                    slave = sorted(os.listdir(self.roots.sysfs("class", "block", dm, "slaves")))[0]
                    _write(
                        self.roots.sysfs("class", "block", dm, "size"),
                        self._attr(slave, "size") or "0",
                    )

    def maps(self) -> dict[str, list[str]]:
        """dm name -> slaves of the fake maps."""
        out = {}
        for dm in sorted(os.listdir(self.roots.sysfs("class", "block"))):
            if dm.startswith("dm-"):
                out[dm] = sorted(os.listdir(self.roots.sysfs("class", "block", dm, "slaves")))
        return out

    def _attr(self, dev: str, *rel: str) -> str | None:
        try:
            with open(self.roots.sysfs("class", "block", dev, *rel)) as fh:
                return fh.read().strip()
        except OSError:
            return None

    def _map_path(self, name: str, force: bool = False) -> None:
        """multipathd's reaction to path ``name`` (lock held)."""
        wwid = self._attr(name, "wwid")
        if not self.multipathd or not wwid:
            return
        same = [
            d
            for d in os.listdir(self.roots.sysfs("class", "block"))
            if d.startswith("nvme") and self._attr(d, "wwid") == wwid
        ]
        dm = next((d for d in self.maps() if self._attr(d, "dm", "uuid") == f"mpath-{wwid}"), None)
        if dm is None:
            if not force and (not self.auto_map or len(same) < 2):
                return
            dm = f"dm-{self._dm}"
            self._dm += 1
            bdir = self.roots.sysfs("devices", "virtual", "block", dm)
            _write(os.path.join(bdir, "dm", "uuid"), f"mpath-{wwid}")
            _write(os.path.join(bdir, "dm", "name"), wwid)
            _write(os.path.join(bdir, "size"), self._attr(name, "size") or "0")
            os.makedirs(os.path.join(bdir, "slaves"))
            os.symlink(bdir, self.roots.sysfs("class", "block", dm))
            _write(self.roots.devfs(dm), "")
            members = [d for d in same if force or self.auto_map]
        else:
            members = [name]
        bdir = os.path.realpath(self.roots.sysfs("class", "block", dm))
        for member in members:
            pdir = os.path.realpath(self.roots.sysfs("class", "block", member))
            if not os.path.lexists(os.path.join(bdir, "slaves", member)):
                os.symlink(pdir, os.path.join(bdir, "slaves", member))
                os.symlink(bdir, os.path.join(pdir, "holders", dm))

    def _unmap_path(self, name: str) -> None:
        """The kernel drops a removed path from its map's slaves."""
        for dm, slaves in self.maps().items():
            if name in slaves:
                os.unlink(self.roots.sysfs("class", "block", dm, "slaves", name))

    def _remove_map(self, dm: str) -> None:
        bdir = os.path.realpath(self.roots.sysfs("class", "block", dm))
        for slave in os.listdir(os.path.join(bdir, "slaves")):
            holder = self.roots.sysfs("class", "block", slave, "holders", dm)
            if os.path.lexists(holder):
                os.unlink(holder)
        os.unlink(self.roots.sysfs("class", "block", dm))
        os.unlink(self.roots.devfs(dm))
        shutil.rmtree(bdir)

    # ---------------------------------------------------------------- host-side tree
    def _real_ctrl_dir(self, name: str) -> str:
        return self.roots.sysfs("devices", "virtual", "nvme-fabrics", "ctl", name)

    def _subsys_dir(self, nqn: str) -> str:
        return self.roots.sysfs(
            "devices", "virtual", "nvme-subsystem", f"nvme-subsys{self.subsys_inst[nqn]}"
        )

    def _ns_attrs(self, path: str, ns: FakeNs) -> None:
        _write(os.path.join(path, "nsid"), str(ns.nsid))
        if ns.uuid:
            _write(os.path.join(path, "uuid"), ns.uuid)
            _write(os.path.join(path, "wwid"), f"uuid.{ns.uuid}")
        elif ns.nguid:
            _write(os.path.join(path, "uuid"), _hyph(ns.nguid))  # kernel compat quirk
            _write(os.path.join(path, "wwid"), f"eui.{ns.nguid}")
        if ns.nguid:
            _write(os.path.join(path, "nguid"), _hyph(ns.nguid))
        _write(os.path.join(path, "size"), str(ns.size // 512))
        os.makedirs(os.path.join(path, "holders"), exist_ok=True)

    def _path_name(self, inst: int, nqn: str, head_inst: int) -> str:
        if self.native:
            return f"nvme{self.subsys_inst[nqn]}c{inst}n{head_inst}"
        return f"nvme{inst}n{head_inst}"

    def _scan(self, inst: int, passes: int) -> None:
        """One namespace scan of controller ``inst`` (kernel nvme_scan_work)."""
        nqn = self.ctrls[inst]["nqn"]
        sub = self.subsystems[nqn]
        for _ in range(passes):
            heads = self.heads[nqn]
            dropped = set()
            for nsid, (hinst, known) in list(heads.items()):
                cur = sub.namespaces.get(nsid)
                if cur is None or (cur.uuid, cur.nguid) != (known.uuid, known.nguid):
                    # gone, or identifiers changed: the kernel removes it (and adds
                    # a successor only on the next scan)
                    for other in list(self.ctrls):
                        if self.ctrls[other]["nqn"] == nqn:
                            self._remove_path(other, nqn, nsid)
                    self._remove_head(nqn, nsid)
                    dropped.add(nsid)
                elif cur.size != known.size:
                    for path in self._ns_dirs(nqn, nsid):
                        _write(os.path.join(path, "size"), str(cur.size // 512))
                    heads[nsid] = (hinst, dataclasses.replace(cur))
            for nsid, ns in sub.namespaces.items():
                if nsid in dropped:
                    continue
                if nsid not in heads:
                    used = {h for h, _ in heads.values()}
                    hinst = next(i for i in range(1, 1000) if i not in used)
                    heads[nsid] = (hinst, dataclasses.replace(ns))
                    if self.native:
                        head = f"nvme{self.subsys_inst[nqn]}n{hinst}"
                        hdir = os.path.join(self._subsys_dir(nqn), head)
                        self._ns_attrs(hdir, ns)
                        os.symlink(hdir, self.roots.sysfs("class", "block", head))
                        _write(self.roots.devfs(head), "")
                hinst = heads[nsid][0]
                pname = self._path_name(inst, nqn, hinst)
                pdir = os.path.join(self._real_ctrl_dir(f"nvme{inst}"), pname)
                if os.path.isdir(pdir):
                    continue
                self._ns_attrs(pdir, ns)
                os.symlink(pdir, self.roots.sysfs("class", "block", pname))
                if not self.native:
                    _write(self.roots.devfs(pname), "")
                    self._map_path(pname)

    def _ns_dirs(self, nqn: str, nsid: int) -> list[str]:
        hinst = self.heads[nqn][nsid][0]
        out = []
        if self.native:
            out.append(os.path.join(self._subsys_dir(nqn), f"nvme{self.subsys_inst[nqn]}n{hinst}"))
        for inst, c in self.ctrls.items():
            if c["nqn"] == nqn:
                p = os.path.join(
                    self._real_ctrl_dir(f"nvme{inst}"), self._path_name(inst, nqn, hinst)
                )
                if os.path.isdir(p):
                    out.append(p)
        return out

    def _remove_path(self, inst: int, nqn: str, nsid: int) -> None:
        if nsid not in self.heads[nqn]:
            return
        pname = self._path_name(inst, nqn, self.heads[nqn][nsid][0])
        pdir = os.path.join(self._real_ctrl_dir(f"nvme{inst}"), pname)
        if os.path.isdir(pdir):
            self._unmap_path(pname)
            shutil.rmtree(pdir)
            os.unlink(self.roots.sysfs("class", "block", pname))
            if not self.native:
                os.unlink(self.roots.devfs(pname))

    def _remove_head(self, nqn: str, nsid: int) -> None:
        hinst, _ = self.heads[nqn].pop(nsid)
        if self.native:
            head = f"nvme{self.subsys_inst[nqn]}n{hinst}"
            shutil.rmtree(os.path.join(self._subsys_dir(nqn), head))
            os.unlink(self.roots.sysfs("class", "block", head))
            os.unlink(self.roots.devfs(head))

    # ---------------------------------------------------------------- inspection
    def controller_names(self, nqn: str | None = None) -> list[str]:
        return sorted(f"nvme{i}" for i, c in self.ctrls.items() if nqn in (None, c["nqn"]))
