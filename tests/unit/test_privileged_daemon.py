"""The real privsep daemon, started through privsep-helper as a separate process.

Needs root (the helper is started without sudo) and the ``privsep-helper``
console script (the one beside the Python running the tests, else the one on PATH);
skipped otherwise.  Only harmless entrypoints are called.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from oslo_config import cfg

from brick_agent import config, privileged
from brick_agent.errors import CommandFailed, DeviceNotFound, InvalidArgument
from brick_agent.host import iscsiadm
from brick_agent.privileged import block, diag, iscsi, scsi

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAP_SYS_ADMIN = 21
CAP_SYS_PTRACE = 19
CAP_DAC_READ_SEARCH = 2
# the helper of the environment running the tests, found also when its bin directory
# is not on PATH (``.venv/bin/python -m pytest``)
HELPER = shutil.which("privsep-helper", path=os.path.dirname(sys.executable)) or shutil.which(
    "privsep-helper"
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or HELPER is None, reason="needs root and privsep-helper"
)


@pytest.fixture(scope="module")
def daemon():
    conf = config.new_conf()
    conf.set_override(
        "privsep_helper_command", f"env PYTHONPATH={REPO} {HELPER} --debug", group="brick_agent"
    )
    privileged.init(conf)
    assert privileged.default.client_mode
    yield privileged.default
    privileged.default.stop()
    cfg.CONF.clear_override("helper_command", group=privileged.CFG_SECTION)


def test_daemon_is_a_separate_process_with_only_its_three_capabilities(daemon):
    """CAP_SYS_ADMIN for the block and dm operations; CAP_SYS_PTRACE and
    CAP_DAC_READ_SEARCH to read who holds a volume device open (/proc/PID/fd)."""
    ident = diag.identity()
    assert ident["pid"] != os.getpid()
    assert ident["uid"] == 0
    assert ident["cap_eff"] == (1 << CAP_SYS_ADMIN | 1 << CAP_SYS_PTRACE | 1 << CAP_DAC_READ_SEARCH)
    # documented limitation: a uid-0 daemon's exec'd tools regain the bounding set
    assert ident["child_cap_eff"] & (1 << CAP_SYS_ADMIN)


def test_validation_errors_cross_the_channel(daemon):
    with pytest.raises(InvalidArgument):
        scsi.delete_scsi_device("-1:0:0:0")
    with pytest.raises(InvalidArgument):
        block.flush_block_device("--all")


def test_missing_device_error_crosses_the_channel(daemon):
    with pytest.raises(DeviceNotFound):
        scsi.delete_scsi_device("999:0:0:0")


@pytest.mark.skipif(shutil.which("iscsiadm") is None, reason="no iscsiadm")
def test_command_failure_crosses_the_channel(daemon):
    # logging in to a node record that does not exist: iscsiadm exits 21, no side effect
    with pytest.raises(CommandFailed) as ei:
        iscsi.node_login(
            "iqn.2026-01.invalid.brick-agent:no-such-target", "192.0.2.1:3260", timeout=10
        )
    assert ei.value.returncode == iscsiadm.ERR_NO_OBJS_FOUND
    assert ei.value.argv[0] == "iscsiadm"


def test_roots_cannot_be_passed_to_the_daemon(daemon):
    with pytest.raises(TypeError):
        scsi.scan_scsi_target(0, 0, 0, 0, roots="/")


@pytest.mark.skipif(shutil.which("iscsiadm") is None, reason="no iscsiadm")
def test_chap_secret_never_on_argv_nor_logged_through_the_daemon(daemon, caplog):
    import logging

    from brick_agent.errors import InvalidArgument

    secret = "Daemon-CHAP-s3cret"
    caplog.set_level(logging.DEBUG)
    # secrets go into the node record file, never through iscsiadm's argv: refused here
    with pytest.raises(InvalidArgument) as refused:
        iscsi.node_update(
            "iqn.2026-01.invalid.brick-agent:no-such-target",
            "192.0.2.1:3260",
            "default",
            [["node.session.auth.password", secret]],
            timeout=10,
        )
    assert secret not in str(refused.value)
    with pytest.raises(CommandFailed) as ei:  # no such node record: exit 21, no side effect
        iscsi.node_update(
            "iqn.2026-01.invalid.brick-agent:no-such-target",
            "192.0.2.1:3260",
            "default",
            [["node.session.scan", "manual"]],
            timeout=10,
        )
    assert ei.value.returncode == iscsiadm.ERR_NO_OBJS_FOUND
    daemon_lines = [r.getMessage() for r in caplog.records]
    assert any("iscsiadm" in m for m in daemon_lines), "daemon command log not forwarded"
    assert all(secret not in m for m in daemon_lines)


def test_ownership_refusal_crosses_the_channel_as_not_owned(daemon):
    from brick_agent.errors import NotOwned
    from brick_agent.privileged import nvme

    other = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-4333-8444-555555555555"
    # refused before /dev/nvme-fabrics is opened: another host's NQN is never used
    with pytest.raises(NotOwned) as ei:
        nvme.connect(
            "tcp",
            "192.0.2.1",
            4420,
            "nqn.2026-01.invalid.brick-agent:none",
            hostnqn=other,
            timeout=5,
        )
    assert ei.value.obj == f"host NQN {other}" and "this host's" in ei.value.reason
