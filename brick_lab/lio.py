"""LIO targets (iSCSI and, via fcoe.py, tcm_fc) built with raw configfs writes."""

from __future__ import annotations

import dataclasses
import os
import shutil
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

CORE = os.path.join(CONFIGFS, "target", "core")


def local_initiator_iqn(path: str = "/etc/iscsi/initiatorname.iscsi") -> str:
    """The initiator name open-iscsi uses on this (guest) host."""
    with open(path) as f:
        for line in f:
            if line.startswith("InitiatorName="):
                return line.split("=", 1)[1].strip()
    raise LabError(f"no InitiatorName in {path}")


@dataclasses.dataclass
class LioLun:
    """One LUN: a fileio backstore on a file (or a loop device over it)."""

    lun_id: int
    name: str
    serial: str
    backing: Backing
    hba: str

    @property
    def size(self) -> int:
        return self.backing.size

    @property
    def path(self) -> str:
        return self.backing.path

    @property
    def naa(self) -> str:
        """NAA 6 designator LIO derives from vpd_unit_serial (OpenFabrics OUI)."""
        digits = "".join(c for c in self.serial.lower() if c in "0123456789abcdef")
        return ("6001405" + digits[:25]).ljust(32, "0")

    @property
    def wwid(self) -> str:
        """What /sys/block/sdX/device/wwid shows."""
        return "naa." + self.naa

    @property
    def scsi_id(self) -> str:
        """scsi_id/udev ID_SERIAL form (also the dm-multipath map WWID)."""
        return "3" + self.naa

    @property
    def storage_dir(self) -> str:
        return os.path.join(CORE, self.hba, self.name)


class LioFabricTarget(LabTarget):
    """Common LIO plumbing: fileio backstores, TPG LUNs, ACL LUN mappings.

    Subclasses fill ``self.tpgs`` (tpgt_N configfs dirs; every LUN is exported
    through each of them) before LUNs are added.
    """

    def __init__(self, luns: int, lun_size: int, backing: str, workdir: str | None) -> None:
        if backing not in ("file", "loop"):
            raise ValueError("backing must be 'file' or 'loop'")
        self._want_luns = luns
        self.lun_size = lun_size
        self.backing = backing
        self._own_workdir = workdir is None
        self.workdir = workdir or ""
        self.token = token(4)
        self.hba = ""
        self.tpgs: list[str] = []
        self.luns: dict[int, LioLun] = {}
        self.acls: list[tuple[str, str]] = []  # (tpg dir, initiator name)

    @property
    def tpg(self) -> str:
        """The first (for iSCSI: the only) TPG directory, or ''."""
        return self.tpgs[0] if self.tpgs else ""

    # -- backstore ---------------------------------------------------------
    def _prepare_storage(self) -> None:
        modprobe("target_core_mod", "target_core_file")
        if self._own_workdir:
            self.workdir = new_workdir(f"lio-{self.token}-")
        n = 0
        while os.path.exists(os.path.join(CORE, f"fileio_{n}")):
            n += 1
        self.hba = f"fileio_{n}"
        mkdir(os.path.join(CORE, self.hba))

    def add_lun(
        self, lun_id: int | None = None, size: int | None = None, serial: str | None = None
    ) -> LioLun:
        """Create a backstore, export it as LUN ``lun_id`` and map it in every ACL."""
        if lun_id is None:
            lun_id = max(self.luns, default=-1) + 1
        if lun_id in self.luns:
            raise LabError(f"LUN {lun_id} exists")
        name = f"brick_{self.token}_l{lun_id}"
        serial = serial or token(16)
        b = Backing(self.workdir, name, size or self.lun_size, loop=self.backing == "loop")
        lun = LioLun(lun_id, name, serial, b, self.hba)
        self.luns[lun_id] = lun
        sd = lun.storage_dir
        mkdir(sd)
        write(os.path.join(sd, "control"), f"fd_dev_name={b.device},fd_dev_size={b.size}")
        write(os.path.join(sd, "wwn", "vpd_unit_serial"), serial)
        # enable before any attribute (writing attrib/* first oopses 6.1)
        write(os.path.join(sd, "enable"), 1)
        write(os.path.join(sd, "attrib", "emulate_tpu"), 1)
        for tpg in self.tpgs:
            ldir = os.path.join(tpg, "lun", f"lun_{lun_id}")
            mkdir(ldir)
            symlink(sd, os.path.join(ldir, name))
        for tpg, acl in self.acls:
            self._map_lun(tpg, acl, lun_id)
        return lun

    @staticmethod
    def _map_lun(tpg: str, acl: str, lun_id: int) -> None:
        m = os.path.join(tpg, "acls", acl, f"lun_{lun_id}")
        mkdir(m)
        symlink(os.path.join(tpg, "lun", f"lun_{lun_id}"), os.path.join(m, "lun"))

    def _add_acl(self, tpg: str, acl: str) -> None:
        mkdir(os.path.join(tpg, "acls", acl))
        self.acls.append((tpg, acl))

    def remove_lun(self, lun_id: int) -> None:
        """Unmap and delete LUN ``lun_id`` and its backing (initiators see it vanish)."""
        td = Teardown()
        self._remove_lun(td, lun_id)
        td.check(f"LUN {lun_id}")

    def _remove_lun(self, td: Teardown, lun_id: int) -> None:
        lun = self.luns.pop(lun_id, None)
        for tpg in self.tpgs:
            for acl in subdirs(os.path.join(tpg, "acls")):
                m = os.path.join(tpg, "acls", acl, f"lun_{lun_id}")
                td.unlink_links(m)
                td.rmdir(m)
            ldir = os.path.join(tpg, "lun", f"lun_{lun_id}")
            td.unlink_links(ldir)
            td.rmdir(ldir)
        if lun is not None:
            td.rmdir(lun.storage_dir)
            lun.backing.remove(td)

    def resize_lun(self, lun_id: int, size: int) -> None:
        """Grow/shrink the backing and make LIO report the new capacity.

        The initiator still has to rescan (READ CAPACITY) to see it.
        """
        lun = self.luns[lun_id]
        lun.backing.resize(size)
        if not lun.backing.loop:
            # fileio on a regular file reports fd_dev_size, not the file size
            write(os.path.join(lun.storage_dir, "control"), f"fd_dev_size={size}")

    def lun_info(self, lun_id: int) -> str:
        return read(os.path.join(self.luns[lun_id].storage_dir, "info"))

    # -- teardown ----------------------------------------------------------
    def _destroy_luns_and_acls(self, td: Teardown) -> None:
        for tpg in self.tpgs:
            if not os.path.isdir(tpg):
                continue
            for lun_dir in subdirs(os.path.join(tpg, "lun")):
                lid = int(lun_dir.split("_", 1)[1])
                self.luns.setdefault(lid, None)  # type: ignore[arg-type]
            for acl in subdirs(os.path.join(tpg, "acls")):
                for m in subdirs(os.path.join(tpg, "acls", acl)):
                    if m.startswith("lun_"):
                        td.unlink_links(os.path.join(tpg, "acls", acl, m))
                        td.rmdir(os.path.join(tpg, "acls", acl, m))
                td.rmdir(os.path.join(tpg, "acls", acl))
        self.acls.clear()
        for lid in list(self.luns):
            self._remove_lun(td, lid)

    def _destroy_storage(self, td: Teardown) -> None:
        if self.hba:
            hba_dir = os.path.join(CORE, self.hba)
            for name in subdirs(hba_dir):
                if name.startswith(f"brick_{self.token}_"):
                    td.rmdir(os.path.join(hba_dir, name))
            td.rmdir(hba_dir)
        if self._own_workdir and self.workdir:
            td.step(shutil.rmtree, self.workdir)


class LioIscsiTarget(LioFabricTarget):
    """An LIO iSCSI target on the guest's loopback.

    ``initiators=None`` uses demo mode (any initiator, dynamic ACLs); otherwise
    one ACL per IQN (``"local"`` means this guest's initiator name). ``chap`` is
    ``(userid, password)``; ``mutual_chap`` adds target authentication.

        with LioIscsiTarget(luns=2, portals=("127.0.0.1:3260", "127.0.0.2:3260")) as t:
            t.iqn, t.portals, t.luns[0].wwid
    """

    def __init__(
        self,
        iqn: str | None = None,
        luns: int = 1,
        lun_size: int = 64 * MiB,
        portals: Sequence[str] = ("127.0.0.1:3260",),
        initiators: Sequence[str] | None = None,
        chap: tuple[str, str] | None = None,
        mutual_chap: tuple[str, str] | None = None,
        backing: str = "file",
        workdir: str | None = None,
    ) -> None:
        super().__init__(luns, lun_size, backing, workdir)
        self.iqn = iqn or f"iqn.2003-01.org.brick-lab:tgt-{self.token}"
        self.portals = list(portals)
        self.initiators = (
            [local_initiator_iqn() if i == "local" else i for i in initiators]
            if initiators is not None
            else None
        )
        self.chap = chap
        self.mutual_chap = mutual_chap
        self.blocked: set[str] = set()

    @property
    def target_dir(self) -> str:
        return os.path.join(CONFIGFS, "target", "iscsi", self.iqn)

    def _create(self) -> None:
        modprobe("iscsi_target_mod")
        self._prepare_storage()
        mkdir(os.path.dirname(self.target_dir))  # the fabric group appears on mkdir
        mkdir(self.target_dir)
        self.tpgs = [os.path.join(self.target_dir, "tpgt_1")]
        mkdir(self.tpg)
        attrib = os.path.join(self.tpg, "attrib")
        demo = self.initiators is None
        write(os.path.join(attrib, "authentication"), 1 if self.chap else 0)
        write(os.path.join(attrib, "generate_node_acls"), 1 if demo else 0)
        if demo:
            write(os.path.join(attrib, "cache_dynamic_acls"), 1)
            write(os.path.join(attrib, "demo_mode_write_protect"), 0)
            if self.chap:
                self._set_auth(os.path.join(self.tpg, "auth"))
        else:
            for iqn in self.initiators or ():
                self._add_acl(self.tpg, iqn)
                if self.chap:
                    self._set_auth(os.path.join(self.tpg, "acls", iqn, "auth"))
        for _ in range(self._want_luns):
            self.add_lun()
        for portal in self.portals:
            mkdir(os.path.join(self.tpg, "np", portal))
        write(os.path.join(self.tpg, "enable"), 1)

    def _set_auth(self, auth_dir: str) -> None:
        assert self.chap
        write(os.path.join(auth_dir, "userid"), self.chap[0])
        write(os.path.join(auth_dir, "password"), self.chap[1])
        if self.mutual_chap:
            write(os.path.join(auth_dir, "userid_mutual"), self.mutual_chap[0])
            write(os.path.join(auth_dir, "password_mutual"), self.mutual_chap[1])

    # -- portals -----------------------------------------------------------
    def portal_down(self, portal: str, drop_traffic: bool = True) -> None:
        """Stop listening on ``portal``; with ``drop_traffic`` established
        connections through it also stall (nftables drop), like a dead path."""
        if drop_traffic:
            netblock.block(portal)
            self.blocked.add(portal)
        np = os.path.join(self.tpg, "np", portal)
        if os.path.isdir(np):
            os.rmdir(np)

    def portal_up(self, portal: str) -> None:
        netblock.unblock(portal)
        self.blocked.discard(portal)
        mkdir(os.path.join(self.tpg, "np", portal))

    # -- teardown ----------------------------------------------------------
    def destroy(self) -> None:
        """Remove everything this target created, in dependency order; keeps
        going after individual failures and raises LabError listing them."""
        td = Teardown()
        for portal in list(self.blocked):
            td.step(netblock.unblock, portal)
        self.blocked.clear()
        if self.tpg and os.path.isdir(self.tpg):
            if os.path.exists(os.path.join(self.tpg, "enable")):
                td.step(write, os.path.join(self.tpg, "enable"), 0)
        self._destroy_luns_and_acls(td)
        if self.tpg:
            for np in subdirs(os.path.join(self.tpg, "np")):
                td.rmdir(os.path.join(self.tpg, "np", np))
            td.rmdir(self.tpg)
        td.rmdir(self.target_dir)
        self._destroy_storage(td)
        self.tpgs = []
        td.check(f"iSCSI target {self.iqn}")
