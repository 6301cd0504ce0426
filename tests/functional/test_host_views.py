"""brick_agent.host.* against the real kernel of the lab VM.

Each test makes the kernel show a real session / namespace / fc_host (via the
lab fixtures and the stock CLIs) and asserts the read-only host views report
exactly what the target was configured with.  Formats observed are printed
(run with -s to see them).
"""

from __future__ import annotations

import dataclasses

import pytest

from brick_agent.deadline import Deadline
from brick_agent.host import block, fc, iscsi, multipath, nvme, scsi, udev
from brick_agent.host.roots import DEFAULT_ROOTS as R
from brick_agent.host.udev import DeviceWatch
from brick_lab import rawhost
from brick_lab.initiator import (
    iscsi_login,
    iscsi_logout,
    iscsi_node,
    nvme_connect,
    nvme_disconnect,
    sh,
)

pytestmark = pytest.mark.realkernel


def _lun_of(session: iscsi.IscsiSession, wwid: str) -> scsi.ScsiDevice | None:
    for dev in iscsi.session_devices(R, session):
        if dev.wwid == wwid and dev.name:
            return dev
    return None


def test_iscsi_session_lun_and_links(iscsi_target) -> None:
    t = iscsi_target
    lun, portal = t.luns[0], t.portals[0]
    address, port = iscsi.split_portal(portal)
    sh("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", portal)
    with DeviceWatch(subsystems=("block", "scsi")) as watch:
        iscsi_node(t.iqn, portal, "--login")
        try:
            session = watch.wait_for(
                lambda: iscsi.find_session(R, t.iqn, address, port),
                Deadline.after(30),
                what="iSCSI session",
            )
            print(f"watch mode={watch.mode}")
            assert session.state == "LOGGED_IN"
            assert (session.portal_address, session.portal_port, session.tpgt) == (address, port, 1)
            assert session.iface_name == "default"
            host = scsi.scsi_host(R, session.host_number)
            assert host is not None and host.proc_name == "iscsi_tcp"
            dev = watch.wait_for(
                lambda: _lun_of(session, lun.wwid), Deadline.after(30), what="LUN 0"
            )
            print(
                f"scsi wwid={dev.wwid!r} vendor={dev.vendor!r} model={dev.model!r} hctl={dev.hctl}"
            )
            assert dev.hctl.host == session.host_number and dev.hctl.lun == 0
            assert dev.udev_wwid == lun.scsi_id
            assert dev.vendor == "LIO-ORG" and dev.state == "running"
            bdev = block.block_device(R, dev.name)
            assert bdev.size_bytes == lun.size and bdev.wwid == lun.wwid and bdev.hctl == dev.hctl
            assert scsi.scsi_device_by_name(R, dev.name).hctl == dev.hctl

            assert udev.udev_settled_for(R, dev.name, Deadline.after(20), watch=watch) is True
            props = udev.udev_properties(R, dev.name)
            print(
                f"udev ID_SERIAL={props.get('ID_SERIAL')!r} ID_WWN={props.get('ID_WWN')!r} "
                f"ID_WWN_WITH_EXTENSION={props.get('ID_WWN_WITH_EXTENSION')!r}"
            )
            assert props["ID_SERIAL"] == lun.scsi_id  # '3' + NAA hex
            assert props["ID_WWN_WITH_EXTENSION"] == "0x" + lun.naa
            assert scsi.same_wwid(props["ID_SERIAL"], dev.wwid)
            by_path = f"/dev/disk/by-path/ip-{portal}-iscsi-{t.iqn}-lun-0"
            watch.wait_for(
                lambda: block.block_device_for_path(R, by_path), Deadline.after(20), what=by_path
            )
            assert block.block_device_for_path(R, by_path).name == dev.name
            assert by_path in block.links_for(R, dev.name)
            assert f"/dev/disk/by-id/wwn-0x{lun.naa}" in block.links_for(R, dev.name)
        finally:
            iscsi_logout(t.iqn, portal)
        watch.wait_gone(
            lambda: iscsi.find_session(R, t.iqn, address, port),
            Deadline.after(30),
            what="iSCSI session",
        )
        assert not [d for d in scsi.scsi_devices(R) if d.wwid == lun.wwid]


def test_iscsi_two_portals_multipath_map(iscsi_multipath_target) -> None:
    with rawhost.multipathd_running():
        _two_portals_multipath_map(iscsi_multipath_target)


def _two_portals_multipath_map(t) -> None:
    lun = t.luns[0]
    with DeviceWatch(subsystems=("block",)) as watch:
        for portal in t.portals:
            iscsi_login(t.iqn, portal)
        try:
            sessions = watch.wait_for(
                lambda: (lambda s: s if len(s) == 2 else None)(iscsi.find_sessions(R, t.iqn)),
                Deadline.after(30),
                what="2 sessions",
            )
            assert sorted(s.portal_address for s in sessions) == ["127.0.0.1", "127.0.0.2"]
            paths = watch.wait_for(
                lambda: (lambda d: d if len(d) == 2 else None)(
                    [
                        d
                        for s in sessions
                        for d in iscsi.session_devices(R, s)
                        if d.wwid == lun.wwid and d.name
                    ]
                ),
                Deadline.after(30),
                what="2 paths",
            )
            assert len({d.hctl.host for d in paths}) == 2
            sh("multipath", "-a", lun.scsi_id, check=False)
            for d in paths:
                sh("multipathd", "add", "path", f"/dev/{d.name}", check=False)
            m = watch.wait_for(
                lambda: (lambda mm: mm if mm and len(mm.slaves) == 2 else None)(
                    multipath.map_for_wwid(R, lun.wwid)
                ),
                Deadline.after(30),
                what="multipath map",
            )
            print(f"dm map {m.dm_name} name={m.name!r} uuid={m.uuid!r}")
            assert m.wwid == lun.scsi_id
            assert sorted(m.slaves) == sorted(d.name for d in paths)
            # The same map by identity: its 'suspended' flag is live state that
            # multipathd flips while it reloads the table after a path add.
            by_slave = multipath.map_for_slave(R, paths[0].name)
            assert by_slave is not None
            assert dataclasses.replace(by_slave, suspended=m.suspended) == m
            assert m.size_bytes == lun.size
            assert lun.scsi_id in multipath.wwids_file_entries(R)
            assert block.block_device_for_path(R, f"/dev/mapper/{m.name}").name == m.dm_name
        finally:
            for d in multipath.multipath_maps(R):
                if d.wwid == lun.scsi_id:
                    sh("multipath", "-f", d.name or d.dm_name, check=False)
            for portal in t.portals:
                iscsi_logout(t.iqn, portal)
            sh("multipath", "-w", lun.scsi_id, check=False)
        watch.wait_gone(lambda: iscsi.find_sessions(R, t.iqn), Deadline.after(30), what="sessions")


def _hostnqn() -> str:
    with open("/etc/nvme/hostnqn") as f:
        return f.read().strip()


def test_nvme_tcp_controller_and_namespace(nvmet_subsystem) -> None:
    s = nvmet_subsystem
    ns_cfg, port = s.namespaces[1], s.ports[0]
    with DeviceWatch(subsystems=("block", "nvme"), source="kernel") as watch:
        nvme_connect(s.nqn, port)
        try:
            ns = watch.wait_for(
                lambda: (nvme.find_namespaces(R, nqn=s.nqn, uuid=ns_cfg.uuid) or [None])[0],
                Deadline.after(30),
                what="namespace",
            )
            (ctrl,) = nvme.find_controllers(R, nqn=s.nqn)
            print(f"nvme address={ctrl.address!r} state={ctrl.state!r} cntlid={ctrl.cntlid}")
            print(
                f"nvme ns {ns.name} uuid={ns.uuid} nguid={ns.nguid} wwid={ns.wwid!r} "
                f"native={ns.native_multipath}"
            )
            assert ctrl.transport == "tcp" and ctrl.state == "live"
            assert (ctrl.traddr, ctrl.trsvcid) == (port.traddr, port.trsvcid)
            assert ctrl.address.startswith(f"traddr={port.traddr},trsvcid={port.trsvcid}")
            assert ctrl.hostnqn == _hostnqn()
            assert ctrl.subsysnqn == s.nqn and ctrl.subsystem_name is not None
            assert nvme.find_controllers(
                R,
                nqn=s.nqn,
                traddr=port.traddr,
                trsvcid=port.trsvcid,
                transport="tcp",
                hostnqn=_hostnqn(),
            ) == [ctrl]
            assert ns.uuid == nvme.canonical_uuid(ns_cfg.uuid)
            assert ns.nguid == nvme.canonical_nguid(ns_cfg.nguid)
            assert ns.wwid == f"uuid.{ns.uuid}"
            assert ns.nsid == 1 and ns.size_bytes == ns_cfg.size
            assert ns.controllers == (ctrl.name,)
            assert ns.native_multipath == nvme.native_multipath_enabled(R)
            raw_nguid = open(f"/sys/block/{ns.name}/nguid").read().strip()
            print(f"raw nguid attribute={raw_nguid!r}")
            assert nvme.canonical_nguid(raw_nguid) == ns.nguid
            assert block.block_device(R, ns.name).wwid == ns.wwid
            sub = [x for x in nvme.nvme_subsystems(R) if x.nqn == s.nqn]
            assert len(sub) == 1 and ctrl.name in sub[0].controllers
        finally:
            nvme_disconnect(s.nqn)
        watch.wait_gone(
            lambda: nvme.find_controllers(R, nqn=s.nqn), Deadline.after(30), what="controller"
        )
        assert not nvme.find_namespaces(R, uuid=ns_cfg.uuid)


def test_nvme_two_ports_native_multipath(nvmet_multipath_subsystem) -> None:
    s = nvmet_multipath_subsystem
    if not nvme.native_multipath_enabled(R):
        pytest.skip("nvme_core multipath=N in this kernel")
    with DeviceWatch(subsystems=("block", "nvme"), source="kernel") as watch:
        for port in s.ports:
            nvme_connect(s.nqn, port)
        try:

            def both_paths():
                found = nvme.find_namespaces(R, nqn=s.nqn)
                return found if len(found) == 2 and all(len(n.paths) == 2 for n in found) else None

            nss = watch.wait_for(both_paths, Deadline.after(40), what="2 namespaces x 2 paths")
            ctrls = nvme.find_controllers(R, nqn=s.nqn)
            assert sorted(c.traddr for c in ctrls) == ["127.0.0.1", "127.0.0.2"]
            assert len({c.subsystem_name for c in ctrls}) == 1
            for n in nss:
                print(f"head {n.name} paths={n.paths} controllers={n.controllers}")
                cfg = s.namespaces[n.nsid]
                assert n.uuid == nvme.canonical_uuid(cfg.uuid)
                assert sorted(n.controllers) == sorted(c.name for c in ctrls)
                assert all(nvme.head_name(p) == n.name for p in n.paths)
            states = {
                p.name: p.ana_state for p in nvme.nvme_paths(R) if p.head in {n.name for n in nss}
            }
            print(f"ana states {states}")
            assert set(states.values()) <= {"optimized", None}
        finally:
            nvme_disconnect(s.nqn)
        watch.wait_gone(
            lambda: nvme.find_controllers(R, nqn=s.nqn), Deadline.after(30), what="controllers"
        )


def test_fcoe_fc_host_rports_and_lun(fcoe_target) -> None:
    t = fcoe_target
    f = t.fabrics[0]
    number = int(f.initiator_host[len("host") :])
    hosts = {h.host_number: h for h in fc.fc_hosts(R)}
    h = hosts[number]
    print(f"fc_host {h}")
    assert h.port_name == f.initiator_wwpn and h.node_name == f.initiator_wwnn
    assert h.online
    rports = [r for r in fc.fc_remote_ports(R, host_number=number) if r.port_name == f.target_wwpn]
    assert len(rports) == 1
    r = rports[0]
    print(f"rport {r}")
    assert r.is_fcp_target and r.node_name == f.target_wwnn and r.port_state == "Online"
    assert r.scsi_target_id is not None and r.target == f"{number}:{r.channel}:{r.scsi_target_id}"
    assert fc.fc_targets_for(R, number, "0x" + f.target_wwpn) == [(r.channel, r.scsi_target_id)]
    with DeviceWatch(subsystems=("block", "scsi")) as watch:
        dev = watch.wait_for(
            lambda: next(
                (
                    d
                    for d in scsi.scsi_devices(R, host=number)
                    if d.wwid == t.luns[0].wwid and d.name
                ),
                None,
            ),
            Deadline.after(30),
            what="FC LUN 0",
        )
    assert (dev.hctl.channel, dev.hctl.target, dev.hctl.lun) == (r.channel, r.scsi_target_id, 0)
    assert dev.udev_wwid == t.luns[0].scsi_id
    assert f"/rport-{number}:" in dev.sysfs_path
