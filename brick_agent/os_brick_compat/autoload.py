"""Run :func:`brick_agent.os_brick_compat.enable` as soon as ``os_brick`` is imported.

The ``.pth`` file written by ``brick-agent os-brick-compat install`` calls
:func:`install` at interpreter start.  It only puts a small finder in front of
``sys.meta_path`` (standard library only, nothing imported): when a process
first imports ``os_brick``, os-brick's package runs as usual and the layer is
enabled right after it, before the importer gets the module.  Processes that
never import os-brick pay nothing.

``BRICK_AGENT_OS_BRICK_COMPAT`` in the environment: unset, ``1``, ``on``,
``yes``, ``true`` or ``all`` — every protocol; ``0``, ``off``, ``no``, ``false``
or empty — disabled; otherwise a comma-separated list of protocols
(``ISCSI,NVMEOF``).  A failure to enable is logged and never breaks the import
of os-brick (the process then runs plain os-brick).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from typing import Any

ENV = "BRICK_AGENT_OS_BRICK_COMPAT"
TARGET = "os_brick"
_ON = {"1", "on", "yes", "true", "all"}
_OFF = {"0", "off", "no", "false", ""}

LOG = logging.getLogger(__name__)


def wanted(environ: Mapping[str, str] | None = None) -> tuple[bool, Sequence[str] | None]:
    """(enabled, protocols or None for all) from the environment."""
    value = (os.environ if environ is None else environ).get(ENV)
    if value is None or value.strip().lower() in _ON:
        return True, None
    if value.strip().lower() in _OFF:
        return False, None
    return True, [p.strip().upper() for p in value.split(",") if p.strip()]


def _enable(protocols: Sequence[str] | None) -> None:
    try:
        from brick_agent import os_brick_compat

        os_brick_compat.enable(protocols)
    except Exception:  # noqa: BLE001 - never break the service's import of os_brick
        LOG.exception(
            "brick_agent os-brick compatibility could not be enabled; running plain os-brick"
        )


class _Loader(importlib.abc.Loader):
    """os_brick's own loader; enables the layer once the package has run."""

    def __init__(self, loader: Any, finder: _Finder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        self._finder.remove()
        _enable(self._finder.protocols)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader the other finders give ``os_brick``."""

    def __init__(self, protocols: Sequence[str] | None) -> None:
        self.protocols = protocols
        self._local = threading.local()

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET or getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._local.busy = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader, self)
        return spec

    def remove(self) -> None:
        while self in sys.meta_path:
            sys.meta_path.remove(self)


def install(environ: Mapping[str, str] | None = None) -> bool:
    """Arrange for the layer to be enabled with os-brick; False when the environment says off."""
    on, protocols = wanted(environ)
    if not on:
        return False
    if TARGET in sys.modules:
        _enable(protocols)
        return True
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(protocols))
    return True


__all__ = ["ENV", "install", "wanted"]
