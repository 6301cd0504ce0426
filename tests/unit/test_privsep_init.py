"""Privsep is initialised on every path, once, before the first entrypoint call.

No daemon is started: ``PrivContext.start`` is replaced by a probe that records
the command the daemon would be started with and the client mode.
"""

from __future__ import annotations

import time

import pytest
from oslo_config import cfg

from brick_agent import config, privileged
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector

NOVA_HELPER = "sudo nova-rootwrap /etc/nova/rootwrap.conf"


class Started(Exception):
    """Raised by the probe instead of starting a daemon."""


@pytest.fixture
def fresh_privsep(monkeypatch):
    """A process in which privsep was never configured; restored afterwards."""
    if hasattr(privileged, "_InitState"):
        monkeypatch.setattr(privileged, "_state", privileged._InitState())
    monkeypatch.setattr(privileged.default, "client_mode", True)
    monkeypatch.setattr(privileged.default, "channel", None)
    monkeypatch.setattr(privileged.os, "geteuid", lambda: 1000)  # a service user
    cfg.CONF.clear_override("helper_command", group=privileged.CFG_SECTION)
    seen: list[dict] = []

    def probe(method=None):
        seen.append(
            {
                "cmd": privileged.default.helper_command("/tmp/p.sock"),
                "client_mode": privileged.default.client_mode,
            }
        )
        raise Started()

    monkeypatch.setattr(privileged.default, "start", probe)
    yield seen
    cfg.CONF.clear_override("helper_command", group=privileged.CFG_SECTION)


def test_helper_command_from_root_helper_config_or_nothing(fresh_privsep, tmp_path):
    conf = config.new_conf()
    assert privileged.helper_command(conf) is None  # oslo.privsep's own default
    assert privileged.helper_command(conf, NOVA_HELPER) == f"{NOVA_HELPER} privsep-helper"
    assert (
        privileged.helper_command(conf, ["sudo", "cinder-rootwrap", "/etc/c r.conf"])
        == "sudo cinder-rootwrap '/etc/c r.conf' privsep-helper"
    )
    conf_file = tmp_path / "brick_agent.conf"
    conf_file.write_text("[brick_agent]\nprivsep_helper_command = sudo -n privsep-helper\n")
    configured = config.new_conf(config_files=[str(conf_file)])
    assert (
        privileged.helper_command(configured, NOVA_HELPER)
        == f"sudo -n privsep-helper --config-file {conf_file}"
    )  # the option wins


def test_nvme_only_connector_starts_the_daemon_with_the_callers_root_helper(fresh_privsep):
    conn = NVMeOFConnector(NOVA_HELPER, conf=config.new_conf(), ledger=False)
    with pytest.raises(Started):
        conn.actions.rescan("nvme0")  # its first privileged call
    assert fresh_privsep == [
        {
            "cmd": NOVA_HELPER.split()
            + [
                "privsep-helper",
                "--privsep_context",
                "brick_agent.privileged.default",
                "--privsep_sock_path",
                "/tmp/p.sock",
            ],
            "client_mode": True,
        }
    ]


def test_first_call_without_any_connector_uses_the_default_conf(fresh_privsep, monkeypatch):
    from brick_agent.privileged import reads

    conf = config.new_conf(overrides={"privsep_helper_command": "sudo -n privsep-helper"})
    monkeypatch.setattr(config, "_DEFAULT_CONF", conf)
    with pytest.raises(Started):
        reads.dmi_product_uuid()
    assert fresh_privsep[0]["cmd"][:3] == ["sudo", "-n", "privsep-helper"]


def test_in_process_conf_runs_the_entrypoint_here(fresh_privsep, monkeypatch):
    from brick_agent.privileged import reads

    seen = []
    monkeypatch.setattr(reads, "do_dmi_product_uuid", lambda roots: seen.append(roots) or None)
    privileged.configure(config.new_conf(overrides={"privsep_in_process": True}))
    assert reads.dmi_product_uuid() is None and len(seen) == 1
    assert fresh_privsep == [] and privileged.default.client_mode is False


def test_the_configuration_is_applied_once(fresh_privsep, monkeypatch):
    applied = []
    real = privileged._apply
    monkeypatch.setattr(privileged, "_apply", lambda *a: applied.append(a) or real(*a))
    conf = config.new_conf()
    NVMeOFConnector(NOVA_HELPER, conf=conf, ledger=False)
    conn = NVMeOFConnector(None, conf=conf, ledger=False)
    for _ in range(2):
        with pytest.raises(Started):
            conn.actions.rescan("nvme0")
    assert applied == [(conf, NOVA_HELPER)]


def test_os_brick_setup_first_then_the_connectors_root_helper(fresh_privsep):
    """nova-compute: os_brick.setup(CONF) initialises without a root helper; the connector
    Nova builds later brings it, and the daemon (not started yet) uses it."""
    conf = config.new_conf()
    privileged.init(conf)
    conn = NVMeOFConnector(NOVA_HELPER, conf=conf, ledger=False)
    with pytest.raises(Started):
        conn.actions.rescan("nvme0")
    assert fresh_privsep[0]["cmd"][:4] == NOVA_HELPER.split() + ["privsep-helper"]


def test_a_daemon_configuration_after_an_in_process_one_switches_back(fresh_privsep):
    in_process = config.new_conf(overrides={"privsep_in_process": True})
    daemon = config.new_conf(overrides={"privsep_in_process": False})
    privileged.configure(in_process)
    privileged.ensure_initialised()
    assert privileged.default.client_mode is False  # runs in this process
    privileged.configure(daemon)  # e.g. a later connector
    privileged.ensure_initialised()
    assert privileged.default.client_mode is True  # through the daemon again


def test_a_process_nobody_configured_with_client_mode_off_is_left_alone(fresh_privsep, monkeypatch):
    monkeypatch.setattr(privileged.default, "client_mode", False)  # the daemon itself
    privileged.ensure_initialised()
    assert privileged.default.client_mode is False


def test_already_root_starts_the_helper_beside_python_not_the_callers_sudo(
    fresh_privsep, monkeypatch
):
    monkeypatch.setattr(privileged.os, "geteuid", lambda: 0)
    monkeypatch.setattr(privileged.os, "access", lambda path, mode: True)
    conf = config.new_conf()
    command = privileged.helper_command(conf, NOVA_HELPER)  # Nova as root, no sudo installed
    assert command is not None and "sudo" not in command
    assert command.split()[0].endswith("/privsep-helper")


def test_a_running_daemon_is_used_again_after_an_in_process_interlude(fresh_privsep, monkeypatch):
    daemon = config.new_conf(overrides={"privsep_in_process": False})
    privileged.configure(daemon)
    privileged.ensure_initialised()
    monkeypatch.setattr(privileged.default, "channel", object())  # the daemon runs
    privileged.set_in_process(True)  # a test's cleanup
    privileged.configure(config.new_conf(overrides={"privsep_in_process": True}))
    privileged.ensure_initialised()
    assert privileged.default.client_mode is False
    privileged.configure(config.new_conf(overrides={"privsep_in_process": False}))
    privileged.ensure_initialised()
    assert privileged.default.client_mode is True


def test_start_daemon_starts_it_once_with_the_callers_root_helper(fresh_privsep, monkeypatch):
    """An operation starts the daemon before its deadline; with one started, nothing
    happens (PrivContext.start would warn), and concurrent operations start one."""
    import threading

    conn = NVMeOFConnector(NOVA_HELPER, conf=config.new_conf(), ledger=False)
    starts = []

    def start(method=None):
        starts.append(privileged.default.helper_command("/tmp/p.sock")[:4])
        time.sleep(0.05)  # the other threads arrive while it starts
        privileged.default.channel = object()

    monkeypatch.setattr(privileged.default, "start", start)
    threads = [threading.Thread(target=conn.actions.start_daemon) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert starts == [NOVA_HELPER.split() + ["privsep-helper"]]
    conn.actions.start_daemon()
    assert len(starts) == 1


def test_start_daemon_in_process_starts_nothing(fresh_privsep):
    privileged.configure(config.new_conf(overrides={"privsep_in_process": True}))
    privileged.start_daemon()  # the probe would raise Started
    assert fresh_privsep == [] and privileged.default.channel is None
