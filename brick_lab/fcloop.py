"""NVMe over FC without hardware: nvme-fcloop (Debian 13 / 6.12 kernel only).

    with FcLoop() as fc, NvmetSubsystem(ports=()) as s:
        s.add_port(fc.target_traddr, trtype="fc")
        nvme connect -t fc -a fc.target_traddr -w fc.host_traddr -n s.nqn

No fc_host/fc_remote_ports entries appear (those are SCSI-FC only).
"""

from __future__ import annotations

import os
import secrets

from ._sys import LabError, Teardown, modprobe, run, write
from .base import LabTarget

CTL = "/sys/class/fcloop/ctl"


def fcloop_available() -> bool:
    """True when the running kernel ships nvme-fcloop (6.12 lab kernel)."""
    return run(["modprobe", "-n", "nvme-fcloop"], check=False).returncode == 0


def _wwn(prefix: int) -> int:
    return (prefix << 60) | secrets.randbits(48)


def _port_spec(wwnn: int, wwpn: int) -> str:
    """fcloop ctl spelling of a port's names."""
    return f"wwnn=0x{wwnn:016x},wwpn=0x{wwpn:016x}"


class FcLoop(LabTarget):
    """One fcloop local (host) port wired to one target port."""

    def __init__(self) -> None:
        self.host_wwnn, self.host_wwpn = _wwn(1), _wwn(2)
        self.target_wwnn, self.target_wwpn = _wwn(1), _wwn(2)
        self._made: list[str] = []

    @property
    def target_traddr(self) -> str:
        """traddr of the target port: nvmet port addr and ``nvme connect -a``."""
        return f"nn-0x{self.target_wwnn:016x}:pn-0x{self.target_wwpn:016x}"

    @property
    def host_traddr(self) -> str:
        """The host port: ``nvme connect -w``."""
        return f"nn-0x{self.host_wwnn:016x}:pn-0x{self.host_wwpn:016x}"

    def _create(self) -> None:
        if not fcloop_available():
            raise LabError("nvme-fcloop is not available in this kernel (use --kernel 6.12)")
        modprobe("nvme-fcloop", "nvme-fc", "nvmet-fc")
        host = _port_spec(self.host_wwnn, self.host_wwpn)
        tgt = _port_spec(self.target_wwnn, self.target_wwpn)
        write(os.path.join(CTL, "add_local_port"), host)
        self._made.append("local")
        write(os.path.join(CTL, "add_target_port"), tgt)
        self._made.append("target")
        # roles: NVMe target + discovery (without the target role nvme-fc refuses: EBADR)
        write(
            os.path.join(CTL, "add_remote_port"),
            f"{tgt},lpwwnn=0x{self.host_wwnn:016x},lpwwpn=0x{self.host_wwpn:016x},roles=0x60",
        )
        self._made.append("remote")

    def destroy(self) -> None:
        """Remove the ports (disconnect controllers and unexport first)."""
        td = Teardown()
        host = _port_spec(self.host_wwnn, self.host_wwpn)
        tgt = _port_spec(self.target_wwnn, self.target_wwpn)
        if "remote" in self._made:
            td.step(write, os.path.join(CTL, "del_remote_port"), tgt)
        if "target" in self._made:
            td.step(write, os.path.join(CTL, "del_target_port"), tgt)
        if "local" in self._made:
            td.step(write, os.path.join(CTL, "del_local_port"), host)
        self._made.clear()
        td.check("fcloop")
