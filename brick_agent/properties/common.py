"""Fields every protocol shares, SCSI LUN addressing, and the JSON-safe dump helper."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from enum import Enum, StrEnum
from typing import Any, Literal

from brick_agent.properties import _checks as c
from brick_agent.secrets import MASK, Secret

AccessMode = Literal["rw", "ro"]

_DEVICE_PATH_RE = re.compile(r"/[A-Za-z0-9._:@+/-]*")
MAX_DEVICE_PATH = 1024


class AddressingMode(StrEnum):
    """How a LUN number from the volume service maps to the number Linux scans.

    * ``SAM`` (default) and ``transparent``: no translation; the number is the
      Linux 64-bit LUN already.
    * ``SAM2``: peripheral addressing below 256, flat space addressing from 256
      (SAM-2 forbids flat addressing for 0..255).
    * ``SAM3-flat``: flat space addressing for every LUN.

    Flat space addressing puts ``01b`` in the two top bits of the first LUN level;
    Linux's int LUN (``scsilun_to_int``) keeps those bits, so the number to scan is
    ``lun | 0x4000`` == ``lun + 16384`` for a 14-bit ``lun``.
    """

    SAM = "SAM"
    TRANSPARENT = "transparent"
    SAM2 = "SAM2"
    SAM3_FLAT = "SAM3-flat"


FLAT_SPACE_FLAG = 0x4000
MAX_FLAT_LUN = 0x3FFF  # 14-bit flat space LUN field
MAX_SAM_LUN = 2**64 - 1  # Linux scans 64-bit LUNs


def max_lun(mode: AddressingMode) -> int:
    """Highest LUN accepted in ``mode``: 16383 for SAM2/SAM3-flat, 2**64-1 otherwise."""
    if mode in (AddressingMode.SAM2, AddressingMode.SAM3_FLAT):
        return MAX_FLAT_LUN
    return MAX_SAM_LUN


def scsi_lun(lun: int, mode: AddressingMode | str = AddressingMode.SAM) -> int:
    """The LUN number to use in a SCSI scan (``echo c t L > .../scan``) for ``mode``."""
    mode = AddressingMode(mode)
    if lun < 0 or lun > max_lun(mode):
        raise ValueError(f"LUN {lun} out of range for addressing mode {mode}")
    if mode is AddressingMode.SAM3_FLAT or (mode is AddressingMode.SAM2 and lun >= 256):
        return lun + FLAT_SPACE_FLAG
    return lun


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommonProperties:
    """Keys shared by every protocol."""

    access_mode: AccessMode = "rw"
    encrypted: bool = False
    volume_id: str | None = None
    device_path: str | None = None
    enforce_multipath: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of this model with secrets masked (for logs and the gate app)."""
        return jsonable(self)

    def redacted(self) -> dict[str, Any]:
        """Same as :meth:`to_dict` (secrets are always masked)."""
        return self.to_dict()


def parse_common(props: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for :class:`CommonProperties` read from ``props``."""
    out: dict[str, Any] = {}
    if c.present(props, "access_mode"):
        mode = c.string(props["access_mode"], "access_mode", 8)
        if mode not in ("rw", "ro"):
            c.fail("access_mode", f"must be 'rw' or 'ro', got {c.shown(mode)}")
        out["access_mode"] = mode
    if c.present(props, "encrypted"):
        out["encrypted"] = c.boolean(props["encrypted"], "encrypted")
    if c.present(props, "volume_id"):
        out["volume_id"] = c.token(props["volume_id"], "volume_id")
    if c.present(props, "device_path"):
        path = c.string(props["device_path"], "device_path", MAX_DEVICE_PATH)
        if not _DEVICE_PATH_RE.fullmatch(path) or "/../" in path + "/" or "/./" in path + "/":
            c.fail(
                "device_path",
                f"must be a normalised absolute path of safe characters: {c.shown(path)}",
            )
        out["device_path"] = path
    if "enforce_multipath" in props:  # None is a meaningful value here ("unset")
        value = props["enforce_multipath"]
        out["enforce_multipath"] = None if value is None else c.boolean(value, "enforce_multipath")
    return out


def parse_addressing(props: Mapping[str, Any]) -> AddressingMode:
    """``addressing_mode`` (case-insensitive), default SAM."""
    if not c.present(props, "addressing_mode"):
        return AddressingMode.SAM
    text = c.string(props["addressing_mode"], "addressing_mode", 16)
    for mode in AddressingMode:
        if mode.value.lower() == text.lower():
            return mode
    c.fail(
        "addressing_mode", f"must be one of SAM, transparent, SAM2, SAM3-flat; got {c.shown(text)}"
    )


def jsonable(value: Any) -> Any:
    """Dataclasses, enums, tuples, mappings and secrets turned into JSON-safe values."""
    if isinstance(value, Secret):
        return MASK
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr
        }
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
