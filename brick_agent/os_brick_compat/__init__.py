"""os-brick compatibility layer: Nova and Cinder keep importing ``os_brick``, brick_agent serves.

Importing this package has no side effects and does not import os-brick.
:func:`enable` patches the installed os-brick in place so that
``InitiatorConnector.factory`` builds brick_agent-backed connectors for iSCSI,
NVMe-oF and Fibre Channel (every other protocol, iSER, the encryptors, RBD,
NFS, ... stay os-brick's own), and routes ``os_brick.setup``,
``connector.get_connector_properties``, ``initiator.utils.guard_connection``
and ``LinuxSCSI.is_multipath_running`` to brick_agent.

A deployer turns it on without editing Nova or Cinder with one command in the
service's virtualenv (``brick-agent os-brick-compat install``), which writes a
``.pth`` file that calls :func:`brick_agent.os_brick_compat.autoload.install`
at interpreter start: :func:`enable` then runs right after ``os_brick`` is first
imported.  ``BRICK_AGENT_OS_BRICK_COMPAT=0`` in a service's environment turns
it off again; a comma-separated list of protocols limits it to those.
"""

from __future__ import annotations

from collections.abc import Iterable

#: protocols (os-brick's names) whose connectors brick_agent can serve
PROTOCOLS = ("ISCSI", "NVME", "NVMEOF", "FIBRE_CHANNEL")


def enable(protocols: Iterable[str] | None = None) -> None:
    """Patch the installed os-brick (idempotent); ``protocols`` defaults to :data:`PROTOCOLS`."""
    from brick_agent.os_brick_compat import patch

    patch.enable(protocols)


def disable() -> None:
    """Undo :func:`enable` (tests, or a service that wants plain os-brick back)."""
    from brick_agent.os_brick_compat import patch

    patch.disable()


def is_enabled() -> bool:
    """True while os-brick is patched by :func:`enable`."""
    import sys

    patch = sys.modules.get("brick_agent.os_brick_compat.patch")
    return bool(patch is not None and patch.is_enabled())


__all__ = ["PROTOCOLS", "disable", "enable", "is_enabled"]
