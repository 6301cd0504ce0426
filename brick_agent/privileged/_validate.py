"""Argument checks shared by the privileged entrypoints.

Each check returns the normalised value or raises
:class:`~brick_agent.errors.InvalidArgument`.  Messages never echo secrets.
"""

from __future__ import annotations

import ipaddress
import os
import re
import uuid as uuidlib

from brick_agent.errors import InvalidArgument
from brick_agent.host import sysfs
from brick_agent.nqn import nqn_problem

#: Characters never accepted in a non-secret argument (shell/globbing metas,
#: quotes, whitespace, control characters).
_META = re.compile(r"""[\s;&|`$<>(){}\[\]*?!~'"\\#\x00-\x1f\x7f]""")

SCSI_DISK = re.compile(r"^sd[a-z]{1,4}$")
NVME_NAMESPACE = re.compile(r"^nvme\d{1,4}(?:c\d{1,4})?n\d{1,5}$")
NVME_CONTROLLER = re.compile(r"^nvme\d{1,4}$")
DM_DEVICE = re.compile(r"^dm-\d{1,6}$")
BLOCK_DEVICE = re.compile(r"^(?:sd[a-z]{1,4}|nvme\d{1,4}(?:c\d{1,4})?n\d{1,5}|dm-\d{1,6})$")
#: What multipathd may be given as a path: SCSI disks and NVMe namespace devices of a
#: controller (non-native NVMe multipath); never dm devices or hidden nvmeXcYnZ nodes.
MULTIPATH_PATH_DEVICE = re.compile(r"^(?:sd[a-z]{1,4}|nvme\d{1,4}n\d{1,5})$")

_IQN = re.compile(r"^iqn\.\d{4}-\d{2}\.[A-Za-z0-9][A-Za-z0-9.-]*(?::[A-Za-z0-9._:-]+)?$")
_EUI = re.compile(r"^eui\.[0-9A-Fa-f]{16}$")
_NAA = re.compile(r"^naa\.[0-9A-Fa-f]{16}(?:[0-9A-Fa-f]{16})?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_IFACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_MAP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_WWID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_FC_ADDR = re.compile(r"^nn-0x[0-9a-fA-F]{16}:pn-0x[0-9a-fA-F]{16}$")


def plain_str(value: object, what: str, *, max_len: int = 255, allow: str = "") -> str:
    """A non-empty str that cannot act as an option and holds no metacharacter.

    ``allow`` lists metacharacters accepted here (e.g. the brackets of an IPv6 portal).
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string")
    if not value:
        raise InvalidArgument(f"{what} is empty")
    if len(value) > max_len:
        raise InvalidArgument(f"{what} is longer than {max_len} characters")
    if value.startswith("-"):
        raise InvalidArgument(f"{what} must not start with '-': {value!r}")
    checked = value.translate({ord(c): None for c in allow}) if allow else value
    if _META.search(checked):
        raise InvalidArgument(f"{what} contains a forbidden character: {value!r}")
    return value


def matching(value: object, pattern: re.Pattern[str], what: str, *, max_len: int = 255) -> str:
    value = plain_str(value, what, max_len=max_len)
    if not pattern.match(value):
        raise InvalidArgument(f"{what} is not valid: {value!r}")
    return value


def int_arg(
    value: object, what: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """An int (not a bool, not a string) within bounds."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{what} must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise InvalidArgument(f"{what} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"{what} must be <= {maximum}, got {value}")
    return value


def timeout_arg(value: object, what: str = "timeout", *, maximum: float = 3600.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"{what} must be a number of seconds")
    if not 0 < value <= maximum:
        raise InvalidArgument(f"{what} must be in (0, {maximum}]")
    return float(value)


def secret_value(value: object, what: str, *, max_len: int = 255) -> str:
    """A secret (CHAP password): printable, no NUL/newline; never echoed."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string")
    if not value or len(value) > max_len:
        raise InvalidArgument(f"{what} must have 1..{max_len} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidArgument(f"{what} contains a control character")
    return value


def device_name(
    value: object, pattern: re.Pattern[str] = BLOCK_DEVICE, what: str = "device name"
) -> str:
    return matching(value, pattern, what, max_len=32)


def hctl(value: object) -> tuple[int, int, int, int]:
    """``"H:C:T:L"`` or a 4-sequence of ints → a tuple of 4 ints."""
    if isinstance(value, str):
        plain_str(value, "HCTL", max_len=64)
        parts = value.split(":")
        if len(parts) != 4 or not all(p.isdigit() and p.isascii() for p in parts):
            raise InvalidArgument(f"HCTL must be H:C:T:L, got {value!r}")
        nums = [int(p) for p in parts]
    elif isinstance(value, (list, tuple)) and len(value) == 4:
        nums = [int_arg(v, "HCTL element", minimum=0) for v in value]
    else:
        raise InvalidArgument(f"HCTL must be H:C:T:L, got {value!r}")
    for n in nums:
        int_arg(n, "HCTL element", minimum=0, maximum=2**64 - 1)
    return nums[0], nums[1], nums[2], nums[3]


def scan_element(value: object, what: str) -> str:
    """Channel/target/LUN of a SCSI host scan: a non-negative int or the wildcard '-'."""
    if value == "-":
        return "-"
    return str(int_arg(value, what, minimum=0, maximum=2**64 - 1))


def iqn(value: object, what: str = "IQN") -> str:
    value = plain_str(value, what, max_len=223)
    if not (_IQN.match(value) or _EUI.match(value) or _NAA.match(value)):
        raise InvalidArgument(f"{what} is not an iSCSI name: {value!r}")
    return value


def nqn(value: object, what: str = "NQN") -> str:
    """An NQN the kernel's fabrics option parser accepts (:func:`brick_agent.nqn.nqn_problem`)."""
    problem = nqn_problem(value)
    if problem:
        raise InvalidArgument(f"{what} {problem}: {value!r:.80}")
    assert isinstance(value, str)
    return value


def host_address(value: object, what: str = "address") -> str:
    """An IPv4/IPv6 address or a DNS name (IPv6 may come in brackets)."""
    value = plain_str(value, what, max_len=253, allow="[]")
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
        if "%" in bare and not re.match(r"^[A-Za-z0-9_.-]{1,15}$", bare.split("%", 1)[1]):
            raise InvalidArgument(f"{what} has a bad zone id: {value!r}")
        return bare
    except ValueError:
        pass
    if _HOSTNAME.match(value):
        return value
    raise InvalidArgument(f"{what} is not an address or host name: {value!r}")


def port(value: object, what: str = "port") -> int:
    if isinstance(value, str) and value.isdigit() and value.isascii():
        value = int(value)
    return int_arg(value, what, minimum=1, maximum=65535)


def portal(value: object) -> str:
    """``ip:port``, ``[ipv6]:port`` or ``host:port`` → normalised ``ip:port`` form."""
    value = plain_str(value, "portal", max_len=300, allow="[]")
    if value.startswith("["):
        addr, sep, rest = value[1:].partition("]:")
        if not sep:
            raise InvalidArgument(f"portal must be [address]:port, got {value!r}")
        host_address(addr, "portal address")
        return f"[{addr}]:{port(rest, 'portal port')}"
    addr, sep, rest = value.rpartition(":")
    if not sep or ":" in addr:
        raise InvalidArgument(f"portal must be address:port, got {value!r}")
    host_address(addr, "portal address")
    return f"{addr}:{port(rest, 'portal port')}"


def iface(value: object) -> str:
    return matching(value, _IFACE, "iface", max_len=64)


def map_name(value: object) -> str:
    return matching(value, _MAP_NAME, "multipath map name", max_len=128)


def wwid(value: object) -> str:
    return matching(value, _WWID, "WWID", max_len=128)


def uuid_str(value: object, what: str = "UUID") -> str:
    value = plain_str(value, what, max_len=36)
    try:
        return str(uuidlib.UUID(value))
    except ValueError:
        raise InvalidArgument(f"{what} is not a UUID: {value!r}") from None


def fc_address(value: object, what: str = "FC address") -> str:
    return matching(value, _FC_ADDR, what, max_len=64)


def path_under(root: str, path: str) -> str:
    """``path`` resolved (symlinks followed: by the kernel when it exists, three calls
    where ``realpath`` takes one per component); must stay below ``root``."""
    real_root = os.path.realpath(root)
    real = sysfs.resolve(path) or os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise InvalidArgument(f"{path} resolves outside {root}")
    return real
