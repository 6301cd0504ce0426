"""FibreChannelConnector on real fc_hosts in the lab VM (software FCoE VN2VN + tcm_fc), issue 5.

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest
     tests/functional/test_fibre_channel.py -q -s

One FCoE target with 3 LUNs over two veth "fabrics" is built once for the
module (FCoE setup costs ~20 s under emulation); each test leaves the host as
it found it.  The kernel scans every LUN when an rport logs in; the fixture
deletes LUNs 1 and 2 again so tests start with only LUN 0 (the fixture's)
present.  Leftover checks read raw sysfs.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from brick_agent import privileged
from brick_agent.connectors.fc.connector import FibreChannelConnector
from brick_agent.errors import TargetUnreachable
from brick_lab import FcoeTarget
from brick_lab.rawhost import (
    disks_with,
    maps_with,
    multipathd_running,
    scsi_devices_of,
    wait,
    write_read,
)
from tests.functional.conftest import PRIVSEP_DAEMON, make_conf

pytestmark = pytest.mark.realkernel


def snapshot(t: FcoeTarget) -> dict[str, list[str]]:
    return {h: scsi_devices_of(h) for h in t.initiator_hosts}


def settle_to(t: FcoeTarget, want: dict[str, list[str]], timeout: float = 5.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        now = snapshot(t)
        if now == want or time.monotonic() > end:
            return now
        time.sleep(0.1)


@pytest.fixture(scope="module")
def fc():
    """The kernel scans every LUN (REPORT LUNS) when the rport logs in: wait for that
    to finish, then delete LUNs 1 and 2 so each test starts with them unscanned."""
    with FcoeTarget(luns=3, fabrics=2) as t:
        for host in t.initiator_hosts:
            n = host[len("host") :]
            wait(
                lambda host=host: (
                    {d.rsplit(":", 1)[1] for d in scsi_devices_of(host)} >= {"0", "1", "2"}
                ),
                30,
                f"the login scan of {host}",
            )
            for d in scsi_devices_of(host):
                if not d.endswith(":0"):
                    with open(f"/sys/bus/scsi/devices/{d}/delete", "w") as f:
                        f.write("1")
            wait(
                lambda host=host, n=n: (
                    scsi_devices_of(host) == [f"{n}:0:0:0"]
                    or [x.rsplit(":", 1)[1] for x in scsi_devices_of(host)] == ["0"]
                ),
                30,
                f"LUNs 1-2 of {host} to go",
            )
        # and udev done with their removal: the tests start from a settled host (an attach
        # racing a queued removal of another path of its LUN is covered in the unit suite)
        subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)
        yield t


@pytest.fixture
def conf(tmp_path):
    return make_conf(tmp_path, device_wait_timeout=15.0)


@pytest.fixture
def baseline(fc):
    before = snapshot(fc)
    yield before
    assert settle_to(fc, before) == before, "test left SCSI devices behind"


def props(t: FcoeTarget, lun: int, fabrics: tuple[int, ...] = (0,), **extra) -> dict:
    return {
        "target_wwns": [t.target_wwpns[f] for f in fabrics],
        "target_lun": lun,
        "volume_id": f"vol-{lun}",
        **extra,
    }


# ---------------------------------------------------------------- 1. one LUN, I/O, clean detach
def test_1_attach_scans_only_that_lun_io_detach_leaves_nothing(fc, conf, baseline):
    conn = FibreChannelConnector(conf=conf)
    lun = fc.luns[1]
    start = time.monotonic()
    info = conn.connect_volume(props(fc, 1))
    attach = time.monotonic() - start
    host0, host1 = fc.initiator_hosts
    new = sorted(set(scsi_devices_of(host0)) - set(baseline[host0]))
    assert len(new) == 1 and new[0].endswith(":1"), new  # LUN 2 not scanned
    assert scsi_devices_of(host1) == baseline[host1]  # other fabric untouched
    assert info["type"] == "block" and info["scsi_wwn"] == lun.scsi_id
    assert "multipath_id" not in info
    assert info["path"].startswith("/dev/disk/by-id/wwn-0x"), info["path"]
    assert os.path.basename(os.path.realpath(info["path"])) == disks_with(lun.wwid)[0]
    write_read(info["path"], 1, lun.path)
    assert conn.check_valid_device(info["path"])
    vols = conn.get_all_available_volumes(props(fc, 1))
    assert {(v["target_wwpn"], v["lun"], v["wwid"]) for v in vols} >= {
        (fc.target_wwpns[0], 1, lun.scsi_id)
    }
    start = time.monotonic()
    conn.disconnect_volume(props(fc, 1), info)
    detach = time.monotonic() - start
    assert disks_with(lun.wwid) == []
    assert settle_to(fc, baseline) == baseline
    print(f"\nFC single path: attach {attach:.2f}s detach {detach:.2f}s")


# ---------------------------------------------------------------- 2. initiator_target_map
def test_2_initiator_target_map_restricts_to_the_mapped_hba(fc, conf, baseline):
    conn = FibreChannelConnector(conf=conf)
    itmap = {fc.initiator_wwpns[1]: [fc.target_wwpns[1]]}
    p = props(fc, 2, (0, 1), initiator_target_map=itmap)
    info = conn.connect_volume(p)
    host0, host1 = fc.initiator_hosts
    assert scsi_devices_of(host0) == baseline[host0]
    assert sorted(set(scsi_devices_of(host1)) - set(baseline[host1]))[0].endswith(":2")
    assert info["scsi_wwn"] == fc.luns[2].scsi_id
    write_read(info["path"], 2, fc.luns[2].path)
    conn.disconnect_volume(p, info)


# ---------------------------------------------------------------- 3. two LUNs, detach one
def test_3_two_luns_detach_one_other_keeps_io(fc, conf, baseline):
    conn = FibreChannelConnector(conf=conf)
    a = conn.connect_volume(props(fc, 1))
    b = conn.connect_volume(props(fc, 2))
    assert a["scsi_wwn"] != b["scsi_wwn"]
    conn.disconnect_volume(props(fc, 1), a)
    assert disks_with(fc.luns[1].wwid) == [] and len(disks_with(fc.luns[2].wwid)) == 1
    write_read(b["path"], 3, fc.luns[2].path)
    # extend the survivor while we are here
    fc.resize_lun(2, fc.luns[2].size + 16 * 1024 * 1024)
    assert conn.extend_volume(props(fc, 2)) == fc.luns[2].size
    conn.disconnect_volume(props(fc, 2), b)


# ---------------------------------------------------------------- 4. wrong target WWPN
def test_4_wrong_target_wwpn_fails_within_deadline_leaves_nothing(fc, conf, baseline):
    conf.set_override("device_wait_timeout", 4.0, group="brick_agent")
    conn = FibreChannelConnector(conf=conf)
    bad = {"target_wwn": "2000aabbccddeeff", "target_lun": 1}  # wildcard scan on (default)
    start = time.monotonic()
    with pytest.raises(TargetUnreachable, match="2000aabbccddeeff"):
        conn.connect_volume(bad)
    took = time.monotonic() - start
    assert took < 4.0 + 4.0, took
    assert settle_to(fc, baseline) == baseline  # wildcard by-products deleted again
    print(f"\nwrong WWPN failed in {took:.2f}s")


# ---------------------------------------------------------------- 5. two HBAs + multipath
@pytest.fixture
def multipathd(fc):
    with multipathd_running():
        yield
        # multipathd maps the fixture's LUN 0 (two paths) on its own: not ours, but remove it
        subprocess.run(["multipath", "-f", fc.luns[0].scsi_id], capture_output=True, timeout=60)


def test_5_two_hbas_multipath_one_map_two_paths(fc, conf, baseline, multipathd):
    conf.set_override("use_multipath", True, group="brick_agent")
    conn = FibreChannelConnector(conf=conf)
    assert conn.supports_multipath()
    lun = fc.luns[1]
    p = props(fc, 1, (0, 1))
    start = time.monotonic()
    info = conn.connect_volume(p)
    attach = time.monotonic() - start
    assert info["multipath_id"] == info["scsi_wwn"] == lun.scsi_id
    [dm] = maps_with(lun.scsi_id)
    assert os.path.basename(os.path.realpath(info["path"])) == dm
    assert sorted(os.listdir(f"/sys/block/{dm}/slaves")) == disks_with(lun.wwid)
    assert len(disks_with(lun.wwid)) == 2
    write_read(info["path"], 5, lun.path)
    start = time.monotonic()
    conn.disconnect_volume(p, info)
    detach = time.monotonic() - start
    assert maps_with(lun.scsi_id) == [] and disks_with(lun.wwid) == []
    print(f"\nFC multipath (2 HBAs): attach {attach:.2f}s detach {detach:.2f}s")


# ---------------------------------------------------------------- privsep daemon
def test_attach_detach_through_the_privsep_daemon(fc, tmp_path, baseline):
    c = make_conf(tmp_path, **PRIVSEP_DAEMON, device_wait_timeout=None)
    conn = FibreChannelConnector(conf=c)
    try:
        info = conn.connect_volume(props(fc, 2, (1,)))
        from brick_agent.privileged import diag

        assert diag.identity()["pid"] != os.getpid()
        write_read(info["path"], 7, fc.luns[2].path)
        conn.disconnect_volume(props(fc, 2, (1,)), info)
        assert disks_with(fc.luns[2].wwid) == []
    finally:
        privileged.set_in_process(True)
