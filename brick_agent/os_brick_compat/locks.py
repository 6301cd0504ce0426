"""``os_brick.initiator.utils.guard_connection`` and ``LinuxSCSI.is_multipath_running``.

guard_connection keeps os-brick's lock: ``os-brick-<service_uuid>`` in
``[oslo_concurrency]lock_path`` (oslo.concurrency's external lock), so a host
where os-brick also runs (a service not switched yet, cinder-volume on the same
node) serialises with us.  How it differs from
:func:`brick_agent.locking.guard_connection`:

* the lock: os-brick's name and directory, not ``brick_agent-guard-<uuid>`` in
  ``[brick_agent]lock_path`` — and while brick_agent itself wants the lock, its
  own is taken too (after os-brick's, always in that order), so brick_agent's
  native callers on the host are serialised as well;
* ``shared_targets`` True: locked unless *both* os-brick's import-time probe
  (``ISCSI_SUPPORTS_MANUAL_SCAN``) and brick_agent's say iscsiadm does manual
  scans — if either side would lock, both must;
* the volume may be a dict (Nova) or an object (Cinder's OVO), as in os-brick;
  a missing ``service_uuid`` where a lock is needed raises ``KeyError`` like
  os-brick's ``device['service_uuid']``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from brick_agent import locking

LOCK_PREFIX = "os-brick-"
_MISSING = object()


def _get(volume: Any, key: str, default: Any = _MISSING) -> Any:
    getter = getattr(volume, "get", None)
    if callable(getter):
        return getter(key, default)
    return getattr(volume, key, default)


def needs_lock(shared_targets: Any) -> tuple[bool, bool]:
    """(take os-brick's lock, take brick_agent's lock) for a ``shared_targets`` value."""
    from os_brick.initiator import utils as ob_utils

    if shared_targets is False or shared_targets is _MISSING:
        return False, False
    ours = locking.needs_guard_lock(shared_targets)
    theirs = shared_targets is None or not ob_utils.ISCSI_SUPPORTS_MANUAL_SCAN
    return (ours or theirs), ours


@contextlib.contextmanager
def guard_connection(device: Any) -> Iterator[None]:
    """os-brick's ``guard_connection(device)``: tri-state ``shared_targets``, same lock."""
    from oslo_concurrency import lockutils

    os_brick_lock, own_lock = needs_lock(_get(device, "shared_targets", False))
    if not os_brick_lock:
        yield
        return
    service_uuid = _get(device, "service_uuid")
    if service_uuid is _MISSING:
        raise KeyError("service_uuid")
    with lockutils.lock(service_uuid, LOCK_PREFIX, external=True):
        if own_lock:
            with locking.external_lock(locking.guard_lock_name(service_uuid)):
                yield
        else:
            yield


def is_multipath_running(root_helper: Any = None, execute: Any = None) -> bool:
    """Whether multipathd runs (brick_agent's check; with ``execute``, os-brick's own)."""
    if execute is not None:
        from brick_agent.os_brick_compat import patch

        return bool(patch.original("is_multipath_running")(root_helper, execute=execute))
    from brick_agent.connectors.scsi.actions import multipathd_running
    from brick_agent.host.roots import DEFAULT_ROOTS

    return multipathd_running(DEFAULT_ROOTS)


__all__ = ["LOCK_PREFIX", "guard_connection", "is_multipath_running", "needs_lock"]
