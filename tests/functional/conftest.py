"""Fixtures for real-kernel tests (run in the lab VM: tools/kernel-lab/lab run).

Tests marked ``realkernel`` are skipped unless BRICK_LAB=1 (set by the lab's
guest init), so ``pytest tests/functional`` on a host only reports skips.
Every fixture builds its target fresh and tears it down, even on failure:
all tests share one kernel.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest
from oslo_config import cfg

from brick_agent import config
from brick_lab import FcoeTarget, LioIscsiTarget, NvmetSubsystem

IN_LAB = os.environ.get("BRICK_LAB") == "1"

#: What every lab test's conf starts from (besides ``lock_path`` under ``tmp_path``).
LAB_CONF: dict[str, object] = {
    "privsep_in_process": True,
    "device_wait_timeout": 20.0,
    "nvme_ctrl_loss_tmo": -1,
    "nvme_reconnect_delay": 1,
}
#: Overrides that run the privileged calls in a real privsep daemon process (as root, the
#: default helper command starts the privsep-helper installed beside this Python).
PRIVSEP_DAEMON: dict[str, object] = {"privsep_in_process": False}


def make_conf(tmp_path: pathlib.Path, **overrides: object) -> cfg.ConfigOpts:
    """A fresh [brick_agent] conf for one lab test: locks under ``tmp_path``, :data:`LAB_CONF`,
    then ``overrides``. An override of None leaves that option at the config default."""
    return config.new_conf(
        overrides={"lock_path": str(tmp_path / "locks"), **LAB_CONF, **overrides}
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realkernel: needs the real kernel of the lab VM (tools/kernel-lab)"
    )


def _meminfo_mib() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) // 1024
    return out


#: (MiB available, the test after which) of the lowest reading so far
_LOWEST_MEMORY: list[tuple[int, str]] = []


def pytest_runtest_logfinish(nodeid: str, location: tuple) -> None:
    """The VM's lowest available memory after a test (a VM that runs out of it dies
    without a report: the summary says how close the suite came)."""
    if not IN_LAB:
        return
    reading = (_meminfo_mib().get("MemAvailable", 0), nodeid)
    _LOWEST_MEMORY[:] = [min([*_LOWEST_MEMORY, reading], key=lambda r: r[0])]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not IN_LAB or not _LOWEST_MEMORY:
        return
    (lowest, after), now = _LOWEST_MEMORY[0], _meminfo_mib()
    terminalreporter.write_line(
        f"lab VM memory: lowest available {lowest} MiB after {after}; at the end "
        f"{now.get('MemAvailable')} MiB available of {now.get('MemTotal')}, "
        f"{now.get('Shmem')} MiB in tmpfs"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_LAB:
        return
    skip = pytest.mark.skip(
        reason="real-kernel test: run inside the lab VM (tools/kernel-lab/lab run)"
    )
    for item in items:
        if "realkernel" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def iscsi_target() -> Iterator[LioIscsiTarget]:
    """One LIO target, 1 LUN, portal 127.0.0.1:3260, demo mode."""
    with LioIscsiTarget(luns=1) as t:
        yield t


@pytest.fixture
def iscsi_multipath_target() -> Iterator[LioIscsiTarget]:
    """One LIO target, 2 LUNs on 127.0.0.1:3260 and 127.0.0.2:3260, ACL for this host."""
    with LioIscsiTarget(
        luns=2, portals=("127.0.0.1:3260", "127.0.0.2:3260"), initiators=["local"]
    ) as t:
        yield t


@pytest.fixture
def nvmet_subsystem() -> Iterator[NvmetSubsystem]:
    """One nvmet subsystem, 1 namespace, TCP port 127.0.0.1:4420, any host."""
    with NvmetSubsystem(namespaces=1) as s:
        yield s


@pytest.fixture
def nvmet_multipath_subsystem() -> Iterator[NvmetSubsystem]:
    """One nvmet subsystem, 2 namespaces, ports 127.0.0.1:4420 and 127.0.0.2:4420."""
    with NvmetSubsystem(namespaces=2, ports=("127.0.0.1:4420", "127.0.0.2:4420")) as s:
        yield s


@pytest.fixture
def fcoe_target() -> Iterator[FcoeTarget]:
    """tcm_fc target with 2 LUNs over one FCoE VN2VN veth pair."""
    with FcoeTarget(luns=2) as t:
        yield t
