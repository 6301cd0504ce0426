"""The lean NVMe readers an attach uses agree with the general ones on captured trees.

tests/unit/data/nvme-tcp (real kernel: one subsystem, two TCP controllers,
native multipath) and every other captured tree (no NVMe: empty answers).
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from brick_agent.ledger import store as ledger
from brick_agent.host import block, nvme, sysfs
from tests.unit.sysfs_trees import TREES, extract_tree


@pytest.fixture
def tcp(tmp_path):
    return extract_tree("nvme-tcp", tmp_path)


def _nqn(roots) -> str:
    (sub,) = nvme.nvme_subsystems(roots)
    assert sub.nqn
    return sub.nqn


def _files(top: str):
    for dirpath, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
        for f in files:
            yield os.path.join(dirpath, f)


def test_primitives_agree_with_sysfs_helpers(tcp):
    ctrl_dirs = [
        sysfs.resolve(tcp.sysfs("class", "nvme", n)) for n in os.listdir(tcp.sysfs("class", "nvme"))
    ]
    sub_dirs = [
        sysfs.resolve(tcp.sysfs("class", "nvme-subsystem", n))
        for n in os.listdir(tcp.sysfs("class", "nvme-subsystem"))
    ]
    assert len(ctrl_dirs) == 2 and len(sub_dirs) == 1
    checked = 0
    for top in ctrl_dirs + sub_dirs:
        for path in _files(top):
            assert nvme._read(path) == sysfs.read_attr(path), path
            checked += 1
        for rx in (nvme._NS_RE, nvme._CTRL_RE, nvme._HEAD_RE):
            assert nvme._entries(top, rx) == sysfs.list_dir(top, rx)
            assert nvme._entries(top, rx, dirs=True) == [
                e for e in sysfs.list_dir(top, rx) if os.path.isdir(os.path.join(top, e))
            ]
    assert checked > 20
    assert nvme._read(os.path.join(ctrl_dirs[0], "no-such-attr")) is None
    assert nvme._entries(os.path.join(ctrl_dirs[0], "missing"), nvme._NS_RE) == []
    for cls in ("nvme", "nvme-subsystem", "block"):
        base = sysfs.resolve(tcp.sysfs("class", cls))
        for name in os.listdir(base):
            assert nvme._resolve_in(base, name) == sysfs.resolve(os.path.join(base, name))
        assert nvme._resolve_in(base, "nvme99") is None


def test_lean_controller_is_the_full_one_without_cntlid_and_hostid(tcp):
    nqn = _nqn(tcp)
    full = nvme.nvme_controllers(tcp)
    assert len(full) == 2
    for c in full:
        assert c.cntlid is not None and c.hostid is not None
        lean = nvme.read_controller(tcp, c.name, c.subsystem_name, lean=True, subsysnqn=nqn)
        assert lean == dataclasses.replace(c, cntlid=None, hostid=None)
        assert nvme.read_controller(tcp, c.name) == c


def test_lean_controller_without_state_counts_as_gone(tcp):
    (c, _) = nvme.nvme_controllers(tcp)
    os.remove(os.path.join(c.sysfs_path, "state"))
    assert nvme.read_controller(tcp, c.name, lean=True) is None
    assert nvme.read_controller(tcp, c.name).state is None  # the full read reports it


def test_subsystem_view_lean_agrees_with_the_host_wide_readers(tcp):
    nqn = _nqn(tcp)
    ctrls = nvme.nvme_controllers(tcp)
    nss = nvme.nvme_namespaces(tcp)
    assert len(nss) >= 2
    for lean in (False, True):
        vc, vn = nvme.subsystem_view(tcp, nqn, lean=lean)
        want = (
            ctrls if not lean else [dataclasses.replace(c, cntlid=None, hostid=None) for c in ctrls]
        )
        assert vc == want
        assert vn == nss
        for ns in nss:  # by UUID: that namespace only, read the same
            assert nvme.subsystem_view(tcp, nqn, uuid=ns.uuid, lean=lean) == (vc, [ns])
            assert nvme.read_namespace(tcp, ns) == ns
    assert nvme.subsystem_view(tcp, nqn + ".other", lean=True) == ([], [])
    assert (
        nvme.subsystem_view(tcp, nqn, uuid="00000000-0000-0000-0000-0000000000aa", lean=True)[1]
        == []
    )


@pytest.mark.parametrize("name", TREES)
def test_device_identity_agrees_with_the_block_reader(tmp_path, name):
    roots = extract_tree(name, tmp_path)
    names = os.listdir(roots.sysfs("class", "block"))
    assert names
    for dev in names:
        path = f"/dev/{dev}"
        assert ledger.device_identity(roots, path) == ledger.identity_of(
            block.block_device_for_path(roots, path)
        ), dev
    assert ledger.device_identity(roots, "/dev/nosuchdisk") is None
    if name == "nvme-tcp":
        assert {
            ledger.device_identity(roots, f"/dev/{ns.name}") for ns in nvme.nvme_namespaces(roots)
        } == {ns.wwid for ns in nvme.nvme_namespaces(roots)}


def test_uuid_lookup_reads_one_head_when_the_nsid_hint_is_right(tcp, monkeypatch):
    nqn = _nqn(tcp)
    nss = nvme.nvme_namespaces(tcp)
    real_read = nvme._read
    wwids: list[str] = []

    def counting(path):
        if os.path.basename(path) == "wwid":
            wwids.append(os.path.basename(os.path.dirname(path)))
        return real_read(path)

    monkeypatch.setattr(nvme, "_read", counting)
    for ns in nss:
        instance = ns.name.rsplit("n", 1)[1]
        for hint in (int(instance), None, 999):  # right, none, wrong: same answer
            wwids.clear()
            _, found = nvme.subsystem_view(tcp, nqn, uuid=ns.uuid, lean=True, nsid=hint)
            assert found == [ns]
            if hint == int(instance):
                assert wwids == [ns.name]
            else:  # the scan stops at the match
                assert wwids[-1] == ns.name and len(wwids) == len(set(wwids))


def test_identity_only_reread_agrees_and_sees_a_changed_identity(tcp):
    for ns in nvme.nvme_namespaces(tcp):
        assert nvme.read_namespace(tcp, ns, identity_only=True) == ns
        stale = dataclasses.replace(ns, uuid=None, nguid=None, wwid=None, nsid=None)
        assert nvme.read_namespace(tcp, stale, identity_only=True) == ns
        assert (
            nvme.read_namespace(
                tcp, dataclasses.replace(ns, sysfs_path=ns.sysfs_path + "-gone"), identity_only=True
            )
            is None
        )
    ns = nvme.nvme_namespaces(tcp)[0]
    with open(os.path.join(ns.sysfs_path, "wwid"), "w") as f:
        f.write("uuid.00000000-0000-0000-0000-0000000000aa\n")
    with open(os.path.join(ns.sysfs_path, "uuid"), "w") as f:
        f.write("00000000-0000-0000-0000-0000000000aa\n")
    again = nvme.read_namespace(tcp, ns, identity_only=True)
    assert again.uuid == "00000000-0000-0000-0000-0000000000aa" != ns.uuid
