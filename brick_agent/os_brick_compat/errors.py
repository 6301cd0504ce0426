"""brick_agent errors as os-brick exceptions, at the boundary of the compat connectors.

An error leaving a compat connector is an instance of *both* its brick_agent
class (same attributes, same message) and the os-brick class a caller of
os-brick catches for that situation.  The pairs follow what os-brick 7.1.1
raises and what Nova 34 / Cinder 29 catch:

==========================  ==================================================
brick_agent                 os-brick
==========================  ==================================================
DeviceNotFound              VolumeDeviceNotFound(device=) (FC: also
                            NoFibreChannelVolumeDeviceFound). Nova's iSCSI
                            detach ignores it, as with os-brick.
VolumeIdentityMismatch      attach/extend: VolumeDeviceNotFound (the volume's
                            device is not there, another one is); detach:
                            BrickException, deliberately *not* ignorable.
TargetUnreachable           iSCSI: FailedISCSITargetPortalLogin and
                            TargetPortalsNotFound (Cinder's Datera retries on
                            the former); NVMe-oF: VolumeDeviceNotFound (what
                            os-brick raises when no controller connects); FC:
                            NoFibreChannelVolumeDeviceFound
AuthenticationFailed        iSCSI: FailedISCSITargetPortalLogin; else BrickException
LeftoversRemain             VolumePathNotRemoved(volume_path=<leftovers>)
InvalidConnectionProperties InvalidParameterValue(err=) (and still a ValueError)
InvalidArgument             InvalidParameterValue(err=)
CommandFailed               CommandExecutionFailed(cmd=)
InvalidConnectorProtocol    os_brick.exception.InvalidConnectorProtocol (ValueError)
any other BrickError        BrickException
==========================  ==================================================

The combined classes are made once per pair and cached; errors that already
are os-brick exceptions, or are not brick_agent's, pass through untouched.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from os_brick import exception as ob

from brick_agent import errors as ours

#: operations of a connector, for the few mappings that depend on them
ATTACH, DETACH, EXTEND, QUERY = "attach", "detach", "extend", "query"

_Target = tuple[type[BaseException], dict[str, Any]]

_CACHE: dict[tuple[type[BaseException], tuple[type[BaseException], ...]], type[BaseException]] = {}
_CACHE_LOCK = threading.Lock()


def os_brick_classes(
    exc: ours.BrickError, protocol: str, op: str, device: str = ""
) -> list[_Target]:
    """The os-brick classes (with their template kwargs) ``exc`` must also be."""
    iscsi = protocol == "ISCSI"
    if isinstance(exc, ours.InvalidConnectorProtocol):
        return [(ob.InvalidConnectorProtocol, {})]
    if isinstance(exc, (ours.InvalidConnectionProperties, ours.InvalidArgument)):
        return [(ob.InvalidParameterValue, {"err": str(exc)})]
    if isinstance(exc, ours.DeviceNotFound):
        out: list[_Target] = [(ob.VolumeDeviceNotFound, {"device": device})]
        if protocol == "FIBRE_CHANNEL":
            out.append((ob.NoFibreChannelVolumeDeviceFound, {}))
        return out
    if isinstance(exc, ours.VolumeIdentityMismatch):
        if op == DETACH:
            return [(ob.BrickException, {})]
        return [(ob.VolumeDeviceNotFound, {"device": device})]
    if isinstance(exc, ours.TargetUnreachable):
        if iscsi:
            return [
                (ob.FailedISCSITargetPortalLogin, {}),
                (ob.TargetPortalsNotFound, {"target_portals": device}),
            ]
        if protocol == "FIBRE_CHANNEL":
            return [(ob.NoFibreChannelVolumeDeviceFound, {})]
        return [(ob.VolumeDeviceNotFound, {"device": device})]
    if isinstance(exc, ours.AuthenticationFailed) and iscsi:
        return [(ob.FailedISCSITargetPortalLogin, {})]
    if isinstance(exc, ours.LeftoversRemain):
        return [(ob.VolumePathNotRemoved, {"volume_path": ", ".join(exc.leftovers)})]
    if isinstance(exc, ours.CommandFailed):
        return [(ob.CommandExecutionFailed, {"cmd": " ".join(exc.argv)})]
    return [(ob.BrickException, {})]


def combined_class(
    ours_cls: type[BaseException], theirs: tuple[type[BaseException], ...]
) -> type[BaseException]:
    """The class deriving from ``ours_cls`` and every class of ``theirs`` (cached)."""
    key = (ours_cls, theirs)
    with _CACHE_LOCK:
        cls = _CACHE.get(key)
        if cls is None:
            cls = type(
                ours_cls.__name__,
                (ours_cls, *theirs),
                {
                    "__module__": __name__,
                    "__doc__": f"{ours_cls.__doc__ or ''} (also os-brick's "
                    f"{', '.join(t.__name__ for t in theirs)})",
                },
            )
            _CACHE[key] = cls
        return cls


def translate(exc: BaseException, protocol: str, op: str, device: str = "") -> BaseException:
    """``exc`` as an instance of its os-brick counterpart too (a new object), or ``exc``."""
    if not isinstance(exc, ours.BrickError) or isinstance(
        exc, (ob.BrickException, ob.InvalidConnectorProtocol)
    ):
        return exc
    targets = os_brick_classes(exc, protocol, op, device)
    cls = combined_class(type(exc), tuple(t for t, _ in targets))
    new = cls.__new__(cls)
    new.__dict__.update(exc.__dict__)
    if issubclass(cls, ob.BrickException):
        kwargs: dict[str, Any] = {}
        for _, extra in targets:
            kwargs.update(extra)
        ob.BrickException.__init__(new, str(exc), **kwargs)
    else:
        Exception.__init__(new, str(exc))
    new.args = exc.args
    return new


@contextlib.contextmanager
def as_os_brick_errors(protocol: str, op: str, device: str = "") -> Iterator[None]:
    """Re-raise brick_agent errors of the block as their :func:`translate` d form."""
    try:
        yield
    except ours.BrickError as exc:
        new = translate(exc, protocol, op, device)
        if new is exc:
            raise
        raise new.with_traceback(exc.__traceback__) from exc.__cause__


__all__ = [
    "ATTACH",
    "DETACH",
    "EXTEND",
    "QUERY",
    "as_os_brick_errors",
    "combined_class",
    "os_brick_classes",
    "translate",
]
