"""NVMe-oF connector on the lab's real kernel against nvmet (issue 4 scenarios).

Each test builds its own nvmet subsystem(s) and must leave no controller
behind.  Assertions read raw sysfs (independent of brick_agent.host).
"""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
import time

import pytest

from brick_agent import privileged
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_agent.errors import DeviceNotFound, VolumeIdentityMismatch
from brick_lab import NvmetSubsystem
from brick_lab.rawhost import MiB, dev_uuid, io_roundtrip, read, wait
from brick_lab.rawhost import nvme_ctrls_of as ctrls
from tests.functional.conftest import PRIVSEP_DAEMON, make_conf

pytestmark = pytest.mark.realkernel


# ------------------------------------------------------------------ helpers


@pytest.fixture
def connector(tmp_path):
    conf = make_conf(tmp_path)
    privileged.init(conf)
    return NVMeOFConnector(None, None, conf=conf)


def props(sub: NvmetSubsystem, nsid: int = 1, portals=None, **extra) -> dict:
    ns = sub.namespaces[nsid]
    d = {
        "target_nqn": sub.nqn,
        "vol_uuid": ns.uuid,
        "volume_nguid": ns.nguid,
        "ns_id": nsid,
        "portals": [[p.traddr, int(p.trsvcid), "tcp"] for p in sub.ports]
        if portals is None
        else portals,
    }
    d.update(extra)
    return d


@pytest.fixture(autouse=True)
def no_leftover_controllers():
    before = set(glob.glob("/sys/class/nvme/nvme*"))
    yield
    after = set(glob.glob("/sys/class/nvme/nvme*"))
    extra = after - before
    for c in extra:  # clean up for the next test, then fail this one
        with open(f"{c}/delete_controller", "w") as f:
            f.write("1")
    assert not extra, f"controllers left behind: {sorted(extra)}"


# ------------------------------------------------------------------ 1: single portal


def test_1_tcp_single_portal_attach_io_detach(connector, nvmet_subsystem):
    sub = nvmet_subsystem
    p = props(sub)
    t0 = time.monotonic()
    info = connector.connect_volume(p)
    attach = time.monotonic() - t0
    assert info["type"] == "block" and info["path"].startswith("/dev/nvme")
    assert dev_uuid(info["path"]) == sub.namespaces[1].uuid
    assert len(ctrls(sub.nqn)) == 1
    c = ctrls(sub.nqn)[0]
    assert read(f"/sys/class/nvme/{c}/hostnqn") == connector.host_identity().hostnqn
    assert connector.get_volume_paths(p) == [info["path"]]
    assert connector.check_valid_device(info["path"])
    io_roundtrip(info["path"])
    vols = [v for v in connector.get_all_available_volumes() if v["subsysnqn"] == sub.nqn]
    assert [v["uuid"] for v in vols] == [sub.namespaces[1].uuid]
    assert vols[0]["controllers"][0]["traddr"] == "127.0.0.1"
    assert vols[0]["controllers"][0]["state"] == "live"
    t0 = time.monotonic()
    connector.disconnect_volume(p, info)
    detach = time.monotonic() - t0
    assert ctrls(sub.nqn) == []
    assert not os.path.exists(info["path"])
    assert connector.get_volume_paths(p) == []
    print(f"\nscenario1 attach {attach:.2f}s detach {detach:.2f}s")


def test_1b_old_format_and_reattach_reuses_identity(connector, nvmet_subsystem):
    sub = nvmet_subsystem
    old = {
        "nqn": sub.nqn,
        "transport_type": "tcp",
        "target_portal": "127.0.0.1",
        "target_port": 4420,
        "volume_nguid": sub.namespaces[1].nguid,
    }
    info = connector.connect_volume(old)
    hostnqn = read(f"/sys/class/nvme/{ctrls(sub.nqn)[0]}/hostnqn")
    assert dev_uuid(info["path"]) == sub.namespaces[1].uuid
    connector.disconnect_volume(old, info)
    info = connector.connect_volume(old)  # same identity on the second connect
    assert read(f"/sys/class/nvme/{ctrls(sub.nqn)[0]}/hostnqn") == hostnqn
    connector.disconnect_volume(old, info)
    assert ctrls(sub.nqn) == []


# ------------------------------------------------------------------ 2: shared subsystem


def test_2_shared_subsystem_detach_keeps_controller_for_other_namespace(connector):
    with NvmetSubsystem(namespaces=2) as sub:
        pa, pb = props(sub, 1), props(sub, 2)
        a = connector.connect_volume(pa)
        b = connector.connect_volume(pb)
        assert a["path"] != b["path"]
        assert len(ctrls(sub.nqn)) == 1
        io_roundtrip(a["path"])
        io_roundtrip(b["path"])

        connector.disconnect_volume(pa, a)
        assert len(ctrls(sub.nqn)) == 1  # namespace 2 still needs it
        io_roundtrip(b["path"])
        # the backend unmaps volume A after the detach (terminate_connection):
        sub.remove_namespace(1)
        wait(lambda: not os.path.exists(a["path"]), 15.0, "namespace 1 removal")
        io_roundtrip(b["path"])

        connector.disconnect_volume(pb, b)
        assert ctrls(sub.nqn) == []


def test_2b_concurrent_detaches_of_one_subsystem_keep_then_remove_its_controller(connector):
    """Eight volumes of one subsystem: four detached at once keep the controller for the
    other four, which stay readable; the last four detached at once remove it, and none
    of the eight detaches fails (one whose namespace went with the controller of
    another's last detach included)."""
    import concurrent.futures

    def detach_at_once(pairs):
        with concurrent.futures.ThreadPoolExecutor(len(pairs)) as pool:
            list(pool.map(lambda pi: connector.disconnect_volume(pi[0], pi[1]), pairs))

    with NvmetSubsystem(namespaces=8) as sub:
        ps = [props(sub, nsid) for nsid in range(1, 9)]
        infos = [connector.connect_volume(p) for p in ps]
        assert len(ctrls(sub.nqn)) == 1 and len({i["path"] for i in infos}) == 8
        detach_at_once(list(zip(ps[:4], infos[:4], strict=True)))
        assert len(ctrls(sub.nqn)) == 1
        for info in infos[4:]:
            io_roundtrip(info["path"])
        detach_at_once(list(zip(ps[4:], infos[4:], strict=True)))
        assert ctrls(sub.nqn) == []
        wait(
            lambda: not any(os.path.exists(i["path"]) for i in infos),
            15.0,
            "namespace devices removal",
        )


# ------------------------------------------------------------------ 5: namespace reuse


def test_5_stale_namespace_with_other_uuid_is_never_returned(tmp_path):
    conf = make_conf(tmp_path, device_wait_timeout=4.0)
    privileged.init(conf)
    connector = NVMeOFConnector(None, None, conf=conf)
    with NvmetSubsystem(namespaces=2) as sub:
        keep = connector.connect_volume(props(sub, 2))  # keeps the controller alive
        old = props(sub, 1)
        old_info = connector.connect_volume(old)
        old_uuid = sub.namespaces[1].uuid
        # backend: volume 1 deleted, nsid 1 reused by a new volume, host not told
        connector.disconnect_volume(old, old_info)
        sub.remove_namespace(1)
        sub.add_namespace(nsid=1)
        new = props(sub, 1)
        assert new["vol_uuid"] != old_uuid

        info = connector.connect_volume(new)
        assert dev_uuid(info["path"]) == new["vol_uuid"]
        # asking for the old volume never yields the new one
        with pytest.raises((DeviceNotFound, VolumeIdentityMismatch)):
            connector.connect_volume(old)
        assert dev_uuid(info["path"]) == new["vol_uuid"]

        connector.disconnect_volume(new, info)
        sub.remove_namespace(1)
        wait(lambda: not os.path.exists(info["path"]), 15.0, "namespace 1 removal")
        connector.disconnect_volume(props(sub, 2), keep)
        assert ctrls(sub.nqn) == []


# ------------------------------------------------------------------ 4: one portal down


def test_4_unreachable_portal_does_not_fail_attach(connector, nvmet_subsystem):
    sub = nvmet_subsystem
    p = props(sub, portals=[["127.0.0.2", 4421, "tcp"], ["127.0.0.1", 4420, "tcp"]])
    t0 = time.monotonic()
    info = connector.connect_volume(p)
    took = time.monotonic() - t0
    assert dev_uuid(info["path"]) == sub.namespaces[1].uuid
    assert [read(f"/sys/class/nvme/{c}/address").split(",")[0] for c in ctrls(sub.nqn)] == [
        "traddr=127.0.0.1"
    ]
    io_roundtrip(info["path"])
    connector.disconnect_volume(p, info)
    assert ctrls(sub.nqn) == []
    print(f"\nscenario4 attach with a dead portal {took:.2f}s")


# ------------------------------------------------------------------ 3: two portals


def test_3_native_multipath_survives_port_removal(connector):
    if read("/sys/module/nvme_core/parameters/multipath") != "Y":
        pytest.skip("native NVMe multipath is off in this kernel")
    with NvmetSubsystem(namespaces=1, ports=("127.0.0.1:4420", "127.0.0.2:4420")) as sub:
        p = props(sub, 1)
        info = connector.connect_volume(p)
        assert len(ctrls(sub.nqn)) == 2
        assert connector.get_volume_paths(p) == [info["path"]]  # one head device
        io_roundtrip(info["path"])
        sub.remove_port("127.0.0.2:4420")
        io_roundtrip(info["path"], offset_mib=8)  # I/O keeps going over the other path
        states = {read(f"/sys/class/nvme/{c}/state") for c in ctrls(sub.nqn)}
        assert "live" in states
        # the dead path's controller (reconnecting forever: ctrl_loss_tmo=-1) goes too
        connector.disconnect_volume(p, info)
        assert ctrls(sub.nqn) == []


def _reload_nvme_core(multipath: str) -> bool:
    """Reload nvme_core with ``multipath``; False (modules restored) when it is in use."""
    removed = subprocess.run(
        ["modprobe", "-r", "nvme_tcp", "nvme_fabrics", "nvme_core"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if removed.returncode != 0:
        subprocess.run(["modprobe", "nvme_tcp"], check=True, timeout=60)
        return False
    subprocess.run(["modprobe", "nvme_core", f"multipath={multipath}"], check=True, timeout=60)
    subprocess.run(["modprobe", "nvme_tcp"], check=True, timeout=60)
    return True


def test_3b_non_native_one_device_per_controller(tmp_path):
    if glob.glob("/sys/class/nvme/nvme*") or not _reload_nvme_core("N"):
        pytest.skip("nvme_core is in use: cannot reload it with multipath=N")
    try:
        conf = make_conf(tmp_path, use_multipath=True)
        privileged.init(conf)
        connector = NVMeOFConnector(None, None, conf=conf)
        with NvmetSubsystem(namespaces=1, ports=("127.0.0.1:4420", "127.0.0.2:4420")) as sub:
            p = props(sub, 1)
            info = connector.connect_volume(p)
            paths = connector.get_volume_paths(p)
            assert len(ctrls(sub.nqn)) == 2 and len(paths) == 2
            assert info["path"] in paths
            assert {dev_uuid(x) for x in paths} == {sub.namespaces[1].uuid}
            io_roundtrip(info["path"])
            connector.disconnect_volume(p, info)
            assert ctrls(sub.nqn) == [] and not any(os.path.exists(x) for x in paths)
    finally:
        if not glob.glob("/sys/class/nvme/nvme*"):
            _reload_nvme_core("Y")
        subprocess.run(["modprobe", "nvme_tcp"], check=True, timeout=60)


def _multipathd(cmd: str) -> None:
    subprocess.run(
        [
            os.path.join(
                os.environ.get("BRICK_LAB_REPO", "."), "tools", "kernel-lab", "guest-multipathd"
            ),
            cmd,
        ],
        check=True,
        timeout=60,
        capture_output=True,
    )


def _mpath_maps() -> list[str]:
    return sorted(
        os.path.basename(d)
        for d in glob.glob("/sys/block/dm-*")
        if (read(f"{d}/dm/uuid") or "").startswith("mpath-")
    )


def _map_paths(dm: str) -> tuple[int, list[list[tuple[str, str]]]]:
    """Map ``dm``'s kernel multipath status (``dmsetup status``): the index of the path
    group the next I/O uses and, per group, its paths as (``nvme0n1``, ``A``|``F``)."""
    major, minor = read(f"/sys/block/{dm}/dev").split(":")
    out = subprocess.run(
        ["dmsetup", "status", "-j", major, "-m", minor],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    tokens = out[out.index("multipath") + 1 :]
    pos = 1 + int(tokens[0])  # feature status args
    pos += 1 + int(tokens[pos])  # hardware handler args
    count, next_group, pos = int(tokens[pos]), int(tokens[pos + 1]), pos + 2
    groups = []
    for _ in range(count):
        pos += 1  # group state A/E/D
        pos += 1 + int(tokens[pos])  # path selector status args
        paths, per_path = int(tokens[pos]), int(tokens[pos + 1])
        pos += 2
        group = []
        for _ in range(paths):
            devno, state = tokens[pos], tokens[pos + 1]
            pos += 3 + per_path
            group.append((os.path.basename(os.path.realpath(f"/sys/dev/block/{devno}")), state))
        groups.append(group)
    return max(next_group - 1, 0), groups


def _remove_leftovers(maps_before: list[str]) -> None:
    """After a failed run: remove the maps and controllers it left (the next tests reload
    nvme_core, which a leftover controller would prevent)."""
    for dm in set(_mpath_maps()) - set(maps_before):
        subprocess.run(
            ["dmsetup", "remove", "--force", read(f"/sys/block/{dm}/dm/name")],
            capture_output=True,
            timeout=60,
        )
    for ctrl in glob.glob("/sys/class/nvme/nvme*"):
        try:
            with open(f"{ctrl}/delete_controller", "w") as f:
                f.write("1")
        except OSError:
            pass


def _io_path(dm: str) -> str:
    """The path a single stream of I/O goes to: the first usable path of the group in
    use (the path selectors break ties by list order)."""
    index, groups = _map_paths(dm)
    return next(dev for dev, state in groups[index] if state == "A")


@pytest.fixture
def non_native_multipath():
    """nvme_core reloaded with multipath=N and multipathd running; yields the dm-multipath
    maps there were before.  Afterwards what a failed test left is removed, multipathd
    stopped (when started here) and nvme_core back to multipath=Y."""
    if glob.glob("/sys/class/nvme/nvme*") or not _reload_nvme_core("N"):
        pytest.skip("nvme_core is in use: cannot reload it with multipath=N")
    running = (
        subprocess.run(["multipathd", "show", "daemon"], capture_output=True, timeout=30).returncode
        == 0
    )
    maps_before: list[str] = []
    try:
        if not running:
            _multipathd("start")
        maps_before = _mpath_maps()
        yield maps_before
    finally:
        _remove_leftovers(maps_before)
        if not running:
            _multipathd("stop")
        if not glob.glob("/sys/class/nvme/nvme*"):
            _reload_nvme_core("Y")
        subprocess.run(["modprobe", "nvme_tcp"], check=True, timeout=60)


def test_3d_non_native_dm_multipath_survives_port_removal(tmp_path, caplog, non_native_multipath):
    """nvme_core multipath=N + use_multipath: one dm map over both controllers' devices,
    I/O survives the removal of one nvmet port; detach leaves no map, no controller."""
    caplog.set_level(logging.INFO, logger="brick_agent")
    maps_before = non_native_multipath
    conf = make_conf(tmp_path, use_multipath=True, enforce_multipath=True)
    privileged.init(conf)
    connector = NVMeOFConnector(None, None, conf=conf)
    with NvmetSubsystem(namespaces=1, ports=("127.0.0.1:4420", "127.0.0.2:4420")) as sub:
        p = props(sub, 1)
        t0 = time.monotonic()
        info = connector.connect_volume(p)
        attach = time.monotonic() - t0
        poked = "adding the paths" in caplog.text
        dm = os.path.basename(info["path"])
        assert dm.startswith("dm-"), info
        slaves = sorted(os.listdir(f"/sys/block/{dm}/slaves"))
        assert len(slaves) == 2 and len(ctrls(sub.nqn)) == 2
        # lost-path I/O fails over instead of queuing for ctrl_loss_tmo (-1: forever)
        assert {read(f"/sys/class/nvme/{c}/fast_io_fail_tmo") for c in ctrls(sub.nqn)} == {"5"}
        assert read(f"/sys/block/{dm}/dm/uuid") == f"mpath-{info['multipath_id']}"
        # multipathd's WWID of an NVMe path: udev ID_WWN = the namespace's sysfs wwid
        assert info["multipath_id"] == read(f"/sys/block/{slaves[0]}/wwid")
        assert {dev_uuid(f"/dev/{s}") for s in slaves} == {sub.namespaces[1].uuid}
        assert connector.get_volume_paths(p) == [info["path"]]
        io_roundtrip(info["path"])
        old = int(read(f"/sys/block/{dm}/size")) * 512
        t0 = time.monotonic()
        sub.resize_namespace(1, old + 32 * MiB)
        assert connector.extend_volume(p) == old + 32 * MiB
        extend = time.monotonic() - t0
        assert int(read(f"/sys/block/{dm}/size")) * 512 == old + 32 * MiB
        # remove the port of the path the I/O goes to: the I/O must fail over
        active = _io_path(dm)
        address = read(f"/sys/block/{active}/device/address")
        lost = next(
            port
            for port in ("127.0.0.1:4420", "127.0.0.2:4420")
            if f"traddr={port.split(':')[0]}," in address + ","
        )
        sub.remove_port(lost)
        t0 = time.monotonic()
        io_roundtrip(info["path"], offset_mib=8)
        failover = time.monotonic() - t0
        assert (active, "F") in [p for group in _map_paths(dm)[1] for p in group]
        t0 = time.monotonic()
        connector.disconnect_volume(p, info)
        detach = time.monotonic() - t0
        assert not os.path.exists(f"/sys/block/{dm}")
        assert _mpath_maps() == maps_before
        assert ctrls(sub.nqn) == []
        print(
            f"\nscenario3d attach {attach:.2f}s (map {dm} {info['multipath_id']} over "
            f"{', '.join(slaves)}; paths added by us: {poked}) "
            f"extend {extend:.2f}s I/O after removing the active path's port "
            f"({lost}) {failover:.2f}s "
            f"detach {detach:.2f}s"
        )


def test_3e_non_native_dm_multipath_one_portal_down_at_connect(tmp_path, non_native_multipath):
    """multipath=N, use_multipath, one of two portals dead: the attach succeeds (a map
    over the live path, or -- multipath not enforced -- the single device) and detaches clean."""
    maps_before = non_native_multipath
    conf = make_conf(tmp_path, use_multipath=True, multipath_wait_timeout=3.0, login_timeout=5.0)
    privileged.init(conf)
    connector = NVMeOFConnector(None, None, conf=conf)
    with NvmetSubsystem(namespaces=1) as sub:
        p = props(sub, 1, portals=[["127.0.0.1", 4420, "tcp"], ["127.0.0.2", 4499, "tcp"]])
        t0 = time.monotonic()
        info = connector.connect_volume(p)
        attach = time.monotonic() - t0
        assert len(ctrls(sub.nqn)) == 1
        io_roundtrip(info["path"])
        connector.disconnect_volume(p, info)
        assert _mpath_maps() == maps_before and ctrls(sub.nqn) == []
        print(f"\nscenario3e attach {attach:.2f}s -> {info}")


def test_3c_ana_inaccessible_path_is_tolerated_and_all_inaccessible_fails_clean(tmp_path):
    """ANA: one path inaccessible -> attach and I/O over the other; every path
    inaccessible -> no head device, DeviceNotFound, and no controller left."""
    if read("/sys/module/nvme_core/parameters/multipath") != "Y":
        pytest.skip("native NVMe multipath is off in this kernel")
    conf = make_conf(tmp_path, device_wait_timeout=3.0)
    privileged.init(conf)
    connector = NVMeOFConnector(None, None, conf=conf)
    with NvmetSubsystem(namespaces=1, ports=("127.0.0.1:4420", "127.0.0.2:4420")) as sub:
        sub.set_ana_state("127.0.0.1:4420", "inaccessible")
        p = props(sub, 1)
        info = connector.connect_volume(p)
        assert dev_uuid(info["path"]) == sub.namespaces[1].uuid
        io_roundtrip(info["path"])
        connector.disconnect_volume(p, info)
        assert ctrls(sub.nqn) == []

        sub.set_ana_state("127.0.0.2:4420", "inaccessible")
        with pytest.raises(DeviceNotFound):
            connector.connect_volume(p)
        assert ctrls(sub.nqn) == []


# ------------------------------------------------------------------ 7: extend


def test_7_extend_returns_new_size(connector, nvmet_subsystem):
    sub = nvmet_subsystem
    p = props(sub)
    info = connector.connect_volume(p)
    old = int(read(f"/sys/class/block/{os.path.basename(info['path'])}/size")) * 512
    sub.resize_namespace(1, old + 32 * MiB)
    new = connector.extend_volume(p)
    assert new == old + 32 * MiB
    connector.disconnect_volume(p, info)


# ------------------------------------------------------------------ privsep daemon


def test_attach_detach_through_the_privsep_daemon(tmp_path, nvmet_subsystem):
    helper = os.path.join(os.path.dirname(sys.executable), "privsep-helper")
    if not os.path.exists(helper):
        pytest.skip("privsep-helper not installed in this venv")
    conf = make_conf(tmp_path, **PRIVSEP_DAEMON)
    privileged.init(conf)
    try:
        connector = NVMeOFConnector(None, None, conf=conf)
        p = props(nvmet_subsystem)
        info = connector.connect_volume(p)
        assert dev_uuid(info["path"]) == nvmet_subsystem.namespaces[1].uuid
        io_roundtrip(info["path"])
        connector.disconnect_volume(p, info)
        assert ctrls(nvmet_subsystem.nqn) == []
    finally:
        privileged.set_in_process(True)


# ------------------------------------------------------------------ 6: replicated (md RAID1)


def _md_members(path: str) -> list[str]:
    md = os.path.basename(os.path.realpath(path))
    return sorted(os.listdir(f"/sys/block/{md}/slaves"))


def _read_block(path: str, offset: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 4096, offset)
    finally:
        os.close(fd)


def _write_block(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("degraded", [False, True])
def test_6_replicated_volume_md_raid1_at_alias(tmp_path, degraded):
    """md RAID1 through the privileged mdadm entrypoints; a re-attach assembles the
    existing array (data intact) instead of re-creating it."""
    conf = make_conf(tmp_path, device_wait_timeout=10.0, login_timeout=5.0)
    privileged.init(conf)
    connector = NVMeOFConnector(None, None, conf=conf)
    with (
        NvmetSubsystem(namespaces=1) as a,
        NvmetSubsystem(namespaces=1, ports=("127.0.0.1:4421",)) as b,
    ):
        rb = props(b)
        if degraded:
            rb["portals"] = [["127.0.0.1", 4499, "tcp"]]  # nothing listens there
        alias = f"vol-{a.token}"
        rp = {
            "vol_uuid": a.namespaces[1].uuid,
            "alias": alias,
            "replica_count": 2,
            "volume_replicas": [props(a), rb],
        }
        info = connector.connect_volume(rp)
        assert info["path"] == f"/dev/md/{alias}" and os.path.exists(info["path"])
        assert len(_md_members(info["path"])) == (1 if degraded else 2)
        io_roundtrip(info["path"])
        marker = os.urandom(4096)
        _write_block(info["path"], 8 * MiB, marker)
        assert connector.get_volume_paths(rp) == [info["path"]]
        connector.disconnect_volume(rp, info)
        assert not os.path.exists(info["path"])
        assert ctrls(a.nqn) == [] and ctrls(b.nqn) == []

        again = connector.connect_volume(rp)  # members carry a superblock: assemble
        try:
            assert again["path"] == info["path"]
            assert _read_block(again["path"], 8 * MiB) == marker
        finally:
            connector.disconnect_volume(rp, again)
        assert not os.path.exists(info["path"])
        assert ctrls(a.nqn) == [] and ctrls(b.nqn) == []


# ------------------------------------------------------------------ nvme-cli contract


def test_privileged_connect_contract_with_nvme_fabrics(tmp_path, nvmet_subsystem):
    """What the default actions rely on: a write to /dev/nvme-fabrics answers with the
    new controller's instance, EALREADY for an identical controller and ECONNREFUSED
    for a closed port; every option reaches the controller."""
    from brick_agent.connectors.nvmeof.actions import (
        AlreadyConnected,
        ConnectRequest,
        PrivilegedNvmeActions,
    )
    from brick_agent.errors import TargetUnreachable

    privileged.init(make_conf(tmp_path))
    conn = NVMeOFConnector(None, None, conf=make_conf(tmp_path))
    ident = conn.host_identity()
    actions = PrivilegedNvmeActions()
    req = ConnectRequest(
        nvmet_subsystem.nqn,
        "tcp",
        "127.0.0.1",
        "4420",
        ident.hostnqn,
        ident.hostid,
        ctrl_loss_tmo=-1,
        reconnect_delay=2,
        keep_alive_tmo=7,
        fast_io_fail_tmo=3,
    )
    name = actions.connect(req)
    try:
        assert ctrls(nvmet_subsystem.nqn) == [name]
        assert read(f"/sys/class/nvme/{name}/subsysnqn") == nvmet_subsystem.nqn
        assert read(f"/sys/class/nvme/{name}/hostnqn") == ident.hostnqn
        assert read(f"/sys/class/nvme/{name}/hostid") == ident.hostid
        assert read(f"/sys/class/nvme/{name}/ctrl_loss_tmo") == "off"
        assert read(f"/sys/class/nvme/{name}/reconnect_delay") == "2"
        assert read(f"/sys/class/nvme/{name}/kato") == "7"
        assert read(f"/sys/class/nvme/{name}/fast_io_fail_tmo") == "3"
        with pytest.raises(AlreadyConnected):
            actions.connect(req)
        with pytest.raises(TargetUnreachable, match="Connection refused"):
            actions.connect(dataclasses_replace(req, trsvcid="4499"))
        assert ctrls(nvmet_subsystem.nqn) == [name]
    finally:
        actions.disconnect(name)
    assert ctrls(nvmet_subsystem.nqn) == []


def dataclasses_replace(obj, **changes):
    import dataclasses

    return dataclasses.replace(obj, **changes)
