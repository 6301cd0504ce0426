"""dm-multipath checks: multipathd running when multipath is configured, and the
multipath.conf settings that slow or break brick_agent's attaches."""

from __future__ import annotations

import re
from collections.abc import Iterator

from brick_agent.health import Check, Context, fail, ok, skip, warn
from brick_agent.host import multipath_conf, procs

#: find_multipaths values and what they cost an attach (None: fine)
FIND_MULTIPATHS = {
    "strict": "multipathd maps only WWIDs already in /etc/multipath/wwids: every new "
    "volume waits the multipath grace period, then brick_agent adds it (multipath -a)",
    "smart": "multipathd holds a new single-path device for find_multipaths_timeout "
    "before it decides, which delays attaches",
}
#: a SCSI disk name the blacklist must leave alone (NVMe is often blacklisted on
#: purpose: native NVMe multipath)
SCSI_DISK = "sdb"


def configured(ctx: Context) -> bool:
    """Multipath is in use: ``use_multipath``/``enforce_multipath``, --multipath, or a
    multipath.conf."""
    opts = ctx.conf.brick_agent
    return bool(
        opts.use_multipath
        or opts.enforce_multipath
        or ctx.multipath
        or multipath_conf.config_files(ctx.roots)
    )


def check_multipathd(ctx: Context) -> Iterator[Check]:
    name = "multipath.multipathd"
    if not configured(ctx):
        yield skip(name, "multipath not configured (use_multipath off, no multipath.conf)")
        return
    running = procs.processes(ctx.roots, {"multipathd"})
    if running:
        yield ok(name, f"running (pid {', '.join(str(p.pid) for p in running)})")
    else:
        yield fail(
            name,
            "multipath is configured but multipathd is not running: multipath attaches "
            "fall back to one path (or fail with enforce_multipath)",
            "systemctl enable --now multipathd",
        )


def check_config(ctx: Context) -> Iterator[Check]:
    name = "multipath.config"
    if not multipath_conf.config_files(ctx.roots):
        yield skip(name, "no multipath.conf")
        return
    sections = multipath_conf.read_sections(ctx.roots)
    problems = list(_problems(sections))
    if problems:
        yield warn(name, "; ".join(p for p, _ in problems), "; ".join(f for _, f in problems))
    else:
        yield ok(name, "no setting in multipath.conf works against brick_agent")


def _problems(sections: multipath_conf.Sections) -> Iterator[tuple[str, str]]:
    find = (multipath_conf.setting(sections, "defaults", "find_multipaths") or "").lower()
    if find in FIND_MULTIPATHS:
        yield f"find_multipaths {find}: {FIND_MULTIPATHS[find]}", "set find_multipaths yes"
    friendly = (multipath_conf.setting(sections, "defaults", "user_friendly_names") or "no").lower()
    if friendly in ("yes", "on", "1"):
        yield (
            "user_friendly_names yes: map names (mpathN) come from this host's bindings "
            "file and differ between hosts (a live migration's destination finds another "
            "name); brick_agent finds maps by WWID (uuid mpath-<wwid>) and returns "
            "/dev/disk/by-id/dm-uuid-mpath-<wwid>",
            "set user_friendly_names no (maps named by WWID)",
        )
    hidden = _blacklisted(sections)
    if hidden:
        yield (
            f"blacklist devnode {hidden!r} hides SCSI disks: no maps for iSCSI or FC volumes",
            f"remove devnode {hidden!r} from the blacklist or add blacklist_exceptions",
        )


def _blacklisted(sections: multipath_conf.Sections) -> str | None:
    if sections.get("blacklist_exceptions"):
        return None
    for keyword, value in sections.get("blacklist", []):
        if keyword != "devnode":
            continue
        try:
            pattern = re.compile(value)
        except re.error:
            continue
        if pattern.search(SCSI_DISK):
            return value
    return None


CHECKS = (check_multipathd, check_config)
