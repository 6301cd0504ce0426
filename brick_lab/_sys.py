"""Small helpers for the lab fixtures: configfs/sysfs writes, commands, waits."""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

CONFIGFS = "/sys/kernel/config"
MiB = 1024 * 1024
T = TypeVar("T")


class LabError(RuntimeError):
    """A lab fixture could not build or tear down its target."""


def token(n: int = 6) -> str:
    """A short random hex token for unique names."""
    return secrets.token_hex(n)


def write(path: str, value: object) -> None:
    """Write ``value`` to a configfs/sysfs attribute (one write call)."""
    data = str(value)
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise LabError(f"write {data!r} to {path}: {exc.strerror}") from exc


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError as exc:
        raise LabError(f"mkdir {path}: {exc.strerror}") from exc


def symlink(target: str, link: str) -> None:
    try:
        os.symlink(target, link)
    except OSError as exc:
        raise LabError(f"symlink {link} -> {target}: {exc.strerror}") from exc


def run(argv: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; raise LabError on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def modprobe(*modules: str) -> None:
    run(["modprobe", "-a", *modules])


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.1,
    error: type[Exception] = LabError,
) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that; raise
    ``error`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Teardown:
    """Runs teardown steps, keeps going after failures, reports them at the end."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def step(self, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                self.errors.append(f"{getattr(fn, '__name__', fn)}{args}: {exc}")
        except Exception as exc:  # noqa: BLE001 - collected and re-raised below
            if isinstance(exc.__cause__, FileNotFoundError):
                return  # already gone
            self.errors.append(f"{getattr(fn, '__name__', fn)}{args}: {exc}")

    def rmdir(self, path: str) -> None:
        if os.path.isdir(path):
            self.step(os.rmdir, path)

    def unlink_links(self, directory: str) -> None:
        """Remove the symlinks directly inside ``directory``."""
        if not os.path.isdir(directory):
            return
        for name in os.listdir(directory):
            p = os.path.join(directory, name)
            if os.path.islink(p):
                self.step(os.unlink, p)

    def check(self, what: str) -> None:
        if self.errors:
            raise LabError(f"{what} teardown left errors: " + "; ".join(self.errors))


def subdirs(path: str) -> Iterable[str]:
    try:
        return sorted(
            n
            for n in os.listdir(path)
            if os.path.isdir(os.path.join(path, n)) and not os.path.islink(os.path.join(path, n))
        )
    except FileNotFoundError:
        return []


class Backing:
    """A backing file under ``workdir``, optionally exposed as a loop device."""

    def __init__(self, workdir: str, name: str, size: int, loop: bool) -> None:
        self.path = os.path.join(workdir, name + ".img")
        self.size = size
        self.loop: str | None = None
        with open(self.path, "wb") as f:
            f.truncate(size)
        if loop:
            self.loop = run(
                ["losetup", "--find", "--show", "--direct-io=off", self.path]
            ).stdout.strip()

    @property
    def device(self) -> str:
        """What the target opens: the loop device if any, else the file."""
        return self.loop or self.path

    def resize(self, size: int) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(size)
        self.size = size
        if self.loop:
            run(["losetup", "--set-capacity", self.loop])

    def remove(self, td: Teardown) -> None:
        if self.loop:
            td.step(run, ["losetup", "-d", self.loop])
        td.step(os.unlink, self.path)


def new_workdir(prefix: str) -> str:
    """A fresh directory for one target's backing files, under /tmp/brick-lab-targets
    (tmpfs in the guest: never the checkout)."""
    base = os.path.join("/tmp", "brick-lab-targets")
    os.makedirs(base, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=base)
