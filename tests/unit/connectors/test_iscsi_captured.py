"""ISCSIConnector reading sysfs trees captured from the lab's real kernel (tests/unit/data).

The trees are static, so only flows that find everything already in place run
here: attach of an attached volume (session and LUN reused, the LUN is
rescanned to re-check its identity), path queries and extend.  Writes go
through the real privileged ``do_*`` functions into the tree's attribute files.
"""

from __future__ import annotations

import pytest

from brick_agent import config
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_agent.host.iscsi import initiator_name
from brick_agent.host.udev import DeviceWatch
from brick_agent.privileged import scsi as pscsi
from tests.unit.sysfs_trees import extract_tree

SINGLE_IQN = "iqn.2003-01.org.brick-lab:single"
SINGLE_WWID = "36001405aa6d2dc160f6b68a70cef7b43"
SHARED_IQN = "iqn.2003-01.org.brick-lab:shared"
LUN0_WWID = "360014053ee322d90e2e34b78c6e96211"
LUN1_WWID = "36001405b555cd6c63916b35f265d811a"


class TreeActions:
    """Acts on a captured tree through the privileged code; refuses what must not happen."""

    def __init__(self, roots):
        self.roots = roots
        self.done: list[tuple] = []

    def start_daemon(self):
        """In-process privileged code: no daemon to start."""

    def manual_scan_supported(self):
        return True

    def prepare_nodes(self, nodes):
        raise AssertionError("unexpected node records: sessions exist")

    def login(self, node, prepared=False):
        raise AssertionError(f"unexpected login to {node.iqn} {node.portal}: a session exists")

    def discover(self, *a):
        raise AssertionError("unexpected discovery")

    def logout(self, *a):
        raise AssertionError("unexpected logout")

    def scan_lun(self, host, channel, target, lun):
        raise AssertionError("unexpected scan: the LUN exists")

    def rescan_device(self, hctl):
        self.done.append(("rescan", pscsi.do_rescan_scsi_device(self.roots, str(hctl))))

    def delete_device(self, hctl):
        raise AssertionError("unexpected delete")

    def flush(self, device):
        raise AssertionError("unexpected flush")

    def multipath_add(self, wwid, devices):
        raise AssertionError("unexpected multipath_add: the map is complete")

    def multipath_remove(self, name):
        raise AssertionError("unexpected map removal")

    def multipath_forget(self, wwid):
        raise AssertionError("unexpected wwid removal")

    def multipath_resize(self, name):
        self.done.append(("resize", name))

    def multipathd_running(self):
        return True


def connector(roots, tmp_path, multipath=False):
    conf = config.new_conf()
    conf.set_override("lock_path", str(tmp_path / "locks"), group="brick_agent")
    conf.set_override("device_wait_timeout", 1.0, group="brick_agent")
    actions = TreeActions(roots)
    c = ISCSIConnector(
        conf=conf,
        roots=roots,
        actions=actions,
        use_multipath=multipath,
        watch_factory=lambda: DeviceWatch(roots=roots, use_netlink=False, poll_interval=0.01),
    )
    return c, actions


def test_single_attached_volume_is_reused_and_revalidated(tmp_path):
    roots = extract_tree("iscsi-single", tmp_path)
    c, actions = connector(roots, tmp_path)
    props = {"target_portal": "127.0.0.1:3260", "target_iqn": SINGLE_IQN, "target_lun": 0}
    info = c.connect_volume(props)
    assert info == {"type": "block", "path": roots.devfs("sda"), "scsi_wwn": SINGLE_WWID}
    [(what, path)] = actions.done
    assert what == "rescan" and path.endswith("0:0:0:0/rescan")
    with open(roots.sysfs("class", "scsi_device", "0:0:0:0", "device", "rescan")) as f:
        assert f.read().strip() == "1"
    assert c.get_volume_paths(props) == [
        roots.devfs("disk", "by-path", f"ip-127.0.0.1:3260-iscsi-{SINGLE_IQN}-lun-0")
    ]
    [vol] = c.get_all_available_volumes()
    assert vol == {
        "portal": "127.0.0.1:3260",
        "iqn": SINGLE_IQN,
        "lun": 0,
        "hctl": "0:0:0:0",
        "session": 1,
        "wwid": SINGLE_WWID,
        "path": roots.devfs("sda"),
        "multipath": None,
    }
    assert c.extend_volume(props) == 67108864
    assert initiator_name(roots).startswith("iqn.")


def test_shared_multipath_tree(tmp_path):
    roots = extract_tree("iscsi-shared-multipath", tmp_path)
    c, actions = connector(roots, tmp_path, multipath=True)
    props = {
        "target_portals": ["127.0.0.1:3260", "127.0.0.2:3260"],
        "target_iqns": [SHARED_IQN] * 2,
        "target_luns": [1, 1],
    }
    info = c.connect_volume(props)
    assert info == {
        "type": "block",
        "path": roots.devfs("dm-1"),
        "scsi_wwn": LUN1_WWID,
        "multipath_id": LUN1_WWID,
    }
    rescanned = sorted(p.split("/")[-2] for w, p in actions.done if w == "rescan")
    assert rescanned == ["0:0:0:1", "1:0:0:1"]  # both paths re-checked, nothing else
    vols = c.get_all_available_volumes()
    assert len(vols) == 4
    by_lun = {(v["portal"], v["lun"]): v for v in vols}
    assert by_lun[("127.0.0.2:3260", 0)]["wwid"] == LUN0_WWID
    assert by_lun[("127.0.0.2:3260", 0)]["multipath"] == roots.devfs("dm-0")
    assert by_lun[("127.0.0.1:3260", 1)]["multipath"] == roots.devfs("dm-1")
    assert sorted(c.get_volume_paths(props)) == sorted(
        roots.devfs("disk", "by-path", f"ip-{p}-iscsi-{SHARED_IQN}-lun-1")
        for p in ("127.0.0.1:3260", "127.0.0.2:3260")
    )
    size = c.extend_volume(props)
    assert size > 0 and ("resize", LUN1_WWID) in actions.done


@pytest.mark.parametrize("lun,wwid", [(0, LUN0_WWID), (1, LUN1_WWID)])
def test_detach_targets_only_the_volumes_map(tmp_path, lun, wwid):
    """Identify what a detach would touch (read-only part): the right map and paths."""
    roots = extract_tree("iscsi-shared-multipath", tmp_path)
    c, _ = connector(roots, tmp_path, multipath=True)
    props = c._parse(
        {
            "target_portals": ["127.0.0.1:3260", "127.0.0.2:3260"],
            "target_iqns": [SHARED_IQN] * 2,
            "target_luns": [lun, lun],
        }
    )
    found, _ = c._volume_devices(props)
    assert {d.hctl.lun for _, d in found} == {lun}
    devices = [d for _, d in found]
    assert c.ops.expected_wwid({"scsi_wwn": wwid}, devices) == wwid
    assert c.ops.expected_wwid({}, devices) == wwid  # the LUN's paths agree on it
    assert len(found) == 2
