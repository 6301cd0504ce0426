"""Linux NVMe target (nvmet) subsystems over TCP, built with configfs writes."""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid as uuidlib
from collections.abc import Sequence

from . import netblock
from ._sys import (
    CONFIGFS,
    Backing,
    LabError,
    MiB,
    Teardown,
    mkdir,
    modprobe,
    new_workdir,
    read,
    subdirs,
    symlink,
    token,
    write,
)
from .base import LabTarget

NVMET = os.path.join(CONFIGFS, "nvmet")
ANA_STATES = ("optimized", "non-optimized", "inaccessible", "persistent-loss", "change")


@dataclasses.dataclass
class NvmetNamespace:
    nsid: int
    uuid: str
    nguid: str
    backing: Backing
    ana_grpid: int = 1

    @property
    def size(self) -> int:
        return self.backing.size


@dataclasses.dataclass
class NvmetPort:
    port_id: int
    traddr: str
    trsvcid: str
    trtype: str = "tcp"

    @property
    def portal(self) -> str:
        return self.traddr if self.trtype == "fc" else f"{self.traddr}:{self.trsvcid}"


class NvmetSubsystem(LabTarget):
    """An nvmet subsystem with N namespaces exported on 1..n TCP ports.

        with NvmetSubsystem(namespaces=2, ports=("127.0.0.1:4420", "127.0.0.2:4420")) as s:
            s.nqn, s.namespaces[1].uuid, s.ports

    A port already listening on the same address (another subsystem's) is
    shared, and removed by whichever subsystem unexports from it last.
    ``ana_groups`` > 1 creates groups 2..n on every port (namespace i goes to
    group ``((i-1) % ana_groups) + 1``); set states with :meth:`set_ana_state`.
    """

    def __init__(
        self,
        nqn: str | None = None,
        namespaces: int = 1,
        ns_size: int = 64 * MiB,
        ports: Sequence[str] = ("127.0.0.1:4420",),
        allow_any_host: bool = True,
        backing: str = "file",
        ana_groups: int = 1,
        workdir: str | None = None,
    ) -> None:
        if backing not in ("file", "loop"):
            raise ValueError("backing must be 'file' or 'loop'")
        self.token = token(4)
        self.nqn = nqn or f"nqn.2014-08.org.brick-lab:subsys-{self.token}"
        self._want_ns = namespaces
        self.ns_size = ns_size
        self._want_ports = list(ports)
        self.allow_any_host = allow_any_host
        self.backing = backing
        self.ana_groups = ana_groups
        self._own_workdir = workdir is None
        self.workdir = workdir or ""
        self.namespaces: dict[int, NvmetNamespace] = {}
        self.ports: list[NvmetPort] = []
        self.blocked: set[str] = set()

    @property
    def subsys_dir(self) -> str:
        return os.path.join(NVMET, "subsystems", self.nqn)

    def _create(self) -> None:
        modprobe("nvmet", "nvmet_tcp")
        if self._own_workdir:
            self.workdir = new_workdir(f"nvmet-{self.token}-")
        mkdir(self.subsys_dir)
        write(os.path.join(self.subsys_dir, "attr_allow_any_host"), 1 if self.allow_any_host else 0)
        for _ in range(self._want_ns):
            self.add_namespace()
        for portal in self._want_ports:
            self.add_port(portal)

    # -- namespaces ----------------------------------------------------------
    def add_namespace(
        self,
        nsid: int | None = None,
        size: int | None = None,
        uuid: str | None = None,
        nguid: str | None = None,
        ana_grpid: int | None = None,
    ) -> NvmetNamespace:
        if nsid is None:
            nsid = max(self.namespaces, default=0) + 1
        if nsid in self.namespaces:
            raise LabError(f"namespace {nsid} exists")
        uuid = uuid or str(uuidlib.uuid4())
        nguid = nguid or str(uuidlib.uuid4())
        if ana_grpid is None:
            ana_grpid = ((nsid - 1) % self.ana_groups) + 1
        b = Backing(self.workdir, f"ns{nsid}", size or self.ns_size, loop=self.backing == "loop")
        ns = NvmetNamespace(nsid, uuid, nguid, b, ana_grpid)
        self.namespaces[nsid] = ns
        d = os.path.join(self.subsys_dir, "namespaces", str(nsid))
        mkdir(d)
        write(os.path.join(d, "device_path"), b.device)
        write(os.path.join(d, "device_uuid"), uuid)
        write(os.path.join(d, "device_nguid"), nguid)
        if not b.loop:
            write(os.path.join(d, "buffered_io"), 1)
        if ana_grpid != 1:
            write(os.path.join(d, "ana_grpid"), ana_grpid)
        write(os.path.join(d, "enable"), 1)
        return ns

    def remove_namespace(self, nsid: int) -> None:
        td = Teardown()
        self._remove_namespace(td, nsid)
        td.check(f"namespace {nsid}")

    def _remove_namespace(self, td: Teardown, nsid: int) -> None:
        d = os.path.join(self.subsys_dir, "namespaces", str(nsid))
        if os.path.isdir(d):
            td.step(write, os.path.join(d, "enable"), 0)
            td.rmdir(d)
        ns = self.namespaces.pop(nsid, None)
        if ns is not None:
            ns.backing.remove(td)

    def resize_namespace(self, nsid: int, size: int) -> None:
        """Resize the backing and revalidate: connected hosts get a
        namespace-changed event and update the block device size."""
        ns = self.namespaces[nsid]
        ns.backing.resize(size)
        d = os.path.join(self.subsys_dir, "namespaces", str(nsid))
        write(os.path.join(d, "revalidate_size"), 1)

    # -- ports -----------------------------------------------------------------
    @staticmethod
    def _free_port_id() -> int:
        used = {int(p) for p in subdirs(os.path.join(NVMET, "ports")) if p.isdigit()}
        n = 1
        while n in used:
            n += 1
        return n

    def add_port(self, portal: str, trtype: str = "tcp") -> NvmetPort:
        """Export on ``portal``: "ip:port" for tcp and rdma (an rdma address
        needs an RDMA device, see :class:`RxeLink`), "nn-0x..:pn-0x.." (the
        target port's names, see :class:`FcLoop`) for fc."""
        if trtype in ("tcp", "rdma"):
            traddr, _, trsvcid = portal.rpartition(":")
            adrfam = "ipv4"
            if trtype == "rdma":
                modprobe("nvmet_rdma")
        elif trtype == "fc":
            traddr, trsvcid, adrfam = portal, "none", "fc"
            modprobe("nvmet_fc")
        else:
            raise ValueError("trtype must be tcp, rdma or fc")
        existing = self._find_port(trtype, traddr, trsvcid)
        if existing is not None:
            # another subsystem already listens there: share its port (a second
            # port on the same address would fail to bind)
            port = NvmetPort(existing, traddr, trsvcid, trtype)
            d = os.path.join(NVMET, "ports", str(port.port_id))
            self.ports.append(port)
        else:
            port = NvmetPort(self._free_port_id(), traddr, trsvcid, trtype)
            d = os.path.join(NVMET, "ports", str(port.port_id))
            mkdir(d)
            self.ports.append(port)
            write(os.path.join(d, "addr_trtype"), trtype)
            write(os.path.join(d, "addr_adrfam"), adrfam)
            write(os.path.join(d, "addr_traddr"), traddr)
            write(os.path.join(d, "addr_trsvcid"), trsvcid)
        for g in range(2, self.ana_groups + 1):
            mkdir(os.path.join(d, "ana_groups", str(g)))
        symlink(self.subsys_dir, os.path.join(d, "subsystems", self.nqn))
        return port

    @staticmethod
    def _find_port(trtype: str, traddr: str, trsvcid: str) -> int | None:
        for pid in subdirs(os.path.join(NVMET, "ports")):
            d = os.path.join(NVMET, "ports", pid)
            try:
                if (
                    read(os.path.join(d, "addr_trtype")) == trtype
                    and read(os.path.join(d, "addr_traddr")) == traddr
                    and read(os.path.join(d, "addr_trsvcid")) == trsvcid
                ):
                    return int(pid)
            except (OSError, ValueError):
                continue
        return None

    def port_for(self, portal: str) -> NvmetPort:
        for p in self.ports:
            if p.portal == portal:
                return p
        raise LabError(f"no port {portal}")

    def remove_port(self, portal: str, drop_traffic: bool = False) -> None:
        """Unexport the subsystem from ``portal`` and delete the port; with
        ``drop_traffic`` connections through it stall first (dead path)."""
        if drop_traffic:
            netblock.block(portal)
            self.blocked.add(portal)
        port = self.port_for(portal)
        td = Teardown()
        self._remove_port(td, port)
        td.check(f"port {portal}")

    def _remove_port(self, td: Teardown, port: NvmetPort) -> None:
        d = os.path.join(NVMET, "ports", str(port.port_id))
        link = os.path.join(d, "subsystems", self.nqn)
        if os.path.islink(link):
            td.step(os.unlink, link)
        subsys_dir = os.path.join(d, "subsystems")
        if os.path.isdir(subsys_dir) and not os.listdir(subsys_dir):
            # last subsystem on this port: remove it
            for g in subdirs(os.path.join(d, "ana_groups")):
                if g != "1":
                    td.rmdir(os.path.join(d, "ana_groups", g))
            td.rmdir(d)
        if port in self.ports:
            self.ports.remove(port)

    def set_ana_state(self, portal: str, state: str, grpid: int = 1) -> None:
        if state not in ANA_STATES:
            raise ValueError(f"ANA state must be one of {ANA_STATES}")
        port = self.port_for(portal)
        write(
            os.path.join(NVMET, "ports", str(port.port_id), "ana_groups", str(grpid), "ana_state"),
            state,
        )

    def ana_state(self, portal: str, grpid: int = 1) -> str:
        port = self.port_for(portal)
        return read(
            os.path.join(NVMET, "ports", str(port.port_id), "ana_groups", str(grpid), "ana_state")
        )

    # -- teardown ----------------------------------------------------------------
    def destroy(self) -> None:
        td = Teardown()
        for portal in list(self.blocked):
            td.step(netblock.unblock, portal)
        self.blocked.clear()
        for port in list(self.ports):
            self._remove_port(td, port)
        if os.path.isdir(self.subsys_dir):
            for nsid in subdirs(os.path.join(self.subsys_dir, "namespaces")):
                self.namespaces.setdefault(int(nsid), None)  # type: ignore[arg-type]
            td.unlink_links(os.path.join(self.subsys_dir, "allowed_hosts"))
        for nsid in list(self.namespaces):
            self._remove_namespace(td, nsid)
        td.rmdir(self.subsys_dir)
        if self._own_workdir and self.workdir:
            td.step(shutil.rmtree, self.workdir)
        td.check(f"nvmet subsystem {self.nqn}")
