"""Strict validators shared by the protocol parsers.

Every failure raises :class:`InvalidConnectionProperties` naming the key as a
dotted/indexed path (``target_portals[1]``, ``volume_replicas[0].portals[2]``).
Messages show offending values only through :func:`shown` (truncated repr) and
never show values of secret keys.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from brick_agent.errors import InvalidConnectionProperties

ROOT = "<properties>"
MAX_SHOWN = 64
MAX_LEN = 255

# Characters that mean something to a shell or to option parsers; never valid in
# the identifiers we pass as command arguments or sysfs writes.
SHELL_META = frozenset(";&|$`<>(){}[]!*?'\"\\~#^%,=")
_TOKEN_RE = re.compile(r"[A-Za-z0-9._:@+/-]+")
_DNS_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}(-?)[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{4}\1[0-9a-fA-F]{12}"
)
_NGUID_RE = _UUID_RE  # 16 bytes too: plain 32 hex, or hyphenated 8-4-4-4-12 as sysfs shows it
_SPACE_RE = re.compile(r"\s")  # re's \s on str is exactly str.isspace()


def shown(value: Any) -> str:
    """A repr of ``value`` safe for messages: truncated to :data:`MAX_SHOWN` chars."""
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - hostile __repr__
        text = f"<{type(value).__name__}>"
    if len(text) > MAX_SHOWN:
        text = text[: MAX_SHOWN - 3] + "..."
    return text


def fail(key: str, problem: str) -> NoReturn:
    raise InvalidConnectionProperties(key, problem)


def join(path: str, key: str | int) -> str:
    """Child path: ``join('a', 'b') == 'a.b'``, ``join('a', 1) == 'a[1]'``, root elided."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return key if path in ("", ROOT) else f"{path}.{key}"


def mapping(value: Any, path: str) -> Mapping[str, Any]:
    """``value`` as a mapping whose keys are all ``str``."""
    if not isinstance(value, Mapping):
        fail(path, f"must be a mapping, not {type(value).__name__}")
    for k in value.keys():
        if not isinstance(k, str):
            fail(path, f"has a non-string key {shown(k)}")
    return value


def present(props: Mapping[str, Any], key: str) -> bool:
    """True if ``key`` is set to something other than None."""
    return props.get(key) is not None


def require(props: Mapping[str, Any], key: str, path: str) -> Any:
    value = props.get(key)
    if value is None:
        fail(join(path, key), "is required")
    return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(value: Any, path: str, lo: int, hi: int) -> int:
    """An ``int`` (never a bool) within ``lo..hi``."""
    if not is_int(value):
        fail(path, f"must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        fail(path, f"must be within {lo}..{hi}, got {shown(value)}")
    return int(value)


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        fail(path, f"must be a boolean, not {type(value).__name__}")
    return value


def string(value: Any, path: str, max_len: int = MAX_LEN) -> str:
    """A non-empty ``str`` without NUL/control/whitespace, not absurdly long."""
    if not isinstance(value, str):
        fail(path, f"must be a string, not {type(value).__name__}")
    if not value:
        fail(path, "must not be empty")
    if len(value) > max_len:
        fail(path, f"is longer than {max_len} characters")
    if not value.isprintable() or _SPACE_RE.search(value):
        fail(path, f"contains whitespace or a control character: {shown(value)}")
    return str(value)


def token(value: Any, path: str, max_len: int = MAX_LEN) -> str:
    """A safe identifier: ASCII letters, digits and ``._:@+/-``; no leading '-'."""
    text = string(value, path, max_len)
    if any(ch in SHELL_META for ch in text):
        fail(path, f"contains shell or option metacharacters: {shown(text)}")
    if not _TOKEN_RE.fullmatch(text):
        fail(path, f"contains characters outside [A-Za-z0-9._:@+/-]: {shown(text)}")
    if text.startswith("-"):
        fail(path, f"must not start with '-': {shown(text)}")
    return text


def secret_text(value: Any, path: str, max_len: int = MAX_LEN) -> str:
    """A secret: validated without ever putting its value in a message."""
    if not isinstance(value, str) or not value:
        fail(path, "must be a non-empty string")
    if len(value) > max_len:
        fail(path, f"is longer than {max_len} characters")
    if any(not ch.isprintable() or ch in "\t\r\n\x0b\x0c" for ch in value):
        fail(path, "contains a control character")
    return str(value)


def uuid_text(value: Any, path: str) -> str:
    """A UUID (32 hex, hyphenated 8-4-4-4-12 or not) as canonical lower hyphenated text."""
    text = string(value, path, 64)
    if not _UUID_RE.fullmatch(text):
        fail(path, f"is not a UUID: {shown(text)}")
    h = text.replace("-", "").lower()
    if h == "0" * 32:
        fail(path, "must not be the nil UUID")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def nguid_text(value: Any, path: str) -> str:
    """An NGUID (16 bytes) as canonical 32 lower hex without hyphens."""
    text = string(value, path, 64)
    if not _NGUID_RE.fullmatch(text):
        fail(path, f"is not an NGUID (32 hex digits, optionally 8-4-4-4-12): {shown(text)}")
    result = text.replace("-", "").lower()
    if result == "0" * 32:
        fail(path, "must not be all zeros (that means 'no NGUID')")
    return result


def ip_address(text: str, path: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP literal; IPv6 may carry a safe ``%zone``."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        fail(path, f"is not an IP address: {shown(text)}")
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", addr.scope_id) or addr.scope_id[0] == "-":
            fail(path, f"has an invalid IPv6 zone: {shown(text)}")
    return addr


def host_name(text: str, path: str) -> str:
    """A DNS host name (RFC 1123 labels, total <= 253); all-numeric names are refused."""
    if len(text) > 253:
        fail(path, "host name is longer than 253 characters")
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    if not all(_DNS_LABEL_RE.fullmatch(lbl) for lbl in labels):
        fail(path, f"is neither an IP address nor a valid host name: {shown(text)}")
    if all(lbl.isdigit() for lbl in labels):
        fail(path, f"is not a valid IPv4 address: {shown(text)}")
    return text


def host(text: str, path: str, allow_names: bool = True) -> str:
    """An IP literal (IPv6 compressed lower case) or, if allowed, a DNS host name."""
    if ":" in text or text.replace(".", "").isdigit():
        return str(ip_address(text, path))
    if not allow_names:
        fail(path, f"must be an IP address: {shown(text)}")
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return host_name(text, path)


def port(value: Any, path: str) -> int:
    """A TCP port 1..65535 given as int or decimal string."""
    if isinstance(value, str):
        if not _PORT_RE.fullmatch(value):
            fail(path, f"must be a port number 1..65535, got {shown(value)}")
        value = int(value)
    return integer(value, path, 1, 65535)


def port_text(text: str, path: str) -> int:
    if not _PORT_RE.fullmatch(text):
        fail(path, f"must end in ':<port>' with a port 1..65535, got {shown(text)}")
    return integer(int(text), path, 1, 65535)


def sequence(value: Any, path: str, max_items: int = 256) -> tuple[Any, ...]:
    """A list or tuple (not a str/mapping), not empty, with at most ``max_items``."""
    if not isinstance(value, (list, tuple)):
        fail(path, f"must be a list, not {type(value).__name__}")
    if not value:
        fail(path, "must not be empty")
    if len(value) > max_items:
        fail(path, f"has more than {max_items} items")
    return tuple(value)
