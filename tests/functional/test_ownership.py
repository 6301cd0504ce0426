"""The privileged side refuses what the host uses, on the real kernel (issue 13 §3).

A "boot" LUN with a mounted filesystem shares its iSCSI session with a volume the
connector attaches and detaches: the mount and the session survive, and the
privileged delete / logout / node delete aimed at the mounted LUN directly are
refused with NotOwned, which crosses the real privsep daemon as that type.

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest \
         tests/functional/test_ownership.py -m realkernel -q
"""

from __future__ import annotations

import os
import subprocess

import pytest

from brick_agent import privileged
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_agent.errors import NotOwned
from brick_lab import LioIscsiTarget
from brick_lab.initiator import iscsi_login, iscsi_logout, sh
from brick_lab.rawhost import disks_with, read, sessions_of, wait
from tests.functional.conftest import PRIVSEP_DAEMON, make_conf

pytestmark = pytest.mark.realkernel


def _hctl(disk: str) -> str:
    return os.path.basename(os.path.realpath(f"/sys/block/{disk}/device"))


def _mounted(mountpoint: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mountpoint for line in f)


def test_mounted_lun_on_a_shared_target_survives_a_detach(tmp_path):
    conf = make_conf(tmp_path, **PRIVSEP_DAEMON, login_timeout=10.0, device_wait_timeout=None)
    connector = ISCSIConnector(conf=conf)
    mnt = tmp_path / "boot"
    mnt.mkdir()
    try:
        with LioIscsiTarget(luns=2) as t:
            boot, vol = t.luns[0], t.luns[1]
            iscsi_login(t.iqn, t.portals[0])  # the host's own session: every LUN scanned
            try:
                disk = wait(lambda: (disks_with(boot.wwid) or [None])[0], 20, "boot LUN disk")
                sh("mkfs.ext4", "-q", "-F", f"/dev/{disk}")
                sh("mount", f"/dev/{disk}", str(mnt))
                try:
                    (mnt / "canary").write_text("still here")
                    session = sessions_of(t.iqn)
                    props = {
                        "target_portal": t.portals[0],
                        "target_iqn": t.iqn,
                        "target_lun": 1,
                        "volume_id": "vol-1",
                    }
                    info = connector.connect_volume(props)
                    assert info["scsi_wwn"] == vol.scsi_id
                    connector.disconnect_volume(props, info)
                    assert disks_with(vol.wwid) == []
                    assert sessions_of(t.iqn) == session
                    assert _mounted(str(mnt)) and (mnt / "canary").read_text() == "still here"

                    # the privileged calls themselves, through the daemon
                    from brick_agent.privileged import iscsi, scsi

                    with pytest.raises(NotOwned) as err:
                        scsi.delete_scsi_device(_hctl(disk))
                    assert disk in str(err.value) and str(mnt) in str(err.value)
                    with pytest.raises(NotOwned):
                        iscsi.node_logout(t.iqn, t.portals[0])
                    with pytest.raises(NotOwned):
                        iscsi.node_delete(t.iqn, t.portals[0])
                    assert sessions_of(t.iqn) == session
                    assert disks_with(boot.wwid) == [disk]
                    assert read(f"/sys/block/{disk}/device/state") == "running"
                    assert _mounted(str(mnt))
                finally:
                    subprocess.run(["umount", str(mnt)], check=False, timeout=60)
            finally:
                iscsi_logout(t.iqn, t.portals[0])
    finally:
        privileged.set_in_process(True)
