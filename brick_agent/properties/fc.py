"""Fibre Channel connection properties.

WWPNs come from ``target_wwns`` (list) or ``target_wwn`` (str or list), LUNs from
``target_luns`` (list) or ``target_lun`` (int).  Pairing follows os-brick: equal
lengths are zipped; a single LUN applies to every WWPN; anything else is an
error.  WWPNs are normalised to 16 lower-case hex digits (a ``0x`` prefix and
``:`` separators are accepted on input).  Duplicate (wwpn, lun) pairs are dropped.
"""

from __future__ import annotations

import dataclasses
import re
import types
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

_WWPN_RE = re.compile(r"(?:0[xX])?((?:[0-9a-fA-F]{2}:){7}[0-9a-fA-F]{2}|[0-9a-fA-F]{16})")
MAX_TARGETS = 256


@dataclasses.dataclass(frozen=True)
class FcTarget:
    wwpn: str
    lun: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class FcProperties(CommonProperties):
    targets: tuple[FcTarget, ...]
    initiator_target_map: Mapping[str, tuple[str, ...]] | None = dataclasses.field(
        default=None, hash=False
    )
    addressing_mode: AddressingMode = AddressingMode.SAM
    enable_wildcard_scan: bool = True

    @property
    def target_wwpns(self) -> tuple[str, ...]:
        """Distinct target WWPNs in input order."""
        return tuple(dict.fromkeys(t.wwpn for t in self.targets))

    def targets_for_initiator(self, initiator_wwpn: str) -> tuple[FcTarget, ...]:
        """Targets an HBA should scan: all without a map, none if the map omits the HBA."""
        if self.initiator_target_map is None:
            return self.targets
        wanted = self.initiator_target_map.get(normalize_wwpn(initiator_wwpn) or "", ())
        return tuple(t for t in self.targets if t.wwpn in wanted)

    def scsi_lun(self, lun: int) -> int:
        """LUN to scan for ``lun`` under ``addressing_mode``."""
        return scsi_lun(lun, self.addressing_mode)


def normalize_wwpn(text: str) -> str | None:
    """16 lower hex digits, or None if ``text`` is not a WWPN ('0x' and ':' allowed)."""
    if not isinstance(text, str):
        return None
    m = _WWPN_RE.fullmatch(text)
    return m.group(1).replace(":", "").lower() if m else None


def parse_wwpn(value: Any, path: str) -> str:
    text = c.string(value, path, 32)
    wwpn = normalize_wwpn(text)
    if wwpn is None:
        c.fail(path, f"is not a WWPN (16 hex digits, optional 0x and ':'): {c.shown(text)}")
    if wwpn == "0" * 16:
        c.fail(path, "must not be all zeros")
    return wwpn


def _wwpns(props: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(path, wwpn) pairs from target_wwns or target_wwn."""
    key = "target_wwns" if c.present(props, "target_wwns") else "target_wwn"
    value = c.require(props, key, "")
    if isinstance(value, str):
        return ((key, parse_wwpn(value, key)),)
    items = c.sequence(value, key, MAX_TARGETS)
    return tuple((f"{key}[{i}]", parse_wwpn(v, f"{key}[{i}]")) for i, v in enumerate(items))


def _luns(props: Mapping[str, Any], mode: AddressingMode) -> tuple[tuple[str, int], ...]:
    hi = max_lun(mode)
    if c.present(props, "target_luns"):
        items = c.sequence(props["target_luns"], "target_luns", MAX_TARGETS)
        return tuple(
            (f"target_luns[{i}]", c.integer(v, f"target_luns[{i}]", 0, hi))
            for i, v in enumerate(items)
        )
    return (("target_lun", c.integer(c.require(props, "target_lun", ""), "target_lun", 0, hi)),)


def _itmap(value: Any) -> Mapping[str, tuple[str, ...]]:
    path = "initiator_target_map"
    value = c.mapping(value, path)
    if len(value) > MAX_TARGETS:
        c.fail(path, f"has more than {MAX_TARGETS} initiators")
    out: dict[str, tuple[str, ...]] = {}
    for key, targets in value.items():
        init = parse_wwpn(key, f"{path}[{c.shown(key)}]")
        kpath = f"{path}.{init}"
        items = (targets,) if isinstance(targets, str) else c.sequence(targets, kpath, MAX_TARGETS)
        wwpns = tuple(parse_wwpn(t, f"{kpath}[{i}]") for i, t in enumerate(items))
        out[init] = tuple(dict.fromkeys(out.get(init, ()) + wwpns))
    return types.MappingProxyType(out)


def parse_fc(props: Mapping[str, Any]) -> FcProperties:
    """Validate a Fibre Channel ``connection_properties`` dict (never mutated)."""
    props = c.mapping(props, c.ROOT)
    common = parse_common(props)
    mode = parse_addressing(props)
    wwpns = _wwpns(props)
    luns = _luns(props, mode)
    if len(luns) == len(wwpns):
        pairs = [(w, lun) for (_, w), (_, lun) in zip(wwpns, luns, strict=True)]
    elif len(luns) == 1:
        pairs = [(w, luns[0][1]) for _, w in wwpns]
    else:
        c.fail(
            "target_luns",
            f"has {len(luns)} items for {len(wwpns)} WWPNs (need one LUN, or one per WWPN)",
        )
    targets = tuple(dict.fromkeys(FcTarget(w, lun) for w, lun in pairs))
    itmap = (
        _itmap(props["initiator_target_map"]) if c.present(props, "initiator_target_map") else None
    )
    wildcard = (
        c.boolean(props["enable_wildcard_scan"], "enable_wildcard_scan")
        if c.present(props, "enable_wildcard_scan")
        else True
    )
    return FcProperties(
        targets=targets,
        initiator_target_map=itmap,
        addressing_mode=mode,
        enable_wildcard_scan=wildcard,
        **common,
    )
