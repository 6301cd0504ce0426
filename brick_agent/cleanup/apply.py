"""Apply a cleanup plan: each item re-examined under its lock, then acted on or skipped.

For each item, in the plan's order: take the lock an attach or detach of that target
takes (iSCSI: the target's portal+IQN lock; NVMe-oF: the subsystem's lock, exclusive),
read the ledger and the host again (:func:`~.examine.examine`), and act only when the
object is still a leftover with the same evidence.  Otherwise the item is skipped:
``changed`` (gone, no longer a leftover, or other evidence) or ``refused`` (now kept:
in the ledger, in use, pending; or refused by the privileged side's ownership checks).
An action that fails is ``failed``; the next items still run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from brick_agent import errors, locking
from brick_agent.cleanup import items as K
from brick_agent.cleanup.actions import CleanupActions
from brick_agent.cleanup.examine import Context, examine
from brick_agent.cleanup.items import ApplyResult, ItemResult, Kept, PlanItem
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.host.scsi import Hctl

LOG = logging.getLogger(__name__)


def _lock(item: PlanItem, lock_path: str | None, timeout: float) -> Any:
    """The lock an attach/detach of the item's target holds (none for maps, links, wwids)."""
    ev = item.evidence
    portal, target, nqn = ev.get("portal"), ev.get("target"), ev.get("subsysnqn")
    if item.kind in (K.ISCSI_SESSION, K.ISCSI_NODE, K.SCSI_DEVICE) and portal and target:
        key = locking.iscsi_target_key(str(portal), str(target))
        return locking.target_rw_lock("iscsi", key, lock_path=lock_path).exclusive(timeout)
    if item.kind in (K.NVME_CONTROLLER, K.NVME_UNUSED) and nqn:
        return locking.target_rw_lock("nvme", str(nqn), lock_path=lock_path).exclusive(timeout)
    return contextlib.nullcontext()  # (evidence without them cannot match: skipped below)


def _act(actions: CleanupActions, item: PlanItem) -> None:
    ev = item.evidence
    if item.kind in (K.MAP, K.MAP_NOT_IN_LEDGER):
        actions.remove_map(item.object)
    elif item.kind == K.SCSI_DEVICE:
        actions.flush(str(ev["device"]))
        actions.delete_scsi_device(Hctl.parse(item.object))
    elif item.kind == K.ISCSI_SESSION:
        actions.logout(str(ev["portal"]), str(ev["target"]), str(ev["iface"]))
    elif item.kind == K.ISCSI_NODE:
        actions.delete_node_record(str(ev["portal"]), str(ev["target"]), str(ev["iface"]))
    elif item.kind in (K.NVME_CONTROLLER, K.NVME_UNUSED):
        for ns in ev.get("namespaces") or {}:
            actions.flush(str(ns))
        actions.delete_controller(item.object)
    elif item.kind == K.WWID:
        actions.forget_wwid(item.object)
    elif item.kind == K.LINK:
        _, _, _, kind, name = item.object.split("/", 4)
        actions.remove_link(kind, name, str(ev["target"]))


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    return "; ".join(
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)
    )


#: kinds only ``--ledger`` plans (without it they are never leftovers)
LEDGER_KINDS = frozenset({K.SCSI_DEVICE, K.MAP_NOT_IN_LEDGER, K.NVME_UNUSED})


def _verify(ctx: Context, item: PlanItem) -> ItemResult | None:
    """None when ``item`` is still the leftover it was planned as; else the skip."""
    now = examine(ctx, item.kind, item.object)
    if now is None and item.kind in LEDGER_KINDS and not ctx.authoritative:
        return ItemResult(item, K.CHANGED, "planned with --ledger: apply it with --ledger")
    if now is None:
        return ItemResult(item, K.CHANGED, "gone, or no longer a leftover")
    if isinstance(now, Kept):
        return ItemResult(item, K.REFUSED, now.reason)
    if now.kind != item.kind:
        return ItemResult(item, K.CHANGED, f"now a {now.kind}")
    if now.evidence != item.evidence:
        return ItemResult(
            item, K.CHANGED, "evidence changed: " + _changes(item.evidence, now.evidence)
        )
    return None


def _apply_one(
    item: PlanItem, actions: CleanupActions, fresh: Any, lock_path: str | None, timeout: float
) -> ItemResult:
    try:
        with _lock(item, lock_path, timeout):
            skip = _verify(fresh(), item)
            if skip is not None:
                return skip
            _act(actions, item)
    except errors.NotOwned as exc:
        return ItemResult(item, K.REFUSED, str(exc))
    except Exception as exc:  # noqa: BLE001 - reported per item (a privsep start failure too)
        return ItemResult(item, K.FAILED, f"{type(exc).__name__}: {exc}")
    LOG.info("cleanup applied %s %s: %s", item.kind, item.object, item.action)
    return ItemResult(item, K.APPLIED, item.action)


def apply_plan(
    plan_items: Iterable[PlanItem],
    actions: CleanupActions,
    roots: HostRoots = DEFAULT_ROOTS,
    ledger: Any = None,
    *,
    authoritative: bool = False,
    lock_path: str | None = None,
    lock_timeout: float = 60.0,
) -> ApplyResult:
    """Apply ``plan_items`` (in the plan's kind order) on the host at ``roots``.

    ``ledger``/``authoritative`` as for :func:`~.plan.build_plan`; the ledger is read
    again for every item (an unreadable ledger fails that item: nothing is decided
    without it).
    """

    def fresh() -> Context:
        data = ledger.read() if ledger is not None else None
        return Context(roots, data, authoritative=authoritative)

    result = ApplyResult()
    for item in sorted(plan_items, key=lambda i: K.ORDER.index(i.kind)):
        result.results.append(_apply_one(item, actions, fresh, lock_path, lock_timeout))
    return result
