"""dm-multipath over non-native NVMe namespaces (nvme_core multipath=N, ``use_multipath``).

Without native NVMe multipath the kernel makes one block device per controller
(``nvme1n1``, ``nvme2n1``) for one namespace.  multipathd groups them into one
map ``mpath-<wwid>`` where the WWID is udev's ``ID_WWN`` of the path, i.e. the
namespace's sysfs ``wwid`` attribute (``uuid.<uuid>``, ``eui.<nguid>``...; the
NVMe default ``uid_attribute`` of multipath-tools).  Maps are found by their
slaves (the path devices), so the spelling of the WWID is only checked, never
used to search.

:class:`NvmeMultipath` waits for multipathd to build the map on its own (it
sees the paths' uevents), pokes it through the privileged multipath
entrypoints after ``grace`` seconds, and removes a map on detach.  It decides
nothing about controllers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from brick_agent.connectors import multipath_wait
from brick_agent.deadline import Deadline
from brick_agent.errors import BrickError, DeviceNotFound, VolumeIdentityMismatch
from brick_agent.host.multipath import MultipathMap, map_for_slave, read_map
from brick_agent.host.roots import HostRoots
from brick_agent.host.udev import DeviceWatch

LOG = logging.getLogger(__name__)


class MultipathActions(Protocol):
    """The privileged multipath operations (a subset of the NVMe actions)."""

    def multipath_add(self, wwid: str, devices: list[str]) -> None: ...

    def multipath_remove(self, map_name: str) -> None: ...

    def multipath_resize(self, map_name: str) -> None: ...


def map_of(roots: HostRoots, names: Sequence[str]) -> MultipathMap | None:
    """The multipath map holding any of the path devices ``names``."""
    for name in names:
        m = map_for_slave(roots, name)
        if m is not None:
            return m
    return None


@dataclasses.dataclass
class NvmeMultipath:
    """Map building and removal over per-controller namespace devices (see module doc)."""

    roots: HostRoots
    actions: MultipathActions
    watch_factory: Callable[[], DeviceWatch]
    grace: float = 1.0  # let multipathd map the paths itself before poking it
    map_timeout: float = 20.0  # cap of the whole wait for the map
    removal_timeout: float = 20.0  # retry a removal this long while the map is held

    def wait_for_map(
        self, wwid: str, names: Sequence[str], deadline: Deadline, is_ours: Callable[[str], bool]
    ) -> MultipathMap:
        """The map holding every device of ``names``; multipathd is asked after the grace.

        A map holding only some of ``names`` at the deadline is accepted with a
        warning; a map holding a device ``is_ours`` rejects, or whose WWID is not
        ``wwid``, raises :class:`VolumeIdentityMismatch`.
        """
        wanted = set(names)

        def add() -> None:
            try:
                self.actions.multipath_add(wwid, list(names))
            except BrickError as exc:
                LOG.warning("multipath add of %s failed: %s", wwid, exc)

        m = multipath_wait.wait_for_map(
            self.roots,
            self.watch_factory,
            lambda: map_of(self.roots, names),
            names,
            budget=deadline.capped(self.map_timeout),
            grace=self.grace,
            add=add,
            what=f"multipath map of {wwid}",
        )
        if m.wwid != wwid:
            raise VolumeIdentityMismatch(
                f"map {m.dm_name} over {', '.join(names)} has WWID {m.wwid}, the namespace {wwid}"
            )
        strangers = [s for s in m.slaves if s not in wanted and not is_ours(s)]
        if strangers:
            raise VolumeIdentityMismatch(
                f"map {m.dm_name} also holds {', '.join(strangers)}, which are not this volume"
            )
        return m

    def remove_map(self, m: MultipathMap) -> None:
        """Flush and remove ``m`` (retried while briefly held), then wait until the kernel
        and udev are done with it (the same removal as a SCSI volume's map)."""
        from brick_agent.connectors.scsi.volume import remove_map

        remove_map(
            self.roots,
            self.watch_factory,
            self.actions.multipath_remove,
            m,
            removal_timeout=self.removal_timeout,
            gone_timeout=self.removal_timeout,
        )

    def resize_map(self, m: MultipathMap, size: int) -> None:
        """Grow ``m`` to ``size`` bytes (multipathd refuses until it saw the paths grow)."""
        from brick_agent.connectors.scsi.volume import retry

        def size_now() -> int | None:
            now = read_map(self.roots, m.dm_name)
            return None if now is None else now.size_bytes

        budget = Deadline.after(self.map_timeout)
        retry(
            lambda: self.actions.multipath_resize(m.name or m.dm_name),
            budget,
            until=lambda: size_now() == size,
            what=f"resize of map {m.dm_name}",
        )
        with self.watch_factory() as watch:
            try:
                watch.wait_for(
                    lambda: True if size_now() == size else None,
                    budget,
                    what=f"map {m.dm_name} at {size} bytes",
                )
            except DeviceNotFound:
                raise BrickError(
                    f"map {m.dm_name} did not grow to {size} bytes (now {size_now()})"
                ) from None


__all__ = ["MultipathActions", "NvmeMultipath", "map_of"]
