"""A small builder of fake host trees (sysfs, /dev, /etc) in the kernel's layout.

Only what the host views read is created: enough to plant iSCSI sessions, SCSI
LUNs, multipath maps, NVMe-oF controllers/namespaces and /dev/disk links, and
then break them (remove a LUN, a path, a device node) to make leftovers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from brick_agent.host.roots import HostRoots


class FakeHost:
    """A host tree under ``base`` (``base/sys``, ``base/dev``, ``base/etc``, ``base/run``)."""

    def __init__(self, base: str | os.PathLike[str]) -> None:
        self.base = Path(base)
        self.roots = HostRoots.under(str(self.base))
        for part in ("sys/class/block", "sys/bus/scsi/devices", "dev", "etc", "run"):
            (self.base / part).mkdir(parents=True, exist_ok=True)
        self._minor = 0

    # ------------------------------------------------------------ primitives
    def sys(self, *parts: str) -> Path:
        return self.base / "sys" / Path(*parts)

    def write(self, path: Path, attrs: dict[str, object]) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for key, value in attrs.items():
            if value is None:
                continue
            target = path / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"{value}\n")

    @staticmethod
    def link(link: Path, target: Path) -> None:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(target, link.parent))

    def _devnode(self, name: str) -> None:
        (self.base / "dev" / name).write_text("")

    def _block(self, name: str, devdir: Path, size_sectors: int = 2048) -> None:
        self._minor += 16
        self.write(devdir, {"size": size_sectors, "ro": 0, "dev": f"8:{self._minor}"})
        (devdir / "holders").mkdir(exist_ok=True)
        (devdir / "slaves").mkdir(exist_ok=True)
        self.link(self.sys("class", "block", name), devdir)
        self._devnode(name)

    # ------------------------------------------------------------ SCSI / iSCSI
    def scsi_host(self, host: int, proc_name: str = "iscsi_tcp") -> Path:
        hdir = self.sys("devices", "platform", f"host{host}")
        self.write(hdir / "scsi_host" / f"host{host}", {"proc_name": proc_name})
        self.link(self.sys("class", "scsi_host", f"host{host}"), hdir / "scsi_host" / f"host{host}")
        self.link(hdir / "scsi_host" / f"host{host}" / "device", hdir)
        return hdir

    def iscsi_session(
        self,
        sid: int,
        host: int,
        iqn: str,
        portal: str = "192.0.2.10",
        port: int = 3260,
        state: str = "LOGGED_IN",
    ) -> Path:
        """An iSCSI session on SCSI host ``host`` (created as iscsi_tcp); returns its device dir."""
        hdir = self.scsi_host(host)
        sdev = hdir / f"session{sid}"
        sattr = sdev / "iscsi_session" / f"session{sid}"
        self.write(
            sattr,
            {
                "targetname": iqn,
                "tpgt": 1,
                "state": state,
                "ifacename": "default",
                "initiatorname": "iqn.2004-10.org.test:host",
            },
        )
        self.link(sattr / "device", sdev)
        self.link(self.sys("class", "iscsi_session", f"session{sid}"), sattr)
        conn = sdev / f"connection{sid}:0" / "iscsi_connection" / f"connection{sid}:0"
        self.write(
            conn,
            {
                "persistent_address": portal,
                "persistent_port": port,
                "address": portal,
                "port": port,
                "state": "up",
            },
        )
        self.link(self.sys("class", "iscsi_connection", f"connection{sid}:0"), conn)
        return sdev

    def scsi_lun(
        self,
        parent: Path,
        hctl: str,
        name: str | None,
        wwid: str | None,
        state: str = "running",
        links: bool = True,
    ) -> Path:
        """A LUN ``hctl`` under ``parent`` (a session or rport dir) with block device ``name``."""
        h, c, t, _ = hctl.split(":")
        lun = parent / f"target{h}:{c}:{t}" / hctl
        self.write(
            lun,
            {
                "vendor": "LIO-ORG",
                "model": "disk",
                "rev": "4.0",
                "state": state,
                "type": 0,
                "wwid": wwid,
            },
        )
        self.link(self.sys("bus", "scsi", "devices", hctl), lun)
        if name:
            bdir = lun / "block" / name
            self._block(name, bdir)
            self.link(bdir / "device", lun)
            if links and wwid:
                udev = "3" + wwid[4:] if wwid.startswith("naa.") else wwid
                self.disk_link("by-id", f"scsi-{udev}", name)
        return lun

    # ------------------------------------------------------------ multipath
    def multipath_map(self, dm: int, name: str, wwid: str, slaves: list[str]) -> Path:
        dname = f"dm-{dm}"
        ddir = self.sys("devices", "virtual", "block", dname)
        self._block(dname, ddir)
        self.write(ddir / "dm", {"name": name, "uuid": f"mpath-{wwid}", "suspended": 0})
        for s in slaves:
            sdir = self.sys("class", "block", s).resolve()
            self.link(ddir / "slaves" / s, sdir)
            self.link(sdir / "holders" / dname, ddir)
        mapper = self.base / "dev" / "mapper"
        mapper.mkdir(exist_ok=True)
        (mapper / name).symlink_to(f"../{dname}")
        self.disk_link("by-id", f"dm-uuid-mpath-{wwid}", dname)
        return ddir

    def wwids(self, *entries: str) -> None:
        path = self.base / "etc" / "multipath" / "wwids"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["# Multipath wwids, Version : 1.0"] + [f"/{e}/" for e in entries]
        path.write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------ NVMe
    def nvme_subsystem(self, subsys: int, nqn: str) -> Path:
        sdir = self.sys("devices", "virtual", "nvme-subsystem", f"nvme-subsys{subsys}")
        self.write(sdir, {"subsysnqn": nqn, "model": "Linux", "serial": "abc", "iopolicy": "numa"})
        self.link(self.sys("class", "nvme-subsystem", f"nvme-subsys{subsys}"), sdir)
        return sdir

    def nvme_controller(
        self,
        ctrl: int,
        subsys: int,
        nqn: str,
        transport: str = "tcp",
        traddr: str = "192.0.2.20",
        trsvcid: str = "4420",
        state: str = "live",
    ) -> Path:
        sdir = self.nvme_subsystem(subsys, nqn)
        cdir = self.sys("devices", "virtual", "nvme-fabrics", "ctl", f"nvme{ctrl}")
        address = f"traddr={traddr},trsvcid={trsvcid}" if transport != "loop" else ""
        self.write(
            cdir,
            {
                "subsysnqn": nqn,
                "transport": transport,
                "address": address,
                "state": state,
                "cntlid": ctrl + 1,
                "hostnqn": "nqn.2014-08.org.nvmexpress:uuid:host",
            },
        )
        self.link(self.sys("class", "nvme", f"nvme{ctrl}"), cdir)
        self.link(sdir / f"nvme{ctrl}", cdir)
        return cdir

    def nvme_namespace(
        self, subsys: int, ctrls: list[int], nsid: int, uuid: str, nguid: str | None = None
    ) -> str:
        """A native-multipath namespace head ``nvme<subsys>n<nsid>`` with one path per
        controller."""
        sdir = self.sys("devices", "virtual", "nvme-subsystem", f"nvme-subsys{subsys}")
        head = f"nvme{subsys}n{nsid}"
        ident = {"nsid": nsid, "uuid": uuid, "wwid": f"uuid.{uuid}", "nguid": nguid, "size": 2048}
        self.write(sdir / head, ident)
        self._block(head, sdir / head)
        for c in ctrls:
            cdir = self.sys("class", "nvme", f"nvme{c}").resolve()
            self.write(
                cdir / f"nvme{subsys}c{c}n{nsid}", dict(ident, ana_state="optimized", ana_grpid=1)
            )
        self.disk_link("by-id", f"nvme-uuid.{uuid}", head)
        return head

    # ------------------------------------------------------------ /dev links
    def disk_link(self, kind: str, name: str, device: str) -> Path:
        link = self.base / "dev" / "disk" / kind / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(f"../../{device}")
        return link

    # ------------------------------------------------------------ breaking things
    def remove_lun(self, hctl: str) -> None:
        """The kernel deleted LUN ``hctl`` (its block device and class links go too)."""
        lun = self.sys("bus", "scsi", "devices", hctl).resolve()
        for bname in os.listdir(lun / "block") if (lun / "block").is_dir() else []:
            os.unlink(self.sys("class", "block", bname))
            for holder in self.sys("devices", "virtual", "block").glob(f"dm-*/slaves/{bname}"):
                holder.unlink()
            os.unlink(self.base / "dev" / bname)
        os.unlink(self.sys("bus", "scsi", "devices", hctl))
        shutil.rmtree(lun)

    def remove_session(self, sid: int) -> None:
        """The session is gone from the iSCSI class (its device dir may linger)."""
        os.unlink(self.sys("class", "iscsi_session", f"session{sid}"))
        os.unlink(self.sys("class", "iscsi_connection", f"connection{sid}:0"))
