"""Configuration: defaults, no import-time registration, and a current sample file."""

from __future__ import annotations

import os

from oslo_config import cfg

from brick_agent import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(REPO, "etc", "brick_agent", "brick_agent.conf.sample")


def test_nothing_is_registered_on_the_global_conf_by_importing_config():
    assert "brick_agent" not in cfg.CONF


def test_defaults_are_safe_for_production():
    opts = config.new_conf().brick_agent
    assert opts.gate_enabled is False and opts.gate_host == "127.0.0.1"
    assert opts.privsep_in_process is False
    assert opts.use_multipath is False


def test_config_file_is_read(tmp_path):
    path = tmp_path / "brick_agent.conf"
    path.write_text("[brick_agent]\nlock_path = /srv/locks\nnvme_ctrl_loss_tmo = -1\n")
    opts = config.new_conf(config_files=[str(path)]).brick_agent
    assert opts.lock_path == "/srv/locks" and opts.nvme_ctrl_loss_tmo == -1


def test_overrides_win_over_the_file_and_none_keeps_the_configured_value(tmp_path):
    path = tmp_path / "brick_agent.conf"
    path.write_text("[brick_agent]\nlock_path = /srv/locks\nnvme_ctrl_loss_tmo = -1\n")
    opts = config.new_conf(
        config_files=[str(path)], overrides={"lock_path": "/run/locks", "nvme_ctrl_loss_tmo": None}
    ).brick_agent
    assert opts.lock_path == "/run/locks" and opts.nvme_ctrl_loss_tmo == -1


def test_every_option_is_in_the_sample_file():
    with open(SAMPLE) as f:
        sample = f.read()
    missing = [o.name for o in config.ALL_OPTS if f"#{o.name} =" not in sample]
    assert not missing, f"regenerate with sh etc/brick_agent/generate-sample.sh: {missing}"
