"""brick-agent cleanup on fake host trees: the plan lists exactly the leftovers, apply
re-verifies each item and removes exactly them, and what is ledgered, in use or foreign is
never planned and is refused at apply.

The fake actions run the real privileged bodies (``do_*``: argument validation and
ownership checks on the same tree, commands recorded instead of run) and then change the
tree the way the kernel or the tool would, so tests assert on the tree.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import pytest

from brick_agent import audit as A
from brick_agent import cli, commands
from brick_agent.cleanup import items as K
from brick_agent.cleanup.apply import apply_plan
from brick_agent.cleanup.items import PlanItem
from brick_agent.cleanup.plan import build_plan
from brick_agent.errors import DeviceNotFound, InvalidArgument, NotOwned
from brick_agent.host.scsi import Hctl
from brick_agent.ledger import AttachmentLedger
from brick_agent.privileged import block, iscsi, links, multipath, nvme, scsi
from tests.unit.gate.fakehost import FakeHost

HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77"
OTHERNQN = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
IQN = "iqn.2003-01.org.test:vol1"  # ledgered, under a map
STRAY_IQN = "iqn.2003-01.org.test:stray"  # a raw login, LUN present, nobody's
EMPTY_IQN = "iqn.2003-01.org.test:empty"  # a session whose LUN was deleted
MOUNTED_IQN = "iqn.2003-01.org.test:mounted"
OPEN_IQN = "iqn.2003-01.org.test:open"
KILLED_IQN = "iqn.2003-01.org.test:killed"
BOOT_IQN = "iqn.2003-01.org.test:boot"
WWID1 = "naa.6001405aaaaaaaaaaaaaaaaaaaaaaaa1"
STRAY_WWID = "naa.6001405cccccccccccccccccccccccc3"
MOUNTED_WWID = "naa.6001405dddddddddddddddddddddddd4"
OPEN_WWID = "naa.6001405eeeeeeeeeeeeeeeeeeeeeeee5"
LOCAL_WWID = "t10.ATA     QEMU HARDDISK"
NQN = "nqn.2014-08.org.test:attached"
UNUSED_NQN = "nqn.2014-08.org.test:unused"
EMPTY_NQN = "nqn.2014-08.org.test:empty"
FOREIGN_NQN = "nqn.2014-08.org.test:foreign"
UUID1 = "5b2a0c9e-1111-4d6f-8e3a-0123456789ab"
UUID2 = "5b2a0c9e-2222-4d6f-8e3a-0123456789ab"
STALE_WWID = "36001405ffffffffffffffffffffffff6"
GONE_LINK = "ip-192.0.2.99:3260-iscsi-iqn.2003-01.org.test:gone-lun-1"


def _udev(wwid: str) -> str:
    return "3" + wwid[4:]


# ------------------------------------------------------------------ the fake host
class Host(FakeHost):
    """The audit's fake host, plus what the cleanup's checks read."""

    def lun(self, parent, hctl: str, name: str, wwid: str):
        ldir = self.scsi_lun(parent, hctl, name, wwid)
        (ldir / "delete").write_text("")
        self.link(self.sys("class", "scsi_device", hctl, "device"), ldir)
        return ldir

    def controller(self, ctrl: int, subsys: int, nqn: str, hostnqn: str = HOSTNQN, **kw):
        cdir = self.nvme_controller(ctrl, subsys, nqn, **kw)
        (cdir / "hostnqn").write_text(hostnqn + "\n")
        (cdir / "delete_controller").write_text("")
        return cdir

    def node_record(self, iqn: str, entry: str, startup: str = "manual") -> str:
        path = self.base / "etc" / "iscsi" / "nodes" / iqn / entry / "default"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"node.name = {iqn}\nnode.startup = {startup}\n")
        return str(path)

    def mount(self, name: str, point: str) -> None:
        path = self.base / "proc" / "self" / "mountinfo"
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_text() if path.exists() else ""
        path.write_text(old + f"36 1 0:44 / {point} rw - ext4 /dev/{name} rw\n")

    def open_by(self, pid: int, name: str) -> None:
        fd = self.base / "proc" / str(pid) / "fd"
        fd.mkdir(parents=True, exist_ok=True)
        (self.base / "proc" / str(pid) / "comm").write_text("qemu\n")
        os.symlink(f"/dev/{name}", fd / "3")

    def local_disk(self, host: int, name: str) -> None:
        hdir = self.scsi_host(host, proc_name="ahci")
        self.scsi_lun(hdir, f"{host}:0:0:0", name, LOCAL_WWID, links=False)

    def exists(self, *parts: str) -> bool:
        return os.path.lexists(self.base / os.path.join(*parts))


def _ledger(tmp_path, volumes: dict, pending: list | None = None) -> AttachmentLedger:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"version": 1, "volumes": volumes, "pending": pending or []}))
    return AttachmentLedger(str(path))


def _volume(proto: str, identity: str, lookup: str, path: str) -> dict:
    return {
        "protocol": proto,
        "identity": identity,
        "lookup": [lookup],
        "device_info": {"type": "block", "path": path},
        "attachments": {"default": {"access_mode": "rw"}},
    }


def _host(tmp_path) -> tuple[Host, AttachmentLedger]:
    """A host with one of each leftover kind, and what must survive beside them."""
    h = Host(tmp_path / "host")
    (h.base / "etc" / "nvme").mkdir(parents=True)
    (h.base / "etc" / "nvme" / "hostnqn").write_text(HOSTNQN + "\n")
    # survivors: a ledgered iSCSI volume under a map, a ledgered NVMe namespace, the
    # VM's local root disk, a mounted and an open fabric LUN nobody ledgered, a boot
    # node record, a controller made with another host NQN
    s1 = h.iscsi_session(1, 2, IQN, portal="192.0.2.10")
    h.lun(s1, "2:0:0:1", "sda", WWID1)
    h.multipath_map(0, "mpatha", _udev(WWID1), ["sda"])
    h.node_record(IQN, "192.0.2.10,3260,1")
    h.controller(0, 0, NQN)
    h.nvme_namespace(0, [0], 1, UUID1)
    h.local_disk(0, "vda")
    h.mount("vda", "/")
    sm = h.iscsi_session(4, 5, MOUNTED_IQN, portal="192.0.2.14")
    h.lun(sm, "5:0:0:0", "sdm", MOUNTED_WWID)
    h.mount("sdm", "/srv/data")
    so = h.iscsi_session(5, 6, OPEN_IQN, portal="192.0.2.15")
    h.lun(so, "6:0:0:0", "sdo", OPEN_WWID)
    h.open_by(4242, "sdo")
    h.node_record(BOOT_IQN, "192.0.2.1,3260,1", startup="automatic")
    h.controller(3, 3, FOREIGN_NQN, hostnqn=OTHERNQN, traddr="192.0.2.23")
    # leftovers
    h.iscsi_session(2, 3, EMPTY_IQN, portal="192.0.2.12")  # LUN deleted, logout forgotten
    h.node_record(EMPTY_IQN, "192.0.2.12,3260,1")
    h.node_record(KILLED_IQN, "192.0.2.20,3260,1")  # a killed attach's record
    s3 = h.iscsi_session(3, 4, STRAY_IQN, portal="192.0.2.13")  # nobody's LUN
    h.lun(s3, "4:0:0:2", "sdc", STRAY_WWID)
    h.node_record(STRAY_IQN, "192.0.2.13,3260,1")
    h.multipath_map(1, "mpathz", "36001405" + "9" * 24, [])  # no paths
    h.controller(1, 1, EMPTY_NQN, traddr="192.0.2.21")  # no namespace
    h.controller(2, 2, UNUSED_NQN, traddr="192.0.2.22")  # namespace nobody uses
    h.nvme_namespace(2, [2], 1, UUID2)
    h.wwids(_udev(WWID1), STALE_WWID)
    h.disk_link("by-path", GONE_LINK, "sdzz")
    led = _ledger(
        tmp_path,
        {
            f"ISCSI:{_udev(WWID1)}": _volume(
                "ISCSI", _udev(WWID1), f"iscsi:{IQN}:1", str(h.base / "dev" / "dm-0")
            ),
            f"NVMEOF:uuid.{UUID1}": _volume(
                "NVMEOF", f"uuid.{UUID1}", f"nvme:{NQN}:{UUID1}", "/dev/nvme0n1"
            ),
        },
    )
    return h, led


LEFTOVERS = {
    (K.MAP, "mpathz"),
    (K.ISCSI_SESSION, "session2"),
    (K.ISCSI_NODE, f"{KILLED_IQN} 192.0.2.20:3260 default"),
    (K.NVME_CONTROLLER, "nvme1"),
    (K.WWID, STALE_WWID),
    (K.LINK, f"/dev/disk/by-path/{GONE_LINK}"),
}
WITH_LEDGER = LEFTOVERS | {
    (K.SCSI_DEVICE, "4:0:0:2"),
    (K.ISCSI_SESSION, "session3"),
    (K.NVME_UNUSED, "nvme2"),
}


class FakeActions:
    """The privileged bodies on the fake tree (commands recorded), then the kernel's part."""

    def __init__(self, h: Host) -> None:
        self.h = h
        self.roots = h.roots
        self.ran: list[list[str]] = []

    def _run(self, argv, timeout=None, ok_codes=(0,), **_kw):
        self.ran.append(list(argv))
        return commands.CommandResult(list(argv), 0, "", "", 0.01)

    def _session(self, portal: str, iqn: str):
        from brick_agent.host.iscsi import iscsi_sessions

        return [s for s in iscsi_sessions(self.roots) if s.target_iqn == iqn and s.portal == portal]

    def logout(self, portal: str, iqn: str, iface: str) -> None:
        iscsi.do_node_logout(self.roots, iqn, portal, iface, run=self._run)
        for s in self._session(portal, iqn):
            shutil.rmtree(s.device_path)
            self.h.remove_session(s.sid)
        self.delete_node_record(portal, iqn, iface)

    def delete_node_record(self, portal: str, iqn: str, iface: str) -> None:
        iscsi.do_node_delete(self.roots, iqn, portal, iface, run=self._run)
        addr, port = portal.rsplit(":", 1)
        shutil.rmtree(self.h.base / "etc" / "iscsi" / "nodes" / iqn / f"{addr},{port},1")

    def flush(self, device: str) -> None:
        block.do_flush_block_device(
            self.roots, device, flush=lambda dev, timeout: self.ran.append(["flush", dev])
        )

    def delete_scsi_device(self, hctl: Hctl) -> None:
        scsi.do_delete_scsi_device(self.roots, str(hctl))
        name = os.listdir(self.h.sys("bus", "scsi", "devices", str(hctl), "block"))[0]
        self.h.remove_lun(str(hctl))
        for link in (self.h.base / "dev" / "disk").rglob("*"):  # udev's part
            if link.is_symlink() and os.readlink(link) == f"../../{name}":
                link.unlink()
        shutil.rmtree(self.h.sys("class", "scsi_device", str(hctl)))

    def remove_map(self, name: str) -> None:
        from brick_agent.host.multipath import map_by_name

        multipath.do_flush_map(self.roots, name, run=self._run)
        mp = map_by_name(self.roots, name)
        for s in mp.slaves:
            os.unlink(self.h.sys("class", "block", s).resolve() / "holders" / mp.dm_name)
        shutil.rmtree(self.h.sys("class", "block", mp.dm_name).resolve())
        os.unlink(self.h.sys("class", "block", mp.dm_name))
        os.unlink(self.h.base / "dev" / "mapper" / name)

    def delete_controller(self, name: str) -> None:
        nvme.do_disconnect(self.roots, name)
        real = self.h.sys("class", "nvme", name).resolve()
        os.unlink(self.h.sys("class", "nvme", name))
        shutil.rmtree(real)

    def forget_wwid(self, wwid: str) -> None:
        multipath.do_forget_stale_wwid(self.roots, wwid, run=self._run)
        path = self.h.base / "etc" / "multipath" / "wwids"
        path.write_text("".join(ln for ln in path.open() if ln.strip() != f"/{wwid}/"))

    def remove_link(self, kind: str, name: str, target: str) -> None:
        links.do_remove_dangling_link(self.roots, kind, name, target)


def _pairs(plan) -> set[tuple[str, str]]:
    return {(i.kind, i.object) for i in plan.items}


def _apply(h, led, items, authoritative=False, actions=None):
    return apply_plan(
        items,
        actions or FakeActions(h),
        h.roots,
        led,
        authoritative=authoritative,
        lock_path=str(h.base / "locks"),
    )


# ------------------------------------------------------------------ the plan
def test_plan_lists_exactly_the_leftovers_and_keeps_the_rest(tmp_path):
    h, led = _host(tmp_path)
    plan = build_plan(h.roots, led)
    assert plan.errors == []
    assert _pairs(plan) == LEFTOVERS
    kept = {(k.kind, k.object): k.reason for k in plan.kept}
    assert "automatic" in kept[(K.ISCSI_NODE, f"{BOOT_IQN} 192.0.2.1:3260 default")]
    assert OTHERNQN in kept[(K.NVME_CONTROLLER, "nvme3")]
    # evidence and exact actions
    by = {(i.kind, i.object): i for i in plan.items}
    sess = by[(K.ISCSI_SESSION, "session2")]
    assert sess.evidence == {
        "session": 2,
        "target": EMPTY_IQN,
        "portal": "192.0.2.12:3260",
        "iface": "default",
    }
    assert sess.action == (
        f"iscsiadm -m node -T {EMPTY_IQN} -p 192.0.2.12:3260 -I default --logout; "
        f"iscsiadm -m node -T {EMPTY_IQN} -p 192.0.2.12:3260 -I default --op delete"
    )
    assert by[(K.LINK, f"/dev/disk/by-path/{GONE_LINK}")].evidence["target"] == "../../sdzz"
    assert by[(K.WWID, STALE_WWID)].action == f"multipath -w {STALE_WWID}"
    assert by[(K.MAP, "mpathz")].action == "multipath -f mpathz"
    assert by[(K.NVME_CONTROLLER, "nvme1")].evidence["subsysnqn"] == EMPTY_NQN
    # ids are stable across plans and distinct
    again = build_plan(h.roots, led)
    assert [i.id for i in plan.items] == [i.id for i in again.items]
    assert len({i.id for i in plan.items}) == len(plan.items)
    # the plan acts on nothing
    assert h.exists("dev", "disk", "by-path", GONE_LINK)


def test_with_the_ledger_as_authority_unowned_fabric_luns_and_controllers_join(tmp_path):
    h, led = _host(tmp_path)
    plan = build_plan(h.roots, led, authoritative=True)
    assert plan.errors == []
    assert _pairs(plan) == WITH_LEDGER
    kept = {(k.kind, k.object): k.reason for k in plan.kept}
    assert "mounted at /srv/data" in kept[(K.SCSI_DEVICE, "5:0:0:0")]
    assert "open by pid 4242 (qemu)" in kept[(K.SCSI_DEVICE, "6:0:0:0")]
    by = {(i.kind, i.object): i for i in plan.items}
    lun = by[(K.SCSI_DEVICE, "4:0:0:2")]
    assert lun.evidence == {
        "device": "sdc",
        "wwid": STRAY_WWID,
        "target": STRAY_IQN,
        "portal": "192.0.2.13:3260",
        "lun": 2,
    }
    assert lun.action == "flush /dev/sdc; echo 1 > /sys/class/scsi_device/4:0:0:2/device/delete"
    assert "its LUNs 4:0:0:2 are removed first" in by[(K.ISCSI_SESSION, "session3")].detail
    # order: the LUN before its session
    kinds = [i.kind for i in plan.items]
    assert kinds.index(K.SCSI_DEVICE) < kinds.index(K.ISCSI_SESSION)
    # never: the ledgered LUN, its map, the local disk, the ledgered namespace's controller
    objects = {i.object for i in plan.items}
    assert not objects & {"2:0:0:1", "mpatha", "0:0:0:0", "nvme0", "nvme3"}


def test_a_recorded_namespace_whose_attachments_are_cleared_is_no_leftover(tmp_path):
    """An entry whose attachments are cleared (its detach under way, or failed half way)
    still records the volume: with the ledger as authority its controller is kept, as a
    recorded LUN is (a detach's own decision counts only attached volumes)."""
    h, _ = _host(tmp_path)
    volume = _volume("NVMEOF", f"uuid.{UUID1}", f"nvme:{NQN}:{UUID1}", "/dev/nvme0n1")
    volume["attachments"] = {}
    led = _ledger(tmp_path, {f"NVMEOF:uuid.{UUID1}": volume})
    plan = build_plan(h.roots, led, authoritative=True)
    assert "nvme0" not in {i.object for i in plan.items}
    assert "nvme2" in {i.object for i in plan.items}


def test_a_lun_whose_wwid_no_longer_matches_the_ledger_at_its_address(tmp_path):
    h, _ = _host(tmp_path)
    led = _ledger(
        tmp_path,
        {"ISCSI:x": _volume("ISCSI", _udev(WWID1), f"iscsi:{STRAY_IQN}:2", "/dev/sdq")},
    )
    by = {i.object: i for i in build_plan(h.roots, led, authoritative=True).items}
    assert "the ledger recorded" in by["4:0:0:2"].detail
    assert "no longer matches" in by["4:0:0:2"].detail


def test_a_pending_attach_keeps_its_target(tmp_path):
    h, _ = _host(tmp_path)
    led = _ledger(
        tmp_path, {}, pending=[{"lookup": [f"iscsi:{EMPTY_IQN}:0"], "attachment_id": "a"}]
    )
    plan = build_plan(h.roots, led)
    assert (K.ISCSI_SESSION, "session2") not in _pairs(plan)
    assert any("pending" in k.reason for k in plan.kept if k.object == "session2")


def test_a_map_with_a_local_path_is_not_planned(tmp_path):
    h, led = _host(tmp_path)
    h.multipath_map(2, "mpathl", "1ATA_local", ["vda"])
    (h.sys("class", "block", "vda").resolve() / "device" / "state").write_text("offline\n")
    plan = build_plan(h.roots, led, authoritative=True)
    assert (K.MAP, "mpathl") not in _pairs(plan)
    assert any(k.object == "mpathl" and "not an iSCSI or FC LUN" in k.reason for k in plan.kept)


def test_unreadable_ledger_plans_nothing(tmp_path):
    h, led = _host(tmp_path)
    (tmp_path / "ledger.json").write_text("{not json")
    with pytest.raises(Exception, match="not JSON"):
        build_plan(h.roots, led)


# ------------------------------------------------------------------ apply
def test_apply_removes_exactly_the_planned_leftovers(tmp_path):
    h, led = _host(tmp_path)
    plan = build_plan(h.roots, led, authoritative=True)
    actions = FakeActions(h)
    result = _apply(h, led, plan.items, authoritative=True, actions=actions)
    assert {(r.item.kind, r.item.object, r.outcome) for r in result.results} == {
        (k, o, K.APPLIED) for k, o in WITH_LEDGER
    }
    assert result.complete
    # gone
    assert not h.exists("dev", "disk", "by-path", GONE_LINK)
    assert not h.exists("sys", "class", "iscsi_session", "session2")
    assert not h.exists("sys", "class", "iscsi_session", "session3")
    assert not h.exists("sys", "bus", "scsi", "devices", "4:0:0:2")
    assert not h.exists("etc", "iscsi", "nodes", KILLED_IQN, "192.0.2.20,3260,1")
    assert not h.exists("sys", "class", "nvme", "nvme1")
    assert not h.exists("sys", "class", "nvme", "nvme2")
    assert not h.exists("dev", "mapper", "mpathz")
    assert ["multipath", "-w", STALE_WWID] in actions.ran
    assert ["multipath", "-f", "mpathz"] in actions.ran
    assert ["flush", str(h.base / "dev" / "sdc")] in actions.ran
    assert ["flush", str(h.base / "dev" / "nvme2n1")] in actions.ran
    # survivors
    for part in (
        ("sys", "bus", "scsi", "devices", "2:0:0:1"),
        ("sys", "bus", "scsi", "devices", "5:0:0:0"),
        ("sys", "bus", "scsi", "devices", "6:0:0:0"),
        ("sys", "bus", "scsi", "devices", "0:0:0:0"),
        ("dev", "mapper", "mpatha"),
        ("sys", "class", "nvme", "nvme0"),
        ("sys", "class", "nvme", "nvme3"),
        ("etc", "iscsi", "nodes", BOOT_IQN),
        ("etc", "iscsi", "nodes", IQN),
    ):
        assert h.exists(*part), part
    assert (h.base / "etc" / "multipath" / "wwids").read_text().count(_udev(WWID1)) == 1
    # nothing left to do
    assert build_plan(h.roots, led, authoritative=True).items == []
    assert A.audit_against_ledger(led, h.roots).of_kind(A.ISCSI_SESSION_WITHOUT_LUNS) == []


def test_apply_skips_items_whose_evidence_changed(tmp_path):
    h, led = _host(tmp_path)
    plan = build_plan(h.roots, led)
    by = {(i.kind, i.object): i for i in plan.items}
    # the link now points to another missing device; the stale wwid's LUN came back;
    # the session without LUNs got one; the empty controller is now another subsystem's
    h.disk_link("by-path", GONE_LINK, "sdyy")
    h.lun(h.sys("devices", "platform", "host9"), "9:0:0:0", "sdw", "naa." + STALE_WWID[1:])
    h.lun(
        h.sys("class", "iscsi_session", "session2", "device").resolve(),
        "3:0:0:0",
        "sdn",
        STRAY_WWID,
    )
    cdir = h.sys("class", "nvme", "nvme1").resolve()
    (cdir / "subsysnqn").write_text("nqn.2014-08.org.test:reused\n")
    actions = FakeActions(h)
    result = _apply(h, led, plan.items, actions=actions)
    out = {(r.item.kind, r.item.object): r for r in result.results}
    link = out[(K.LINK, f"/dev/disk/by-path/{GONE_LINK}")]
    assert link.outcome == K.CHANGED and "'../../sdzz' -> '../../sdyy'" in link.detail
    assert out[(K.WWID, STALE_WWID)].outcome == K.CHANGED
    assert out[(K.ISCSI_SESSION, "session2")].outcome == K.CHANGED
    ctrl = out[(K.NVME_CONTROLLER, "nvme1")]
    assert ctrl.outcome == K.CHANGED and "subsysnqn" in ctrl.detail
    assert h.exists("dev", "disk", "by-path", GONE_LINK)
    assert h.exists("sys", "class", "iscsi_session", "session2")
    assert h.exists("sys", "class", "nvme", "nvme1")
    assert ["multipath", "-w", STALE_WWID] not in actions.ran
    assert not result.complete
    # the others still ran
    assert out[(K.MAP, "mpathz")].outcome == K.APPLIED
    assert by  # (planned before the changes)


def test_apply_refuses_what_became_ledgered_or_used(tmp_path):
    h, led = _host(tmp_path)
    plan = build_plan(h.roots, led, authoritative=True)
    # after the plan: the stray LUN got mounted, the unused namespace got opened
    h.mount("sdc", "/mnt")
    h.open_by(77, "nvme2n1")
    result = _apply(h, led, plan.items, authoritative=True)
    out = {(r.item.kind, r.item.object): r for r in result.results}
    assert out[(K.SCSI_DEVICE, "4:0:0:2")].outcome == K.REFUSED
    assert "mounted at /mnt" in out[(K.SCSI_DEVICE, "4:0:0:2")].detail
    assert out[(K.ISCSI_SESSION, "session3")].outcome == K.CHANGED  # its LUN stayed
    assert out[(K.NVME_UNUSED, "nvme2")].outcome == K.REFUSED
    assert h.exists("sys", "bus", "scsi", "devices", "4:0:0:2")
    assert h.exists("sys", "class", "iscsi_session", "session3")
    assert h.exists("sys", "class", "nvme", "nvme2")


@pytest.mark.parametrize(
    "kind, obj, evidence",
    [
        # a forged or stale plan naming the ledgered LUN, its map, a mounted LUN, the
        # local root disk, another host's controller, the boot record, a live link
        (K.SCSI_DEVICE, "2:0:0:1", {}),
        (K.MAP_NOT_IN_LEDGER, "mpatha", {}),
        (K.SCSI_DEVICE, "5:0:0:0", {}),
        (K.SCSI_DEVICE, "0:0:0:0", {}),
        (K.NVME_CONTROLLER, "nvme3", {}),
        (K.NVME_UNUSED, "nvme0", {}),
        (K.ISCSI_NODE, f"{BOOT_IQN} 192.0.2.1:3260 default", {}),
        (K.LINK, f"/dev/disk/by-id/scsi-{_udev(WWID1)}", {}),
    ],
)
def test_apply_never_acts_on_ledgered_used_or_foreign_objects(tmp_path, kind, obj, evidence):
    h, led = _host(tmp_path)
    before = sorted(str(p) for p in h.base.rglob("*"))
    actions = FakeActions(h)
    item = PlanItem.from_dict({"kind": kind, "object": obj, "evidence": evidence, "action": ""})
    result = _apply(h, led, [item], authoritative=True, actions=actions)
    assert [r.outcome for r in result.results] in ([K.REFUSED], [K.CHANGED])
    assert actions.ran == []
    assert sorted(str(p) for p in h.base.rglob("*") if "locks" not in str(p)) == before


def test_the_privileged_side_refuses_foreign_objects_on_its_own(tmp_path):
    h, _ = _host(tmp_path)
    actions = FakeActions(h)
    with pytest.raises(NotOwned):
        actions.delete_controller("nvme3")  # another host NQN
    with pytest.raises(NotOwned):
        actions.delete_scsi_device(Hctl.parse("0:0:0:0"))  # the local root disk
    with pytest.raises(NotOwned):
        actions.delete_scsi_device(Hctl.parse("5:0:0:0"))  # mounted
    with pytest.raises(NotOwned):
        actions.forget_wwid(_udev(WWID1))  # its map and LUN are present
    assert h.exists("sys", "class", "nvme", "nvme3")
    assert actions.ran == []


def test_an_unreadable_ledger_fails_each_item(tmp_path):
    h, led = _host(tmp_path)
    plan = build_plan(h.roots, led)
    (tmp_path / "ledger.json").write_text("{not json")
    result = _apply(h, led, plan.items)
    assert {r.outcome for r in result.results} == {K.FAILED}
    assert h.exists("dev", "disk", "by-path", GONE_LINK)


def test_saved_plan_items_round_trip_and_reject_a_wrong_id(tmp_path):
    h, led = _host(tmp_path)
    item = build_plan(h.roots, led).items[0]
    data = json.loads(json.dumps(item.to_dict()))
    assert PlanItem.from_dict(data) == PlanItem(item.kind, item.object, item.evidence, item.action)
    with pytest.raises(InvalidArgument):
        PlanItem.from_dict(dict(data, id="map-0000000000"))
    with pytest.raises(InvalidArgument):
        PlanItem.from_dict(dict(data, kind="rm_rf"))


# ------------------------------------------------------------------ new entrypoints
def test_remove_dangling_link_checks_name_target_and_existence(tmp_path):
    h, _ = _host(tmp_path)
    roots = h.roots
    live = f"scsi-{_udev(WWID1)}"
    with pytest.raises(NotOwned, match="exists"):
        links.do_remove_dangling_link(roots, "by-id", live, "../../sda")
    with pytest.raises(InvalidArgument, match="now points"):
        links.do_remove_dangling_link(roots, "by-path", GONE_LINK, "../../sdyy")
    h.disk_link("by-id", "ata-QEMU_DISK_1", "sdgone")
    with pytest.raises(NotOwned, match="not a link udev makes"):
        links.do_remove_dangling_link(roots, "by-id", "ata-QEMU_DISK_1", "../../sdgone")
    for kind, name, target in [
        ("by-uuid", GONE_LINK, "../../sdzz"),
        ("by-path", "../by-path/x", "../../sdzz"),
        ("by-path", "ip-x;rm", "../../sdzz"),
        ("by-path", GONE_LINK, "../../sd zz"),
        ("by-path", GONE_LINK, "sdzz"),
    ]:
        with pytest.raises(InvalidArgument):
            links.do_remove_dangling_link(roots, kind, name, target)
    (h.base / "dev" / "disk" / "by-id" / "wwn-0xplainfile").write_text("")
    with pytest.raises(InvalidArgument, match="not a symlink"):
        links.do_remove_dangling_link(roots, "by-id", "wwn-0xplainfile", "../../x")
    with pytest.raises(DeviceNotFound):
        links.do_remove_dangling_link(roots, "by-id", "wwn-0xmissing", "../../x")
    assert h.exists("dev", "disk", "by-path", GONE_LINK)
    links.do_remove_dangling_link(roots, "by-path", GONE_LINK, "../../sdzz")
    assert not h.exists("dev", "disk", "by-path", GONE_LINK)
    assert h.exists("dev", "disk", "by-id", live)


def test_remove_dangling_link_refuses_a_link_directory_that_is_a_symlink(tmp_path):
    h, _ = _host(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink("../../sdzz", outside / GONE_LINK)
    shutil.rmtree(h.base / "dev" / "disk" / "by-path")
    os.symlink(outside, h.base / "dev" / "disk" / "by-path")
    with pytest.raises(InvalidArgument):
        links.do_remove_dangling_link(h.roots, "by-path", GONE_LINK, "../../sdzz")
    assert os.path.lexists(outside / GONE_LINK)


def test_forget_stale_wwid_only_for_an_entry_nothing_present_has(tmp_path):
    h, _ = _host(tmp_path)
    ran = []

    def run(argv, timeout=None, **_kw):
        ran.append(argv)
        return commands.CommandResult(argv, 0, "", "", 0.0)

    with pytest.raises(NotOwned, match="multipath map mpatha"):
        multipath.do_forget_stale_wwid(h.roots, _udev(WWID1), run=run)
    with pytest.raises(NotOwned, match="SCSI device 4:0:0:2"):
        h.wwids(_udev(STRAY_WWID))
        multipath.do_forget_stale_wwid(h.roots, _udev(STRAY_WWID), run=run)
    with pytest.raises(DeviceNotFound):
        multipath.do_forget_stale_wwid(h.roots, STALE_WWID, run=run)  # not in the file now
    h.wwids(f"uuid.{UUID1}", STALE_WWID)
    with pytest.raises(NotOwned, match="NVMe namespace nvme0n1"):
        multipath.do_forget_stale_wwid(h.roots, f"uuid.{UUID1}", run=run)
    with pytest.raises(InvalidArgument):
        multipath.do_forget_stale_wwid(h.roots, "-w", run=run)
    assert ran == []
    multipath.do_forget_stale_wwid(h.roots, STALE_WWID, run=run)
    assert ran == [["multipath", "-w", STALE_WWID]]


# ------------------------------------------------------------------ the command
def _cli(h, *argv, ledger=None, human=False):
    out = io.StringIO()
    conf = tmp_conf(h, ledger)
    top = ["--config-file", conf, "--host-root", str(h.base)] + (["--human"] if human else [])
    code = cli.main([*top, "cleanup", *argv], stdout=out)
    return code, out.getvalue()


def tmp_conf(h, ledger) -> str:
    path = h.base / "brick_agent.conf"
    path.write_text(
        "[brick_agent]\n"
        f"lock_path = {h.base / 'locks'}\n"
        f"ledger_path = {ledger.path if ledger else ''}\n"
    )
    return str(path)


def test_cli_plan_json_human_and_exit_codes(tmp_path):
    h, led = _host(tmp_path)
    code, out = _cli(h, ledger=led)
    assert code == 6
    data = json.loads(out)
    assert data["mode"] == "plan" and data["ledger"] == led.path
    assert {(i["kind"], i["object"]) for i in data["items"]} == LEFTOVERS
    code, out = _cli(h, "--ledger", ledger=led)
    assert code == 6
    assert {(i["kind"], i["object"]) for i in json.loads(out)["items"]} == WITH_LEDGER
    code, out = _cli(h, ledger=led, human=True)
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "OBJECT", "ACTION"]
    assert any(GONE_LINK in ln and "rm /dev/disk/by-path/" in ln for ln in lines)
    assert any(ln.startswith("kept iscsi_node_record_without_session") for ln in lines)
    clean = Host(tmp_path / "clean")
    assert _cli(clean) == (
        0,
        json.dumps(json.loads(_cli(clean)[1]), indent=2, sort_keys=True) + "\n",
    )
    assert json.loads(_cli(clean)[1])["items"] == []


def test_cli_refuses_apply_on_a_host_root_and_options_without_apply(tmp_path):
    h, led = _host(tmp_path)
    assert _cli(h, "--apply", ledger=led)[0] == 2
    assert _cli(h, "--only", "map-0", ledger=led)[0] == 2
    assert h.exists("dev", "disk", "by-path", GONE_LINK)


def test_an_item_planned_with_the_ledger_needs_it_at_apply(tmp_path):
    h, led = _host(tmp_path)
    plan = build_plan(h.roots, led, authoritative=True)
    lun = [i for i in plan.items if i.kind == K.SCSI_DEVICE]
    (res,) = _apply(h, led, lun, authoritative=False).results
    assert res.outcome == K.CHANGED and "--ledger" in res.detail
    assert h.exists("sys", "bus", "scsi", "devices", "4:0:0:2")


def test_an_action_error_fails_that_item_and_the_next_ones_still_run(tmp_path):
    h, led = _host(tmp_path)
    plan = build_plan(h.roots, led)

    class Broken(FakeActions):
        def remove_map(self, name):
            raise RuntimeError("privsep daemon did not start")

    result = _apply(h, led, plan.items, actions=Broken(h))
    out = {r.item.kind: r for r in result.results}
    assert out[K.MAP].outcome == K.FAILED and "did not start" in out[K.MAP].detail
    assert out[K.LINK].outcome == K.APPLIED
    assert not result.complete
