"""The ledger's content in memory: the committed state and the view a transaction changes.

:class:`State` holds what the files say (plain JSON values) with indexes by lookup key,
by identity spelling and of volumes whose attachments are unknown, so a transaction
finds its volume without looking at the others.  :class:`Overlay` is the dict a
transaction body sees: reading a key copies that value from the state, writes stay
in the overlay, and :meth:`Overlay.changes` names exactly the keys whose value
changed.  Anything that walks every key (iteration, ``len``, ``==``) first copies
the whole state in: correct, at the old cost.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from brick_agent.host.scsi import wwid_candidates

#: the attachments of a volume found on the kernel after the ledger was rebuilt
UNKNOWN_ATTACHMENT = "<unknown>"

_ABSENT: Any = object()


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (through the C encoder and decoder)."""
    return json.loads(json.dumps(value))


def canonical(value: Any) -> str:
    """Compact, key-sorted JSON (json's C encoder: it is not used when indenting)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def item_line(key: str, text: str) -> str:
    """A dict item's line of the file: ``  "key": <text>``."""
    return f"  {json.dumps(key)}: {text}"


def item_text_line(key: str, value: Any) -> str:
    """A dict item's line of the file, its value in canonical text."""
    return item_line(key, canonical(value))


class CanonCache:
    """The canonical text of values that are replaced, never changed in place, by key.

    A hit needs the very object the text was made of (``is``): the cache holds it, so
    its id cannot be reused, and a key that names a new object is made afresh.
    """

    __slots__ = ("_texts",)

    def __init__(self) -> None:
        self._texts: dict[str, tuple[Any, str]] = {}

    def text(self, key: str, value: Any, make: Callable[[Any], str] = canonical) -> str:
        hit = self._texts.get(key)
        if hit is not None and hit[0] is value:
            return hit[1]
        text = make(value)
        self._texts[key] = (value, text)
        return text

    def forget(self, key: str) -> None:
        self._texts.pop(key, None)


def identity_forms(identity: Any) -> set[str]:
    """Every lowercased spelling of ``identity`` that :func:`same_identity` matches on."""
    if not isinstance(identity, str) or not identity.strip():
        return set()
    return {identity.strip().lower()} | {c.lower() for c in wwid_candidates(identity)}


def lookups_of(entry: Mapping[str, Any]) -> set[str]:
    keys = entry.get("lookup")
    return {k for k in keys if isinstance(k, str)} if isinstance(keys, list) else set()


def lookup_forms(entry: Mapping[str, Any]) -> set[str]:
    """The lookup keys as written and lowercased (the index answers both ways)."""
    keys = lookups_of(entry)
    return keys | {k.lower() for k in keys}


def scope_forms(entry: Mapping[str, Any]) -> set[str]:
    """What each lookup key addresses less its last part, lowercased: the target of
    ``iscsi:<iqn>:<lun>`` and ``fc:<wwpn>:<lun>``, the subsystem of
    ``nvme:<nqn>:<namespace>`` (an NQN may hold colons; the last part never does)."""
    return {k.rsplit(":", 1)[0].lower() for k in lookups_of(entry) if ":" in k}


def has_unknown_attachment(entry: Mapping[str, Any]) -> bool:
    atts = entry.get("attachments")
    return isinstance(atts, dict) and UNKNOWN_ATTACHMENT in atts


class State:
    """Committed content and its indexes; ``lock`` guards them (readers and the committer).

    The store also keeps here which files it was read from (``files``), to read
    only what was appended since, and the canonical text of each committed entry and
    top-level value (``entry_texts``, ``top_texts``; the file's blocks of top-level values
    in ``block_texts``): a commit renders and compares only what its batch changed.
    Committed values are never changed in place (readers get copies), which is what
    makes these caches sound.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.lock = threading.RLock()
        self.volumes: dict[str, dict[str, Any]] = {}
        self.top: dict[str, Any] = {k: v for k, v in data.items() if k != "volumes"}
        self.by_lookup: dict[str, set[str]] = {}
        self.by_identity: dict[str, set[str]] = {}
        self.by_scope: dict[str, set[str]] = {}
        self.unknown: set[str] = set()
        self.files: Any = None
        self.entry_texts = CanonCache()
        self.top_texts = CanonCache()
        self.block_texts = CanonCache()
        for key, entry in data["volumes"].items():
            self.put(key, entry)

    # ------------------------------------------------------------ changes
    def put(self, key: str, entry: dict[str, Any]) -> None:
        self.remove(key)
        self.volumes[key] = entry
        for lookup in lookup_forms(entry):
            self.by_lookup.setdefault(lookup, set()).add(key)
        for form in identity_forms(entry.get("identity")):
            self.by_identity.setdefault(form, set()).add(key)
        for scope in scope_forms(entry):
            self.by_scope.setdefault(scope, set()).add(key)
        if has_unknown_attachment(entry):
            self.unknown.add(key)

    def remove(self, key: str) -> None:
        old = self.volumes.pop(key, None)
        if old is None:
            return
        self.entry_texts.forget(key)
        for lookup in lookup_forms(old):
            _discard(self.by_lookup, lookup, key)
        for form in identity_forms(old.get("identity")):
            _discard(self.by_identity, form, key)
        for scope in scope_forms(old):
            _discard(self.by_scope, scope, key)
        self.unknown.discard(key)

    def apply(self, record: Mapping[str, Any]) -> None:
        """Apply one journal record (see :func:`brick_agent.ledger.journal.record`)."""
        for key, entry in record.get("v", {}).items():
            self.put(key, entry)
        for key in record.get("vd", ()):
            self.remove(key)
        self.top.update(record.get("t", {}))
        for key in record.get("td", ()):
            self.top.pop(key, None)
            self.top_texts.forget(key)
            self.block_texts.forget(key)

    # ------------------------------------------------------------ reading
    def entry_line(self, key: str, entry: Any) -> str:
        """The file's line of volume ``key``, from its cached canonical text."""
        return item_line(key, self.entry_texts.text(key, entry))

    def content_with(self, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The content as the file format has it, with ``record`` applied, for rendering:
        new top-level dicts over the same entries (the caller holds ``lock`` and does
        not change what it gets)."""
        record = record or {}
        volumes = {**self.volumes, **record.get("v", {})}
        for key in record.get("vd", ()):
            volumes.pop(key, None)
        top = {**self.top, **record.get("t", {})}
        for key in record.get("td", ()):
            top.pop(key, None)
        return {**top, "volumes": volumes}

    def plain(self) -> dict[str, Any]:
        """A deep copy of the whole content, as the file format has it."""
        with self.lock:
            return copy_json({**self.top, "volumes": self.volumes})

    def candidates(self, index: dict[str, set[str]], wanted: Iterable[str]) -> set[str]:
        with self.lock:
            out: set[str] = set()
            for w in wanted:
                out |= index.get(w, set())
            return out


def _discard(index: dict[str, set[str]], value: str, key: str) -> None:
    keys = index.get(value)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[value]


class Overlay(dict[str, Any]):
    """A dict over ``base`` (guarded by ``lock``): values are copied in on first access.

    A transaction member's changes can be undone (:meth:`begin`, :meth:`rollback`);
    :meth:`changes` compares what was touched with ``base``.
    """

    def __init__(
        self,
        base: Mapping[str, Any],
        lock: Any,
        state: State | None = None,
        texts: CanonCache | None = None,
    ) -> None:
        super().__init__()
        self._base = base
        self._lock = lock
        self.state = state  # the indexes, when base is a State's volumes
        self._texts = texts  # canonical texts of base's values
        self._deleted: set[str] = set()
        self._full = False
        self._undo: dict[str, tuple[Any, bool]] | None = None
        self._undo_full = False

    # ------------------------------------------------------------ undo of one member
    def begin(self) -> None:
        self._undo, self._undo_full = {}, self._full

    def end(self) -> None:
        self._undo = None

    def rollback(self) -> None:
        for key, (value, deleted) in (self._undo or {}).items():
            if value is _ABSENT:
                dict.pop(self, key, None)
            else:
                dict.__setitem__(self, key, value)
            if deleted:
                self._deleted.add(key)
            else:
                self._deleted.discard(key)
        self._full = self._undo_full
        self._undo = None

    def _note(self, key: str) -> None:
        if self._undo is not None and key not in self._undo:
            value = dict.get(self, key, _ABSENT)
            if value is not _ABSENT and not isinstance(value, Overlay):
                value = copy_json(value)  # an Overlay (data["volumes"]) undoes itself
            self._undo[key] = (value, key in self._deleted)

    # ------------------------------------------------------------ keyed access
    def _base_get(self, key: str) -> Any:
        with self._lock:
            return self._base.get(key, _ABSENT)

    def _load(self, key: str) -> bool:
        """Is ``key`` present? Copies its base value in on first access."""
        if dict.__contains__(self, key):
            return True
        if self._full or key in self._deleted:
            return False
        value = self._base_get(key)
        if value is _ABSENT:
            return False
        self._note(key)
        dict.__setitem__(self, key, copy_json(value))
        return True

    def __getitem__(self, key: str) -> Any:
        if not self._load(key):
            raise KeyError(key)
        return dict.__getitem__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return dict.__getitem__(self, key) if self._load(key) else default

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        if self._full or not isinstance(key, str) or key in self._deleted:
            return False
        return self._base_get(key) is not _ABSENT

    def __setitem__(self, key: str, value: Any) -> None:
        self._note(key)
        self._deleted.discard(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        if not self._load(key):
            raise KeyError(key)
        self._note(key)
        dict.__delitem__(self, key)
        self._deleted.add(key)

    def pop(self, key: str, *default: Any) -> Any:
        if self._load(key):
            value = dict.__getitem__(self, key)
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if self._load(key):
            return dict.__getitem__(self, key)
        self[key] = default
        return default

    # ------------------------------------------------------------ whole-dict access
    def materialize(self) -> None:
        """Copy every base value in (what walking all keys needs)."""
        if self._full:
            return
        with self._lock:
            items = list(self._base.items())
        for key, value in items:
            if not dict.__contains__(self, key) and key not in self._deleted:
                self._note(key)
                dict.__setitem__(self, key, copy_json(value))
        self._full = True

    def __iter__(self) -> Iterator[str]:
        self.materialize()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self.materialize()
        return dict.__len__(self)

    def __eq__(self, other: object) -> bool:
        self.materialize()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __repr__(self) -> str:
        self.materialize()
        return dict.__repr__(self)

    def keys(self):
        self.materialize()
        return dict.keys(self)

    def values(self):
        self.materialize()
        return dict.values(self)

    def items(self):
        self.materialize()
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        self.materialize()
        return dict(dict.items(self))

    def clear(self) -> None:
        for key in list(self):
            del self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def popitem(self) -> tuple[str, Any]:
        keys = list(self)
        if not keys:
            raise KeyError("popitem(): dictionary is empty")
        return keys[-1], self.pop(keys[-1])

    # ------------------------------------------------------------ what changed
    def touched(self) -> list[str]:
        """Keys read or written (a superset of the changed ones)."""
        return list(dict.keys(self))

    def changes(self, skip: Any = None) -> tuple[dict[str, Any], list[str]]:
        """(key -> new value, removed keys) against ``base``; ``skip``: a value left out."""
        changed: dict[str, Any] = {}
        for key, value in dict.items(self):
            if value is skip and skip is not None:
                continue
            old = self._base_get(key)
            if old is _ABSENT or self._canonical_base(key, old) != canonical(value):
                changed[key] = value
        removed = [
            k
            for k in self._deleted
            if not dict.__contains__(self, k) and self._base_get(k) is not _ABSENT
        ]
        return changed, sorted(removed)

    def _canonical_base(self, key: str, value: Any) -> str:
        return canonical(value) if self._texts is None else self._texts.text(key, value)


def transaction_view(state: State) -> Overlay:
    """The top-level dict a transaction body changes: ``volumes`` is an :class:`Overlay`
    over the state's volumes (with its indexes), every other key one over the rest."""
    top = Overlay(state.top, state.lock, texts=state.top_texts)
    dict.__setitem__(
        top, "volumes", Overlay(state.volumes, state.lock, state, texts=state.entry_texts)
    )
    return top
