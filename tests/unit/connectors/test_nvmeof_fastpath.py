"""Concurrent-attach costs of the NVMe-oF connector (issue 8), on the fake NVMe kernel.

An attach whose namespace is already visible must not rescan, connect or wait;
sysfs reads are limited to the volume's own subsystem; a detach flushes before
it takes the subsystem lock.
"""

from __future__ import annotations

import os
import threading

import pytest

from brick_agent import locking
from brick_agent.host import nvme as hostnvme
from tests.unit.connectors.nvmeof_fakes import FakeNs
from tests.unit.connectors.test_nvmeof import NQN, NQN2, P1, P2, U1, U2, U3, make, props, roots, tcp  # noqa: F401 - roots is a fixture


def _no_watch():
    raise AssertionError("a visible namespace needs no device watch")


def test_attach_of_visible_namespace_neither_rescans_nor_connects_nor_waits(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None), FakeNs(2, U2, None)])
    first = conn.connect_volume(props(vol_uuid=U1))
    conn._watch_factory = _no_watch

    second = conn.connect_volume(props(vol_uuid=U2))

    assert first["path"] == roots.devfs("nvme0n1") and second["path"] == roots.devfs("nvme0n2")
    assert len(kernel.requests) == 1 and kernel.rescans == []


def test_visible_namespace_with_a_missing_portal_still_connects_it(tmp_path, roots):
    """Native multipath wants every portal: the namespace being visible through one
    controller does not skip connecting the other portal."""
    kernel, conn = make(tmp_path, roots, native=True)
    kernel.add_target(
        NQN, [tcp("127.0.0.1"), tcp("127.0.0.2")], [FakeNs(1, U1, None), FakeNs(2, U2, None)]
    )
    conn.connect_volume(props(vol_uuid=U1, portals=(P1,)))

    info = conn.connect_volume(props(vol_uuid=U2, portals=(P1, P2)))

    assert len(kernel.requests) == 2 and kernel.rescans == []
    ns = [n for n in hostnvme.nvme_namespaces(roots) if roots.devfs(n.name) == info["path"]][0]
    assert ns.uuid == U2 and sorted(ns.controllers) == ["nvme0", "nvme1"]


def test_namespace_mapped_without_aen_is_still_found_by_a_rescan(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    sub = kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    conn.connect_volume(props(vol_uuid=U1))
    sub.namespaces[2] = FakeNs(2, U2, None)  # not visible until a rescan

    info = conn.connect_volume(props(vol_uuid=U2))

    assert kernel.rescans == ["nvme0"] and info["path"] == roots.devfs("nvme0n2")


@pytest.mark.parametrize("native", [True, False])
def test_subsystem_view_is_the_full_view_restricted_to_one_subsystem(tmp_path, roots, native):
    kernel, conn = make(tmp_path, roots, native=native)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None), FakeNs(2, U2, "b2" * 16)])
    kernel.add_target(NQN2, [tcp()], [FakeNs(1, U3, None)])
    conn.connect_volume(props(vol_uuid=U1))
    conn.connect_volume(props(nqn=NQN2, vol_uuid=U3))
    subsystems = {s.name: s.nqn for s in hostnvme.nvme_subsystems(roots)}

    ctrls, nss = hostnvme.subsystem_view(roots, NQN)

    assert ctrls == [c for c in hostnvme.nvme_controllers(roots) if c.subsysnqn == NQN]
    assert sorted(nss, key=lambda n: n.name) == sorted(
        (n for n in hostnvme.nvme_namespaces(roots) if subsystems[n.subsystem_name] == NQN),
        key=lambda n: n.name,
    )
    assert [n.uuid for n in nss] and {n.uuid for n in nss} == {U1, U2}
    # the UUID filter keeps only what can be that volume
    _, only = hostnvme.subsystem_view(roots, NQN, uuid=U2.upper())
    assert [n.uuid for n in only] == [U2]
    assert hostnvme.subsystem_view(roots, "nqn.2014-08.org.example:none") == ([], [])


def test_detach_flushes_before_taking_the_subsystem_lock(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None)])
    info = conn.connect_volume(props())
    errors = []

    def detach():
        try:
            conn.disconnect_volume(props(), info)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    with locking.target_rw_lock("nvme", NQN, lock_path=conn.opts.lock_path).exclusive():
        worker = threading.Thread(target=detach)
        worker.start()
        for _ in range(500):
            if kernel.flushed:
                break
            threading.Event().wait(0.01)
        # flushed while the lock is held elsewhere; the controller waits for the lock
        assert kernel.flushed == [info["path"]]
        assert worker.is_alive() and kernel.controller_names() == ["nvme0"]
    worker.join(10)
    assert errors == [] and kernel.controller_names() == []
    assert not os.path.exists(info["path"])


def test_detach_of_one_of_many_keeps_the_controller_without_reading_the_others(
    tmp_path, roots, monkeypatch
):
    kernel, conn = make(tmp_path, roots)
    kernel.add_target(
        NQN, [tcp()], [FakeNs(i, str(__import__("uuid").UUID(int=i)), None) for i in range(1, 9)]
    )
    mine = str(__import__("uuid").UUID(int=3))
    info = conn.connect_volume(props(vol_uuid=mine))
    read = []
    real = hostnvme._ns_identity
    monkeypatch.setattr(hostnvme, "_ns_identity", lambda p, *a: read.append(p) or real(p, *a))

    conn.disconnect_volume(props(vol_uuid=mine), info)

    assert kernel.controller_names() == ["nvme0"]  # 7 other namespaces keep it
    assert kernel.flushed == [info["path"]]
    assert {os.path.basename(p) for p in read} == {os.path.basename(info["path"])}


def _eight(kernel):
    uuids = [str(__import__("uuid").UUID(int=0x100 + i)) for i in range(1, 9)]
    kernel.add_target(NQN, [tcp()], [FakeNs(i, u, None) for i, u in enumerate(uuids, 1)])
    return uuids


class _Meter:
    """Wraps a connector method: records intervals and the peak number inside at once."""

    def __init__(self, fn, hold):
        self.fn, self.hold = fn, hold
        self.guard = threading.Lock()
        self.inside = self.peak = 0
        self.spans: list[tuple[float, float]] = []

    def __call__(self, *args, **kwargs):
        import time

        with self.guard:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
        start = time.monotonic()
        try:
            time.sleep(self.hold)
            return self.fn(*args, **kwargs)
        finally:
            end = time.monotonic()
            with self.guard:
                self.inside -= 1
                self.spans.append((start, end))


def _in_threads(fns):
    results, errors = [None] * len(fns), []
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait(10)
        try:
            results[i] = fns[i]()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results, errors


def test_concurrent_attaches_of_visible_namespaces_overlap_under_the_shared_lock(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    uuids = _eight(kernel)
    conn.connect_volume(props(vol_uuid=uuids[0]))  # the controller exists
    meter = conn._verify = _Meter(conn._verify, 0.1)
    conn._watch_factory = _no_watch

    results, errors = _in_threads(
        [lambda u=u: conn.connect_volume(props(vol_uuid=u)) for u in uuids]
    )

    assert errors == []
    assert meter.peak > 1  # they held the lock together
    assert [r["path"] for r in results] == [roots.devfs(f"nvme0n{i}") for i in range(1, 9)]
    assert len(kernel.requests) == 1 and kernel.rescans == []


def test_concurrent_first_attaches_connect_once_and_all_succeed(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    uuids = _eight(kernel)

    results, errors = _in_threads(
        [lambda u=u: conn.connect_volume(props(vol_uuid=u)) for u in uuids]
    )

    assert errors == []
    assert sorted(r["path"] for r in results) == sorted(
        roots.devfs(f"nvme0n{i}") for i in range(1, 9)
    )
    assert len(kernel.requests) == 1 and kernel.controller_names() == ["nvme0"]


def test_attach_and_detach_of_one_subsystem_never_overlap(tmp_path, roots):
    kernel, conn = make(tmp_path, roots)
    uuids = _eight(kernel)
    infos = {u: conn.connect_volume(props(vol_uuid=u)) for u in uuids[:2]}
    attach = conn._verify = _Meter(conn._verify, 0.03)
    detach = conn._detach_target = _Meter(conn._detach_target, 0.1)

    def attaches(us):
        return lambda: [conn.connect_volume(props(vol_uuid=u)) for u in us]

    _, errors = _in_threads(
        [
            attaches(uuids[2:5]),
            attaches(uuids[5:8]),
            attaches(uuids[2:8:2]),
            lambda: conn.disconnect_volume(props(vol_uuid=uuids[0]), infos[uuids[0]]),
            lambda: conn.disconnect_volume(props(vol_uuid=uuids[1]), infos[uuids[1]]),
        ]
    )

    assert errors == []
    assert len(detach.spans) == 2 and len(attach.spans) >= 9
    assert attach.peak > 1 and detach.peak == 1
    for d in detach.spans:
        for a in attach.spans:
            assert not (a[0] < d[1] and d[0] < a[1]), (a, d)
    assert kernel.controller_names() == ["nvme0"]  # the others keep it
