"""SCSI over a real fc_host: software FCoE (VN2VN) on veth pairs + tcm_fc LIO target.

Each "fabric" is one veth pair: the T end carries the target lport (tcm_fc),
the I end the initiator lport whose fc_host the tests use. Both lports live in
the same kernel, so /sys/class/fc_host also lists the target's hosts:
use :attr:`FcoeTarget.initiator_hosts` to tell them apart.
"""

from __future__ import annotations

import dataclasses
import glob
import os

from ._sys import CONFIGFS, LabError, MiB, Teardown, mkdir, modprobe, read, run, wait_for, write
from .lio import LioFabricTarget

FCOE_BUS = "/sys/bus/fcoe"


def mac_to_wwn(mac: str, prefix: int) -> int:
    """libfcoe's WWN from a MAC: ``prefix`` 1 -> node name, 2 -> port name."""
    return (prefix << 60) | int(mac.replace(":", ""), 16)


def wwn_colon(wwn: int) -> str:
    """tcm_fc's configfs spelling: 20:00:02:..:.. (lower case)."""
    h = f"{wwn:016x}"
    return ":".join(h[i : i + 2] for i in range(0, 16, 2))


@dataclasses.dataclass
class FcoeFabric:
    """One veth pair with a target and an initiator FCoE lport."""

    target_if: str
    initiator_if: str
    target_mac: str
    initiator_mac: str
    initiator_host: str = ""  # e.g. "host3" once created

    @property
    def target_wwpn(self) -> str:
        return f"{mac_to_wwn(self.target_mac, 2):016x}"

    @property
    def target_wwnn(self) -> str:
        return f"{mac_to_wwn(self.target_mac, 1):016x}"

    @property
    def initiator_wwpn(self) -> str:
        return f"{mac_to_wwn(self.initiator_mac, 2):016x}"

    @property
    def initiator_wwnn(self) -> str:
        return f"{mac_to_wwn(self.initiator_mac, 1):016x}"


def _ctlr_of(netdev: str) -> str | None:
    """The /sys/bus/fcoe/devices/ctlr_N directory bound to ``netdev``."""
    for c in glob.glob(os.path.join(FCOE_BUS, "devices", "ctlr_*")):
        if f"/net/{netdev}/" in os.path.realpath(c) + "/":
            return c
    return None


def fc_host_of(netdev: str) -> str | None:
    """Name (hostN) of the fc_host whose lport runs on ``netdev``."""
    for h in glob.glob("/sys/class/fc_host/host*"):
        if f"/net/{netdev}/" in os.path.realpath(h):
            return os.path.basename(h)
    return None


def rports_of(host: str) -> list[str]:
    """fc_remote_ports names (rport-H:C-N) under scsi host ``host``."""
    n = host[len("host") :]
    return sorted(os.path.basename(p) for p in glob.glob(f"/sys/class/fc_remote_ports/rport-{n}:*"))


class FcoeTarget(LioFabricTarget):
    """tcm_fc target with N LUNs reachable over ``fabrics`` FCoE veth pairs.

        with FcoeTarget(luns=2) as t:
            t.target_wwpns, t.initiator_hosts, t.luns[0].wwid

    LUN 0 is scanned automatically by the kernel; other LUNs need a targeted
    scan (:meth:`scan_lun`) or the connector under test to do it.
    """

    def __init__(
        self,
        luns: int = 1,
        lun_size: int = 32 * MiB,
        fabrics: int = 1,
        backing: str = "file",
        workdir: str | None = None,
        login_timeout: float = 90,
    ) -> None:
        super().__init__(luns, lun_size, backing, workdir)
        self.login_timeout = login_timeout
        t = self.token[:4]
        self.fabrics = [
            FcoeFabric(
                f"bfT{i}{t}",
                f"bfI{i}{t}",
                f"02:b1:{t[:2]}:{t[2:4]}:{i:02x}:01",
                f"02:b1:{t[:2]}:{t[2:4]}:{i:02x}:02",
            )
            for i in range(fabrics)
        ]
        self._links: list[str] = []
        self._ctlrs: list[str] = []
        self._wwn_dirs: list[str] = []

    @property
    def target_wwpns(self) -> list[str]:
        return [f.target_wwpn for f in self.fabrics]

    @property
    def initiator_wwpns(self) -> list[str]:
        return [f.initiator_wwpn for f in self.fabrics]

    @property
    def initiator_hosts(self) -> list[str]:
        return [f.initiator_host for f in self.fabrics]

    def _create(self) -> None:
        modprobe("veth", "fcoe", "tcm_fc")
        self._prepare_storage()
        mkdir(os.path.join(CONFIGFS, "target", "fc"))  # the fabric group appears on mkdir
        for f in self.fabrics:
            run(
                [
                    "ip",
                    "link",
                    "add",
                    f.target_if,
                    "address",
                    f.target_mac,
                    "mtu",
                    "9000",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    f.initiator_if,
                    "address",
                    f.initiator_mac,
                    "mtu",
                    "9000",
                ]
            )
            self._links.append(f.target_if)
            run(["ip", "link", "set", f.target_if, "up"])
            run(["ip", "link", "set", f.initiator_if, "up"])
            wwn_dir = os.path.join(CONFIGFS, "target", "fc", wwn_colon(mac_to_wwn(f.target_mac, 2)))
            mkdir(wwn_dir)
            self._wwn_dirs.append(wwn_dir)
            tpg = os.path.join(wwn_dir, "tpgt_1")
            mkdir(tpg)
            self.tpgs.append(tpg)
            self._add_acl(tpg, wwn_colon(mac_to_wwn(f.initiator_mac, 2)))
        for _ in range(self._want_luns):
            self.add_lun()
        # target lports first, so the initiators find a ready target on login
        for f in self.fabrics:
            self._start_ctlr(f.target_if)
        for f in self.fabrics:
            self._start_ctlr(f.initiator_if)
        for f in self.fabrics:
            f.initiator_host = wait_for(
                lambda f=f: fc_host_of(f.initiator_if), 20, f"fc_host on {f.initiator_if}"
            )
            wait_for(
                lambda f=f: self.target_rport(f) is not None,
                self.login_timeout,
                f"{f.initiator_host} to log in to {f.target_wwpn}",
            )

    def _start_ctlr(self, netdev: str) -> None:
        write(os.path.join(FCOE_BUS, "ctlr_create"), netdev)
        self._ctlrs.append(netdev)
        ctlr = wait_for(lambda: _ctlr_of(netdev), 20, f"fcoe ctlr on {netdev}")
        write(os.path.join(ctlr, "mode"), "VN2VN")
        write(os.path.join(ctlr, "enabled"), 1)

    def target_rport(self, fabric: FcoeFabric) -> str | None:
        """The initiator's Online remote port for ``fabric``'s target, if any."""
        host = fabric.initiator_host
        if not host:
            return None
        try:
            if read(f"/sys/class/fc_host/{host}/port_state") != "Online":
                return None
        except OSError:
            return None
        for rp in rports_of(host):
            d = f"/sys/class/fc_remote_ports/{rp}"
            try:
                if (
                    read(f"{d}/port_name") == "0x" + fabric.target_wwpn
                    and read(f"{d}/port_state") == "Online"
                    and "FCP Target" in read(f"{d}/roles")
                ):
                    return rp
            except OSError:
                continue
        return None

    def scan_lun(self, lun_id: int, fabric: int = 0) -> None:
        """Targeted scan of one LUN on the initiator host (channel/target of the rport)."""
        f = self.fabrics[fabric]
        rp = self.target_rport(f)
        if rp is None:
            raise LabError(f"no online target rport on {f.initiator_host}")
        channel = rp.split(":")[1].split("-")[0]
        target = read(f"/sys/class/fc_remote_ports/{rp}/scsi_target_id")
        write(f"/sys/class/scsi_host/{f.initiator_host}/scan", f"{channel} {target} {lun_id}")

    def destroy(self) -> None:
        td = Teardown()
        # initiators first: their SCSI devices go away with the lport
        for netdev in sorted(self._ctlrs, key=lambda n: not n.startswith("bfI")):
            td.step(write, os.path.join(FCOE_BUS, "ctlr_destroy"), netdev)
        self._ctlrs.clear()
        self._destroy_luns_and_acls(td)
        for tpg in self.tpgs:
            td.rmdir(tpg)
        for d in self._wwn_dirs:
            td.rmdir(d)
        self.tpgs = []
        self._wwn_dirs = []
        self._destroy_storage(td)
        for link in self._links:
            td.step(run, ["ip", "link", "del", link])
        self._links.clear()
        td.check("FCoE target")
