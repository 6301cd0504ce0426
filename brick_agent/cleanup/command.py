"""``brick-agent cleanup``: the plan (default) or its application (``--apply``).

Exit codes: plan: 0 nothing to clean, 6 the plan has items; apply: 0 every item
applied (or nothing to do), 6 an item was skipped (changed, refused) or failed;
1 when a host view could not be read (the plan may be incomplete); 2 invalid input
(an unknown ``--only`` id, a malformed ``--plan`` file, ``--apply`` with ``--host-root``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from brick_agent import errors
from brick_agent.cleanup.items import ApplyResult, Plan, PlanItem

EXIT_OK, EXIT_ERROR, EXIT_LEFTOVERS = 0, 1, 6

HELP = (
    "plan (default) or apply (--apply) the removal of what failed detaches left behind: "
    "iSCSI sessions without LUNs and node records without sessions, maps without usable "
    "paths, NVMe-oF controllers without (used) namespaces, dangling /dev/disk links, stale "
    "multipath wwids entries and, with --ledger, fabric LUNs and controllers no ledger "
    "volume owns; never anything in the ledger, held, open, mounted or foreign. Exit: plan "
    "0 nothing to do, 6 items planned; apply 0 all applied, 6 some skipped or failed; "
    "1 a host view unreadable"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ledger",
        metavar="FILE",
        nargs="?",
        const="-",
        default=None,
        help="treat the attachment ledger (FILE, or [brick_agent] ledger_path) as the "
        "authority: fabric LUNs, maps and controllers it does not own are leftovers too "
        "(without it the configured ledger, when present, is still read to keep what it "
        "records and attaches in progress)",
    )
    p.add_argument("--apply", action="store_true", help="re-verify each item and act on it")
    p.add_argument("--only", nargs="+", metavar="ID", help="apply only these item ids")
    p.add_argument(
        "--plan",
        metavar="FILE",
        help="with --apply: the items of a plan saved earlier (this command's JSON output)",
    )


def _ledger(args: argparse.Namespace, conf: Any) -> tuple[Any, bool]:
    """(the ledger or None, authoritative)."""
    from brick_agent.ledger import AttachmentLedger

    configured = conf.brick_agent.ledger_path
    if args.ledger:
        path = configured if args.ledger == "-" else args.ledger
        if not path:
            raise errors.InvalidArgument("no ledger: [brick_agent] ledger_path is empty")
        return AttachmentLedger(os.path.abspath(path), lock_path=conf.brick_agent.lock_path), True
    if configured and os.path.exists(configured):
        return AttachmentLedger(configured, lock_path=conf.brick_agent.lock_path), False
    return None, False


def _selected(items: list[PlanItem], only: list[str] | None) -> list[PlanItem]:
    if not only:
        return items
    known = {i.id for i in items}
    unknown = [i for i in only if i not in known]
    if unknown:
        raise errors.InvalidArgument(f"no such item in the plan: {', '.join(unknown)}")
    return [i for i in items if i.id in only]


def _saved_items(data: Any) -> list[PlanItem]:
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise errors.InvalidArgument("a saved plan is a JSON object with an 'items' list")
    return [PlanItem.from_dict(i) for i in data["items"]]


def run(args: argparse.Namespace, conf: Any, roots: Any, load_json: Any) -> tuple[Any, int]:
    """(the result to print, the exit code)."""
    from brick_agent.cleanup.apply import apply_plan
    from brick_agent.cleanup.plan import build_plan

    if args.apply and args.host_root:
        raise errors.InvalidArgument("cleanup --apply changes this host: not with --host-root")
    if (args.only or args.plan) and not args.apply:
        raise errors.InvalidArgument("--only and --plan go with --apply")
    ledger, authoritative = _ledger(args, conf)
    plan = build_plan(roots, ledger, authoritative=authoritative)
    plan.ledger = getattr(ledger, "path", None)
    if not args.apply:
        code = EXIT_ERROR if plan.errors else (EXIT_LEFTOVERS if plan.items else EXIT_OK)
        return (render_plan(plan) if args.human else plan.to_dict()), code
    items = _saved_items(load_json(args.plan, "cleanup plan")) if args.plan else plan.items
    result = apply_plan(
        _selected(items, args.only),
        _actions(conf, roots),
        roots,
        ledger,
        authoritative=authoritative,
        lock_path=conf.brick_agent.lock_path,
        lock_timeout=conf.brick_agent.command_timeout + conf.brick_agent.login_timeout,
    )
    result.kept, result.errors, result.ledger = plan.kept, plan.errors, plan.ledger
    code = EXIT_ERROR if result.errors else (EXIT_OK if result.complete else EXIT_LEFTOVERS)
    return (render_apply(result) if args.human else result.to_dict()), code


def _actions(conf: Any, roots: Any) -> Any:
    from brick_agent.cleanup.actions import PrivilegedCleanupActions

    return PrivilegedCleanupActions(conf, roots)


# ---------------------------------------------------------------- --human
def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths[:-1]) + "  {}"
    return [fmt.format(*header), *(fmt.format(*r) for r in rows)]


def _tail(kept: list[Any], errs: list[str], ledger: str | None) -> list[str]:
    lines = [f"ledger: {ledger or 'none'}"]
    lines += [f"kept {k.kind} {k.object}: {k.reason}" for k in kept]
    lines += [f"error: {e}" for e in errs]
    return lines


def render_plan(plan: Plan) -> str:
    if not plan.items:
        lines = ["nothing to clean up"]
    else:
        rows = [[i.id, i.kind, i.object, i.action] for i in plan.items]
        lines = _table(rows, ["ID", "KIND", "OBJECT", "ACTION"])
        for i in plan.items:
            shown = ", ".join(f"{k}={v}" for k, v in i.evidence.items())
            lines.append(f"{i.id}: {shown}" + (f" ({i.detail})" if i.detail else ""))
    return "\n".join(lines + _tail(plan.kept, plan.errors, plan.ledger))


def render_apply(result: ApplyResult) -> str:
    if not result.results:
        lines = ["nothing to clean up"]
    else:
        rows = [
            [r.item.id, r.outcome, r.item.kind, r.item.object, r.detail] for r in result.results
        ]
        lines = _table(rows, ["ID", "OUTCOME", "KIND", "OBJECT", "DETAIL"])
    return "\n".join(lines + _tail(result.kept, result.errors, result.ledger))
