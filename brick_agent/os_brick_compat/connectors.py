"""os-brick connector classes whose contract methods run brick_agent's connectors.

Each class subclasses os-brick's own (``ISCSIConnector``, ``FibreChannelConnector``,
``NVMeOFConnector``), so ``isinstance`` checks of callers (Cinder's rekey, Nova's
tests) and patch targets on os-brick's classes keep working, and os-brick
helpers we do not replace (``run_nvme_cli`` for PowerMax, ``set_execute``, ...)
are still there.  The constructor only stores its arguments (os-brick's
``BaseLinuxConnector`` initialisation, which does not touch the host); the
brick_agent connector is built on first use, with the configuration
``os_brick.setup(conf)`` installed.

Results have os-brick's shapes; brick_agent errors leave as os-brick exceptions
too (:mod:`brick_agent.os_brick_compat.errors`).  Encrypted volumes get
os-brick's ``/dev/disk/by-id/os-brick+dev+sdX`` symlink (its encryptors replace
that link), created and removed through os-brick's own privileged helpers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from os_brick import utils as ob_utils
from os_brick.initiator.connectors import base as ob_base
from os_brick.initiator.connectors import fibre_channel as ob_fc
from os_brick.initiator.connectors import iscsi as ob_iscsi
from os_brick.initiator.connectors import nvmeof as ob_nvmeof
from os_brick.privileged import rootwrap as ob_rootwrap

from brick_agent.connectors.base import Connector, device_readable
from brick_agent.os_brick_compat import coexist
from brick_agent.os_brick_compat.errors import ATTACH, DETACH, EXTEND, QUERY, as_os_brick_errors

LOG = logging.getLogger(__name__)

#: connection property keys naming the target, per protocol (for error kwargs)
_TARGET_KEYS = {
    "ISCSI": ("target_iqn", "target_iqns", "target_portal", "target_portals"),
    "NVMEOF": ("target_nqn", "nqn"),
    "FIBRE_CHANNEL": ("target_wwn", "target_wwns"),
}


def _target(protocol: str, props: Any) -> str:
    if not isinstance(props, Mapping):
        return ""
    for key in _TARGET_KEYS.get(protocol, ()):
        value = props.get(key)
        if value:
            return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return ""


class BrickAgentConnectorMixin:
    """The os-brick contract methods, served by a brick_agent connector."""

    #: brick_agent's protocol name
    protocol: ClassVar[str]
    #: os-brick constructor keywords passed on to the brick_agent connector
    passed_kwargs: ClassVar[tuple[str, ...]] = ()

    _root_helper: str | None
    use_multipath: bool
    device_scan_attempts: int

    def __init__(
        self,
        root_helper: str | None,
        driver: Any = None,
        execute: Any = None,
        use_multipath: bool = False,
        device_scan_attempts: int = 3,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        ob_base.BaseLinuxConnector.__init__(
            self,
            root_helper,
            driver=driver,
            execute=execute,
            device_scan_attempts=device_scan_attempts,
        )
        self.use_multipath = bool(use_multipath)
        self._agent_kwargs = {k: kwargs[k] for k in self.passed_kwargs if k in kwargs}
        self._agent: Connector | None = None
        self._agent_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    @property
    def agent(self) -> Connector:
        """The brick_agent connector (built on first use; follows ``use_multipath``)."""
        if self._agent is None:
            with self._agent_lock:
                if self._agent is None:
                    from brick_agent.connectors import factory

                    self._agent = factory(
                        self.protocol,
                        self._root_helper,
                        use_multipath=self.use_multipath,
                        device_scan_attempts=self.device_scan_attempts,
                        **self._agent_kwargs,
                    )
        self._agent.use_multipath = bool(self.use_multipath)
        return self._agent

    def _errors(self, op: str, props: Any = None) -> contextlib.AbstractContextManager[None]:
        return as_os_brick_errors(self.protocol, op, _target(self.protocol, props))

    def _beside_os_brick(self, lock: str) -> contextlib.AbstractContextManager[None]:
        """os-brick's host-wide lock ``lock``, held shared (:mod:`.coexist`)."""
        return coexist.shared_with_os_brick(
            lock, timeout=max(60.0, self.agent.opts.device_wait_timeout * 4)
        )

    # ------------------------------------------------------------------ contract
    def connect_volume(self, connection_properties: dict) -> dict:
        with self._errors(ATTACH, connection_properties), self._beside_os_brick(coexist.CONNECT):
            info = self.agent.connect_volume(connection_properties)
        return self._encrypted_link(connection_properties, info)

    @ob_utils.connect_volume_undo_prepare_result(unlink_after=True)
    def disconnect_volume(
        self,
        connection_properties: dict,
        device_info: Any = None,
        force: bool = False,
        ignore_errors: bool = False,
    ) -> None:
        # Cinder's SPDK driver passes a Volume object as device_info: not ours to read
        info = device_info if isinstance(device_info, Mapping) else None
        with self._errors(DETACH, connection_properties), self._beside_os_brick(coexist.CONNECT):
            self.agent.disconnect_volume(
                connection_properties, info, force=force, ignore_errors=ignore_errors
            )

    @ob_utils.connect_volume_undo_prepare_result
    def extend_volume(self, connection_properties: dict) -> int:
        with self._errors(EXTEND, connection_properties), self._beside_os_brick(coexist.EXTEND):
            return self.agent.extend_volume(connection_properties)

    def get_volume_paths(self, connection_properties: dict) -> list:
        with self._errors(QUERY, connection_properties):
            return list(self.agent.get_volume_paths(connection_properties))

    def get_all_available_volumes(self, connection_properties: dict | None = None) -> list:
        """os-brick's shape (a list of paths), this protocol's volumes only.

        SCSI volumes are named by their link in the search path when they have one.
        """
        with self._errors(QUERY, connection_properties):
            rows = self.agent.get_all_available_volumes(connection_properties)
            search = self.agent.get_search_path()
        paths = [str(r["path"]) for r in rows if isinstance(r, Mapping) and r.get("path")]
        return _named_in(search, paths) if self.protocol != "NVMEOF" else sorted(set(paths))

    def get_search_path(self) -> str | None:
        return self.agent.get_search_path()

    def check_valid_device(self, path: str, run_as_root: bool = True) -> bool:
        """Whether the first block of ``path`` reads; as root through brick_agent's privsep
        when this process is not root (:func:`brick_agent.connectors.base.device_readable`)."""
        with self._errors(QUERY):
            return device_readable(path, run_as_root)

    def supports_multipath(self) -> bool:
        return bool(self.agent.supports_multipath())

    # ------------------------------------------------------------------ encrypted volumes
    def _encrypted_link(self, props: Mapping[str, Any], info: dict) -> dict:
        """For ``encrypted`` volumes return os-brick's private symlink instead of the device.

        os-brick's encryptors replace ``device_path`` with a link to the dm-crypt
        device (``ln -sf``): it must be a link they own, never the device node.
        """
        path = info.get("path")
        if not props.get("encrypted") or not isinstance(path, str):
            return info
        real = os.path.realpath(path)
        link = ob_utils.CUSTOM_LINK_PREFIX + path.replace("/", "+")
        try:
            ob_rootwrap.link_root(real, link, force=True)
        except Exception:
            LOG.warning("cannot create %s for encrypted volume at %s; detaching it", link, path)
            self.disconnect_volume(dict(props), info, force=True, ignore_errors=True)
            raise
        return {**info, "path": link}


def _named_in(search: str | None, paths: list[str]) -> list[str]:
    """``paths`` as their links in ``search`` (by-path) when they have one."""
    wanted = {os.path.realpath(p): p for p in paths}
    out: dict[str, str] = {}
    try:
        entries = sorted(os.listdir(search)) if search else []
    except OSError:
        entries = []
    for name in entries:
        link = os.path.join(search or "", name)
        real = os.path.realpath(link)
        if real in wanted and real not in out:
            out[real] = link
    return sorted(out.get(real, p) for real, p in wanted.items())


class ISCSIConnector(BrickAgentConnectorMixin, ob_iscsi.ISCSIConnector):
    """os-brick's ``ISCSIConnector`` served by brick_agent (default/tcp transport)."""

    protocol = "ISCSI"
    passed_kwargs = ("transport",)

    def __init__(
        self,
        root_helper: str | None,
        driver: Any = None,
        execute: Any = None,
        use_multipath: bool = False,
        device_scan_attempts: int = 3,
        transport: str = "default",
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root_helper,
            driver,
            execute,
            use_multipath,
            device_scan_attempts,
            *args,
            transport=transport,
            **kwargs,
        )
        self.transport = transport or "default"

    def get_initiator(self) -> str | None:
        from brick_agent.os_brick_compat.properties import iscsi_initiator

        return iscsi_initiator()


class FibreChannelConnector(BrickAgentConnectorMixin, ob_fc.FibreChannelConnector):
    """os-brick's ``FibreChannelConnector`` served by brick_agent."""

    protocol = "FIBRE_CHANNEL"

    def __init__(
        self,
        root_helper: str | None,
        driver: Any = None,
        execute: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        from os_brick.initiator import linuxfc

        # os-brick's set_execute (run by the base constructor) needs it first
        self._linuxfc = linuxfc.LinuxFibreChannel(root_helper, execute=execute)
        super().__init__(root_helper, driver, execute, *args, **kwargs)


class NVMeOFConnector(BrickAgentConnectorMixin, ob_nvmeof.NVMeOFConnector):
    """os-brick's ``NVMeOFConnector`` served by brick_agent."""

    protocol = "NVMEOF"


#: os-brick class path -> the class that replaces it
REPLACES: dict[str, type] = {
    "os_brick.initiator.connectors.iscsi.ISCSIConnector": ISCSIConnector,
    "os_brick.initiator.connectors.fibre_channel.FibreChannelConnector": FibreChannelConnector,
    "os_brick.initiator.connectors.nvmeof.NVMeOFConnector": NVMeOFConnector,
}

__all__ = [
    "BrickAgentConnectorMixin",
    "FibreChannelConnector",
    "ISCSIConnector",
    "NVMeOFConnector",
    "REPLACES",
]
