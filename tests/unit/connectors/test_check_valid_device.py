"""check_valid_device(path, run_as_root): a non-root caller reads through the privileged side.

The privileged reader is replaced by a stand-in that answers for a device this
process cannot open (it does not exist here), so each branch shows in the result.
"""

from __future__ import annotations

import os

import pytest

from brick_agent import config, errors
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_agent.host.roots import HostRoots
from brick_agent.privileged import reads
from tests.unit.eventlet_process import run_patched


@pytest.fixture
def privileged_side(monkeypatch):
    """The privileged reader: every fabric volume device of this fake host reads."""
    asked: list[str] = []
    monkeypatch.setattr(reads, "block_device_readable", lambda name: asked.append(name) or True)
    return asked


@pytest.fixture
def device_link(tmp_path):
    link = tmp_path / "os-brick+dev+sdzz"
    os.symlink("/dev/sdzz", link)  # a LUN this process cannot open (absent here)
    return str(link)


def _connector(**kwargs):
    return NVMeOFConnector(conf=config.new_conf(), ledger=False, **kwargs)


def test_non_root_caller_reads_as_root_through_privsep(monkeypatch, privileged_side, device_link):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    conn = _connector()
    assert conn.check_valid_device(device_link) is True
    assert conn.check_valid_device(device_link, run_as_root=True) is True
    assert privileged_side == ["sdzz", "sdzz"]
    assert conn.check_valid_device(device_link, run_as_root=False) is False  # own read
    assert conn.check_valid_device("/etc/passwd", True) is False  # not a volume device
    assert privileged_side == ["sdzz", "sdzz"]


def test_privileged_refusal_is_false(monkeypatch, device_link):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    def refuse(name):
        raise errors.NotOwned(f"block device {name}", "not a fabric volume")

    monkeypatch.setattr(reads, "block_device_readable", refuse)
    assert _connector().check_valid_device(device_link, True) is False


def test_root_caller_and_fake_trees_read_in_process(
    monkeypatch, privileged_side, device_link, tmp_path
):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert _connector().check_valid_device(device_link, True) is False  # absent: no
    disk = tmp_path / "disk"
    disk.write_bytes(b"\0" * 8192)
    assert _connector().check_valid_device(str(disk), True) is True
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    fake = _connector(roots=HostRoots.under(str(tmp_path)))
    assert fake.check_valid_device(str(disk), True) is True
    assert privileged_side == []


READ_UNDER_EVENTLET = """
from brick_agent.connectors.base import read_first_block
print(read_first_block("/dev/zero"))
"""


def test_a_device_reads_in_an_eventlet_patched_process():
    """Cinder's services run eventlet-patched, whose os.read waits in epoll first and so
    fails on a device file (EPERM): /dev/zero, like a disk, cannot be polled."""
    assert run_patched(READ_UNDER_EVENTLET).split() == ["True"]
