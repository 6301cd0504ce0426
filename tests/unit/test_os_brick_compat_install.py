"""The one-line switch: ``brick-agent os-brick-compat install`` and the .pth autoload.

The end-to-end test builds a throw-away virtualenv (no pip) that sees this
environment's packages, runs the CLI in it, and checks that a fresh
interpreter's ``import os_brick`` yields brick_agent connectors from the factory
(and os-brick's own with ``BRICK_AGENT_OS_BRICK_COMPAT=0``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig

import pytest

from brick_agent import cli
from brick_agent.os_brick_compat import autoload, install

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, (True, None)),
        ("1", (True, None)),
        ("ALL", (True, None)),
        ("on", (True, None)),
        ("0", (False, None)),
        ("off", (False, None)),
        ("", (False, None)),
        ("iscsi, nvmeof", (True, ["ISCSI", "NVMEOF"])),
    ],
)
def test_environment_switch(value, expected):
    env = {} if value is None else {autoload.ENV: value}
    assert autoload.wanted(env) == expected


def test_install_status_uninstall_in_a_site_dir(tmp_path, capsys):
    site = str(tmp_path)
    assert cli.main(["os-brick-compat", "status", "--site-packages", site]) == 0
    assert json.loads(capsys.readouterr().out)["installed"] is False
    assert cli.main(["os-brick-compat", "install", "--site-packages", site]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"installed": True, "pth": str(tmp_path / install.PTH_NAME)}
    assert (tmp_path / install.PTH_NAME).read_text() == install.PTH_LINE
    assert install.PTH_LINE.startswith("import ")  # site.py executes such lines
    assert install.status(site)["installed"] is True
    (tmp_path / install.PTH_NAME).write_text("import os\n")
    assert install.status(site) == {
        "installed": False,
        "outdated": True,
        "pth": str(tmp_path / install.PTH_NAME),
    }
    assert cli.main(["os-brick-compat", "uninstall", "--site-packages", site]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] is True
    assert not (tmp_path / install.PTH_NAME).exists()
    assert install.uninstall(site)["removed"] is False


def test_install_refuses_a_python_without_brick_agent_and_a_missing_dir(tmp_path, capsys):
    assert (
        cli.main(["os-brick-compat", "install", "--site-packages", str(tmp_path / "nope")])
        == cli.EXIT_USAGE
    )
    bare = tmp_path / "python"
    bare.write_text("#!/bin/sh\nexit 1\n")
    bare.chmod(0o755)
    assert cli.main(["os-brick-compat", "install", "--python", str(bare)]) == cli.EXIT_USAGE
    assert "not importable" in capsys.readouterr().err


def test_site_packages_of_this_python():
    assert install.site_packages() == sysconfig.get_paths()["purelib"]
    assert install.site_packages(sys.executable) == sysconfig.get_paths()["purelib"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A bare venv whose site-packages also sees this environment's packages and the repo."""
    pytest.importorskip("os_brick")
    root = tmp_path_factory.mktemp("svc") / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120
    )
    python = str(root / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with open(os.path.join(site, "aa-parent.pth"), "w") as fh:
        fh.write(f"{REPO}\n{sysconfig.get_paths()['purelib']}\n")
    return python, site


PROBE = (
    "import sys; import os_brick; from os_brick.initiator import connector; "
    "c = connector.InitiatorConnector.factory('ISCSI', None); "
    "print(type(c).__module__ + '.' + type(c).__name__)"
)


def _run(python: str, code: str, **env: str) -> str:
    out = subprocess.run(
        [python, "-W", "ignore", "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    return out.stdout.strip()


def test_one_line_install_makes_a_fresh_interpreters_os_brick_use_brick_agent(venv):
    python, site = venv
    assert _run(python, PROBE) == "os_brick.initiator.connectors.iscsi.ISCSIConnector"
    subprocess.run(
        [python, "-m", "brick_agent.cli", "os-brick-compat", "install"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert os.path.exists(os.path.join(site, install.PTH_NAME))
    try:
        assert _run(python, PROBE) == "brick_agent.os_brick_compat.connectors.ISCSIConnector"
        assert (
            _run(python, PROBE, **{autoload.ENV: "0"})
            == "os_brick.initiator.connectors.iscsi.ISCSIConnector"
        )
        assert (
            _run(python, PROBE, **{autoload.ENV: "NVMEOF"})
            == "os_brick.initiator.connectors.iscsi.ISCSIConnector"
        )
        # a process that never imports os-brick loads nothing of ours beyond the hook
        assert (
            _run(
                python,
                "import sys; print(sorted(m for m in sys.modules if "
                "m.startswith(('os_brick', 'brick_agent.connectors', "
                "'oslo'))))",
            )
            == "[]"
        )
        # from-imports of submodules first (Nova's order) are patched too
        assert (
            _run(
                python,
                "from os_brick.initiator import utils, connector; "
                "print(utils.guard_connection.__module__)",
            )
            == "brick_agent.os_brick_compat.locks"
        )
    finally:
        subprocess.run(
            [python, "-m", "brick_agent.cli", "os-brick-compat", "uninstall"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    assert _run(python, PROBE) == "os_brick.initiator.connectors.iscsi.ISCSIConnector"
