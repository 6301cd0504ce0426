"""Finding a subsystem by NQN without reading every other subsystem (issue 17).

sysfs has no index by NQN, so a lookup reads ``subsysnqn`` of each subsystem; the
remembered entry (:data:`brick_agent.host.nvme.SUBSYSTEM_NAMES`) makes the next
lookup one read, and is never trusted without that read.
"""

from __future__ import annotations

import uuid

import pytest

from brick_agent.host import nvme as hostnvme
from brick_agent.host.roots import HostRoots
from tests.unit.connectors.nvmeof_fakes import FakeNs
from tests.unit.connectors.test_nvmeof import NQN, U1, U2, make, props, tcp

OTHERS = 12


@pytest.fixture
def roots(tmp_path):
    return HostRoots.under(str(tmp_path / "host"))


@pytest.fixture
def reads(monkeypatch):
    """Subsystem names whose ``subsysnqn`` was read, in order."""
    seen: list[str] = []
    real = hostnvme._read

    def counting(path):
        if path.endswith("/subsysnqn") and "/nvme-subsystem/" in path:
            seen.append(path.split("/")[-2])
        return real(path)

    monkeypatch.setattr(hostnvme, "_read", counting)
    return seen


def _dense(tmp_path, roots, native=True, namespaces=2):
    """A host with OTHERS other connected subsystems, then ours (NQN) as a target."""
    kernel, conn = make(tmp_path, roots, native=native)
    for i in range(OTHERS):
        nqn = f"nqn.2014-08.org.example:other-{i}"
        u = str(uuid.UUID(int=0x9000 + i))
        kernel.add_target(nqn, [tcp()], [FakeNs(1, u, None)])
        conn.connect_volume(props(nqn=nqn, vol_uuid=u))
    kernel.add_target(NQN, [tcp()], [FakeNs(1, U1, None), FakeNs(2, U2, None)][:namespaces])
    return kernel, conn


def _class_base(roots):
    return hostnvme._class_dir(roots.sysfs("class", "nvme-subsystem"))


def test_a_found_subsystem_is_one_read_the_next_time(tmp_path, roots, reads):
    _, conn = _dense(tmp_path, roots)
    conn.connect_volume(props())
    full = hostnvme.subsystem_view(roots, NQN)
    reads.clear()

    again = hostnvme.subsystem_view(roots, NQN)

    assert again == full and [n.uuid for n in again[1]] == [U1, U2]
    mine = full[0][0].subsystem_name
    assert reads == [mine, mine]  # the class link, then the canonical directory


def test_a_remembered_entry_now_another_nqns_is_not_trusted(tmp_path, roots, reads):
    _, conn = _dense(tmp_path, roots)
    conn.connect_volume(props())
    expected = hostnvme.subsystem_view(roots, NQN)
    other = hostnvme.subsystem_view(roots, "nqn.2014-08.org.example:other-3")[0][0]
    # the memory points NQN at a subsystem that carries another NQN (a reused name)
    hostnvme.SUBSYSTEM_NAMES.remember(_class_base(roots), NQN, [other.subsystem_name])
    reads.clear()

    assert hostnvme.subsystem_view(roots, NQN) == expected
    assert len(set(reads)) == OTHERS + 1  # every subsystem read again
    reads.clear()
    assert hostnvme.subsystem_view(roots, NQN) == expected
    assert len(reads) == 2  # and the right one remembered


def test_a_wrong_suggestion_costs_a_full_lookup_not_a_wrong_answer(tmp_path, roots):
    _, conn = _dense(tmp_path, roots)
    conn.connect_volume(props())
    expected = hostnvme.subsystem_view(roots, NQN)
    base = _class_base(roots)
    hostnvme.SUBSYSTEM_NAMES.remember(base, NQN, [])
    hostnvme.note_new_controller(roots, NQN, "nvme5")  # nvme-subsys5 is other-5's

    assert hostnvme.subsystem_view(roots, NQN) == expected
    assert hostnvme.subsystem_view(roots, "nqn.2014-08.org.example:none") == ([], [])


def test_after_removal_a_vanished_subsystem_is_gone_without_reading_the_others(
    tmp_path, roots, reads
):
    kernel, conn = _dense(tmp_path, roots)
    conn.connect_volume(props())
    (ctrl,), _ = hostnvme.subsystem_view(roots, NQN)
    kernel.disconnect(ctrl.name)
    reads.clear()

    assert hostnvme.subsystem_view(roots, NQN, after_removal=True) == ([], [])
    assert reads == [ctrl.subsystem_name]
    # nothing remembered any more: a plain lookup reads every subsystem
    reads.clear()
    assert hostnvme.subsystem_view(roots, NQN) == ([], [])
    assert len(set(reads)) == OTHERS


def test_after_removal_with_the_subsystem_still_there_reports_what_is_left(tmp_path, roots):
    kernel, conn = _dense(tmp_path, roots)
    conn.connect_volume(props())
    before = hostnvme.subsystem_view(roots, NQN)
    hostnvme.SUBSYSTEM_NAMES.remember(_class_base(roots), NQN, [])  # forgotten: a full lookup

    assert hostnvme.subsystem_view(roots, NQN, after_removal=True) == before


@pytest.mark.parametrize("native", [True, False])
def test_an_attach_and_detach_on_a_dense_host_read_each_other_subsystem_at_most_twice(
    tmp_path, roots, reads, native
):
    """Only the two looks for a subsystem not yet connected (under the shared lock, then
    the exclusive one) read the others; the connect's own controller names the new
    subsystem, and the detach's check of what is left reads only that one."""
    _, conn = _dense(tmp_path, roots, native=native, namespaces=1)
    reads.clear()

    info = conn.connect_volume(props())
    conn.disconnect_volume(props(), info)

    ours = {r for r in reads if reads.count(r) > 2}
    others = [r for r in reads if r not in ours]
    assert len(ours) == 1 and len(others) == 2 * OTHERS, reads
    assert hostnvme.subsystem_view(roots, NQN) == ([], [])
