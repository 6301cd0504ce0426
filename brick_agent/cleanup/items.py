"""The cleanup's vocabulary: plan items, objects kept, and the outcome of applying an item."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from brick_agent.errors import InvalidArgument

# Item kinds, in the order apply runs them (maps release their paths, devices their
# sessions; links and wwids entries last).
MAP = "multipath_map_without_usable_paths"
MAP_NOT_IN_LEDGER = "multipath_map_not_in_ledger"
SCSI_DEVICE = "scsi_device_not_in_ledger"
ISCSI_SESSION = "iscsi_session_without_luns"
ISCSI_NODE = "iscsi_node_record_without_session"
NVME_CONTROLLER = "nvme_controller_without_namespaces"
NVME_UNUSED = "nvme_controller_namespaces_unused"
WWID = "wwids_entry_without_device"
LINK = "dangling_link"
ORDER = (
    MAP,
    MAP_NOT_IN_LEDGER,
    SCSI_DEVICE,
    ISCSI_SESSION,
    ISCSI_NODE,
    NVME_CONTROLLER,
    NVME_UNUSED,
    WWID,
    LINK,
)
_PREFIX = {
    MAP: "map",
    MAP_NOT_IN_LEDGER: "map",
    SCSI_DEVICE: "scsi",
    ISCSI_SESSION: "sess",
    ISCSI_NODE: "node",
    NVME_CONTROLLER: "ctrl",
    NVME_UNUSED: "ctrl",
    WWID: "wwid",
    LINK: "link",
}

# Outcomes of applying an item.
APPLIED = "applied"
CHANGED = "changed"  # its evidence changed (or it is gone): skipped
REFUSED = "refused"  # now kept (ledger, in use, foreign) or refused by the privileged side
FAILED = "failed"  # the action failed


def item_id(kind: str, obj: str) -> str:
    """A stable id of (kind, object): the same leftover has the same id in every plan."""
    digest = hashlib.sha256(f"{kind}\0{obj}".encode()).hexdigest()[:10]
    return f"{_PREFIX.get(kind, 'item')}-{digest}"


@dataclasses.dataclass(frozen=True)
class PlanItem:
    """One leftover and what removing it takes.

    ``evidence``: what was observed (compared again right before acting: any change
    skips the item); ``detail``: context that may change without making the item
    unsafe (e.g. the planned map holding a device); ``action``: the exact commands.
    """

    kind: str
    object: str
    evidence: dict[str, Any]
    action: str
    detail: str = ""

    @property
    def id(self) -> str:
        return item_id(self.kind, self.object)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "object": self.object,
            "evidence": self.evidence,
            "action": self.action,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Any) -> PlanItem:
        """An item of a saved plan (``brick-agent cleanup`` output); InvalidArgument if bad."""
        if not isinstance(data, dict) or data.get("kind") not in ORDER:
            raise InvalidArgument(f"not a cleanup plan item: {json.dumps(data)[:200]}")
        if not isinstance(data.get("object"), str) or not isinstance(data.get("evidence"), dict):
            raise InvalidArgument(f"plan item without object/evidence: {json.dumps(data)[:200]}")
        item = cls(data["kind"], data["object"], data["evidence"], str(data.get("action", "")))
        if data.get("id") not in (None, item.id):
            raise InvalidArgument(f"plan item id {data.get('id')!r} does not match its object")
        return item


@dataclasses.dataclass(frozen=True)
class Kept:
    """A leftover candidate the cleanup leaves alone, and why (ledger, use, owner)."""

    kind: str
    object: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "object": self.object, "reason": self.reason}


@dataclasses.dataclass
class Plan:
    items: list[PlanItem] = dataclasses.field(default_factory=list)
    kept: list[Kept] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    ledger: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "plan",
            "ledger": self.ledger,
            "items": [i.to_dict() for i in self.items],
            "kept": [k.to_dict() for k in self.kept],
            "errors": list(self.errors),
        }


@dataclasses.dataclass(frozen=True)
class ItemResult:
    item: PlanItem
    outcome: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.item.id,
            "kind": self.item.kind,
            "object": self.item.object,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclasses.dataclass
class ApplyResult:
    results: list[ItemResult] = dataclasses.field(default_factory=list)
    kept: list[Kept] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    ledger: str | None = None

    @property
    def complete(self) -> bool:
        """Every item applied."""
        return all(r.outcome == APPLIED for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        counts = {o: 0 for o in (APPLIED, CHANGED, REFUSED, FAILED)}
        for r in self.results:
            counts[r.outcome] += 1
        return {
            "mode": "apply",
            "ledger": self.ledger,
            "results": [r.to_dict() for r in self.results],
            "counts": counts,
            "kept": [k.to_dict() for k in self.kept],
            "errors": list(self.errors),
        }
