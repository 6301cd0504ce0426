"""Fixtures for real-kernel tests (run in the lab VM: tools/kernel-lab/lab run).

Tests marked ``realkernel`` are skipped unless BRICK_LAB=1 (set by the lab's
guest init), so ``pytest tests/functional`` on a host only reports skips.
Every fixture builds its target fresh and tears it down, even on failure:
all tests share one kernel.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.functional.lab import FcoeTarget, LioIscsiTarget, NvmetSubsystem

IN_LAB = os.environ.get("BRICK_LAB") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realkernel: needs the real kernel of the lab VM (tools/kernel-lab)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_LAB:
        return
    skip = pytest.mark.skip(reason="real-kernel test: run inside the lab VM (tools/kernel-lab/lab run)")
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
    with LioIscsiTarget(luns=2, portals=("127.0.0.1:3260", "127.0.0.2:3260"),
                        initiators=["local"]) as t:
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
