"""Multiattach on one host: the reconcile rule.

Each connector shows it at its methods: ``@ledger.records_attach`` on
``connect_volume`` and ``@ledger.records_detach`` on ``disconnect_volume`` route
the call through the functions below when the connector has a ledger
(:mod:`brick_agent.ledger.store`).  Per volume (its lookup keys) one external
lock serialises the whole connect/disconnect, so a detach of the "last"
attachment cannot race a new one.

Reconcile rule (each call, never trusting the ledger blindly):
* an entry whose device is gone, or now reports another identity, is dropped;
  so is one whose ``volume_id`` differs from the connecting volume's (the array
  reused the address).  A dropped entry leaves a tombstone (``replaced``);
* an entry with no attachment left (a detach that failed half way) is ignored
  and replaced: the connect runs the full, idempotent kernel path;
* a device present with no entry but with a pending intent of attachment A
  (a crash between the kernel action and the ledger write) belongs to A;
* a device present with neither entry nor intent is adopted by the attachment
  that connects it: presence alone says nothing about use (an NVMe controller
  connect or an iSCSI login exposes every namespace/LUN mapped to the host).
  A volume found by the rebuild of a corrupt ledger keeps its unknown
  attachment next to the adopting one.

Identity anchors every detach: the volume the call names (``volume_id``,
``device_info``'s identity, Nova's ``device_path``) must be the entry's.  A call
naming another volume (a stale volume whose address was reused) removes nothing;
a call naming none, on an address that was reused, keeps the device and says so.
With no ``device_info`` the connector gets the recorded one (and NVMe-oF the
recorded namespace UUID), never "whatever sits at that address now".

Access mode: the device is made read-only only while every live attachment is a
read-only one *with an attachment id*; without ids (Nova) the device's read-only
flag is never touched (the hypervisor enforces ro for its guest).  A read-write
attachment arriving makes the device writable again before it is returned.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from brick_agent import locking
from brick_agent.deadline import Deadline
from brick_agent.errors import DeviceNotFound
from brick_agent.host import udev
from brick_agent.host.block import block_device_for_path
from brick_agent.host.roots import HostRoots
from brick_agent.ledger import store as ledgermod

LOG = logging.getLogger(__name__)

DeviceInfo = dict[str, Any]


class Connector(Protocol):
    """What the rule needs of a connector (:class:`brick_agent.connectors.base.Connector`)."""

    protocol: str
    roots: HostRoots
    opts: Any
    ledger: ledgermod.AttachmentLedger | None

    def _ledger_lookup(self, props: Mapping[str, Any]) -> list[str] | None: ...

    def _ledger_revalidate(self, device_info: Mapping[str, Any]) -> bool: ...

    def _set_read_only(self, name: str, read_only: bool) -> None: ...

    def get_volume_paths(self, connection_properties: Mapping[str, Any]) -> list[str]: ...


_IN_LEDGER = threading.local()


def records_attach(func: Callable[..., DeviceInfo]) -> Callable[..., DeviceInfo]:
    """Decorator of a connector's ``connect_volume``: the attachment is recorded
    (see module doc)."""

    @functools.wraps(func)
    def connect_volume(
        self: Connector, connection_properties: Mapping[str, Any], *args: Any, **kwargs: Any
    ) -> DeviceInfo:
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


def records_detach(func: Callable[..., None]) -> Callable[..., None]:
    """Decorator of a connector's ``disconnect_volume``: the device goes only with its last
    attachment, and only if it is the volume the call names (see module doc)."""

    @functools.wraps(func)
    def disconnect_volume(
        self: Connector,
        connection_properties: Mapping[str, Any],
        device_info: Mapping[str, Any] | None,
        force: bool = False,
        ignore_errors: bool = False,
    ) -> None:
        if self.ledger is None or getattr(_IN_LEDGER, "active", False):
            return func(self, connection_properties, device_info, force, ignore_errors)
        keys = self._ledger_lookup(connection_properties)
        if not keys:
            return func(self, connection_properties, device_info, force, ignore_errors)
        _IN_LEDGER.active = True
        try:
            return _disconnect(
                self,
                func,
                connection_properties,
                device_info,
                keys,
                bool(force),
                bool(ignore_errors),
            )
        finally:
            _IN_LEDGER.active = False

    return disconnect_volume


def _volume_lock(self: Connector, keys: list[str]):
    name = locking.safe_lock_name("volume", keys[0])
    return locking.external_lock(
        name, lock_path=self.opts.lock_path, timeout=max(60.0, self.opts.device_wait_timeout * 4)
    )


def _identities_now(
    self: Connector,
    keys: list[str],
    view: Mapping[str, Any] | None = None,
    known: Mapping[str, str | None] | None = None,
) -> dict[str, str | None]:
    """What the kernel says the volume's recorded device is now: ``{path: identity}``.

    Read from a lock-free snapshot of the ledger (atomic renames make it
    consistent; ``view``: one the caller read under the same volume lock) *before*
    the host-wide ledger lock is taken, so sysfs reads never run under that lock.
    Only this volume's entry can change meanwhile, and every call on it holds the
    volume lock we hold.  ``known``: identities of paths the caller read under that
    lock.  A corrupt ledger reads as nothing here (the transaction rebuilds it); an
    unreadable one raises.
    """
    if view is None:
        view = _lock_free_view(self)
    found = None if view is None else ledgermod.find_entry(view, keys)
    if found is None:
        return {}
    path = (found[1].get("device_info") or {}).get("path")
    if not path:
        return {}
    if known is not None and path in known:
        return {path: known[path]}
    return {path: ledgermod.device_identity(self.roots, path)}


def _lock_free_view(self: Connector) -> Mapping[str, Any] | None:
    """The ledger's content read without its lock; None when it is corrupt (the next
    transaction rebuilds it); an unreadable ledger raises."""
    assert self.ledger is not None
    try:
        return self.ledger.view()
    except ledgermod.LedgerCorrupt:
        return None


def _drop_stale(data: dict[str, Any], key: str, why: str) -> None:
    """Remove a stale entry and remember what its address carried (a tombstone)."""
    entry = data["volumes"].pop(key)
    LOG.warning("ledger entry %s dropped: %s", key, why)
    data.setdefault("replaced", []).append(
        {
            "lookup": list(entry.get("lookup") or ()),
            "identity": entry.get("identity"),
            "volume_id": entry.get("volume_id"),
            "at": time.time(),
            "why": why,
        }
    )
    del data["replaced"][: -ledgermod.MAX_REPLACED]


def _live_entry(
    self: Connector,
    data: dict[str, Any],
    keys: list[str],
    volume_id: Any = None,
    seen: Mapping[str, str | None] | None = None,
) -> tuple[str, dict[str, Any]] | None:
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
        _drop_stale(
            data,
            key,
            f"it is volume {entry['volume_id']}, the address now belongs to volume {volume_id}",
        )
        return None
    path = (entry.get("device_info") or {}).get("path")
    if seen is not None and path is not None and path in seen:
        now = seen[path]
    else:
        now = ledgermod.device_identity(self.roots, path)
    if not ledgermod.same_identity(now, entry.get("identity")):
        _drop_stale(
            data, key, f"{path} is " + ("gone" if now is None else f"identity {now}") + " now"
        )
        return None
    if not entry.get("attachments"):
        return None
    return key, entry


def _wants_read_only(attachments: Mapping[str, Any]) -> bool:
    """Read-only only while every attachment is ro and was made with an attachment id."""
    return bool(attachments) and all(
        a not in (ledgermod.DEFAULT_ATTACHMENT, ledgermod.UNKNOWN_ATTACHMENT)
        and (rec or {}).get("access_mode") == "ro"
        for a, rec in attachments.items()
    )


def _is_read_only(entry: Mapping[str, Any]) -> bool:
    """The read-only flag this ledger last set on the entry's device."""
    if "read_only" in entry:
        return bool(entry["read_only"])
    # entries written before the flag was recorded: ro was set for any ro attachment
    return "ro" in ledgermod.modes_of(entry).values()


def _set_access(self: Connector, info: Mapping[str, Any], read_only: bool) -> None:
    """``blockdev --setro/--setrw`` on the returned device (and a map's paths)."""
    dev = block_device_for_path(self.roots, str(info.get("path") or ""))
    if dev is None:
        raise ledgermod.LedgerError(f"cannot set access mode: {info.get('path')} is gone")
    names = [dev.name] + [s for s in dev.slaves if dev.is_dm]
    for name in names:
        self._set_read_only(name, read_only)
    LOG.info("%s made %s", info.get("path"), "read-only" if read_only else "writable")


def _apply_access(
    self: Connector, info: Mapping[str, Any], was_ro: bool, attachments: Mapping[str, Any]
) -> bool:
    """Make the device's read-only flag what ``attachments`` want; return the new flag."""
    want = _wants_read_only(attachments)
    if want != was_ro:
        _set_access(self, info, want)
    return want


def _intent(keys: list[str], att: str, mode: str) -> dict[str, Any]:
    return {"lookup": keys, "attachment_id": att, "access_mode": mode, "since": time.time()}


def _connect(
    self: Connector,
    func: Callable[..., DeviceInfo],
    props: Mapping[str, Any],
    keys: list[str],
    *args: Any,
    **kwargs: Any,
) -> DeviceInfo:
    ledger = self.ledger
    assert ledger is not None
    att = ledgermod.attachment_id(props)
    mode = ledgermod.access_mode(props)
    record = {"access_mode": mode, "since": time.time()}
    with _volume_lock(self, keys):
        reuse: dict[str, Any] | None = None
        seen = _identities_now(self, keys)
        with ledger.transaction() as data:
            live = _live_entry(self, data, keys, props.get("volume_id"), seen)
            if live is not None and att not in live[1]["attachments"]:
                reuse = dict(live[1]["device_info"])
            if reuse is None:
                ledgermod.drop_pending(data, keys)
                data["pending"].append(_intent(keys, att, mode))
        if reuse is not None and not self._ledger_revalidate(reuse):
            with ledger.transaction() as data:
                stale = ledgermod.find_entry(data, keys)
                if stale is not None:
                    _drop_stale(
                        data,
                        stale[0],
                        f"{reuse.get('path')} is no longer the volume (revalidation)",
                    )
                data["pending"].append(_intent(keys, att, mode))
            reuse = None
        if reuse is not None:
            return _add_attachment(self, keys, att, record, reuse)
        try:
            info = func(self, props, *args, **kwargs)
        except BaseException:
            with ledger.transaction() as data:
                ledgermod.drop_pending(data, keys, att)
            raise
        ident = _result_identity(self, info)
        prior: dict[str, Any] = {}
        was_ro = False
        if ident is not None:
            snapshot = _entry_of_device(ledger.view(), self.protocol, keys, ident)
            if snapshot is not None:
                prior = dict(snapshot.get("attachments") or {})
                was_ro = _is_read_only(snapshot)
        try:
            read_only = _apply_access(self, info, was_ro, {**prior, att: record})
        except BaseException:
            with ledger.transaction() as data:
                ledgermod.drop_pending(data, keys, att)
            raise
        with ledger.transaction() as data:
            ledgermod.drop_pending(data, keys, att)
            old = _entry_of_device(data, self.protocol, keys, ident, pop=True)
            if ident is None:
                LOG.warning("%s has no identity; attachment %s not recorded", info.get("path"), att)
                return info
            attachments = dict(old.get("attachments") or {}) if old else {}
            attachments[att] = record
            data["volumes"][ledgermod.volume_key(self.protocol, ident)] = {
                "protocol": self.protocol,
                "identity": ident,
                "lookup": keys,
                "volume_id": _plain_id(props.get("volume_id")),
                "device_info": _storable(info),
                "attachments": attachments,
                "read_only": read_only,
            }
        return info


#: how long a connect waits for the path it returned to resolve before recording it
RESULT_LINK_WAIT = 5.0


def _result_identity(self: Connector, info: Mapping[str, Any]) -> str | None:
    """The identity of the device a connect returned, for its ledger entry.

    The connector verified the device an instant ago; a udev link it returned
    can still be re-pointed by udev for a moment (another claimant of the link
    coming or going), so an unresolvable path is waited for on udev's events
    (at most ``RESULT_LINK_WAIT`` s) rather than leaving the attachment
    unrecorded.
    """
    path = info.get("path")
    ident = ledgermod.device_identity(self.roots, path)
    if ident is not None or not path or not udev.udev_running(self.roots):
        return ident
    with udev.DeviceWatch(roots=self.roots, poll_interval=0.25) as watch:
        try:
            return watch.wait_for(
                lambda: ledgermod.device_identity(self.roots, path),
                Deadline.after(RESULT_LINK_WAIT),
                what=f"{path} to resolve",
            )
        except DeviceNotFound:
            return None


def _entry_of_device(
    data: dict[str, Any], protocol: str, keys: list[str], ident: str | None, *, pop: bool = False
) -> dict[str, Any] | None:
    """The entry of the device just attached: found by lookup keys or by identity.

    An entry at the keys with another identity is stale (dropped when ``pop``); one
    found by identity alone is a rebuilt entry (attachments unknown) or the same
    volume reached through another address.  ``pop`` removes what it returns.
    """
    found = ledgermod.find_entry(data, keys)
    if found is not None and not ledgermod.same_identity(found[1].get("identity"), ident):
        if pop:
            _drop_stale(data, found[0], f"the address now carries {ident}")
        found = None
    if found is None and ident is not None:
        found = ledgermod.find_by_identity(data, protocol, ident)
    if found is None:
        return None
    if pop:
        del data["volumes"][found[0]]
    return found[1]


def _add_attachment(
    self: Connector, keys: list[str], att: str, record: dict[str, Any], reuse: dict[str, Any]
) -> DeviceInfo:
    """A new attachment shares the recorded (revalidated) device."""
    ledger = self.ledger
    assert ledger is not None
    found = ledgermod.find_entry(ledger.view(), keys)
    if found is None:
        raise ledgermod.LedgerError("volume vanished while adding an attachment")
    read_only = _apply_access(
        self, reuse, _is_read_only(found[1]), {**found[1]["attachments"], att: record}
    )
    seen = _identities_now(self, keys)  # read again: after the revalidation
    with ledger.transaction() as data:
        live = _live_entry(self, data, keys, seen=seen)
        if live is None:
            raise ledgermod.LedgerError("volume vanished while adding an attachment")
        live[1]["attachments"][att] = record
        live[1]["read_only"] = read_only
    LOG.info(
        "attachment %s added to %s (%s), device %s",
        att,
        live[0],
        record["access_mode"],
        reuse.get("path"),
    )
    return reuse


def _plain_id(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 255 else None


def _storable(info: Mapping[str, Any]) -> dict[str, Any]:
    """device_info without anything that is not plain JSON."""
    out: dict[str, Any] = {}
    for k, v in info.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int)) for x in v):
            out[k] = list(v)
    return out


# ---------------------------------------------------------------- detach


class _Claim:
    """What a disconnect call says about which volume it is for."""

    def __init__(
        self, self_: Connector, props: Mapping[str, Any], device_info: Mapping[str, Any] | None
    ) -> None:
        self.volume_id = _plain_id(props.get("volume_id"))
        info = device_info or {}
        self.identity = next(
            (
                str(info[k])
                for k in ("scsi_wwn", "multipath_id")
                if isinstance(info.get(k), str) and info[k].strip()
            ),
            None,
        )
        # Nova's data['device_path'] (or device_info's path): only a contradiction counts,
        # since the kernel reuses names ('sda' can be the new volume now)
        #: identity of each path the call names, as the kernel says now
        self.identity_of: dict[str, str | None] = {
            p: ledgermod.device_identity(self_.roots, p)
            for p in (info.get("path"), props.get("device_path"))
            if isinstance(p, str) and p.startswith("/")
        }

    @property
    def path_identities(self) -> list[str]:
        """The identities of the named paths that resolve to a device."""
        return [i for i in self.identity_of.values() if i]

    def verdict(self, entry: Mapping[str, Any]) -> str:
        """'same' (the entry's volume), 'other' (another volume), 'unknown' (cannot tell)."""
        vid, ident = entry.get("volume_id"), entry.get("identity")
        if self.volume_id and vid and self.volume_id != vid:
            return "other"
        if self.identity and not ledgermod.same_identity(self.identity, ident):
            return "other"
        if any(not ledgermod.same_identity(i, ident) for i in self.path_identities):
            return "other"
        if (self.volume_id and vid) or self.identity:
            return "same"
        return "unknown"

    def names(self, tomb: Mapping[str, Any]) -> bool:
        """Does the call name the replaced volume of tombstone ``tomb``?"""
        if self.volume_id and tomb.get("volume_id") == self.volume_id:
            return True
        return bool(self.identity) and ledgermod.same_identity(self.identity, tomb.get("identity"))


def _tombstones(data: Mapping[str, Any], keys: list[str]) -> list[dict[str, Any]]:
    wanted = set(keys)
    return [t for t in data.get("replaced", ()) if wanted & set(t.get("lookup") or ())]


def _forget_named(data: dict[str, Any], claim: _Claim) -> None:
    """Drop the tombstones of the volume this (finished) detach named."""
    tombs = data.get("replaced")
    if tombs and any(claim.names(t) for t in tombs):
        data["replaced"] = [t for t in tombs if not claim.names(t)]


def _disconnect(
    self: Connector,
    func: Callable[..., None],
    props: Mapping[str, Any],
    device_info: Mapping[str, Any] | None,
    keys: list[str],
    force: bool,
    ignore_errors: bool,
) -> None:
    ledger = self.ledger
    assert ledger is not None
    att = ledgermod.attachment_id(props)
    with _volume_lock(self, keys):
        claim = _Claim(self, props, device_info)
        view = _lock_free_view(self)
        seen = _identities_now(self, keys, view, known=claim.identity_of)
        rebuilt_ids = _rebuilt_identities(self, props, keys, view)
        with ledger.transaction() as data:
            ledgermod.drop_pending(data, keys, att)
            outcome = _detach_decision(self, data, keys, att, claim, seen, rebuilt_ids, force)
        if outcome.get("raise"):
            if ignore_errors:
                LOG.warning("%s", outcome["raise"])
                return
            raise outcome["raise"]
        if outcome.get("keep"):
            if outcome.get("read_only") is not None:
                _set_access(self, outcome["device_info"], outcome["read_only"])
            return
        anchor = outcome.get("device_info")
        call_props = props
        if not device_info and anchor:
            device_info = anchor
            call_props = _anchored_props(self.protocol, props, outcome.get("identity"))
        func(self, call_props, device_info, force, ignore_errors)
        with ledger.transaction() as data:
            found = ledgermod.find_entry(data, keys)
            if found is not None and not found[1].get("attachments"):
                del data["volumes"][found[0]]
            _forget_named(data, claim)


def _detach_decision(
    self: Connector,
    data: dict[str, Any],
    keys: list[str],
    att: str,
    claim: _Claim,
    seen: Mapping[str, str | None],
    rebuilt_ids: list[str],
    force: bool,
) -> dict[str, Any]:
    """Inside the ledger transaction: may this disconnect remove the device?

    Returns ``{}`` (remove, no record: the os-brick behaviour), ``{'device_info',
    'identity'}`` (remove the recorded device), ``{'keep': True[, 'read_only',
    'device_info']}`` or ``{'raise': error}`` (nothing removed).
    """
    live = _live_entry(self, data, keys, seen=seen)
    if live is None:
        tombs = _tombstones(data, keys)
        named = [t for t in tombs if claim.names(t)]
        if named:
            # this volume's device was replaced (LUN reuse) or is gone: what is left of it
            # (an empty session, a node record) goes, anchored to its own identity
            _forget_named(data, claim)
            target = named[-1]
        else:
            decision = _unknown_decision(self, data, rebuilt_ids, force)
            if decision or not tombs:
                return decision
            # the recorded device now carries another volume (or is gone): anchor the
            # detach to the identity this address carried when we attached it
            target = tombs[-1]
        if not target.get("identity") or (
            self.protocol == "NVMEOF" and not ledgermod.nvme_identity_uuid(target["identity"])
        ):
            LOG.warning(
                "disconnect of %s: the recorded device is gone or reused and its "
                "identity cannot anchor the detach; nothing removed",
                ",".join(keys),
            )
            return {"keep": True}
        LOG.info(
            "disconnect of %s: the recorded device is gone or carries another volume; "
            "removing only what is left of %s",
            ",".join(keys),
            target["identity"],
        )
        return {
            "device_info": _anchor_info(self.protocol, target["identity"]),
            "identity": target["identity"],
        }
    key, entry = live
    verdict = claim.verdict(entry)
    if verdict == "other":
        LOG.warning(
            "disconnect names another volume than %s (volume %s, %s), which this "
            "address carries now: nothing removed",
            key,
            entry.get("volume_id"),
            entry.get("identity"),
        )
        _forget_named(data, claim)
        return {"keep": True}
    if verdict == "unknown" and _tombstones(data, keys):
        why = (
            f"detach of attachment {att} kept {entry['device_info'].get('path')}: its "
            "address was reused by another volume and the call names neither volume_id "
            "nor device_info; it may be the replaced volume's detach"
        )
        LOG.warning("%s", why)
        entry["detach_kept"] = {"at": time.time(), "attachment": att, "why": why}
        return {"keep": True}
    atts = entry["attachments"]
    if att not in atts:
        LOG.warning(
            "disconnect of %s for attachment %s, which is not one of %s: nothing removed",
            key,
            att,
            sorted(atts),
        )
        return {"keep": True}
    del atts[att]
    entry.pop("detach_kept", None)
    if set(atts) == {ledgermod.UNKNOWN_ATTACHMENT} and not force:
        return {
            "raise": ledgermod.AttachmentsUnknown(
                f"{entry['device_info'].get('path')} ({key}) kept: the ledger was rebuilt after "
                "corruption and other attachments of it may be live; disconnect with force=True "
                "once no instance on this host uses it"
            )
        }
    if atts and set(atts) != {ledgermod.UNKNOWN_ATTACHMENT}:
        LOG.info("attachment %s of %s dropped; device kept for %s", att, key, sorted(atts))
        want = _wants_read_only(atts)
        out: dict[str, Any] = {"keep": True}
        if want != _is_read_only(entry):
            entry["read_only"] = want
            out.update(read_only=want, device_info=dict(entry["device_info"]))
        return out
    atts.clear()
    return {"device_info": dict(entry["device_info"]), "identity": entry.get("identity")}


def _rebuilt_identities(
    self: Connector, props: Mapping[str, Any], keys: list[str], data: Mapping[str, Any] | None
) -> list[str]:
    """Identities of the volume's devices now, when the ledger holds rebuilt entries.

    Only then can a disconnect without an entry at its address be one of them; the
    common case costs nothing (read before the ledger lock, like the identities;
    ``data``: :func:`_lock_free_view`).  A corrupt ledger (None) is about to be
    rebuilt: every volume will be unknown.
    """
    if data is not None and (
        ledgermod.find_entry(data, keys) is not None or not ledgermod.unknown_entries(data)
    ):
        return []
    idents = (ledgermod.device_identity(self.roots, p) for p in self.get_volume_paths(props))
    return [i for i in idents if i]


def _unknown_decision(
    self: Connector, data: dict[str, Any], rebuilt_ids: list[str], force: bool
) -> dict[str, Any]:
    """No entry at the address: is the device one the rebuilt ledger holds as unknown?"""
    for key, entry in ledgermod.unknown_entries(data):
        if entry.get("protocol") == self.protocol and any(
            ledgermod.same_identity(i, entry.get("identity")) for i in rebuilt_ids
        ):
            if not force:
                return {
                    "raise": ledgermod.AttachmentsUnknown(
                        f"{(entry.get('device_info') or {}).get('path')} ({key}) kept: the ledger "
                        "was rebuilt after corruption and attachments of it may be live; "
                        "disconnect with force=True once no instance on this host uses it"
                    )
                }
            LOG.warning("forced disconnect of %s, whose attachments were unknown", key)
            del data["volumes"][key]
    return {}


def _anchor_info(protocol: str, identity: str) -> dict[str, Any]:
    """A device_info that names only the identity (SCSI: the WWID the connector verifies)."""
    if protocol == "NVMEOF":
        return {"type": "block"}
    return {"type": "block", "scsi_wwn": identity}


def _anchored_props(
    protocol: str, props: Mapping[str, Any], identity: str | None
) -> Mapping[str, Any]:
    """NVMe-oF properties (new format) naming the namespace by NSID only get the
    recorded UUID, so the connector removes only that namespace."""
    if protocol != "NVMEOF" or props.get("vol_uuid") or "target_nqn" not in props:
        return props
    uuid = ledgermod.nvme_identity_uuid(identity)
    return {**props, "vol_uuid": uuid} if uuid else props
