"""The default configuration reads its file; a service's own file wins after os_brick.setup."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from brick_agent import config, errors, locking, privileged


@pytest.fixture
def fresh_default(monkeypatch):
    monkeypatch.setattr(config, "_DEFAULT_CONF", None)
    return monkeypatch


def _conf_file(tmp_path, name="brick_agent.conf", **opts):
    path = tmp_path / name
    path.write_text("[brick_agent]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()))
    return str(path)


def test_default_conf_reads_the_file_named_by_the_environment(fresh_default, tmp_path):
    path = _conf_file(tmp_path, lock_path=tmp_path / "locks", device_wait_timeout=9)
    fresh_default.setenv(config.CONFIG_ENV, path)
    conf = config.default_conf()
    assert conf.brick_agent.lock_path == str(tmp_path / "locks")
    assert conf.brick_agent.device_wait_timeout == 9
    # the privsep daemon is started with the same file (it reads [brick_agent_privileged])
    fresh_default.setattr(privileged.os, "geteuid", lambda: 1000)  # a service user
    assert privileged.helper_command(conf, "sudo") == f"sudo privsep-helper --config-file {path}"


def test_the_etc_file_is_read_when_present(tmp_path):
    path = _conf_file(tmp_path)
    assert config.default_config_files({}, default=path) == [path]
    assert config.default_config_files({}, default=str(tmp_path / "absent.conf")) == []
    assert config.DEFAULT_CONFIG_FILE == "/etc/brick_agent/brick_agent.conf"


def test_environment_override_empty_or_missing(tmp_path):
    etc = _conf_file(tmp_path)
    assert config.default_config_files({config.CONFIG_ENV: ""}, default=etc) == []
    with pytest.raises(errors.ConfigurationError, match="not a file"):
        config.default_config_files({config.CONFIG_ENV: str(tmp_path / "nope.conf")})


def test_importing_reads_no_file(tmp_path):
    env = {**os.environ, config.CONFIG_ENV: str(tmp_path / "missing.conf")}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import brick_agent.connectors, "
            "brick_agent.connectors.nvmeof.connector, brick_agent.privileged.reads, "
            "brick_agent.connector_properties",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_service_conf_brick_agent_section_wins_after_os_brick_setup(fresh_default, tmp_path):
    pytest.importorskip("os_brick")
    from oslo_config import cfg
    from brick_agent.connectors import factory
    from brick_agent.os_brick_compat import patch

    fresh_default.setenv(config.CONFIG_ENV, _conf_file(tmp_path, device_wait_timeout=9))
    nova_conf = _conf_file(
        tmp_path,
        "nova.conf",
        lock_path=tmp_path / "nova-locks",
        device_wait_timeout=7,
        use_multipath=True,
    )
    from oslo_concurrency import lockutils
    from os_brick import opts as ob_opts

    conf = cfg.ConfigOpts()
    conf.register_opts(ob_opts._opts, group="os_brick")
    conf.register_opts(lockutils._opts, group="oslo_concurrency")
    conf(args=["--config-file", nova_conf], project="nova")
    inits = []
    fresh_default.setattr(privileged, "init", inits.append)
    fresh_default.setattr(locking, "_configured_lock_path", None)
    patch.setup(conf)  # os_brick.setup(CONF)
    conn = factory("NVMEOF", "sudo nova-rootwrap /etc/nova/rootwrap.conf", ledger=False)
    assert conn.conf is conf and inits == [conf]
    assert conn.opts.device_wait_timeout == 7 and conn.use_multipath is True
    assert conn.opts.lock_path == str(tmp_path / "nova-locks")
