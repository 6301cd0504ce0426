"""Multiattach through the attachment ledger with NVMeOFConnector (fake NVMe kernel)."""

from __future__ import annotations

import os

import pytest

from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_agent.host.udev import DeviceWatch
from brick_agent.ledger import AttachmentLedger
from tests.unit.connectors.nvmeof_fakes import FakeNs, FakeNvmeKernel
from tests.unit.connectors.test_nvmeof import (  # noqa: F401
    G1,
    NQN,
    _conf,
    nvme_dirs,
    props,
    roots,
    tcp,
)


def make(tmp_path, roots):  # noqa: F811
    kernel = FakeNvmeKernel(roots, native=True)
    led = AttachmentLedger(str(tmp_path / "ledger.json"), lock_path=str(tmp_path / "locks"))
    conn = NVMeOFConnector(
        None,
        None,
        conf=_conf(tmp_path),
        roots=roots,
        actions=kernel,
        ledger=led,
        read_only_setter=lambda name, ro: None,
        watch_factory=lambda: DeviceWatch(use_netlink=False, poll_interval=0.01, roots=roots),
    )
    kernel.add_target(NQN, [tcp()], [FakeNs(1, props()["vol_uuid"], G1)])
    return kernel, conn, led


def test_nvme_two_attachments_share_one_namespace_until_the_last_detach(tmp_path, roots):  # noqa: F811
    kernel, conn, led = make(tmp_path, roots)
    a = conn.connect_volume(props(attachment_id="a"))
    b = conn.connect_volume(props(attachment_id="b"))
    assert a == b and len(kernel.requests) == 1 and kernel.rescans == []
    (entry,) = led.entries().values()
    assert entry["protocol"] == "NVMEOF" and sorted(entry["attachments"]) == ["a", "b"]
    conn.disconnect_volume(props(attachment_id="a"), a)
    assert nvme_dirs(roots) == ["nvme0"]
    conn.disconnect_volume(props(attachment_id="b"), b)
    assert nvme_dirs(roots) == []
    assert led.entries() == {}


def test_nvme_second_namespace_exposed_by_the_first_connect_is_not_held_by_anyone(tmp_path, roots):  # noqa: F811
    from tests.unit.connectors.test_nvmeof import U2

    kernel, conn, led = make(tmp_path, roots)
    kernel.subsystems[NQN].namespaces[2] = FakeNs(2, U2, None)  # one subsystem, two volumes
    pa, pb = props(attachment_id="a"), props(vol_uuid=U2, attachment_id="b")
    a = conn.connect_volume(pa)
    b = conn.connect_volume(pb)  # its namespace appeared with the controller
    assert a != b
    conn.disconnect_volume(pa, a)
    assert nvme_dirs(roots) == ["nvme0"]
    (entry,) = led.entries().values()
    assert list(entry["attachments"]) == ["b"]  # b alone holds its namespace
    conn.disconnect_volume(pb, b)
    assert led.entries() == {}


def _nsid_only(**extra):
    """Properties naming the namespace by NSID only (no UUID, no NGUID)."""
    p = props(ns_id=1, **extra)
    del p["vol_uuid"]
    return p


def test_nvme_stale_volume_by_nsid_detach_keeps_the_new_namespace_and_controller(tmp_path, roots):  # noqa: F811
    from brick_agent.host import nvme as hostnvme
    from tests.unit.connectors.test_nvmeof import U2

    kernel, conn, led = make(tmp_path, roots)
    a = conn.connect_volume(_nsid_only(volume_id="vol-A"))
    kernel.subsystems[NQN].namespaces[1] = FakeNs(1, U2, None)  # nsid 1 reused for B
    kernel.rescan("nvme0")
    kernel.rescan("nvme0")  # the target's namespace-change event: the host rescans
    b = conn.connect_volume(_nsid_only(volume_id="vol-B"))
    uuid_at = {roots.devfs(n.name): n.uuid for n in hostnvme.nvme_namespaces(roots)}
    assert uuid_at[b["path"]] == U2
    conn.disconnect_volume(_nsid_only(volume_id="vol-A", device_path=a["path"]), None)
    conn.disconnect_volume(_nsid_only(volume_id="vol-A"), a)
    assert nvme_dirs(roots) == ["nvme0"]
    assert [n.uuid for n in hostnvme.nvme_namespaces(roots)] == [U2]
    (entry,) = led.entries().values()
    assert entry["volume_id"] == "vol-B"
    conn.disconnect_volume(_nsid_only(volume_id="vol-B"), None)
    assert nvme_dirs(roots) == [] and led.entries() == {}


def test_nvme_nsid_only_detach_without_device_info_removes_only_the_recorded_namespace(
    tmp_path,
    roots,  # noqa: F811  (the imported fixture)
):
    from brick_agent.host import nvme as hostnvme
    from tests.unit.connectors.test_nvmeof import U2

    kernel, conn, led = make(tmp_path, roots)
    conn.connect_volume(_nsid_only())
    kernel.subsystems[NQN].namespaces[1] = FakeNs(1, U2, None)  # reused, host not told
    kernel.rescan("nvme0")
    kernel.rescan("nvme0")  # the host now shows the new namespace at nsid 1
    assert [n.uuid for n in hostnvme.nvme_namespaces(roots)] == [U2]
    _use(roots, _device_of(roots, U2), "open")  # the new volume is in use on the host
    conn.disconnect_volume(_nsid_only(), None)  # the old volume's detach: no anchor but nsid
    assert [n.uuid for n in hostnvme.nvme_namespaces(roots)] == [U2]
    assert nvme_dirs(roots) == ["nvme0"]


# ---------------------------------------------------------------- shared subsystem, last detach
def _device_of(roots, uuid):  # noqa: F811
    from brick_agent.host.nvme import nvme_namespaces

    (ns,) = [n for n in nvme_namespaces(roots) if n.uuid == uuid]
    return ns.name


def _use(roots, name, how):  # noqa: F811
    """Make the host use ``/dev/<name>`` the way ``how`` says (fake /proc and sysfs)."""
    import os

    proc = roots.proc
    if how == "open":  # another process, not through us (dd, a backup agent...)
        os.makedirs(os.path.join(proc, "4242", "fd"))
        os.symlink(roots.devfs(name), os.path.join(proc, "4242", "fd", "5"))
        with open(os.path.join(proc, "4242", "comm"), "w") as f:
            f.write("dd\n")
    elif how == "mounted":
        os.makedirs(os.path.join(proc, "self"), exist_ok=True)
        with open(os.path.join(proc, "self", "mountinfo"), "w") as f:  # no device number
            f.write(f"36 1 0:44 / /mnt/backup rw - ext4 /dev/{name} rw\n")
    elif how == "held":  # a dm or md device over it
        os.makedirs(roots.sysfs("class", "block", name, "holders", "dm-7"))


def test_last_detach_removes_a_controller_whose_other_namespace_nobody_uses(tmp_path, roots):  # noqa: F811
    from tests.unit.connectors.test_nvmeof import U2

    kernel, conn, led = make(tmp_path, roots)
    kernel.subsystems[NQN].namespaces[2] = FakeNs(2, U2, None)  # exported, never attached
    conn.connect_volume(props())
    assert len(nvme_dirs(roots)) == 1 and _device_of(roots, U2)
    conn.disconnect_volume(props(), None)  # as Nova calls it
    assert nvme_dirs(roots) == [] and led.entries() == {}


@pytest.mark.parametrize("how", ["open", "mounted", "held"])
def test_last_detach_keeps_the_controller_while_the_host_uses_another_namespace(
    tmp_path,
    roots,  # noqa: F811  (the imported fixture)
    how,
):
    from tests.unit.connectors.test_nvmeof import U2

    kernel, conn, led = make(tmp_path, roots)
    kernel.subsystems[NQN].namespaces[2] = FakeNs(2, U2, None)
    conn.connect_volume(props())
    other = _device_of(roots, U2)
    _use(roots, other, how)
    conn.disconnect_volume(props(), None)
    assert nvme_dirs(roots) == ["nvme0"] and _device_of(roots, U2) == other


def test_last_detach_keeps_the_controller_without_a_ledger_to_ask(tmp_path, roots):  # noqa: F811
    from tests.unit.connectors.test_nvmeof import U2

    kernel, conn, _ = make(tmp_path, roots)
    conn.ledger = None
    kernel.subsystems[NQN].namespaces[2] = FakeNs(2, U2, None)
    conn.connect_volume(props())
    conn.disconnect_volume(props(), None)
    assert nvme_dirs(roots) == ["nvme0"]


def test_a_detach_reads_the_hosts_open_descriptors_at_most_once(tmp_path, roots, monkeypatch):  # noqa: F811
    """16 concurrent detaches of a subsystem queue on its lock: while another of its
    namespaces is attached through us the controller stays, and /proc is not read at all;
    the last detach reads it once for all the other namespaces (not once per namespace)."""
    from brick_agent.host import holders
    from tests.unit.connectors.test_nvmeof import U1, U2, U3

    kernel, conn, led = make(tmp_path, roots)
    sub = kernel.subsystems[NQN]
    sub.namespaces[2] = FakeNs(2, U2, None)
    sub.namespaces[3] = FakeNs(3, U3, None)
    infos = {u: conn.connect_volume(props(vol_uuid=u)) for u in (U1, U2)}
    scans: list[list[str]] = []
    real = holders.open_holders

    def counting(roots_, names, **kw):
        scans.append(list(names))
        return real(roots_, names, **kw)

    monkeypatch.setattr(holders, "open_holders", counting)
    conn.disconnect_volume(props(vol_uuid=U1), infos[U1])  # U2 is still attached
    assert scans == [] and nvme_dirs(roots) == ["nvme0"]
    others = sorted([_device_of(roots, U1), _device_of(roots, U3)])
    conn.disconnect_volume(props(vol_uuid=U2), infos[U2])  # the last one
    assert [sorted(names) for names in scans] == [others]  # one pass for both others
    assert nvme_dirs(roots) == [] and led.entries() == {}


# ---------------------------------------------------------------- two last detaches at once
def _run_in_another_thread(func, *args):
    """Run ``func`` to its end in a thread of its own (the ledger's per-thread state
    then sees a separate call, as two callers' threads are)."""
    import threading

    failures: list[BaseException] = []

    def body():
        try:
            func(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            failures.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    assert not t.is_alive()
    if failures:
        raise failures[0]


def test_last_two_detaches_of_a_subsystem_remove_its_controller_whatever_their_order(
    tmp_path,
    roots,  # noqa: F811  (the imported fixture)
):
    """B's detach keeps the controller (A is attached) and releases the subsystem lock;
    its ledger entry, its attachments cleared, goes only after that.  A's detach in that
    window must not count B's entry as an attachment, or each detach keeps the controller
    for the other and nobody removes it (a leak the audit reports)."""
    from tests.unit.connectors.test_nvmeof import U2

    kernel, conn, led = make(tmp_path, roots)
    kernel.subsystems[NQN].namespaces[2] = FakeNs(2, U2, None)
    pa, pb = props(attachment_id="a"), props(vol_uuid=U2, attachment_id="b")
    a = conn.connect_volume(pa)
    b = conn.connect_volume(pb)
    real_finish = conn._finish
    windows: list[list[str]] = []

    def finish_then_detach_a(leftovers, errors, ignore_errors):
        real_finish(leftovers, errors, ignore_errors)
        if not windows:  # B's kernel part is done, its entry not yet dropped
            windows.append(nvme_dirs(roots))
            _run_in_another_thread(conn.disconnect_volume, pa, a)

    conn._finish = finish_then_detach_a
    conn.disconnect_volume(pb, b)
    assert windows == [["nvme0"]]  # B kept the controller for A
    assert nvme_dirs(roots) == [] and led.entries() == {}


def test_a_detach_whose_namespace_went_with_the_controller_meanwhile_succeeds(
    tmp_path,
    roots,  # noqa: F811  (the imported fixture)
):
    """A's last detach deletes the controller while B's detach is about to flush B's
    namespace (B's attachments already cleared, its device not open): B's flush finds no
    device, which needs no flush, and B's detach succeeds with nothing left behind."""
    from brick_agent.errors import DeviceNotFound
    from tests.unit.connectors.test_nvmeof import U2

    kernel, conn, led = make(tmp_path, roots)
    kernel.subsystems[NQN].namespaces[2] = FakeNs(2, U2, None)
    pa, pb = props(attachment_id="a"), props(vol_uuid=U2, attachment_id="b")
    a = conn.connect_volume(pa)
    b = conn.connect_volume(pb)
    b_dev = roots.devfs(_device_of(roots, U2))
    real_flush = kernel.flush

    def flush(device, timeout):
        if device == b_dev:
            _run_in_another_thread(conn.disconnect_volume, pa, a)  # deletes the controller
            assert nvme_dirs(roots) == []
            raise DeviceNotFound(f"block device {device} does not exist")
        real_flush(device, timeout)

    kernel.flush = flush
    conn.disconnect_volume(pb, b)  # no LeftoversRemain
    assert nvme_dirs(roots) == [] and led.entries() == {}


def test_a_failed_flush_of_a_device_still_present_fails_the_detach(tmp_path, roots):  # noqa: F811
    from brick_agent.errors import LeftoversRemain

    kernel, conn, led = make(tmp_path, roots)
    info = conn.connect_volume(props())
    kernel.fail_flush.add(info["path"])
    with pytest.raises(LeftoversRemain, match="device busy"):
        conn.disconnect_volume(props(), info)
    assert nvme_dirs(roots) == ["nvme0"]


def test_a_detach_that_keeps_the_controller_for_an_attached_volume_needs_no_exclusive_lock(
    tmp_path,
    roots,  # noqa: F811  (the imported fixture)
):
    """While another caller holds the subsystem lock shared (an attach returning a visible
    namespace), the detach of one of two attached volumes keeps the controller at once:
    it does not queue for the exclusive lock.  The last detach still removes it."""
    import threading

    from brick_agent import locking
    from tests.unit.connectors.test_nvmeof import U2

    kernel, conn, led = make(tmp_path, roots)
    kernel.subsystems[NQN].namespaces[2] = FakeNs(2, U2, None)
    pa, pb = props(attachment_id="a"), props(vol_uuid=U2, attachment_id="b")
    a = conn.connect_volume(pa)
    b = conn.connect_volume(pb)
    rw = locking.target_rw_lock("nvme", NQN, lock_path=conn.opts.lock_path)
    done = threading.Event()
    with rw.shared():
        t = threading.Thread(target=lambda: (conn.disconnect_volume(pa, a), done.set()))
        t.start()
        assert done.wait(10), "the keeping detach waited for the exclusive lock"
    t.join()
    assert nvme_dirs(roots) == ["nvme0"] and kernel.flushed == [a["path"]]
    assert [list(e["attachments"]) for e in led.entries().values()] == [["b"]]
    conn.disconnect_volume(pb, b)
    assert nvme_dirs(roots) == [] and led.entries() == {}


def test_a_keeping_detach_reads_one_other_namespace_not_the_whole_subsystem(
    tmp_path,
    roots,  # noqa: F811  (the imported fixture)
    monkeypatch,
):
    """On a subsystem of 12 attached volumes, a detach that keeps the controller finds
    another attached volume's namespace by its recorded UUID and head: it reads the
    identity of its own namespace (its NSID the head tried first) and that one, not of
    all twelve (the cost does not grow with the subsystem's size)."""
    import uuid as uuidmod

    from brick_agent.host import nvme as hostnvme

    kernel, conn, led = make(tmp_path, roots)
    uuids = [props()["vol_uuid"]] + [str(uuidmod.UUID(int=0x5000 + i)) for i in range(2, 13)]
    for nsid, u in enumerate(uuids[1:], start=2):
        kernel.subsystems[NQN].namespaces[nsid] = FakeNs(nsid, u, None)
    nsids = {u: nsid for nsid, u in enumerate(uuids, start=1)}  # as Cinder's nvmet sends

    def p(u):
        return props(vol_uuid=u, ns_id=nsids[u])

    infos = {u: conn.connect_volume(p(u)) for u in uuids}
    reads: list[str] = []
    real = hostnvme._may_carry

    def counting(path, want_wwid):
        reads.append(os.path.basename(path))
        return real(path, want_wwid)

    monkeypatch.setattr(hostnvme, "_may_carry", counting)
    conn.disconnect_volume(p(uuids[5]), infos[uuids[5]])
    assert nvme_dirs(roots) == ["nvme0"]
    assert 1 <= len(reads) <= 4, reads
    monkeypatch.setattr(hostnvme, "_may_carry", real)
    for u in uuids:
        if u != uuids[5]:
            conn.disconnect_volume(p(u), infos[u])
    assert nvme_dirs(roots) == [] and led.entries() == {}


def test_a_flush_that_fails_while_the_controller_is_being_deleted_waits_for_the_device(
    tmp_path,
    roots,  # noqa: F811  (the imported fixture)
):
    """The flush of a namespace whose controller another detach is deleting fails (the
    privileged side no longer finds its fabric controller) while the device is still
    there: with no live controller left, the detach waits for the device to go (it goes
    with the controller) instead of failing."""
    import threading

    from brick_agent.errors import NotOwned

    kernel, conn, led = make(tmp_path, roots)
    info = conn.connect_volume(props())
    (ctrl,) = nvme_dirs(roots)
    state = roots.sysfs("class", "nvme", ctrl, "state")

    def flush(device, timeout):
        with open(state, "w") as f:
            f.write("deleting\n")
        threading.Timer(0.2, kernel.disconnect, args=(ctrl,)).start()
        raise NotOwned(f"block device {device}", "no fabric controller")

    kernel.flush = flush
    conn.disconnect_volume(props(), info)  # no LeftoversRemain
    assert nvme_dirs(roots) == [] and led.entries() == {}
