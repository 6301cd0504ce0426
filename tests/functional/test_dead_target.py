"""Detach with the target gone, called as Nova calls it (issue 13 §5.1, §5.2).

``disconnect_volume(connection_properties, None, force=...)`` after the array died:
the kernel decides what can still be done (a transport-offline disk refuses opens,
``delete_controller`` blocks for a minute and more).  Assertions read raw sysfs and
iscsiadm (independent of brick_agent.host).

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest \
    tests/functional/test_dead_target.py -m realkernel -q
"""

from __future__ import annotations

import glob
import os
import subprocess
import time

import pytest

from brick_agent import privileged
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_agent.errors import DeviceBusy, LeftoversRemain
from brick_lab import LioIscsiTarget, NvmetSubsystem
from brick_lab.rawhost import disks_with, read, sessions_of, wait
from brick_lab.rawhost import nvme_ctrls_of as ctrls
from tests.functional.conftest import make_conf

pytestmark = pytest.mark.realkernel

#: seconds the lab gives a dead session before its disks go transport-offline
RECOVERY_TMO = 3


def node_records(iqn: str) -> list[str]:
    p = subprocess.run(["iscsiadm", "-m", "node"], capture_output=True, text=True, timeout=30)
    return [line for line in p.stdout.splitlines() if iqn in line]


def _kill_iscsi_target(t: LioIscsiTarget) -> str:
    """Make ``t`` unreachable (portal removed, its traffic dropped) with a short
    replacement_timeout on the live session; the disk once it is transport-offline."""
    portal = t.portals[0]
    (session,) = sessions_of(t.iqn)
    with open(f"/sys/class/iscsi_session/{session}/recovery_tmo", "w") as f:
        f.write(str(RECOVERY_TMO))
    (disk,) = disks_with(t.luns[0].wwid)
    t.portal_down(portal, drop_traffic=True)
    wait(
        lambda: read(f"/sys/block/{disk}/device/state") == "transport-offline",
        60,
        f"{disk} transport-offline",
    )
    return disk


def _forced_detach(connector, props: dict) -> tuple[float, LeftoversRemain | None]:
    """``disconnect_volume(props, None, force=True)`` as Nova calls it: (seconds, what it
    reported)."""
    start = time.monotonic()
    try:
        connector.disconnect_volume(props, None, force=True)
        reported = None
    except LeftoversRemain as exc:
        reported = exc
    return time.monotonic() - start, reported


def test_iscsi_detach_on_a_dead_target_typed_then_forced_cleans_everything(tmp_path):
    conf = make_conf(tmp_path, login_timeout=10.0, flush_timeout=5.0)
    connector = ISCSIConnector(conf=conf)
    with LioIscsiTarget(luns=1) as t:
        props = {
            "target_portal": t.portals[0],
            "target_iqn": t.iqn,
            "target_lun": 0,
            "volume_id": "vol-dead",
        }
        connector.connect_volume(props)
        disk = _kill_iscsi_target(t)
        state = read(f"/sys/class/iscsi_session/{sessions_of(t.iqn)[0]}/state")
        start = time.monotonic()
        with pytest.raises(DeviceBusy):  # typed, and nothing lost silently
            connector.disconnect_volume(props, None)
        plain = time.monotonic() - start
        assert disks_with(t.luns[0].wwid) == [disk] and sessions_of(t.iqn)
        forced, reported = _forced_detach(connector, props)
        assert sessions_of(t.iqn) == [] and disks_with(t.luns[0].wwid) == []
        assert node_records(t.iqn) == []
        left = reported.leftovers if reported else []
        assert all("flush" in item for item in left), reported  # the one thing skipped
        print(
            f"\ndead iSCSI target (session {state}, {disk} transport-offline): plain detach "
            f"{plain:.2f}s (DeviceBusy), forced detach {forced:.2f}s, reported {reported}"
        )


@pytest.mark.parametrize(
    "when,drop", [("at once", True), ("reconnecting", True), ("at once", False)]
)
def test_nvme_forced_detach_with_the_port_gone_returns_within_flush_timeout(tmp_path, when, drop):
    """``at once``: the controller may still look live (keep-alive has not noticed);
    ``reconnecting``: after the kernel noticed.  ``drop``: the port's traffic is dropped
    (a dead network), else the port is only removed (the target refuses)."""
    flush_timeout = 5.0
    # as Nova runs it: the kernel's reconnect settings of the config defaults
    conf = make_conf(
        tmp_path, flush_timeout=flush_timeout, nvme_ctrl_loss_tmo=None, nvme_reconnect_delay=None
    )
    privileged.init(conf)
    connector = NVMeOFConnector(None, None, conf=conf)
    with NvmetSubsystem(namespaces=1) as sub:
        ns = sub.namespaces[1]
        props = {
            "target_nqn": sub.nqn,
            "vol_uuid": ns.uuid,
            "volume_nguid": ns.nguid,
            "ns_id": 1,
            "portals": [[p.traddr, int(p.trsvcid), "tcp"] for p in sub.ports],
        }
        connector.connect_volume(props)
        (ctrl,) = ctrls(sub.nqn)
        sub.remove_port(sub.ports[0].portal, drop_traffic=drop)
        if when == "reconnecting":
            wait(
                lambda: read(f"/sys/class/nvme/{ctrl}/state") == "connecting",
                90,
                f"{ctrl} reconnecting",
            )
        state = read(f"/sys/class/nvme/{ctrl}/state")
        took, reported = _forced_detach(connector, props)
        # the kernel finishes the abandoned deletion on its own
        start_gone = time.monotonic()
        wait(lambda: not os.path.exists(f"/sys/class/nvme/{ctrl}"), 180, f"{ctrl} deleted")
        gone = time.monotonic() - start_gone
        print(
            f"\nNVMe port gone (traffic dropped: {drop}), detach {when} ({ctrl} {state}): "
            f"forced detach {took:.2f}s (flush_timeout {flush_timeout}s), reported "
            f"{reported}; the kernel finished "
            f"deleting {ctrl} {gone:.1f}s later"
        )
        assert took < flush_timeout + 2.0
        assert not glob.glob(f"/sys/class/nvme/{ctrl}")
