"""brick-agent cleanup on the real kernel (issue 18 §1).

One host carries a leftover of each kind, made with the stock tools (never brick_agent):
an iSCSI session whose LUN was deleted, a node record without a session, a raw login whose
LUN no ledger volume owns, an NVMe/TCP controller nobody uses, a map without paths, a stale
``/etc/multipath/wwids`` line and a dangling by-path link.  Beside them sit what must
survive: a volume attached through brick_agent (in the ledger), a mounted NVMe/TCP disk
nobody ledgered, a controller made with another host's NQN, a local SCSI disk
(scsi_debug) and a dangling link of a local kind.  ``brick-agent cleanup --ledger`` (the
command, privileged calls through the privsep daemon) must plan exactly the leftovers,
``--apply`` must remove exactly them, and a second plan must be empty.

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest \
         tests/functional/test_cleanup.py -m realkernel -q -s
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from brick_agent import privileged
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_lab import LioIscsiTarget, NvmetSubsystem
from brick_lab.initiator import iscsi_login, iscsi_logout, nvme_connect, nvme_disconnect, sh
from brick_lab.rawhost import disks_with, nvme_ctrls_of, nvme_heads_with, read, sessions_of, wait
from tests.functional.conftest import make_conf

pytestmark = pytest.mark.realkernel

GONE_LINK = "/dev/disk/by-path/ip-127.0.0.9:3260-iscsi-iqn.2026-12.lab.cleanup:gone-lun-0"
LOCAL_LINK = "/dev/disk/by-id/ata-LAB_CLEANUP_LOCAL_GONE"
STALE_WWID = "3600140500000000000000000c1ea0001"
MAP_WWID = "3600140500000000000000000c1ea0002"
MAP_NAME = "mpathcleanup"
NODE_IQN = "iqn.2026-12.lab.cleanup:killed-attach"
PORTAL = "127.0.0.1:3260"
FOREIGN_NQN = "nqn.2014-08.org.nvmexpress:uuid:7e1a0c3b-0000-4000-8000-00000000f0e1"
FOREIGN_ID = "7e1a0c3b-0000-4000-8000-00000000f0e1"


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(conf: str, *args: str, human: bool = False) -> tuple[int, str]:
    """``brick-agent [--human] cleanup ARGS``; its privsep daemon imports this checkout too
    (PYTHONPATH: the installed privsep-helper would otherwise load the venv's brick_agent)."""
    argv = [sys.executable, "-m", "brick_agent.cli", "--config-file", conf]
    started = time.monotonic()
    p = subprocess.run(
        argv + (["--human"] if human else []) + ["cleanup", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert p.returncode in (0, 6), f"{p.returncode}: {p.stdout}\n{p.stderr}"
    print(f"[cleanup {' '.join(args)}: exit {p.returncode}, {time.monotonic() - started:.2f} s]")
    return p.returncode, p.stdout


def _hctl(disk: str) -> str:
    return os.path.basename(os.path.realpath(f"/sys/block/{disk}/device"))


def _session_of(disk: str) -> str:
    real = os.path.realpath(f"/sys/block/{disk}/device")
    return next(p for p in real.split("/") if p.startswith("session"))


def _ctrl_of(nqn: str) -> str:
    (ctrl,) = wait(lambda: nvme_ctrls_of(nqn), 20, f"controller of {nqn}")
    return ctrl


@contextlib.contextmanager
def _symlink(path: str, target: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def _wwids_line(wwid: str) -> Iterator[None]:
    path = "/etc/multipath/wwids"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    old = open(path).read() if os.path.exists(path) else "# Multipath wwids, Version : 1.0\n"
    with open(path, "w") as f:
        f.write(old + f"/{wwid}/\n")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


@contextlib.contextmanager
def _pathless_map() -> Iterator[bool]:
    """A multipath map without paths (what ``multipath`` keeps when every path went with
    queue_if_no_path); False when device-mapper refuses one here."""
    sh("modprobe", "dm_multipath", check=False)
    made = sh(
        "dmsetup", "create", MAP_NAME, "--uuid", f"mpath-{MAP_WWID}",
        "--table", "0 2048 multipath 0 0 0 0", check=False,
    ).returncode == 0  # fmt: skip
    try:
        yield made
    finally:
        sh("dmsetup", "remove", MAP_NAME, check=False)


@contextlib.contextmanager
def _node_record(iqn: str) -> Iterator[None]:
    sh("iscsiadm", "-m", "node", "-o", "new", "-T", iqn, "-p", PORTAL)
    sh("iscsiadm", "-m", "node", "-T", iqn, "-p", PORTAL, "-o", "update",
       "-n", "node.startup", "-v", "manual")  # fmt: skip
    try:
        yield
    finally:
        sh("iscsiadm", "-m", "node", "-o", "delete", "-T", iqn, "-p", PORTAL, check=False)


@contextlib.contextmanager
def _local_disk() -> Iterator[str | None]:
    """A local SCSI disk (scsi_debug); None when the module is missing."""
    if sh("modprobe", "scsi_debug", "dev_size_mb=8", check=False).returncode != 0:
        yield None
        return
    try:
        yield wait(
            lambda: next(
                (d for d in os.listdir("/sys/block") if read(f"/sys/block/{d}/device/model")
                 == "scsi_debug"), None,
            ),
            20,
            "scsi_debug disk",
        )  # fmt: skip
    finally:
        sh("rmmod", "scsi_debug", check=False)


@contextlib.contextmanager
def _raw_login(t: LioIscsiTarget) -> Iterator[str]:
    iscsi_login(t.iqn, t.portals[0])
    try:
        yield wait(lambda: (disks_with(t.luns[0].wwid) or [None])[0], 20, f"disk of {t.iqn}")
    finally:
        iscsi_logout(t.iqn, t.portals[0])


@contextlib.contextmanager
def _mounted(dev: str, mnt: str) -> Iterator[None]:
    sh("mkfs.ext4", "-q", "-F", f"/dev/{dev}")
    os.makedirs(mnt, exist_ok=True)
    sh("mount", f"/dev/{dev}", mnt)
    try:
        yield
    finally:
        sh("umount", mnt, check=False)


def _conf_file(tmp_path) -> str:
    path = tmp_path / "brick_agent.conf"
    path.write_text(
        "[brick_agent]\n"
        f"lock_path = {tmp_path / 'locks'}\n"
        f"ledger_path = {tmp_path / 'attachments.json'}\n"
        "privsep_in_process = false\n"
    )
    return str(path)


def test_cleanup_plans_and_removes_exactly_the_leftovers(tmp_path):
    conf = make_conf(tmp_path, ledger_path=str(tmp_path / "attachments.json"))
    privileged.init(conf)
    connector = ISCSIConnector(conf=conf)
    conf_file = _conf_file(tmp_path)
    with contextlib.ExitStack() as stack:
        # survivors: a ledgered volume, a mounted and a foreign NVMe/TCP disk, a local disk
        ledgered = stack.enter_context(LioIscsiTarget(luns=1))
        props = {"target_portal": PORTAL, "target_iqn": ledgered.iqn, "target_lun": 0}
        info = connector.connect_volume(props)
        stack.callback(connector.disconnect_volume, props, None)
        mounted = stack.enter_context(NvmetSubsystem(namespaces=1))
        nvme_connect(mounted.nqn, mounted.ports[0])
        stack.callback(nvme_disconnect, mounted.nqn)
        (mdev,) = wait(lambda: nvme_heads_with(mounted.namespaces[1].uuid), 20, "mounted ns")
        stack.enter_context(_mounted(mdev, str(tmp_path / "mnt")))
        foreign = stack.enter_context(NvmetSubsystem(namespaces=1))
        nvme_connect(
            foreign.nqn, foreign.ports[0], "--hostnqn", FOREIGN_NQN, "--hostid", FOREIGN_ID
        )
        stack.callback(nvme_disconnect, foreign.nqn)
        local = stack.enter_context(_local_disk())
        stack.enter_context(_symlink(LOCAL_LINK, "../../sdzy"))
        # leftovers: a session whose LUN was deleted, a raw login nobody ledgered, a node
        # record without session, an unused controller, a pathless map, a wwids line, a link
        emptied = stack.enter_context(LioIscsiTarget(luns=1))
        edisk = stack.enter_context(_raw_login(emptied))
        esession = _session_of(edisk)
        with open(f"/sys/block/{edisk}/device/delete", "w") as f:
            f.write("1")
        wait(lambda: not disks_with(emptied.luns[0].wwid), 20, "LUN deleted")
        stray = stack.enter_context(LioIscsiTarget(luns=1))
        sdisk = stack.enter_context(_raw_login(stray))
        shctl, ssession = _hctl(sdisk), _session_of(sdisk)
        stack.enter_context(_node_record(NODE_IQN))
        unused = stack.enter_context(NvmetSubsystem(namespaces=1))
        nvme_connect(unused.nqn, unused.ports[0])
        stack.callback(nvme_disconnect, unused.nqn)
        uctrl = _ctrl_of(unused.nqn)
        wait(lambda: nvme_heads_with(unused.namespaces[1].uuid), 20, "unused ns")
        made_map = stack.enter_context(_pathless_map())
        stack.enter_context(_wwids_line(STALE_WWID))
        stack.enter_context(_symlink(GONE_LINK, "../../sdzz"))
        sh("udevadm", "settle", "--timeout=30", check=False)

        expected = {
            ("iscsi_session_without_luns", esession),
            ("iscsi_session_without_luns", ssession),
            ("scsi_device_not_in_ledger", shctl),
            ("iscsi_node_record_without_session", f"{NODE_IQN} {PORTAL} default"),
            ("nvme_controller_namespaces_unused", uctrl),
            ("wwids_entry_without_device", STALE_WWID),
            ("dangling_link", GONE_LINK),
        } | ({("multipath_map_without_usable_paths", MAP_NAME)} if made_map else set())

        code, out = cli(conf_file, "--ledger")
        plan = json.loads(out)
        print("\n--- brick-agent cleanup --ledger\n" + out)
        print(
            "--- brick-agent --human cleanup --ledger\n" + cli(conf_file, "--ledger", human=True)[1]
        )
        assert code == 6 and plan["errors"] == []
        assert {(i["kind"], i["object"]) for i in plan["items"]} == expected
        kept = {k["object"]: k["reason"] for k in plan["kept"]}
        assert "not this host's" in kept[_ctrl_of(foreign.nqn)]
        assert "not a link udev makes" in kept[LOCAL_LINK]

        code, out = cli(conf_file, "--ledger", "--apply")
        print("--- brick-agent cleanup --ledger --apply\n" + out)
        result = json.loads(out)
        assert code == 0, out
        assert {(r["kind"], r["object"], r["outcome"]) for r in result["results"]} == {
            (k, o, "applied") for k, o in expected
        }
        # exactly the leftovers are gone
        assert sessions_of(emptied.iqn) == [] and sessions_of(stray.iqn) == []
        assert disks_with(stray.luns[0].wwid) == []
        assert not os.path.exists(f"/etc/iscsi/nodes/{NODE_IQN}")
        assert not os.path.exists(f"/etc/iscsi/nodes/{emptied.iqn}")
        assert nvme_ctrls_of(unused.nqn) == []
        assert not os.path.lexists(GONE_LINK)
        assert f"/{STALE_WWID}/" not in open("/etc/multipath/wwids").read()
        assert not os.path.exists(f"/dev/mapper/{MAP_NAME}")
        # the rest survives
        assert disks_with(ledgered.luns[0].wwid) == [
            os.path.basename(os.path.realpath(info["path"]))
        ]
        assert len(sessions_of(ledgered.iqn)) == 1
        assert nvme_heads_with(mounted.namespaces[1].uuid) == [mdev]
        assert open(f"/sys/block/{mdev}/size").read().strip() != "0"
        assert any(
            line.split()[4] == str(tmp_path / "mnt") for line in open("/proc/self/mountinfo")
        )
        assert len(nvme_ctrls_of(foreign.nqn)) == 1
        assert local is None or os.path.exists(f"/sys/block/{local}")
        assert os.path.lexists(LOCAL_LINK)
        print(f"local disk: {local or 'scsi_debug missing'}; map made: {made_map}")

        code, out = cli(conf_file, "--ledger")
        assert code == 0 and json.loads(out)["items"] == [], out
        print(
            "--- brick-agent --human cleanup --ledger (after)\n"
            + cli(conf_file, "--ledger", human=True)[1]
        )


def test_apply_skips_an_item_whose_evidence_changed_since_the_plan(tmp_path):
    conf_file = _conf_file(tmp_path)
    with _symlink(GONE_LINK, "../../sdzz"):
        code, out = cli(conf_file)
        assert code == 6
        (item,) = [i for i in json.loads(out)["items"] if i["object"] == GONE_LINK]
        saved = tmp_path / "plan.json"
        saved.write_text(out)
        os.unlink(GONE_LINK)
        os.symlink("../../sdzx", GONE_LINK)  # udev (or someone) changed it meanwhile
        code, out = cli(conf_file, "--apply", "--plan", str(saved), "--only", item["id"])
        print(
            "\n--- brick-agent cleanup --apply --plan plan.json --only " + item["id"] + "\n" + out
        )
        (res,) = json.loads(out)["results"]
        assert code == 6 and res["outcome"] == "changed", out
        assert "'../../sdzz' -> '../../sdzx'" in res["detail"]
        assert os.readlink(GONE_LINK) == "../../sdzx"
