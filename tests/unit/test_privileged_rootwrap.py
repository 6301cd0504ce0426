"""The rootwrap filter admits exactly the privsep-helper command brick_agent builds."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import tempfile
import types

import pytest

from brick_agent import privileged

FILTERS = os.path.join(
    os.path.dirname(__file__), "..", "..", "etc", "brick_agent", "rootwrap.d", "privsep.filters"
)


def _filters():
    parser = configparser.RawConfigParser()
    parser.read(FILTERS)
    out = []
    for _name, value in parser.items("Filters"):
        fields = [f.strip() for f in value.split(",")]
        assert fields[0] == "RegExpFilter" and fields[2] == "root"
        out.append(fields[3:])
    return out


def _admitted(argv):
    """oslo.rootwrap RegExpFilter semantics: same length, each arg fully matches."""
    for patterns in _filters():
        if len(patterns) == len(argv) and all(
            re.match(p + "$", a) for p, a in zip(patterns, argv, strict=True)
        ):
            return True
    return False


def _helper_argv(conf_files):
    # what a parsed ConfigOpts holds after reading ``conf_files``
    conf = types.SimpleNamespace(
        brick_agent=types.SimpleNamespace(privsep_helper_command="privsep-helper"),
        config_file=conf_files,
    )
    sock = os.path.join(tempfile.mkdtemp(dir="/tmp"), "privsep.sock")
    os.rmdir(os.path.dirname(sock))
    return shlex.split(privileged.helper_command(conf)) + [
        "--privsep_context",
        privileged.default.pypath,
        "--privsep_sock_path",
        sock,
    ]


@pytest.mark.parametrize("files", [[], ["/etc/brick_agent/brick_agent.conf"]])
def test_filter_admits_our_helper(files):
    assert _admitted(_helper_argv(files))


@pytest.mark.parametrize(
    "argv",
    [
        [
            "privsep-helper",
            "--privsep_context",
            "os_brick.privileged.default",
            "--privsep_sock_path",
            "/tmp/tmpabc123/privsep.sock",
        ],
        [
            "privsep-helper",
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
            "/etc/brick_agent/../../root/x.conf",
            "--privsep_context",
            "brick_agent.privileged.default",
            "--privsep_sock_path",
            "/tmp/tmpabc/privsep.sock",
        ],
        [
            "privsep-helper",
            "--privsep_context",
            "brick_agent.privileged.default",
            "--privsep_sock_path",
            "/tmp/../etc/privsep.sock",
        ],
        [
            "privsep-helper",
            "--privsep_context",
            "brick_agent.privileged.default",
            "--privsep_sock_path",
            "/tmp/tmpabc/privsep.sock",
            "--debug",
        ],
        ["sh", "-c", "id"],
    ],
)
def test_filter_refuses_anything_else(argv):
    assert not _admitted(argv)
