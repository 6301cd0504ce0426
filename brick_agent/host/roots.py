"""Filesystem roots of the host, injectable so tests and the gate can use a fake tree."""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class HostRoots:
    """Where the host's sysfs, /dev, /etc, /run and /proc live.

    Real hosts use the defaults; unit tests point these at a tree captured from
    the lab's kernel.
    """

    sys: str = "/sys"
    dev: str = "/dev"
    etc: str = "/etc"
    run: str = "/run"
    proc: str = "/proc"

    def sysfs(self, *parts: str) -> str:
        return os.path.join(self.sys, *parts)

    def devfs(self, *parts: str) -> str:
        return os.path.join(self.dev, *parts)

    def etcfs(self, *parts: str) -> str:
        return os.path.join(self.etc, *parts)

    def runfs(self, *parts: str) -> str:
        return os.path.join(self.run, *parts)

    def procfs(self, *parts: str) -> str:
        return os.path.join(self.proc, *parts)

    @classmethod
    def under(cls, base: str) -> HostRoots:
        """Roots of a whole fake host tree at ``base`` (base/sys, base/dev, base/proc, ...)."""
        return cls(
            sys=os.path.join(base, "sys"),
            dev=os.path.join(base, "dev"),
            etc=os.path.join(base, "etc"),
            run=os.path.join(base, "run"),
            proc=os.path.join(base, "proc"),
        )


DEFAULT_ROOTS = HostRoots()
