"""Typed errors raised by brick_agent.

Every error a caller can see derives from :class:`BrickError`.  Messages never
carry secrets: code that builds them must pass values through
:func:`brick_agent.secrets.mask_text` first (properties never expose secrets at all).
"""

from __future__ import annotations


class BrickError(Exception):
    """Base class of every brick_agent error."""


class InvalidConnectionProperties(BrickError, ValueError):
    """Connection properties failed validation before anything privileged ran."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"invalid connection property {key!r}: {problem}")


class InvalidArgument(BrickError, ValueError):
    """A privileged entrypoint or a host helper refused an argument."""


class CommandFailed(BrickError):
    """An external command exited non-zero or timed out."""

    def __init__(
        self, argv: list[str], returncode: int | None, stderr: str = "", timed_out: bool = False
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.timed_out = timed_out
        what = "timed out" if timed_out else f"exited {returncode}"
        detail = f": {stderr.strip()}" if stderr.strip() else ""
        super().__init__(f"{' '.join(argv)} {what}{detail}")


class DeviceNotFound(BrickError):
    """The volume's device did not appear before the deadline."""


class VolumeIdentityMismatch(BrickError):
    """A device was found but its identity (WWID, UUID, NGUID) is not the volume's."""


class TargetUnreachable(BrickError):
    """No path to the target (portal, subsystem or remote port) could be established."""


class AuthenticationFailed(BrickError):
    """The target rejected our credentials (CHAP)."""


class DeviceBusy(BrickError):
    """A device could not be flushed or removed because it is in use."""


class LeftoversRemain(BrickError):
    """A disconnect could not remove everything; ``leftovers`` lists what is left."""

    def __init__(self, message: str, leftovers: list[str]) -> None:
        self.leftovers = list(leftovers)
        super().__init__(f"{message}; left behind: {', '.join(self.leftovers) or 'nothing'}")


class LockTimeout(BrickError):
    """A connection lock could not be taken in time."""


class NotSupported(BrickError):
    """The host lacks what the operation needs (kernel module, tool, transport)."""


class InvalidConnectorProtocol(BrickError, ValueError):
    """The factory was asked for a protocol brick_agent has no connector for."""


class ConfigurationError(BrickError):
    """The configuration does not allow what was asked (e.g. the gate app is disabled)."""


class DeviceInUse(DeviceBusy):
    """A detach step was refused because processes hold the device open.

    ``holders`` lists them as ``(pid, command)`` pairs, read from /proc when the
    refusal happened (empty when none could be seen, e.g. a mount holds it).
    """

    def __init__(self, message: str, holders: list[tuple[int, str]]) -> None:
        self.holders = list(holders)
        shown = ", ".join(f"pid {pid} ({command})" for pid, command in self.holders)
        super().__init__(f"{message}; held open by {shown}" if shown else message)


class KernelActionTimeout(BrickError):
    """A blocking kernel action (a sysfs write such as ``delete_controller``) did not finish
    by its deadline; it was abandoned and the kernel may still complete it later."""


class NotOwned(InvalidArgument):
    """A privileged entrypoint refused to act on an object brick_agent does not own.

    ``obj`` names the object (``SCSI device 0:0:0:0``, ``NVMe controller nvme0``, ...)
    and ``reason`` says why it is not ours (local transport, boot session, mounted,
    another host identity).  ``args`` is ``(obj, reason)`` so oslo.privsep, which
    rebuilds a daemon's exception as ``type(*args)``, hands the caller this type.
    """

    def __init__(self, obj: str, reason: str) -> None:
        self.obj = obj
        self.reason = reason
        super().__init__(obj, reason)

    def __str__(self) -> str:
        return f"refusing to act on {self.obj}: {self.reason}"
