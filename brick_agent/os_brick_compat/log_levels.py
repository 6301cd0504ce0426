"""brick_agent's log level follows the level a service set for ``os_brick``.

Services tune os-brick's logging by name: Nova's ``[cinder] debug = True`` adds
``os_brick=DEBUG`` to oslo.log's ``default_log_levels``, nova-manage sets
``os_brick=ERROR``, operators write ``os_brick=DEBUG`` themselves.  Once brick_agent
serves os-brick's calls, those settings must reach the ``brick_agent`` loggers too,
or a debug session of a failed attach shows nothing of what ran.

The ``os_brick`` level is copied to the ``brick_agent`` logger unless someone set
``brick_agent``'s own level (e.g. ``brick_agent=INFO`` in ``default_log_levels``),
which then wins.  Applied when ``os_brick.setup(conf)`` runs and whenever a
connector is built (logging is configured by then).
"""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
#: the level this module last gave the brick_agent logger (None: never set it)
_applied: int | None = None


def follow_os_brick() -> None:
    """Give the ``brick_agent`` logger the level set for ``os_brick`` (see module doc)."""
    global _applied
    source = logging.getLogger("os_brick").level
    ours = logging.getLogger("brick_agent")
    with _lock:
        if ours.level not in (logging.NOTSET, _applied):
            return  # set explicitly by the service or operator
        if source == logging.NOTSET:
            if _applied is not None:  # os_brick's level was reset: so is ours
                ours.setLevel(logging.NOTSET)
                _applied = None
            return
        ours.setLevel(source)
        _applied = source


def reset() -> None:
    """Forget what :func:`follow_os_brick` set (the layer is disabled)."""
    global _applied
    with _lock:
        if _applied is not None and logging.getLogger("brick_agent").level == _applied:
            logging.getLogger("brick_agent").setLevel(logging.NOTSET)
        _applied = None
