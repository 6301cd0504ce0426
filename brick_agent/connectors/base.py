"""The connector contract shared by every protocol (os-brick compatible).

A connector turns connection properties (the dict a volume service's driver
returns from ``initialize_connection``) into a verified local block device and
back.  Inputs are plain dicts, never mutated; outputs are plain dicts
(``device_info``) of the same shape os-brick returns, so a compute service can
switch libraries without translating anything.
"""

from __future__ import annotations

import abc
import errno
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from oslo_config import cfg

from brick_agent import config, locking
from brick_agent import ledger as ledgermod
from brick_agent.host.block import block_device_for_path
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)

DeviceInfo = dict[str, Any]


class Connector(abc.ABC):
    """Base of the per-protocol connectors.

    Constructor arguments follow os-brick's ``InitiatorConnector`` so callers can
    swap libraries: ``root_helper`` is accepted and ignored (privileged work goes
    through brick_agent's privsep daemon), ``use_multipath`` and
    ``device_scan_attempts`` keep their meaning.  ``roots`` and ``conf`` are the
    seams tests and tools use.
    """

    protocol: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Route each connector's own connect/disconnect through the attachment ledger."""
        super().__init_subclass__(**kwargs)
        if "connect_volume" in cls.__dict__:
            cls.connect_volume = _ledgered_connect(cls.__dict__["connect_volume"])
        if "disconnect_volume" in cls.__dict__:
            cls.disconnect_volume = _ledgered_disconnect(cls.__dict__["disconnect_volume"])

    def __init__(self, root_helper: str | None = None, driver: Any = None, *,
                 use_multipath: bool | None = None, device_scan_attempts: int = 3,
                 conf: cfg.ConfigOpts | None = None, roots: HostRoots = DEFAULT_ROOTS,
                 ledger: ledgermod.AttachmentLedger | bool | None = None,
                 read_only_setter: Callable[[str, bool], Any] | None = None,
                 **kwargs: Any) -> None:
        self.conf = conf if conf is not None else default_conf()
        self.opts = self.conf.brick_agent
        self.roots = roots
        self.use_multipath = (self.opts.use_multipath if use_multipath is None
                              else bool(use_multipath))
        self.device_scan_attempts = max(1, int(device_scan_attempts))
        self.driver = driver
        # The ledger describes the real host: by default only a connector on the real
        # roots uses [brick_agent] ledger_path; others (fake trees) need ledger=... .
        if ledger is None:
            ledger = roots == DEFAULT_ROOTS
        if ledger is True:
            ledger = ledgermod.AttachmentLedger.from_conf(self.conf)
        self.ledger: ledgermod.AttachmentLedger | None = ledger or None
        self._read_only_setter = read_only_setter
        if kwargs:
            LOG.debug("%s ignores os-brick arguments %s", type(self).__name__,
                      sorted(kwargs))

    # --- the os-brick contract -------------------------------------------------
    @abc.abstractmethod
    def connect_volume(self, connection_properties: Mapping[str, Any]) -> DeviceInfo:
        """Attach the volume; return ``{'type': 'block', 'path': ..., ...}``."""

    @abc.abstractmethod
    def disconnect_volume(self, connection_properties: Mapping[str, Any],
                          device_info: Mapping[str, Any] | None, force: bool = False,
                          ignore_errors: bool = False) -> None:
        """Detach the volume and remove every host artefact that belongs only to it."""

    @abc.abstractmethod
    def extend_volume(self, connection_properties: Mapping[str, Any]) -> int:
        """Make the host see the volume's new size; return it in bytes."""

    @abc.abstractmethod
    def get_volume_paths(self, connection_properties: Mapping[str, Any]) -> list[str]:
        """Device paths of this volume that exist on the host now (maybe empty)."""

    @abc.abstractmethod
    def get_all_available_volumes(
            self, connection_properties: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every volume of this protocol attached to the host, with its identity."""

    @abc.abstractmethod
    def get_search_path(self) -> str | None:
        """Where this protocol's device links live (None when there is no such place)."""

    def check_valid_device(self, path: str, run_as_root: bool = True) -> bool:
        """True when the first block of ``path`` can be read."""
        return read_first_block(path)

    def supports_multipath(self) -> bool:
        return False

    def set_driver(self, driver: Any) -> None:
        self.driver = driver

    def _ledger_revalidate(self, device_info: Mapping[str, Any]) -> bool:
        """Before a new attachment shares a recorded device: is it still the volume?

        SCSI connectors (those with ScsiVolumeOps ``ops``) rescan every SCSI device
        behind the path (a device rescan re-reads the identity the kernel caches; it
        is not a target scan) — an array that reused the LUN for another volume makes
        the device stale.  Others: the identity check of the caller suffices.
        """
        ops = getattr(self, "ops", None)
        if ops is None or not hasattr(ops, "revalidate"):
            return True
        from brick_agent.host.scsi import scsi_device_by_name
        dev = block_device_for_path(self.roots, str(device_info.get("path") or ""))
        if dev is None:
            return False
        names = list(dev.slaves) if dev.is_dm else [dev.name]
        for name in names:
            sdev = scsi_device_by_name(self.roots, name)
            if sdev is None or ops.revalidate(sdev) is None:
                return False
        return True

    def _ledger_lookup(self, props: Mapping[str, Any]) -> list[str] | None:
        """Ledger lookup keys of ``props`` (validates them; None: no ledger for this volume)."""
        return ledgermod.lookup_keys(getattr(self, "protocol", ""), props,
                                     use_multipath=self.use_multipath)


def read_first_block(path: str, size: int = 4096) -> bool:
    """Read one block from a device; False on any I/O error or missing device."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        LOG.debug("cannot open %s: %s", path, exc)
        return False
    try:
        os.read(fd, size)
        return True
    except OSError as exc:
        LOG.debug("cannot read %s: %s", path, errno.errorcode.get(exc.errno, exc))
        return False
    finally:
        os.close(fd)


_DEFAULT_CONF: cfg.ConfigOpts | None = None


def default_conf() -> cfg.ConfigOpts:
    """The process-wide brick_agent configuration (parsed lazily, defaults only)."""
    global _DEFAULT_CONF
    if _DEFAULT_CONF is None:
        _DEFAULT_CONF = config.new_conf()
    return _DEFAULT_CONF


def set_default_conf(conf: cfg.ConfigOpts) -> None:
    """Use ``conf`` (with brick_agent options registered) for connectors built without one."""
    global _DEFAULT_CONF
    _DEFAULT_CONF = conf


# ----------------------------------------------------------------------------- attachment ledger
#
# Multiattach on one host.  Every connector's own connect_volume/disconnect_volume
# is wrapped (``Connector.__init_subclass__``) by the two functions below when
# the connector has a ledger (:mod:`brick_agent.ledger`).  Per volume (its
# lookup keys) one external lock serialises the whole connect/disconnect, so a
# detach of the "last" attachment cannot race a new one.
#
# Reconcile rule (each call, never trusting the ledger blindly):
# * an entry whose device is gone, or now reports another identity, is dropped;
# * an entry with no attachment left (a detach that failed half way) is ignored
#   and replaced: the connect runs the full, idempotent kernel path;
# * a device present with no entry but with a pending intent of attachment A
#   (a crash between the kernel action and the ledger write) belongs to A;
# * a device present with neither entry nor intent is adopted by the attachment
#   that connects it: presence alone says nothing about use (an NVMe controller
#   connect or an iSCSI login exposes every namespace/LUN mapped to the host).
#   Consequence: attachments made before the ledger existed (upgrade, os-brick)
#   are not counted; a disconnect whose attachment id is not in the entry
#   removes nothing (safe side), and a disconnect of a volume with no entry at
#   all removes it (the os-brick behaviour: the caller owns it).

_IN_LEDGER = threading.local()


def _ledgered_connect(func: Callable[..., DeviceInfo]) -> Callable[..., DeviceInfo]:
    @functools.wraps(func)
    def connect_volume(self: Connector, connection_properties: Mapping[str, Any],
                       *args: Any, **kwargs: Any) -> DeviceInfo:
        if self.ledger is None or getattr(_IN_LEDGER, "active", False):
            return func(self, connection_properties, *args, **kwargs)
        keys = self._ledger_lookup(connection_properties)
        if not keys:
            return func(self, connection_properties, *args, **kwargs)
        _IN_LEDGER.active = True
        try:
            return _connect(self, func, connection_properties, keys, *args, **kwargs)
        finally:
            _IN_LEDGER.active = False
    return connect_volume


def _ledgered_disconnect(func: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(func)
    def disconnect_volume(self: Connector, connection_properties: Mapping[str, Any],
                          device_info: Mapping[str, Any] | None, *args: Any,
                          **kwargs: Any) -> None:
        if self.ledger is None or getattr(_IN_LEDGER, "active", False):
            return func(self, connection_properties, device_info, *args, **kwargs)
        keys = self._ledger_lookup(connection_properties)
        if not keys:
            return func(self, connection_properties, device_info, *args, **kwargs)
        _IN_LEDGER.active = True
        try:
            return _disconnect(self, func, connection_properties, device_info, keys,
                               *args, **kwargs)
        finally:
            _IN_LEDGER.active = False
    return disconnect_volume


def _volume_lock(self: Connector, keys: list[str]):
    name = locking.safe_lock_name("volume", keys[0])
    return locking.external_lock(name, lock_path=self.opts.lock_path,
                                 timeout=max(60.0, self.opts.device_wait_timeout * 4))


def _identities_now(self: Connector, keys: list[str]) -> dict[str, str | None]:
    """What the kernel says the volume's recorded device is now: ``{path: identity}``.

    Read from a lock-free snapshot of the ledger (atomic renames make it
    consistent) *before* the host-wide ledger lock is taken, so sysfs reads never
    run under that lock.  Only this volume's entry can change meanwhile, and
    every call on it holds the volume lock we hold.
    """
    assert self.ledger is not None
    found = ledgermod.find_entry(self.ledger.read(), keys)
    if found is None:
        return {}
    path = (found[1].get("device_info") or {}).get("path")
    if not path:
        return {}
    return {path: ledgermod.device_identity(self.roots, path)}


def _live_entry(self: Connector, data: dict[str, Any], keys: list[str],
                volume_id: Any = None,
                seen: Mapping[str, str | None] | None = None) -> tuple[str, dict[str, Any]] | None:
    """The volume's entry if its device still is what it was; stale entries are dropped.

    A different ``volume_id`` behind the same target+LUN means the array reused the
    LUN for another volume: the entry is stale (the full attach path revalidates).
    ``seen``: identities read before the ledger lock (:func:`_identities_now`);
    a path not in it is read here.
    """
    found = ledgermod.find_entry(data, keys)
    if found is None:
        return None
    key, entry = found
    if volume_id and entry.get("volume_id") and entry["volume_id"] != volume_id:
        LOG.warning("ledger entry %s dropped: it is volume %s, the target's LUN now belongs "
                    "to volume %s", key, entry["volume_id"], volume_id)
        del data["volumes"][key]
        return None
    path = (entry.get("device_info") or {}).get("path")
    if seen is not None and path in seen:
        now = seen[path]
    else:
        now = ledgermod.device_identity(self.roots, path)
    if not ledgermod.same_identity(now, entry.get("identity")):
        LOG.warning("ledger entry %s dropped: %s is %s now", key, path,
                    "gone" if now is None else f"identity {now}")
        del data["volumes"][key]
        return None
    if not entry.get("attachments"):
        return None
    return key, entry


def _set_access(self: Connector, info: Mapping[str, Any], read_only: bool) -> None:
    """``blockdev --setro/--setrw`` on the returned device (and a map's paths)."""
    dev = block_device_for_path(self.roots, str(info.get("path") or ""))
    if dev is None:
        raise ledgermod.LedgerError(f"cannot set access mode: {info.get('path')} is gone")
    names = [dev.name] + [s for s in dev.slaves if dev.is_dm]
    setter = self._read_only_setter
    if setter is None:
        from brick_agent.privileged import block as privblock
        setter = privblock.set_block_device_read_only
    for name in names:
        setter(name, read_only)


def _connect(self: Connector, func: Callable[..., DeviceInfo], props: Mapping[str, Any],
             keys: list[str], *args: Any, **kwargs: Any) -> DeviceInfo:
    ledger = self.ledger
    assert ledger is not None
    att = ledgermod.attachment_id(props)
    mode = ledgermod.access_mode(props)
    with _volume_lock(self, keys):
        reuse: dict[str, Any] | None = None
        was_ro = False
        seen = _identities_now(self, keys)
        with ledger.transaction() as data:
            live = _live_entry(self, data, keys, props.get("volume_id"), seen)
            if live is not None:
                key, entry = live
                others = {a: m for a, m in ledgermod.modes_of(entry).items() if a != att}
                if any(m != mode for m in others.values()):
                    raise ledgermod.AccessModeConflict(key, mode, others)
                was_ro = "ro" in ledgermod.modes_of(entry).values()
                if att not in entry["attachments"]:
                    reuse = dict(entry["device_info"])
            if reuse is None:
                ledgermod.drop_pending(data, keys)
                data["pending"].append({"lookup": keys, "attachment_id": att,
                                        "access_mode": mode, "since": time.time()})
        if reuse is not None and not self._ledger_revalidate(reuse):
            LOG.warning("%s is no longer the volume of %s; attaching afresh", reuse.get("path"),
                        ",".join(keys))
            with ledger.transaction() as data:
                stale = ledgermod.find_entry(data, keys)
                if stale is not None:
                    del data["volumes"][stale[0]]
                data["pending"].append({"lookup": keys, "attachment_id": att,
                                        "access_mode": mode, "since": time.time()})
            reuse = None
        if reuse is not None:
            if mode == "ro" or was_ro:
                _set_access(self, reuse, mode == "ro")
            seen = _identities_now(self, keys)   # read again: after the revalidation
            with ledger.transaction() as data:
                live = _live_entry(self, data, keys, seen=seen)
                if live is None:
                    raise ledgermod.LedgerError("volume vanished while adding an attachment")
                live[1]["attachments"][att] = {"access_mode": mode, "since": time.time()}
            LOG.info("attachment %s added to %s (%s), device %s", att, live[0], mode,
                     reuse.get("path"))
            return reuse
        try:
            info = func(self, props, *args, **kwargs)
            if mode == "ro":
                _set_access(self, info, True)
        except BaseException:
            with ledger.transaction() as data:
                ledgermod.drop_pending(data, keys, att)
            raise
        ident = ledgermod.device_identity(self.roots, info.get("path"))
        with ledger.transaction() as data:
            ledgermod.drop_pending(data, keys, att)
            prior: dict[str, Any] = {}
            old = ledgermod.find_entry(data, keys)
            if old is not None:
                # the same device (a re-connect of a recorded attachment): keep the others
                if ledgermod.same_identity(old[1].get("identity"), ident):
                    prior = dict(old[1].get("attachments") or {})
                del data["volumes"][old[0]]
            if ident is None:
                LOG.warning("%s has no identity; attachment %s not recorded", info.get("path"),
                            att)
                return info
            attachments = {**prior, att: {"access_mode": mode, "since": time.time()}}
            data["volumes"][ledgermod.volume_key(self.protocol, ident)] = {
                "protocol": self.protocol, "identity": ident, "lookup": keys,
                "volume_id": _plain_id(props.get("volume_id")),
                "device_info": _storable(info), "attachments": attachments}
        return info


def _plain_id(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 255 else None


def _storable(info: Mapping[str, Any]) -> dict[str, Any]:
    """device_info without anything that is not plain JSON."""
    out = {}
    for k, v in info.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int)) for x in v):
            out[k] = list(v)
    return out


def _disconnect(self: Connector, func: Callable[..., None], props: Mapping[str, Any],
                device_info: Mapping[str, Any] | None, keys: list[str], *args: Any,
                **kwargs: Any) -> None:
    ledger = self.ledger
    assert ledger is not None
    att = ledgermod.attachment_id(props)
    with _volume_lock(self, keys):
        seen = _identities_now(self, keys)
        with ledger.transaction() as data:
            ledgermod.drop_pending(data, keys, att)
            live = _live_entry(self, data, keys, seen=seen)
            if live is not None:
                key, entry = live
                atts = entry["attachments"]
                if att in atts:
                    del atts[att]
                else:
                    LOG.warning("disconnect of %s for attachment %s, which is not one of %s: "
                                "nothing removed", key, att, sorted(atts))
                    return
                if atts:
                    LOG.info("attachment %s of %s dropped; device kept for %s", att, key,
                             sorted(atts))
                    return
        func(self, props, device_info, *args, **kwargs)
        with ledger.transaction() as data:
            found = ledgermod.find_entry(data, keys)
            if found is not None and not found[1].get("attachments"):
                del data["volumes"][found[0]]
