"""What this host's iscsiadm is: its exit codes and whether it supports manual scans.

* The exit codes are open-iscsi's (``include/iscsi_err.h``, ``ISCSI_ERR_*``); the
  privileged iscsiadm calls and the iSCSI connector's actions both use these names.
* Manual-scan support (``node.session.scan = manual``, open-iscsi 2.0.876) is
  probed once per process with ``iscsiadm --version`` (read-only: no iscsid, no
  node records, no network), never at import, and corrected by what a login's
  ``node.session.scan`` update proves.  :func:`brick_agent.locking.guard_connection`
  asks :func:`iscsi_manual_scan_supported` whether ``shared_targets = True`` needs
  its lock.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

from brick_agent import commands
from brick_agent.errors import CommandFailed

LOG = logging.getLogger(__name__)

# --------------------------------------------------------------------------- exit codes
#: iscsiadm exit codes (open-iscsi include/iscsi_err.h, ``ISCSI_ERR_<NAME>``).
ERR_TRANS = 4  # connection/transport failure
ERR_LOGIN = 5  # generic login failure
ERR_INVAL = 7  # invalid argument (an old iscsiadm: node.session.scan)
ERR_TRANS_TIMEOUT = 8  # connection timer expired while connecting
ERR_PDU_TIMEOUT = 11  # iSCSI PDU timed out
ERR_SESS_EXISTS = 15  # session already logged in
ERR_FATAL_LOGIN = 19  # target refused the login (e.g. not authorised)
ERR_NO_OBJS_FOUND = 21  # no records/targets/sessions/portals match
ERR_LOGIN_AUTH_FAILED = 24  # CHAP rejected


# --------------------------------------------------------------------------- manual scan
_scan_lock = threading.Lock()
_scan_cached: bool | None = None
_scan_override: bool | None = None

#: open-iscsi release that added ``node.session.scan`` (manual scans).
MANUAL_SCAN_MIN_VERSION = (2, 0, 876)
_VERSION = re.compile(r"iscsiadm version (\d+(?:\.\d+)+)")


def parse_iscsiadm_version(text: str) -> tuple[int, ...] | None:
    """open-iscsi version tuple from ``iscsiadm --version`` output.

    Red Hat's iscsi-initiator-utils prefix the upstream version with ``6.``
    (``6.2.0.874-10``) — mapped to ``(2, 0, 874)``.
    """
    m = _VERSION.search(text)
    if not m:
        return None
    nums = tuple(int(x) for x in m.group(1).split("."))
    if len(nums) >= 4 and nums[0] == 6:
        nums = nums[1:]
    return nums


def probe_manual_scan(
    run: Callable[..., commands.CommandResult] = commands.run,
    iscsiadm: str = "iscsiadm",
    timeout: float = 10.0,
) -> bool:
    """Ask iscsiadm itself whether it supports ``node.session.scan = manual``.

    The probe is ``iscsiadm --version``: read-only, needs no iscsid, no node
    records and no network, and open-iscsi has had a stable ``iscsiadm version
    X`` line for its whole history.  Manual scan is supported from 2.0.876.
    A missing or failing iscsiadm, or an unparseable answer, means False — the
    safe answer (guard_connection then locks).  Distribution backports to
    older versions are reported False here and corrected by
    :func:`note_manual_scan_result` once a login's ``node.session.scan``
    update succeeds.
    """
    try:
        result = run([iscsiadm, "--version"], timeout=timeout)
    except CommandFailed as exc:
        LOG.info("iscsiadm unavailable or failing (%s): assuming no manual scan support", exc)
        return False
    version = parse_iscsiadm_version(result.stdout + "\n" + result.stderr)
    if version is None:
        LOG.warning(
            "cannot parse iscsiadm version from %r: assuming no manual scan support",
            result.stdout.strip()[:200],
        )
        return False
    supported = version >= MANUAL_SCAN_MIN_VERSION
    LOG.debug(
        "iscsiadm %s: manual scan %ssupported",
        ".".join(map(str, version)),
        "" if supported else "not ",
    )
    return supported


def iscsi_manual_scan_supported(probe: Callable[[], bool] | None = None) -> bool:
    """Whether this host's iSCSI initiator supports manual scans.

    Probed once per process on first use (thread-safe), never at import.  An
    override set by :func:`set_manual_scan_override` wins.
    """
    global _scan_cached
    if _scan_override is not None:
        return _scan_override
    cached = _scan_cached
    if cached is not None:
        return cached
    with _scan_lock:
        if _scan_cached is None:
            _scan_cached = bool((probe or probe_manual_scan)())
        return _scan_cached


def set_manual_scan_override(value: bool | None) -> None:
    """Force the manual-scan answer (tests, tools); None removes the override."""
    global _scan_override
    _scan_override = value


def note_manual_scan_result(supported: bool) -> None:
    """Record direct evidence (a ``node.session.scan`` update did or did not work)."""
    global _scan_cached
    with _scan_lock:
        if _scan_cached != supported:
            LOG.info("iSCSI manual scan support now known to be %s", supported)
        _scan_cached = bool(supported)


def note_manual_scan_update(error: CommandFailed | None) -> None:
    """Learn from the outcome of ``iscsiadm ... --op update -n node.session.scan -v manual``.

    ``None`` (it worked) proves support.  iscsiadm without the parameter exits
    7 (ISCSI_ERR_INVAL) with "Cannot modify node.session.scan. Invalid param
    name": that proves the opposite.  Any other failure says nothing.
    """
    if error is None:
        note_manual_scan_result(True)
    elif error.returncode == ERR_INVAL and "node.session.scan" in (error.stderr or ""):
        note_manual_scan_result(False)


def reset_manual_scan_cache() -> None:
    """Forget the probed answer (next use probes again)."""
    global _scan_cached
    with _scan_lock:
        _scan_cached = None
