"""Drive Nova's / Cinder's own os-brick callers, in their own venv, for test_nova_cinder_compat.

Run with ``.venv-nova/bin/python`` (or ``.venv-cinder/bin/python``), not pytest's venv:
this process imports nova (cinder), whose ``os_brick`` is served by brick_agent through
the compat layer (the ``.pth`` that ``brick-agent os-brick-compat install`` writes, or
:func:`brick_agent.os_brick_compat.enable` when it is not installed: reported as
``enabled_by``).

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.

* first line: ``{"flow": "nova"|"cinder", "driver": "iscsi"|"nvme"|"fc",
  "config_file": path}`` (nova: the driver built first; each command names its own); set up
  like nova-compute / cinder-backup do at start
  (concurrency: nova native threads, cinder eventlet monkey patching; config parsed,
  ``priv_context.init(root_helper=...)``, ``os_brick.setup(CONF)``);
  reply: what was set up (compat state, connector class, privsep helper command).
* then ``{"op": ...}`` commands (nova: connect / extend / disconnect, with ``driver`` and
  optionally ``volume``, the BDM's key when one driver attaches several volumes;
  cinder: connect / check_valid / disconnect), each replied with
  ``{"ok": true, "result": ..., "seconds": s}`` or ``{"ok": false, "error": class,
  "os_brick_error": bool, "message": str, "traceback": str}``.  EOF ends the process.

Nothing here touches the kernel by itself: every host action is Nova's or Cinder's
call into os-brick.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
import traceback
from typing import Any


def reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def compat_state() -> dict[str, Any]:
    """Import os_brick the way the services do, then report (and if needed do) enable()."""
    import brick_agent.os_brick_compat as compat
    import os_brick  # noqa: F401  (the .pth hook enables the layer on this import)

    by = "pth" if compat.is_enabled() else None
    if by is None:
        compat.enable()
        by = "explicit"
    return {"enabled_by": by, "enabled": compat.is_enabled()}


class NovaFlow:
    """nova-compute: its libvirt volume driver for the protocol, as the virt driver uses it."""

    DRIVERS = {
        "iscsi": ("nova.virt.libvirt.volume.iscsi", "LibvirtISCSIVolumeDriver"),
        "nvme": ("nova.virt.libvirt.volume.nvme", "LibvirtNVMEVolumeDriver"),
        "fc": ("nova.virt.libvirt.volume.fibrechannel", "LibvirtFibreChannelVolumeDriver"),
    }

    def __init__(self, driver: str, config_file: str) -> None:
        import importlib

        import nova.conf
        from nova import config, objects, utils
        from oslo_privsep import priv_context
        import os_brick

        self.state = compat_state()
        conf = nova.conf.CONF
        # nova/cmd/compute.py main(), in its order (minus the RPC service)
        config.parse_args(["nova-compute", "--config-file", config_file])
        priv_context.init(root_helper=shlex.split(utils.get_root_helper()))
        objects.register_all()
        os_brick.setup(conf)
        self._import = importlib.import_module
        self.drivers: dict[str, Any] = {}
        self.instance = objects.Instance(uuid="0b6e6b6e-7a1c-4c59-9d35-6c0a5c2e1f01", id=1)
        #: per driver, the connection_info as Nova keeps it in the BDM
        self.connection_info: dict[str, dict[str, Any]] = {}
        self.connector = self.volume_driver(driver).connector

    def volume_driver(self, kind: str) -> Any:
        """One volume driver per protocol, as the libvirt driver keeps them."""
        if kind not in self.drivers:
            module, name = self.DRIVERS[kind]
            self.drivers[kind] = getattr(self._import(module), name)(None)  # host: only stored
        self.connector = self.drivers[kind].connector
        return self.drivers[kind]

    @staticmethod
    def _key(cmd: dict[str, Any]) -> str:
        """The BDM a command is about: its ``volume``, else one per driver."""
        return str(cmd.get("volume") or cmd["driver"])

    def op_connect(self, cmd: dict[str, Any]) -> Any:
        info = self.connection_info[self._key(cmd)] = cmd["connection_info"]
        self.volume_driver(cmd["driver"]).connect_volume(info, self.instance)
        return info  # what Nova saves in the BDM

    def op_extend(self, cmd: dict[str, Any]) -> Any:
        return self.volume_driver(cmd["driver"]).extend_volume(
            self.connection_info[self._key(cmd)], self.instance, cmd["requested_size"]
        )

    def op_disconnect(self, cmd: dict[str, Any]) -> Any:
        self.volume_driver(cmd["driver"]).disconnect_volume(
            self.connection_info.pop(self._key(cmd)), self.instance, force=cmd.get("force", False)
        )
        return None


class CinderFlow:
    """cinder-backup / cinder-volume's data-copy path (manager ``_connect_device`` and
    ``_detach_device``): brick_get_connector, connect, check_valid_device, disconnect."""

    def __init__(self, driver: str, config_file: str) -> None:
        from cinder import objects, utils, version
        from cinder.common import config as _cinder_config  # noqa: F401  (registers options)
        from oslo_config import cfg
        from oslo_privsep import priv_context
        import os_brick

        self.state = compat_state()
        conf = cfg.CONF
        # backup/manager.py's option imports
        conf.import_opt("use_multipath_for_image_xfer", "cinder.volume.driver")
        conf.import_opt("num_volume_device_scan_tries", "cinder.volume.driver")
        # cinder/cmd/backup.py main(), in its order (minus the service)
        objects.register_all()
        conf(["--config-file", config_file], project="cinder", version=version.version_string())
        priv_context.init(root_helper=shlex.split(utils.get_root_helper()))
        os_brick.setup(conf)
        self.conf = conf
        self.attach_info: dict[str, Any] | None = None
        self.connector: Any = None

    def op_connect(self, cmd: dict[str, Any]) -> Any:
        from cinder.volume import volume_utils

        conn = cmd["conn"]
        protocol = conn["driver_volume_type"]
        # backup/manager.py _connect_device
        connector = volume_utils.brick_get_connector(
            protocol,
            use_multipath=self.conf.use_multipath_for_image_xfer,
            device_scan_attempts=self.conf.num_volume_device_scan_tries,
            conn=conn,
            expect_raw_disk=True,
        )
        self.connector = connector
        device = connector.connect_volume(conn["data"])
        self.attach_info = {"conn": conn, "device": device, "connector": connector}
        return {
            "device": device,
            "connector_class": type(connector).__module__ + "." + type(connector).__name__,
        }

    def op_check_valid(self, cmd: dict[str, Any]) -> Any:
        # volume/manager.py _connect_device: check_valid_device(path, True)
        assert self.attach_info is not None
        return self.connector.check_valid_device(self.attach_info["device"]["path"], True)

    def op_disconnect(self, cmd: dict[str, Any]) -> Any:
        # backup/manager.py _detach_device
        assert self.attach_info is not None
        self.connector.disconnect_volume(
            self.attach_info["conn"]["data"],
            self.attach_info["device"],
            force=cmd.get("force", False),
            ignore_errors=cmd.get("ignore_errors", False),
        )
        return None


def describe(flow: Any) -> dict[str, Any]:
    from oslo_config import cfg
    from brick_agent.privileged import default

    conn = flow.connector
    out = dict(flow.state)
    if conn is not None:
        out["connector_class"] = type(conn).__module__ + "." + type(conn).__name__
        out["connector_mro"] = [c.__module__ + "." + c.__name__ for c in type(conn).__mro__]
    out["privsep_client_mode"] = bool(getattr(default, "client_mode", False))
    try:
        out["privsep_helper_command"] = cfg.CONF.brick_agent_privileged.helper_command
    except cfg.NoSuchOptError:
        out["privsep_helper_command"] = None
    return out


def start_concurrency(flow: str) -> str:
    """The concurrency model the service's entry point sets before any other import:
    nova-compute runs native threads with eventlet's import poisoned
    (nova/cmd/compute.py), cinder-backup and cinder-volume run eventlet-patched
    (cinder/cmd/backup.py, cinder/cmd/volume.py)."""
    if flow == "nova":
        from nova import monkey_patch as nova_patch

        nova_patch.patch(backend="threading")
        return "eventlet" if nova_patch.is_patched() else "threading"
    from cinder import monkey_patch as cinder_patch

    cinder_patch.patch()
    return "eventlet" if cinder_patch.is_patched() else "threading"


def main() -> int:
    first = json.loads(sys.stdin.readline())
    try:
        concurrency = start_concurrency(first["flow"])
        # the services log at INFO (oslo.log's default); here to stderr, the caller's log
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        cls = NovaFlow if first["flow"] == "nova" else CinderFlow
        flow = cls(first["driver"], first["config_file"])
        flow.state["concurrency"] = concurrency
        reply({"ok": True, "result": describe(flow)})
    except BaseException as exc:
        reply(
            {
                "ok": False,
                "error": type(exc).__name__,
                "message": str(exc),
                "traceback": traceback.format_exc(),
            }
        )
        return 1
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        start = time.monotonic()
        try:
            result = getattr(flow, "op_" + cmd["op"])(cmd)
            if cmd["op"] == "connect" and flow.connector is not None:
                extra = describe(flow)
                reply(
                    {
                        "ok": True,
                        "result": result,
                        "describe": extra,
                        "seconds": round(time.monotonic() - start, 3),
                    }
                )
                continue
            reply({"ok": True, "result": result, "seconds": round(time.monotonic() - start, 3)})
        except Exception as exc:
            from os_brick import exception as ob_exc

            reply(
                {
                    "ok": False,
                    "error": type(exc).__module__ + "." + type(exc).__name__,
                    "os_brick_error": isinstance(exc, ob_exc.BrickException),
                    "message": str(exc),
                    "traceback": traceback.format_exc(),
                    "seconds": round(time.monotonic() - start, 3),
                }
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
