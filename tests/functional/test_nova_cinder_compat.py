"""Nova's and Cinder's own os-brick callers on the real kernel, through the compat layer (issue 14).

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest
     tests/functional/test_nova_cinder_compat.py -q

Nova 34.0.0 (``.venv-nova``) and Cinder 29.0.0 (``.venv-cinder``), built by
``tools/compat/run-nova-tests.sh --cinder`` (tools/run-tests.sh runs it in its host
stage), run in their own Python (tests/functional/compat_driver.py), set up the way
nova-compute / cinder-backup start
(config file parsed, ``priv_context.init(root_helper)``, ``os_brick.setup(CONF)``),
with os-brick 7.1.1 served by brick_agent.  Their code does every host action:

* Nova: ``LibvirtISCSIVolumeDriver`` / ``LibvirtNVMEVolumeDriver`` /
  ``LibvirtFibreChannelVolumeDriver`` ``connect_volume(connection_info, instance)``,
  ``extend_volume``, ``disconnect_volume(..., force=False)``; ``connection_info['data']``
  as Cinder's LVM lio / nvmet targets (v2 props, undated NQN, string port and ns_id) and
  an FC driver emit it, after Cinder's manager added its keys (no attachment id);
* Cinder: ``volume_utils.brick_get_connector(protocol, ..., conn=conn)``,
  ``connect_volume``, ``check_valid_device(path, True)``,
  ``disconnect_volume(data, device_info, force=, ignore_errors=)``
  (backup / copy-volume path), for iSCSI, NVMe-oF and FC.

Every flow runs twice: as root, and as the service's own non-root user the way a
packaged host runs it (brick_lab/service_user.py: a ``nova`` / ``cinder``
system user whose only way to root is ``sudo <service>-rootwrap
/etc/<service>/rootwrap.conf``, with the service's filters plus brick_agent's
``etc/brick_agent/rootwrap.d/privsep.filters``; its config in ``/etc/<service>/``; locks
and ledger in its home).  The privileged work goes through a real privsep daemon: for
root, started from the caller's venv (``<venv>/bin/privsep-helper``); for the service
user, by the service's root helper (``sudo <service>-rootwrap ... privsep-helper``).
Checks read raw sysfs (brick_lab/rawhost.py): the device is the target's volume, O_DIRECT
I/O reaches its backing file, extend shows the new size, and after disconnect no session, disk,
controller, node record or new audit finding is left.

One process per caller (module-scoped): Python start-up and importing Nova are slow
under TCG.  Skipped (with the reason) when the venv is missing, e.g. a ``--lab-only`` run
on a fresh checkout.
"""

from __future__ import annotations

import glob
import os
import pathlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from brick_agent.audit import audit
from brick_agent.host.roots import DEFAULT_ROOTS
from brick_lab import FcoeTarget, LioIscsiTarget, NvmetSubsystem, ServiceUser
from brick_lab.rawhost import (
    MiB,
    dev_uuid,
    disks_with,
    io_roundtrip,
    nvme_ctrls_of,
    read,
    scsi_devices_of,
    sessions_of,
    wait,
    write_read,
)

from tests.functional.callers import CINDER_PY, NOVA_PY, Caller

pytestmark = pytest.mark.realkernel

NOVA_MISSING = (
    f"{NOVA_PY} missing: build it with tools/compat/run-nova-tests.sh "
    "(tools/run-tests.sh does, in its host stage)"
)
CINDER_MISSING = (
    f"{CINDER_PY} missing: build it with tools/compat/run-nova-tests.sh "
    "--cinder (tools/run-tests.sh does, in its host stage)"
)


class Callers:
    """The caller processes of this module, each started on first use and kept (one
    start-up each). Started one after the other: two Python start-ups in parallel took
    3x longer under TCG (111 s and 140 s instead of 34 s and 18 s)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.started: dict[str, Caller] = {}

    def get(self, flow: str, python: pathlib.Path, missing: str, as_user: bool) -> Caller:
        if not python.exists():
            pytest.skip(missing)
        key = f"{flow}-{'user' if as_user else 'root'}"
        if key not in self.started:
            user = ServiceUser(flow, python.parent.parent).create() if as_user else None
            c = self.started[key] = Caller(python, flow, self.tmp.mktemp(key), user)
            c.ready()
            setup = c.setup["result"]
            print(f"\n{key}: start-up {c.startup_seconds:.1f}s, {setup}")
            # the layer serves this process's os_brick, and brick_agent's privileged calls
            # go to a daemon: root starts the caller venv's own helper; the service user
            # goes through sudo and the service's rootwrap, as os-brick's daemon would
            assert setup["enabled"] and setup["enabled_by"] in ("pth", "explicit"), setup
            assert setup["privsep_client_mode"], setup
            # nova-compute 34 runs native threads; cinder-backup/-volume 29 run eventlet
            assert setup["concurrency"] == {"nova": "threading", "cinder": "eventlet"}[flow]
            start = (
                f"sudo {flow}-rootwrap /etc/{flow}/rootwrap.conf privsep-helper"
                if user
                else str(python.parent / "privsep-helper")
            )
            c.helper_command = f"{start} --config-file {c.conf_file}"
            assert c.uid() == (user.uid if user else 0)
        return self.started[key]

    def close(self) -> None:
        for c in self.started.values():
            c.close()


@pytest.fixture(scope="module")
def callers(tmp_path_factory) -> Iterator[Callers]:
    c = Callers(tmp_path_factory)
    try:
        yield c
    finally:
        c.close()


#: every flow runs as root and as the service's own non-root user
AS = pytest.mark.parametrize("as_user", [False, True], ids=["root", "service-user"], indirect=True)


@pytest.fixture
def as_user(request) -> bool:
    return request.param


@pytest.fixture
def nova(callers, as_user) -> Caller:
    return callers.get("nova", NOVA_PY, NOVA_MISSING, as_user)


@pytest.fixture
def cinder(callers, as_user) -> Caller:
    return callers.get("cinder", CINDER_PY, CINDER_MISSING, as_user)


# ------------------------------------------------------------------ raw host checks


def findings() -> set[tuple[str, str]]:
    return {(f.kind, f.name) for f in audit(DEFAULT_ROOTS).findings}


@pytest.fixture
def audit_baseline() -> Iterator[set[tuple[str, str]]]:
    """Audit findings before the test (other tests share the kernel); the test asserts
    none is added (:func:`assert_no_new_findings`)."""
    yield findings()


def assert_no_new_findings(baseline: set[tuple[str, str]], timeout: float = 10.0) -> None:
    """udev removes links asynchronously: wait briefly for the audit to settle."""
    deadline = time.monotonic() + timeout
    while True:
        extra = findings() - baseline
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not extra, f"new audit findings after disconnect: {sorted(extra)}"


def block_bytes(path: str) -> int:
    name = os.path.basename(os.path.realpath(path))
    return int(read(f"/sys/class/block/{name}/size") or 0) * 512


def node_records(iqn: str) -> list[str]:
    """open-iscsi node record files of ``iqn`` (iscsiadm -o delete may leave the emptied
    target directory: not a record, as in test_iscsi)."""
    return [p for p in glob.glob(f"/etc/iscsi/nodes/{iqn}/**", recursive=True) if os.path.isfile(p)]


def privsep_daemons(venv_bin: pathlib.Path) -> list[int]:
    """PIDs of root processes running ``<venv>/bin/privsep-helper`` for brick_agent."""
    helper = str(venv_bin / "privsep-helper")
    pids = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            with open(f"{d}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            st = os.stat(d)
        except OSError:
            continue
        if helper in argv and any("brick_agent.privileged" in a for a in argv) and st.st_uid == 0:
            pids.append(int(os.path.basename(d)))
    return pids


# ------------------------------------------------------------------ connection_info shapes


def manager_keys() -> dict[str, Any]:
    """What Cinder's volume manager adds to every driver's data (research §5, §3.3)."""
    return {
        "qos_specs": None,
        "access_mode": "rw",
        "encrypted": False,
        "cacheable": False,
        "enforce_multipath": False,
    }


def lio_data(t: LioIscsiTarget, volume_id: str) -> dict[str, Any]:
    """Cinder LVM + lio (targets/iscsi.py _get_iscsi_properties): CHAP always, LUN 0."""
    user, password = t.chap
    return {
        "target_discovered": False,
        "target_portal": t.portals[0],
        "target_iqn": t.iqn,
        "target_lun": 0,
        "volume_id": volume_id,
        "auth_method": "CHAP",
        "auth_username": user,
        "auth_password": password,
        **manager_keys(),
    }


def nvmet_data(sub: NvmetSubsystem, nsid: int) -> dict[str, Any]:
    """Cinder LVM + nvmet, nvmeof_conn_info_version=2, not shared: port and ns_id are
    strings, the NQN is the undated ``nqn.<target_prefix>-<volume id>``."""
    port = sub.ports[0]
    return {
        "target_nqn": sub.nqn,
        "vol_uuid": sub.namespaces[nsid].uuid,
        "portals": [[port.traddr, str(port.trsvcid), "tcp"]],
        "ns_id": str(nsid),
        **manager_keys(),
    }


def nova_connection_info(driver_volume_type: str, volume_id: str, data: dict) -> dict:
    """Nova's connection_info after _translate_attachment_ref (attachment id on the BDM)."""
    return {
        "driver_volume_type": driver_volume_type,
        "data": data,
        "serial": volume_id,
        "status": "reserved",
        "instance": "0b6e6b6e-7a1c-4c59-9d35-6c0a5c2e1f01",
        "attached_at": None,
        "detached_at": None,
        "multiattach": False,
    }


# ------------------------------------------------------------------ targets


@pytest.fixture
def lvm_lio_target() -> Iterator[LioIscsiTarget]:
    """LIO as cinder-rtstool sets it up: an ACL for this initiator, CHAP, LUN 0."""
    vol = str(uuid.uuid4())
    with LioIscsiTarget(
        iqn=f"iqn.2010-10.org.openstack:volume-{vol}",
        luns=1,
        initiators=["local"],
        chap=(uuid.uuid4().hex[:20], uuid.uuid4().hex[:16]),
    ) as t:
        t.volume_id = vol  # type: ignore[attr-defined]
        yield t


@pytest.fixture
def lvm_nvmet_subsystem() -> Iterator[NvmetSubsystem]:
    """nvmet as Cinder's LVM nvmet target builds it (target_prefix nvme-subsystem-1,
    nvmet_ns_id 10, namespace uuid = the volume's name_id)."""
    vol = str(uuid.uuid4())
    with NvmetSubsystem(nqn=f"nqn.nvme-subsystem-1-{vol}", namespaces=0) as s:
        s.add_namespace(nsid=10, uuid=vol)
        s.volume_id = vol  # type: ignore[attr-defined]
        yield s


@pytest.fixture
def fc_target() -> Iterator[FcoeTarget]:
    """FCoE with LUNs 0 and 1; LUN 1 unscanned when the test starts (as a fresh export)."""
    with FcoeTarget(luns=2) as t:
        host = t.initiator_hosts[0]
        wait(
            lambda: {d.rsplit(":", 1)[1] for d in scsi_devices_of(host)} >= {"0", "1"},
            30,
            f"the login scan of {host}",
        )
        for d in scsi_devices_of(host):
            if d.endswith(":1"):
                with open(f"/sys/bus/scsi/devices/{d}/delete", "w") as f:
                    f.write("1")
        wait(lambda: disks_with(t.luns[1].wwid) == [], 30, "LUN 1 to go")
        subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)  # its removal too
        yield t


# ------------------------------------------------------------------ Nova


def nova_connect(nova: Caller, kind: str, info: dict, cls: str) -> tuple[dict, str]:
    """Nova's connect_volume; the reply and the device_path Nova stored in data."""
    r = nova.call("connect", driver=kind, connection_info=info)
    assert r["describe"]["connector_class"] == f"brick_agent.os_brick_compat.connectors.{cls}"
    assert_privsep_started_as_configured(nova, r)
    assert "attachment_id" not in r["result"]["data"]
    return r, r["result"]["data"]["device_path"]


def assert_privsep_started_as_configured(caller: Caller, reply: dict) -> None:
    """brick_agent's daemon was started by the command the caller's identity calls for."""
    describe = reply["describe"]
    assert describe["privsep_client_mode"], describe
    assert (describe["privsep_helper_command"] or "").startswith(caller.helper_command), describe


def timings(label: str, **replies: dict) -> None:
    print(f"\n{label}: " + " ".join(f"{op} {r['seconds']}s" for op, r in replies.items()))


def nova_extend(nova: Caller, kind: str, path: str, size: int) -> dict:
    """Nova's extend_volume after the target grew to ``size``: it returns the new size in
    bytes, and the kernel's device shows it."""
    e = nova.call("extend", driver=kind, requested_size=size)
    assert e["result"] == size and block_bytes(path) == size
    return e


@AS
def test_nova_iscsi_lvm_lio(nova, lvm_lio_target, audit_baseline):
    t = lvm_lio_target
    lun = t.luns[0]
    info = nova_connection_info("iscsi", t.volume_id, lio_data(t, t.volume_id))
    r, path = nova_connect(nova, "iscsi", info, "ISCSIConnector")
    assert privsep_daemons(NOVA_PY.parent), "no privsep daemon from .venv-nova"
    (disk,) = disks_with(lun.wwid)
    assert os.path.basename(os.path.realpath(path)) == disk
    assert len(sessions_of(t.iqn)) == 1
    write_read(path, 14, lun.path)

    t.resize_lun(0, 128 * MiB)
    e = nova_extend(nova, "iscsi", path, 128 * MiB)

    d = nova.call("disconnect", driver="iscsi", force=False)
    assert sessions_of(t.iqn) == [] and disks_with(lun.wwid) == []
    assert node_records(t.iqn) == []
    assert_no_new_findings(audit_baseline)
    timings("nova iscsi", connect=r, extend=e, disconnect=d)


@AS
def test_nova_nvme_lvm_nvmet(nova, lvm_nvmet_subsystem, audit_baseline):
    s = lvm_nvmet_subsystem
    ns = s.namespaces[10]
    info = nova_connection_info("nvme", s.volume_id, nvmet_data(s, 10))
    r, path = nova_connect(nova, "nvme", info, "NVMeOFConnector")
    name = os.path.basename(os.path.realpath(path))
    assert dev_uuid(path) == ns.uuid
    assert read(f"/sys/class/block/{name}/nsid") == "10"
    assert len(nvme_ctrls_of(s.nqn)) == 1
    io_roundtrip(path)

    s.resize_namespace(10, 128 * MiB)
    e = nova_extend(nova, "nvme", path, 128 * MiB)

    d = nova.call("disconnect", driver="nvme", force=False)
    assert nvme_ctrls_of(s.nqn) == []
    assert not os.path.exists(f"/sys/class/block/{name}")
    assert_no_new_findings(audit_baseline)
    timings("nova nvme", connect=r, extend=e, disconnect=d)


@AS
def test_nova_nvme_shared_subsystem_last_detach_removes_the_controller(nova, audit_baseline):
    """Two volumes of one subsystem (a shared target): the first detach keeps the
    controller the other uses, the last removes it, as root and as the service user
    (who cannot read other users' open descriptors to tell whether the host uses the
    other namespace)."""
    with NvmetSubsystem(nqn=f"nqn.nvme-subsystem-1-{uuid.uuid4()}", namespaces=0) as s:
        vols = {"a": str(uuid.uuid4()), "b": str(uuid.uuid4())}
        paths = {}
        for nsid, (key, vol) in zip((10, 11), vols.items(), strict=True):
            s.add_namespace(nsid=nsid, uuid=vol)
            info = nova_connection_info("nvme", vol, nvmet_data(s, nsid))
            r = nova.call("connect", driver="nvme", volume=key, connection_info=info)
            paths[key] = r["result"]["data"]["device_path"]
        assert len(nvme_ctrls_of(s.nqn)) == 1
        nova.call("disconnect", driver="nvme", volume="a", force=False)
        assert len(nvme_ctrls_of(s.nqn)) == 1, "the controller volume b uses went"
        io_roundtrip(paths["b"])
        nova.call("disconnect", driver="nvme", volume="b", force=False)
        assert nvme_ctrls_of(s.nqn) == [], nova.stderr_tail()
    assert_no_new_findings(audit_baseline)


@AS
def test_nova_fibre_channel(nova, fc_target, audit_baseline):
    t = fc_target
    lun = t.luns[1]
    host = t.initiator_hosts[0]
    before = scsi_devices_of(host)
    vol = str(uuid.uuid4())
    data = {
        "target_discovered": False,
        "target_lun": 1,
        "target_wwn": [t.target_wwpns[0]],
        "initiator_target_map": {t.initiator_wwpns[0]: [t.target_wwpns[0]]},
        "volume_id": vol,
        **manager_keys(),
    }
    r, path = nova_connect(
        nova, "fc", nova_connection_info("fibre_channel", vol, data), "FibreChannelConnector"
    )
    (disk,) = disks_with(lun.wwid)
    assert path.startswith("/dev/disk/by-id/wwn-0x"), path
    # the link is returned only once udev has no pending claim on it (an earlier path of
    # LUN 1, deleted by the fixture, may still be in udev's queue): it resolves at once
    assert os.path.basename(os.path.realpath(path)) == disk, path
    assert "multipath_id" not in r["result"]["data"]
    write_read(path, 15, lun.path)

    t.resize_lun(1, 64 * MiB)
    e = nova_extend(nova, "fc", path, 64 * MiB)

    d = nova.call("disconnect", driver="fc", force=False)
    assert disks_with(lun.wwid) == []
    wait(lambda: scsi_devices_of(host) == before, 10, "the FC host back to its LUN 0")
    assert_no_new_findings(audit_baseline)
    timings("nova fc", connect=r, extend=e, disconnect=d)


# ------------------------------------------------------------------ Cinder


@AS
def test_cinder_backup_copy_iscsi_and_nvme(
    cinder, lvm_lio_target, lvm_nvmet_subsystem, audit_baseline
):
    t, s = lvm_lio_target, lvm_nvmet_subsystem
    conns = [
        ({"driver_volume_type": "iscsi", "data": lio_data(t, t.volume_id)}, "ISCSIConnector"),
        ({"driver_volume_type": "nvmeof", "data": nvmet_data(s, 10)}, "NVMeOFConnector"),
    ]
    timings = []
    for conn, cls in conns:
        r = cinder.call("connect", conn=conn)
        assert r["result"]["connector_class"] == f"brick_agent.os_brick_compat.connectors.{cls}"
        assert_privsep_started_as_configured(cinder, r)
        path = r["result"]["device"]["path"]
        if cls == "ISCSIConnector":
            (disk,) = disks_with(t.luns[0].wwid)
            assert os.path.basename(os.path.realpath(path)) == disk
            write_read(path, 16, t.luns[0].path)
        else:
            assert dev_uuid(path) == s.namespaces[10].uuid
            io_roundtrip(path)
        assert cinder.call("check_valid")["result"] is True
        d = cinder.call("disconnect", force=True, ignore_errors=False)
        timings.append(f"{cls} connect {r['seconds']}s disconnect {d['seconds']}s")
    assert sessions_of(t.iqn) == [] and disks_with(t.luns[0].wwid) == []
    assert node_records(t.iqn) == []
    assert nvme_ctrls_of(s.nqn) == []
    assert_no_new_findings(audit_baseline)
    print("\ncinder: " + "; ".join(timings))


@AS
def test_cinder_backup_copy_fibre_channel(cinder, fc_target, audit_baseline):
    """The same flow for an FC volume (an FC array driver's data: target_wwn list,
    initiator_target_map), e.g. cinder-backup on a compute host with HBAs."""
    t = fc_target
    lun = t.luns[1]
    host = t.initiator_hosts[0]
    before = scsi_devices_of(host)
    vol = str(uuid.uuid4())
    conn = {
        "driver_volume_type": "fibre_channel",
        "data": {
            "target_discovered": False,
            "target_lun": 1,
            "target_wwn": [t.target_wwpns[0]],
            "initiator_target_map": {t.initiator_wwpns[0]: [t.target_wwpns[0]]},
            "volume_id": vol,
            **manager_keys(),
        },
    }
    r = cinder.call("connect", conn=conn)
    assert (
        r["result"]["connector_class"]
        == "brick_agent.os_brick_compat.connectors.FibreChannelConnector"
    )
    assert_privsep_started_as_configured(cinder, r)
    path = r["result"]["device"]["path"]
    (disk,) = disks_with(lun.wwid)
    assert os.path.basename(os.path.realpath(path)) == disk, path
    write_read(path, 17, lun.path)
    assert cinder.call("check_valid")["result"] is True
    d = cinder.call("disconnect", force=True, ignore_errors=False)
    assert disks_with(lun.wwid) == []
    wait(lambda: scsi_devices_of(host) == before, 10, "the FC host back to its LUN 0")
    assert_no_new_findings(audit_baseline)
    print(f"\ncinder fc: connect {r['seconds']}s disconnect {d['seconds']}s")
