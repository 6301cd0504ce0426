"""The rootwrap filter, judged by oslo.rootwrap's own filter loading and matching.

A compute service starts privsep-helper with every config file it was started
with (Nova: ``nova.conf`` plus ``nova-compute.conf``, and brick_agent's own).

oslo.rootwrap's ``load_filters`` always appends a bare ``CommandFilter`` for
``privsep-helper`` (any arguments), whatever the filter files say: under
``oslo-rootwrap`` our filter narrows nothing unless that implicit entry is
absent; the sudoers line has to do the narrowing (see rootwrap.conf).  The
tests below judge our filter file with oslo's parser and matcher, without that
implicit entry, and pin its existence so a change in oslo.rootwrap is noticed.
"""

from __future__ import annotations

import os
import sys

import pytest
from oslo_rootwrap import filters, wrapper

from tests.unit.test_privileged_rootwrap import _helper_argv

FILTERS_DIR = os.path.join(
    os.path.dirname(__file__), "..", "..", "etc", "brick_agent", "rootwrap.d"
)
#: privsep-helper is installed beside this Python (oslo.privsep's console script).
EXEC_DIRS = [os.path.dirname(sys.executable)]


def _our_filters() -> list:
    """oslo.rootwrap's parse of our filter files, minus its implicit privsep-helper entry."""
    return [
        f
        for f in wrapper.load_filters([FILTERS_DIR])
        if not (type(f) is filters.CommandFilter and f.name == "privsep-helper")
    ]


def _matches(argv: list[str]) -> bool:
    ours = _our_filters()
    try:
        wrapper.match_filter(ours, argv, exec_dirs=EXEC_DIRS)
    except wrapper.NoFilterMatched:
        return False
    return True


@pytest.mark.parametrize(
    "files",
    [
        [],
        ["/etc/brick_agent/brick_agent.conf"],
        ["/etc/nova/nova.conf", "/etc/brick_agent/brick_agent.conf"],
        ["/etc/nova/nova.conf", "/etc/nova/nova-compute.conf", "/etc/brick_agent/brick_agent.conf"],
        [
            "/etc/cinder/cinder.conf",
            "/etc/cinder/cinder-volume.conf",
            "/etc/brick_agent/brick_agent.conf",
            "/etc/brick_agent/local.conf",
        ],
    ],
)
def test_oslo_rootwrap_admits_the_helper_with_every_config_file(files):
    assert _matches(_helper_argv(files))


@pytest.mark.parametrize(
    "argv",
    [
        [
            "privsep-helper",
            "--config-file",
            "/etc/nova/nova.conf",
            "--config-file",
            "/etc/shadow",
            "--privsep_context",
            "brick_agent.privileged.default",
            "--privsep_sock_path",
            "/tmp/tmpabc/privsep.sock",
        ],
        [
            "privsep-helper",
            "--config-file",
            "/etc/nova/../shadow.conf",
            "--privsep_context",
            "brick_agent.privileged.default",
            "--privsep_sock_path",
            "/tmp/tmpabc/privsep.sock",
        ],
        [
            "privsep-helper",
            "--config-file",
            "/etc/nova/nova.conf",
            "--config-file",
            "/tmp/evil.conf",
            "--privsep_context",
            "brick_agent.privileged.default",
            "--privsep_sock_path",
            "/tmp/tmpabc/privsep.sock",
        ],
        [
            "privsep-helper",
            "--config-file",
            "/etc/nova/nova.conf",
            "--privsep_context",
            "os_brick.privileged.default",
            "--privsep_sock_path",
            "/tmp/tmpabc/privsep.sock",
        ],
        [
            "privsep-helper",
            "--config-file",
            "/etc/nova/nova.conf",
            "--config-file",
            "/etc/nova/nova.conf",
            "--config-file",
            "/etc/nova/nova.conf",
            "--config-file",
            "/etc/nova/nova.conf",
            "--config-file",
            "/etc/nova/nova.conf",
            "--privsep_context",
            "brick_agent.privileged.default",
            "--privsep_sock_path",
            "/tmp/tmpabc/privsep.sock",
            "--debug",
        ],
    ],
)
def test_oslo_rootwrap_refuses_anything_else(argv):
    assert not _matches(argv)


def test_oslo_rootwrap_always_admits_privsep_helper_itself():
    everything = wrapper.load_filters([FILTERS_DIR])
    argv = [
        "privsep-helper",
        "--privsep_context",
        "os_brick.privileged.default",
        "--privsep_sock_path",
        "/tmp/tmpabc/privsep.sock",
    ]
    assert wrapper.match_filter(everything, argv, exec_dirs=EXEC_DIRS).name == "privsep-helper"
    assert len(everything) == len(_our_filters()) + 1
