"""Build fake host trees (sysfs, /dev, /etc, /run) in a tmp dir, laid out like kernel 6.x.

Real directories and *relative* symlinks, as the kernel and udev create them,
so readers exercise the same realpath/readlink logic as on a real host.
"""

from __future__ import annotations

import os
from pathlib import Path

from brick_agent.host.roots import HostRoots


def sd_name(index: int) -> str:
    """The kernel's name of the ``index``-th SCSI disk (0: sda, 25: sdz, 26: sdaa, ...)."""
    letters = ""
    n = index + 1
    while n:
        n, r = divmod(n - 1, 26)
        letters = chr(ord("a") + r) + letters
    return "sd" + letters


class FakeHost:
    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.roots = HostRoots.under(str(self.base))
        for d in ("sys/class/block", "sys/bus/scsi/devices", "dev", "etc", "run"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        self._minor = 0

    # ------------------------------------------------------------ primitives
    def p(self, rel: str) -> Path:
        return self.base / rel

    def mkdir(self, rel: str) -> Path:
        path = self.p(rel)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def attr(self, rel: str, value: object | None) -> None:
        """Write an attribute file (value + newline, as sysfs shows); None = don't create."""
        if value is None:
            return
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{value}\n")

    def unreadable(self, rel: str) -> None:
        """An attribute that exists but fails to read (a directory gives EISDIR)."""
        self.mkdir(rel)

    def link(self, rel: str, target_rel: str) -> None:
        """Relative symlink at ``rel`` pointing at ``target_rel`` (both relative to base)."""
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(self.p(target_rel), path.parent)
        if path.is_symlink():
            path.unlink()
        path.symlink_to(target)

    def _devnum(self, major: int) -> str:
        self._minor += 16
        return f"{major}:{self._minor}"

    # ------------------------------------------------------------ SCSI
    def scsi_host(self, number: int, proc_name: str, parent: str = "sys/devices/platform") -> str:
        hdir = f"{parent}/host{number}"
        self.mkdir(hdir)
        cls = f"{hdir}/scsi_host/host{number}"
        self.attr(f"{cls}/proc_name", proc_name)
        self.attr(f"{cls}/scan", "")
        self.link(f"{cls}/device", hdir)
        self.link(f"sys/class/scsi_host/host{number}", cls)
        self.link(f"sys/bus/scsi/devices/host{number}", hdir)
        return hdir

    def scsi_disk(
        self,
        parent: str,
        hctl: str,
        name: str | None,
        wwid: str | None = None,
        vendor: str = "LIO-ORG",
        model: str = "vol",
        state: str = "running",
        sectors: int = 2048,
        wwid_unreadable: bool = False,
    ) -> str:
        h, c, t, _ = hctl.split(":")
        tdir = f"{parent}/target{h}:{c}:{t}"
        ldir = f"{tdir}/{hctl}"
        self.mkdir(ldir)
        self.attr(f"{ldir}/vendor", f"{vendor:<8}")
        self.attr(f"{ldir}/model", f"{model:<16}")
        self.attr(f"{ldir}/rev", "4.0 ")
        self.attr(f"{ldir}/state", state)
        self.attr(f"{ldir}/type", 0)
        if wwid_unreadable:
            self.unreadable(f"{ldir}/wwid")
        else:
            self.attr(f"{ldir}/wwid", wwid)
        self.link(f"sys/bus/scsi/devices/{hctl}", ldir)
        sd = f"{ldir}/scsi_device/{hctl}"
        self.link(f"{sd}/device", ldir)
        self.link(f"sys/class/scsi_device/{hctl}", sd)
        if name:
            self.block(f"{ldir}/block/{name}", sectors=sectors, device=ldir, major=8)
        return ldir

    def block(
        self,
        bdir: str,
        sectors: int = 2048,
        device: str | None = None,
        major: int = 8,
        ro: int = 0,
        extra: dict[str, object] | None = None,
    ) -> str:
        name = os.path.basename(bdir)
        self.mkdir(f"{bdir}/holders")
        self.mkdir(f"{bdir}/slaves")
        self.attr(f"{bdir}/size", sectors)
        self.attr(f"{bdir}/ro", ro)
        devnum = self._devnum(major)
        self.attr(f"{bdir}/dev", devnum)
        for key, value in (extra or {}).items():
            self.attr(f"{bdir}/{key}", value)
        if device:
            self.link(f"{bdir}/device", device)
        self.link(f"sys/class/block/{name}", bdir)
        self.link(f"sys/dev/block/{devnum}", bdir)
        self.attr(f"dev/{name}", "")  # stands in for the device node
        return bdir

    def remove_block(self, name: str) -> None:
        link = self.p(f"sys/class/block/{name}")
        real = Path(os.path.realpath(link))
        link.unlink()
        import shutil

        shutil.rmtree(real, ignore_errors=True)

    def disk_link(self, kind: str, link_name: str, name: str) -> None:
        self.link(f"dev/disk/{kind}/{link_name}", f"dev/{name}")

    # ------------------------------------------------------------ iSCSI
    def iscsi_session(
        self,
        sid: int,
        host: int,
        iqn: str,
        address: str,
        port: int = 3260,
        tpgt: int = 1,
        state: str = "LOGGED_IN",
        iface: str = "default",
        current_address: str | None = None,
    ) -> str:
        hdir = self.scsi_host(host, "iscsi_tcp")
        self.attr(f"{hdir}/iscsi_host/host{host}/ipaddress", "192.0.2.200")
        self.link(f"sys/class/iscsi_host/host{host}", f"{hdir}/iscsi_host/host{host}")
        sdir = f"{hdir}/session{sid}"
        cls = f"{sdir}/iscsi_session/session{sid}"
        self.attr(f"{cls}/targetname", iqn)
        self.attr(f"{cls}/tpgt", tpgt)
        self.attr(f"{cls}/state", state)
        self.attr(f"{cls}/ifacename", iface)
        self.attr(f"{cls}/initiatorname", "(null)")
        self.attr(f"{cls}/password", "must-never-be-read")
        self.link(f"{cls}/device", sdir)
        self.link(f"sys/class/iscsi_session/session{sid}", cls)
        conn = f"{sdir}/connection{sid}:0/iscsi_connection/connection{sid}:0"
        self.attr(f"{conn}/persistent_address", address)
        self.attr(f"{conn}/persistent_port", port)
        self.attr(f"{conn}/address", current_address or address)
        self.attr(f"{conn}/port", port)
        self.attr(f"{conn}/state", "up")
        self.link(f"sys/class/iscsi_connection/connection{sid}:0", conn)
        return sdir

    # ------------------------------------------------------------ dm / multipath
    def dm(
        self,
        number: int,
        name: str,
        uuid: str,
        slaves: list[str],
        sectors: int = 2048,
        suspended: int = 0,
    ) -> str:
        bdir = f"sys/devices/virtual/block/dm-{number}"
        self.block(bdir, sectors=sectors, major=253)
        self.attr(f"{bdir}/dm/name", name)
        self.attr(f"{bdir}/dm/uuid", uuid)
        self.attr(f"{bdir}/dm/suspended", suspended)
        for slave in slaves:
            sreal = os.path.relpath(os.path.realpath(self.p(f"sys/class/block/{slave}")), self.base)
            self.link(f"{bdir}/slaves/{slave}", sreal)
            self.link(f"{sreal}/holders/dm-{number}", bdir)
        self.link(f"dev/mapper/{name}", f"dev/dm-{number}")
        return bdir

    # ------------------------------------------------------------ NVMe
    def nvme_subsystem(self, number: int, nqn: str, model: str = "Linux") -> str:
        sdir = f"sys/devices/virtual/nvme-subsystem/nvme-subsys{number}"
        self.attr(f"{sdir}/subsysnqn", nqn)
        self.attr(f"{sdir}/model", model)
        self.attr(f"{sdir}/serial", "c0ffee")
        self.attr(f"{sdir}/iopolicy", "numa")
        self.link(f"sys/class/nvme-subsystem/nvme-subsys{number}", sdir)
        return sdir

    def nvme_ctrl(
        self,
        number: int,
        subsys: int | None,
        nqn: str,
        transport: str = "tcp",
        address: str = "traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1",
        state: str = "live",
        hostnqn: str | None = "nqn.2014-08.org.nvmexpress:uuid:host",
        cntlid: int = 1,
    ) -> str:
        cdir = f"sys/devices/virtual/nvme-fabrics/ctl/nvme{number}"
        self.attr(f"{cdir}/subsysnqn", nqn)
        self.attr(f"{cdir}/transport", transport)
        self.attr(f"{cdir}/address", address)
        self.attr(f"{cdir}/state", state)
        self.attr(f"{cdir}/hostnqn", hostnqn)
        self.attr(f"{cdir}/cntlid", cntlid)
        self.link(f"sys/class/nvme/nvme{number}", cdir)
        self.link(f"sys/class/nvme-fabrics/ctl/nvme{number}", cdir)
        if subsys is not None:
            self.link(f"sys/devices/virtual/nvme-subsystem/nvme-subsys{subsys}/nvme{number}", cdir)
        return cdir

    def nvme_ns(
        self,
        parent: str,
        name: str,
        nsid: int,
        uuid: str | None = None,
        nguid: str | None = None,
        wwid: str | None = None,
        sectors: int = 4096,
        ana_state: str | None = None,
        in_class: bool = True,
    ) -> str:
        bdir = f"{parent}/{name}"
        extra = {"nsid": nsid, "uuid": uuid, "nguid": nguid, "wwid": wwid, "ana_state": ana_state}
        if ana_state:
            extra["ana_grpid"] = 1
        self.block(
            bdir,
            sectors=sectors,
            major=259,
            extra={k: v for k, v in extra.items() if v is not None},
        )
        if not in_class:
            self.p(f"sys/class/block/{name}").unlink()
        return bdir

    # ------------------------------------------------------------ FC
    def fc_host(
        self,
        number: int,
        port_name: str,
        node_name: str,
        port_state: str = "Online",
        parent: str = "sys/devices/pci0000:00/0000:00:05.0",
    ) -> str:
        hdir = self.scsi_host(number, "qla2xxx", parent=parent)
        cls = f"{hdir}/fc_host/host{number}"
        self.attr(f"{cls}/port_name", port_name)
        self.attr(f"{cls}/node_name", node_name)
        self.attr(f"{cls}/port_state", port_state)
        self.attr(f"{cls}/port_type", "NPort (fabric via point-to-point)")
        self.attr(f"{cls}/fabric_name", "0x100000051e000001")
        self.attr(f"{cls}/speed", "16 Gbit")
        self.link(f"{cls}/device", hdir)
        self.link(f"sys/class/fc_host/host{number}", cls)
        return hdir

    def rport(
        self,
        host_dir: str,
        host: int,
        channel: int,
        number: int,
        port_name: str,
        node_name: str,
        roles: str = "FCP Target",
        scsi_target_id: int = 0,
        port_state: str = "Online",
        transport_target: bool = True,
    ) -> str:
        rdir = f"{host_dir}/rport-{host}:{channel}-{number}"
        cls = f"{rdir}/fc_remote_ports/rport-{host}:{channel}-{number}"
        self.attr(f"{cls}/port_name", port_name)
        self.attr(f"{cls}/node_name", node_name)
        self.attr(f"{cls}/port_id", "0x010200")
        self.attr(f"{cls}/port_state", port_state)
        self.attr(f"{cls}/roles", roles)
        self.attr(f"{cls}/scsi_target_id", scsi_target_id)
        self.link(f"sys/class/fc_remote_ports/rport-{host}:{channel}-{number}", cls)
        if scsi_target_id >= 0 and transport_target:
            tdir = f"{rdir}/target{host}:{channel}:{scsi_target_id}"
            tcls = f"{tdir}/fc_transport/target{host}:{channel}:{scsi_target_id}"
            self.attr(f"{tcls}/port_name", port_name)
            self.attr(f"{tcls}/node_name", node_name)
            self.link(f"sys/class/fc_transport/target{host}:{channel}:{scsi_target_id}", tcls)
        return rdir

    # ------------------------------------------------------------ what the host uses
    def partition(self, disk: str, name: str, sectors: int = 1024) -> str:
        """Partition ``name`` of disk ``disk`` (a subdirectory of the disk, as in sysfs)."""
        ddir = os.path.relpath(os.path.realpath(self.p(f"sys/class/block/{disk}")), self.base)
        major = int(self.p(f"{ddir}/dev").read_text().split(":")[0])
        return self.block(f"{ddir}/{name}", sectors=sectors, major=major, extra={"partition": 1})

    def mount(self, name: str, mountpoint: str, fstype: str = "ext4") -> None:
        """A /proc/self/mountinfo line for block device ``name`` at ``mountpoint``."""
        devnum = self.p(f"sys/class/block/{name}/dev").read_text().strip()
        path = self.p("proc/self/mountinfo")
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines() if path.exists() else []
        lines.append(
            f"{30 + len(lines)} 1 {devnum} / {mountpoint} rw,relatime shared:1 "
            f"- {fstype} /dev/{name} rw"
        )
        path.write_text("\n".join(lines) + "\n")

    def swap(self, name: str) -> None:
        """A /proc/swaps entry for block device ``name``."""
        path = self.p("proc/swaps")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            path.read_text()
            if path.exists()
            else "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        )
        path.write_text(
            text + f"/dev/{name}                               partition\t1048572\t\t0\t\t-2\n"
        )

    def ibft_target(
        self, index: int, iqn: str, address: str, port: int = 3260, lun: int = 0
    ) -> None:
        """A firmware boot target in /sys/firmware/ibft (iscsi_ibft)."""
        tdir = f"sys/firmware/ibft/target{index}"
        self.attr(f"{tdir}/target-name", iqn)
        self.attr(f"{tdir}/ip-addr", address)
        self.attr(f"{tdir}/port", port)
        self.attr(f"{tdir}/lun", f"{lun:016x}")

    def pcie_nvme(
        self, number: int, nqn: str, parent: str = "sys/devices/pci0000:00/0000:00:04.0"
    ) -> str:
        """A local PCIe NVMe controller ``nvme<number>`` (no fabrics, no host NQN)."""
        cdir = f"{parent}/nvme/nvme{number}"
        self.attr(f"{cdir}/subsysnqn", nqn)
        self.attr(f"{cdir}/transport", "pcie")
        self.attr(f"{cdir}/address", "0000:00:04.0")
        self.attr(f"{cdir}/state", "live")
        self.link(f"sys/class/nvme/nvme{number}", cdir)
        return cdir

    def sys_block_links(self) -> None:
        """``/sys/block/<disk>`` links for every whole disk (not partitions)."""
        for name in os.listdir(self.p("sys/class/block")):
            real = os.path.realpath(self.p(f"sys/class/block/{name}"))
            if not os.path.exists(os.path.join(real, "partition")):
                self.link(f"sys/block/{name}", os.path.relpath(real, self.base))
