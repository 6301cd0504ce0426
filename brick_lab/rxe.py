"""Soft-RoCE (rdma_rxe) on a veth pair: an RDMA device without hardware.

    with RxeLink() as rxe, NvmetSubsystem(ports=()) as s:
        s.add_port(f"{rxe.address}:4420", trtype="rdma")
        nvme connect -t rdma -a rxe.address -s 4420 -n s.nqn

RDMA modules this fixture (or the connect it enables) loaded are unloaded
again by :meth:`RxeLink.destroy`, so later tests see the kernel as before.
"""

from __future__ import annotations

import os
import shutil

from ._sys import LabError, Teardown, modprobe, run, token
from .base import LabTarget

IB_CLASS = "/sys/class/infiniband"
NET_CLASS = "/sys/class/net"
# unloaded in this order by destroy() when they were not loaded before create()
RDMA_MODULES = ("nvme_rdma", "nvmet_rdma", "rdma_rxe")


def module_loaded(name: str) -> bool:
    return os.path.isdir(f"/sys/module/{name}")


def rxe_available() -> str | None:
    """None when soft-RoCE + NVMe/RDMA can be set up here, else why not."""
    if shutil.which("rdma") is None:
        return "the 'rdma' tool (iproute2) is missing"
    for mod in ("rdma_rxe", "nvme_rdma", "nvmet_rdma"):
        if run(["modprobe", "-n", mod], check=False).returncode != 0:
            return f"kernel module {mod} is not available"
    return None


class RxeLink(LabTarget):
    """An rxe RDMA device bound to one end of a veth pair that carries ``address``.

    ``ibdev`` is the RDMA device name (/sys/class/infiniband), ``netdev`` the
    veth end it runs on, ``address`` the IPv4 address to use as traddr.
    """

    def __init__(self, address: str = "192.168.77.1", prefix_len: int = 24) -> None:
        tok = token(2)
        self.address = address
        self.prefix_len = prefix_len
        self.netdev = f"rxv{tok}"
        self.peer = f"rxp{tok}"
        self.ibdev = f"rxe_{tok}"
        self._preloaded: set[str] = set()

    def _create(self) -> None:
        why = rxe_available()
        if why:
            raise LabError(f"soft-RoCE unavailable: {why}")
        self._preloaded = {m for m in RDMA_MODULES if module_loaded(m)}
        modprobe("rdma_rxe")
        run(["ip", "link", "add", self.netdev, "type", "veth", "peer", "name", self.peer])
        run(["ip", "addr", "add", f"{self.address}/{self.prefix_len}", "dev", self.netdev])
        run(["ip", "link", "set", self.netdev, "up"])
        run(["ip", "link", "set", self.peer, "up"])
        run(["rdma", "link", "add", self.ibdev, "type", "rxe", "netdev", self.netdev])
        if not os.path.isdir(os.path.join(IB_CLASS, self.ibdev)):
            raise LabError(f"rdma link add gave no {IB_CLASS}/{self.ibdev}")

    def leftovers(self) -> list[str]:
        """What of this link still exists (empty after a clean destroy)."""
        left = [
            p
            for p in (
                os.path.join(IB_CLASS, self.ibdev),
                os.path.join(NET_CLASS, self.netdev),
                os.path.join(NET_CLASS, self.peer),
            )
            if os.path.exists(p)
        ]
        return left + [
            f"module {m}" for m in RDMA_MODULES if m not in self._preloaded and module_loaded(m)
        ]

    def destroy(self) -> None:
        td = Teardown()
        if os.path.isdir(os.path.join(IB_CLASS, self.ibdev)):
            td.step(run, ["rdma", "link", "delete", self.ibdev])
        if os.path.exists(os.path.join(NET_CLASS, self.netdev)):
            td.step(run, ["ip", "link", "del", self.netdev])  # takes the peer with it
        for mod in RDMA_MODULES:
            if mod not in self._preloaded and module_loaded(mod):
                td.step(run, ["modprobe", "-r", mod])
        td.check(f"rxe link {self.ibdev}")
