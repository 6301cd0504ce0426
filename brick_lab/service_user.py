"""The lab VM as a packaged OpenStack host: a non-root service user that reaches root only
through ``sudo <service>-rootwrap /etc/<service>/rootwrap.conf``.

What a deployment of nova-compute (or cinder-volume/backup) has, built in the guest's
overlay (nothing reaches the host):

* a system user and group ``<service>`` with its home (``/var/lib/<service>``) holding
  its state: oslo.concurrency ``lock_path`` and brick_agent's lock directory and ledger;
* ``/etc/sudoers.d/<service>-rootwrap``: that user may run exactly
  ``/usr/local/bin/<service>-rootwrap /etc/<service>/rootwrap.conf *`` as root, nothing
  else (devstack's rule);
* ``/usr/local/bin/<service>-rootwrap`` (the service venv's console script), the
  service's own ``rootwrap.conf`` with the venv's ``bin`` first in ``exec_dirs`` (so
  ``privsep-helper`` is the venv's, which imports brick_agent) and its own
  ``rootwrap.d`` filters plus brick_agent's ``etc/brick_agent/rootwrap.d/privsep.filters``
  (the documented deployment step);
* the service's config file ``/etc/<service>/<service>.conf``, root:<service> 0640, as
  packages install it (brick_agent's privsep filter only admits config files there).

The service venv's interpreter must be reachable by the user: the lab's Python lives
under ``/root`` (pyenv), so the directories on its path get ``o+x`` (guest only).
Guest-only (root, lab VM).
"""

from __future__ import annotations

import configparser
import grp
import os
import pathlib
import pwd
import shutil
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]  # the checkout (editable install)
BRICK_FILTERS = REPO / "etc" / "brick_agent" / "rootwrap.d" / "privsep.filters"


class ServiceUser:
    """A service user set up for ``venv`` (see the module doc); idempotent."""

    def __init__(self, service: str, venv: pathlib.Path) -> None:
        self.service = service
        self.venv = venv
        self.home = pathlib.Path("/var/lib") / service
        self.etc = pathlib.Path("/etc") / service
        self.rootwrap = pathlib.Path("/usr/local/bin") / f"{service}-rootwrap"
        self.rootwrap_conf = self.etc / "rootwrap.conf"
        self.conf_file = self.etc / f"{service}.conf"
        self.state = self.home / "brick"

    # ------------------------------------------------------------ set-up
    def create(self) -> ServiceUser:
        if not shutil.which("sudo"):
            raise RuntimeError("sudo is not installed (tools/kernel-lab/lab setup installs it)")
        try:
            pwd.getpwnam(self.service)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--user-group",
                    "--create-home",
                    "--home-dir",
                    str(self.home),
                    "--shell",
                    "/usr/sbin/nologin",
                    self.service,
                ],
                check=True,
            )
        self._reachable(pathlib.Path(os.path.realpath(self.venv / "bin" / "python")))
        self._rootwrap()
        sudoers = pathlib.Path("/etc/sudoers.d") / f"{self.service}-rootwrap"
        sudoers.write_text(
            f"{self.service} ALL = (root) NOPASSWD: {self.rootwrap} {self.rootwrap_conf} *\n"
        )
        sudoers.chmod(0o440)
        subprocess.run(["visudo", "-c", "-q", "-f", str(sudoers)], check=True)
        for d in (self.state, self.state / "locks", self.state / "brick-locks"):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, self.uid, self.gid)
            d.chmod(0o750)
        return self

    def _rootwrap(self) -> None:
        src = self.venv / "etc" / self.service
        (self.etc / "rootwrap.d").mkdir(parents=True, exist_ok=True)
        for f in (src / "rootwrap.d").iterdir():
            shutil.copyfile(f, self.etc / "rootwrap.d" / f.name)
        shutil.copyfile(BRICK_FILTERS, self.etc / "rootwrap.d" / "brick_agent-privsep.filters")
        conf = configparser.ConfigParser(interpolation=None)
        conf.read(src / "rootwrap.conf")
        dirs = conf.get("DEFAULT", "exec_dirs", fallback="/sbin,/usr/sbin,/bin,/usr/bin")
        conf.set("DEFAULT", "exec_dirs", f"{self.venv / 'bin'},{dirs}")
        conf.set("DEFAULT", "filters_path", str(self.etc / "rootwrap.d"))
        with open(self.rootwrap_conf, "w") as f:
            conf.write(f)
        if self.rootwrap.is_symlink() or self.rootwrap.exists():
            self.rootwrap.unlink()
        self.rootwrap.symlink_to(self.venv / "bin" / f"{self.service}-rootwrap")

    @staticmethod
    def _reachable(path: pathlib.Path) -> None:
        """o+x on every directory above ``path`` (the lab's pyenv Python is under /root)."""
        for d in reversed(path.parents):
            mode = d.stat().st_mode
            if not mode & 0o001:
                d.chmod(mode | 0o001)

    def write_conf(self, text: str, name: str | None = None) -> pathlib.Path:
        """The service's config file (``<name>.conf`` beside it when named: a second process
        of the service with its own options), root:<service> 0640 as packages install it."""
        path = self.conf_file if name is None else self.etc / f"{name}.conf"
        path.write_text(text)
        os.chown(path, 0, self.gid)
        path.chmod(0o640)
        return path

    # ------------------------------------------------------------ running as the user
    @property
    def uid(self) -> int:
        return pwd.getpwnam(self.service).pw_uid

    @property
    def gid(self) -> int:
        return grp.getgrnam(self.service).gr_gid

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run as the service user (its groups, no root capability left)."""
        return [
            "setpriv",
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "--inh-caps=-all",
            "--",
        ] + argv

    def environment(self) -> dict[str, str]:
        """What a systemd unit gives the service: its home, a plain PATH, no root's env."""
        return {
            "HOME": str(self.home),
            "USER": self.service,
            "LOGNAME": self.service,
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
        }
