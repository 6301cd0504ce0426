"""Wait for the dm-multipath map over a volume's paths (SCSI and non-native NVMe alike)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TypeGuard

from brick_agent.deadline import Deadline
from brick_agent.errors import DeviceNotFound
from brick_agent.host.multipath import MultipathMap
from brick_agent.host.roots import HostRoots
from brick_agent.host.udev import DeviceWatch

LOG = logging.getLogger(__name__)


def wait_for_map(
    roots: HostRoots,
    watch_factory: Callable[[], DeviceWatch],
    find: Callable[[], MultipathMap | None],
    names: Sequence[str],
    *,
    budget: Deadline,
    grace: float,
    add: Callable[[], None],
    what: str,
) -> MultipathMap:
    """The map ``find`` returns once it holds every device of ``names``.

    multipathd normally maps new paths on its own (find_multipaths), so ``add``
    (ask it explicitly) runs only after ``grace`` seconds.  A map holding only
    some of ``names`` at the end of ``budget`` is accepted with a warning; none
    at all raises :class:`DeviceNotFound`.  Identity checks are the caller's.
    """
    wanted = set(names)

    def usable(m: MultipathMap | None) -> TypeGuard[MultipathMap]:
        return m is not None and os.path.exists(roots.devfs(m.dm_name))

    def complete() -> MultipathMap | None:
        m = find()
        return m if usable(m) and wanted <= set(m.slaves) else None

    m = complete()
    if m is None:
        with watch_factory() as watch:
            try:
                m = watch.wait_for(complete, budget.capped(grace), what=f"{what} (by multipathd)")
            except DeviceNotFound:
                LOG.info(
                    "multipathd has not mapped %s after %.1fs: adding the paths",
                    ", ".join(names),
                    grace,
                )
                add()
                try:
                    m = watch.wait_for(complete, budget, what=what)
                except DeviceNotFound:
                    m = None
    if m is None:
        partial = find()
        if not usable(partial) or not set(partial.slaves) & wanted:
            raise DeviceNotFound(
                f"no {what} with paths {', '.join(names)} within {budget.budget:.1f}s"
            )
        LOG.warning(
            "multipath map %s has paths %s of %s",
            partial.dm_name,
            ", ".join(partial.slaves),
            ", ".join(names),
        )
        m = partial
    return m
