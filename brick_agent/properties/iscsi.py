"""iSCSI connection properties.

Targets come from the singular keys ``target_portal``/``target_iqn``/``target_lun``
(LUN default 0) and/or the plural keys ``target_portals``/``target_iqns``/
``target_luns`` (if ``target_luns`` is missing, ``target_lun`` is repeated).

* ``targets``: every distinct (portal, iqn, lun) -- the plurals if given, else the
  singular one.
* ``primary``: the singular target if given, else ``targets[0]``.

os-brick logs into all plural targets only with multipath; without multipath it
uses one target at a time (trying the others only as fall-backs).  Connectors
should do the same: ``primary`` first, ``targets`` for multipath or fail-over.
With ``use_multipath`` and no plurals, os-brick discovers portals with
sendtargets; :attr:`IscsiProperties.needs_discovery` says so.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from brick_agent.properties import _checks as c
from brick_agent.properties.common import (
    AddressingMode,
    CommonProperties,
    max_lun,
    parse_addressing,
    parse_common,
    scsi_lun,
)
from brick_agent.secrets import Secret

MAX_IQN = 223  # RFC 3720 3.2.6.1: iSCSI names are at most 223 bytes

_IQN_RE = re.compile(
    r"iqn\.[0-9]{4}-(?:0[1-9]|1[0-2])"
    r"\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(?::[A-Za-z0-9._:-]*)?"
)
_EUI_RE = re.compile(r"eui\.[0-9A-Fa-f]{16}")
_NAA_RE = re.compile(r"naa\.(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})")


@dataclasses.dataclass(frozen=True)
class Portal:
    """An iSCSI portal; ``host`` is an IP literal (IPv6 compressed) or a host name."""

    host: str
    port: int

    @property
    def address(self) -> str:
        """'ip:port', or '[v6]:port' for IPv6 -- the form iscsiadm's ``-p`` takes."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.address


@dataclasses.dataclass(frozen=True)
class IscsiTarget:
    portal: Portal
    iqn: str
    lun: int


@dataclasses.dataclass(frozen=True)
class ChapCredentials:
    """CHAP credentials; ``repr`` and :meth:`to_dict` mask the password."""

    username: str
    password: Secret
    method: str = "CHAP"


@dataclasses.dataclass(frozen=True, kw_only=True)
class IscsiProperties(CommonProperties):
    targets: tuple[IscsiTarget, ...]
    primary: IscsiTarget
    auth: ChapCredentials | None = None
    discovery_auth: ChapCredentials | None = None
    addressing_mode: AddressingMode = AddressingMode.SAM
    use_multipath: bool = False
    plural_targets: bool = False

    @property
    def needs_discovery(self) -> bool:
        """True when multipath is wanted but only one target was given (sendtargets)."""
        return self.use_multipath and not self.plural_targets

    def scsi_lun(self, lun: int | None = None) -> int:
        """LUN to scan for ``lun`` (default the primary's) under ``addressing_mode``."""
        return scsi_lun(self.primary.lun if lun is None else lun, self.addressing_mode)


def parse_portal(value: Any, path: str) -> Portal:
    """'host:port', '[ipv6]:port' (zone allowed) or 'ipv6:port'; a port is mandatory."""
    text = c.string(value, path, 300)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            c.fail(path, f"has an unclosed '[' in {c.shown(text)}")
        inner, rest = text[1:end], text[end + 1 :]
        if not rest.startswith(":"):
            c.fail(path, f"has no port: use '[ipv6]:port', got {c.shown(text)}")
        if ":" not in inner:
            c.fail(path, f"brackets are only for IPv6 addresses: {c.shown(text)}")
        return Portal(c.host(inner, path), c.port_text(rest[1:], path))
    if text.count(":") > 1:
        return _bare_ipv6_portal(text, path)
    host_part, sep, port_part = text.rpartition(":")
    if not sep:
        c.fail(path, f"has no port: expected 'host:port', got {c.shown(text)}")
    if not host_part:
        c.fail(path, f"has no host: expected 'host:port', got {c.shown(text)}")
    if len(host_part) > 253:
        c.fail(path, "host is longer than 253 characters")
    return Portal(c.host(host_part, path), c.port_text(port_part, path))


def _bare_ipv6_portal(text: str, path: str) -> Portal:
    """'fd00::5:3260' -- PowerStore and PowerMax write ``address + ':3260'`` for IPv6 too.

    A portal always carries a port here, so the last group is the port and the rest
    must be an IPv6 address (os-brick's discovery reads it the same way,
    ``rsplit(':', 1)``); iscsiadm is then given the bracketed form.
    """
    host_part, _, port_part = text.rpartition(":")
    try:
        addr = ipaddress.ip_address(host_part)
    except ValueError:
        addr = None
    if not isinstance(addr, ipaddress.IPv6Address) or not port_part.isdigit():
        c.fail(
            path,
            "IPv6 portals must be written '[address]:port' (or 'address:port' "
            f"with a decimal port), got {c.shown(text)}",
        )
    return Portal(c.host(host_part, path), c.port_text(port_part, path))


def parse_iqn(value: Any, path: str) -> str:
    """An iSCSI name: ``iqn.YYYY-MM.reversed.domain[:suffix]``, ``eui.<16 hex>`` or
    ``naa.<16|32 hex>``; case is kept (iscsiadm and the kernel compare names exactly)."""
    text = c.string(value, path, MAX_IQN)
    if len(text.encode()) > MAX_IQN:
        c.fail(path, f"is longer than {MAX_IQN} bytes")
    if not (_IQN_RE.fullmatch(text) or _EUI_RE.fullmatch(text) or _NAA_RE.fullmatch(text)):
        c.fail(
            path,
            "is not an iSCSI name (iqn.YYYY-MM.domain[:name], eui.<16 hex> or "
            f"naa.<16|32 hex>): {c.shown(text)}",
        )
    return text


def parse_lun(value: Any, path: str, mode: AddressingMode) -> int:
    return c.integer(value, path, 0, max_lun(mode))


def parse_chap(props: Mapping[str, Any], prefix: str) -> ChapCredentials | None:
    """``<prefix>method/username/password``: None, '' or 'None' mean no auth; only CHAP."""
    method_key = f"{prefix}method"
    method = props.get(method_key)
    if method is None:
        return None
    method = c.string(method, method_key, 16) if method != "" else ""
    if method == "" or method.lower() == "none":
        return None
    if method.upper() != "CHAP":
        c.fail(method_key, f"must be 'CHAP' or empty/None, got {c.shown(method)}")
    user_key, pass_key = f"{prefix}username", f"{prefix}password"
    username = c.token(c.require(props, user_key, ""), user_key)
    password = c.secret_text(props.get(pass_key), pass_key)
    return ChapCredentials(username=username, password=Secret(password))


def _targets(
    props: Mapping[str, Any], mode: AddressingMode
) -> tuple[IscsiTarget | None, tuple[IscsiTarget, ...]]:
    single: IscsiTarget | None = None
    if c.present(props, "target_portal") or c.present(props, "target_iqn"):
        portal = parse_portal(c.require(props, "target_portal", ""), "target_portal")
        iqn = parse_iqn(c.require(props, "target_iqn", ""), "target_iqn")
        lun_value = props.get("target_lun")
        lun = parse_lun(0 if lun_value is None else lun_value, "target_lun", mode)
        single = IscsiTarget(portal, iqn, lun)
    if not (c.present(props, "target_portals") or c.present(props, "target_iqns")):
        return single, ()
    portals = c.sequence(c.require(props, "target_portals", ""), "target_portals")
    iqns = c.sequence(c.require(props, "target_iqns", ""), "target_iqns")
    if len(portals) != len(iqns):
        c.fail("target_iqns", f"has {len(iqns)} items but target_portals has {len(portals)}")
    if c.present(props, "target_luns"):
        luns = c.sequence(props["target_luns"], "target_luns")
        if len(luns) != len(portals):
            c.fail("target_luns", f"has {len(luns)} items but target_portals has {len(portals)}")
        lun_paths = [f"target_luns[{i}]" for i in range(len(luns))]
    else:
        lun_value = props.get("target_lun")
        luns = (0 if lun_value is None else lun_value,) * len(portals)
        lun_paths = ["target_lun"] * len(portals)
    plural = tuple(
        dict.fromkeys(  # duplicates dropped, order kept
            IscsiTarget(
                parse_portal(p, f"target_portals[{i}]"),
                parse_iqn(q, f"target_iqns[{i}]"),
                parse_lun(n, lun_paths[i], mode),
            )
            for i, (p, q, n) in enumerate(zip(portals, iqns, luns, strict=True))
        )
    )
    return single, plural


def parse_iscsi(props: Mapping[str, Any], *, use_multipath: bool = False) -> IscsiProperties:
    """Validate an iSCSI ``connection_properties`` dict (never mutated)."""
    props = c.mapping(props, c.ROOT)
    common = parse_common(props)
    mode = parse_addressing(props)
    single, plural = _targets(props, mode)
    if plural:
        targets = plural
    elif single is not None:
        targets = (single,)
    else:
        c.fail("target_portal", "is required (or target_portals with target_iqns)")
    return IscsiProperties(
        targets=targets,
        primary=single or targets[0],
        auth=parse_chap(props, "auth_"),
        discovery_auth=parse_chap(props, "discovery_auth_"),
        addressing_mode=mode,
        use_multipath=bool(use_multipath),
        plural_targets=bool(plural),
        **common,
    )
