"""``brick-agent os-brick-compat install|uninstall|status``: the one-line switch.

``install`` writes :data:`PTH_NAME` into the site-packages of the Python that
runs the service (this interpreter's, or ``--python``'s, or ``--site-packages``).
That Python then enables the layer when it imports os-brick
(:mod:`~brick_agent.os_brick_compat.autoload`).  brick_agent must be installed
in that same environment.  ``uninstall`` removes the file.  Restart the service
after either.
"""

from __future__ import annotations

import os
import subprocess
import sysconfig
import tempfile
from typing import Any

from brick_agent.errors import ConfigurationError

#: sorts after other .pth files (editable installs put brick_agent on the path first)
PTH_NAME = "zz-brick-agent-os-brick-compat.pth"
PTH_LINE = (
    "import brick_agent.os_brick_compat.autoload as _brick_agent_compat; "
    "_brick_agent_compat.install()\n"
)
_PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
_CHECK = "import brick_agent.os_brick_compat.autoload"


def site_packages(python: str | None = None) -> str:
    """The pure-Python site-packages of ``python`` (default: this interpreter)."""
    if python is None:
        return sysconfig.get_paths()["purelib"]
    try:
        out = subprocess.run(
            [python, "-c", _PURELIB], check=True, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(f"cannot ask {python} for its site-packages: {exc}") from None
    return out.stdout.strip()


def _check_importable(python: str) -> None:
    try:
        subprocess.run([python, "-c", _CHECK], check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError:
        raise ConfigurationError(
            f"brick_agent is not importable by {python}: install "
            "it into the service's environment first"
        ) from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigurationError(f"cannot run {python}: {exc}") from None


def pth_path(site_dir: str) -> str:
    return os.path.join(site_dir, PTH_NAME)


def install(site_dir: str | None = None, python: str | None = None) -> dict[str, Any]:
    """Write the .pth file (atomically); returns what was done."""
    if python is not None:
        _check_importable(python)
    site_dir = site_dir or site_packages(python)
    if not os.path.isdir(site_dir):
        raise ConfigurationError(f"not a directory: {site_dir}")
    path = pth_path(site_dir)
    fd, tmp = tempfile.mkstemp(prefix=".brick-agent-", suffix=".tmp", dir=site_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(PTH_LINE)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return {"installed": True, "pth": path}


def uninstall(site_dir: str | None = None, python: str | None = None) -> dict[str, Any]:
    """Remove the .pth file if present."""
    path = pth_path(site_dir or site_packages(python))
    try:
        os.unlink(path)
        removed = True
    except FileNotFoundError:
        removed = False
    return {"installed": False, "removed": removed, "pth": path}


def status(site_dir: str | None = None, python: str | None = None) -> dict[str, Any]:
    """Whether the .pth file is in place (and has our content)."""
    path = pth_path(site_dir or site_packages(python))
    try:
        with open(path, encoding="utf-8") as fh:
            current = fh.read() == PTH_LINE
        present = True
    except FileNotFoundError:
        present = current = False
    return {
        "installed": present and current,
        "pth": path,
        **({"outdated": True} if present and not current else {}),
    }


__all__ = ["PTH_LINE", "PTH_NAME", "install", "pth_path", "site_packages", "status", "uninstall"]
