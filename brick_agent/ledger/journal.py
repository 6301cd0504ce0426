"""The ledger's journal: what each commit changed, appended after a snapshot, checksummed.

File ``<ledger path>.journal``, only while the ledger is journaled (see
:mod:`brick_agent.ledger.store`), one line per record::

    <crc32, 8 hex> {"gen":"<hex>","journal":"brick_agent-ledger"}        the header
    <crc32, 8 hex> {"v":{key: entry},"vd":[key],"t":{key: value},"td":[key]}

``v``/``vd``: volumes set (whole entries) or removed; ``t``/``td``: the other top-level
keys (``pending``, ``replaced``...) set or removed.  Records hold whole values, so
replaying one twice changes nothing.  The crc32 covers the JSON text.  The header's
``gen`` names the snapshot the journal extends (the snapshot's ``journal`` key); a
journal of another gen is one a compaction left behind (its records are in the
snapshot) and is ignored.  A last line without its newline is a write a crashed
writer did not finish (never acknowledged): ignored, and cut off under the lock.
Any other malformed line is corruption.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

MAGIC = "brick_agent-ledger"
SUFFIX = ".journal"


class JournalCorrupt(ValueError):
    """A journal line that is not a complete, checksummed record."""


def encode(obj: Mapping[str, Any]) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return b"%08x %s\n" % (zlib.crc32(text), text)


def _decode_line(line: bytes) -> dict[str, Any]:
    if len(line) < 10 or line[8:9] != b" ":
        raise JournalCorrupt("malformed journal line")
    try:
        crc = int(line[:8], 16)
    except ValueError:
        raise JournalCorrupt("malformed journal checksum") from None
    body = line[9:]
    if zlib.crc32(body) != crc:
        raise JournalCorrupt("journal checksum mismatch")
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        raise JournalCorrupt("journal record is not JSON") from None
    if not isinstance(obj, dict):
        raise JournalCorrupt("journal record is not an object")
    return obj


def decode(buf: bytes) -> tuple[list[dict[str, Any]], int, bool]:
    """(records, bytes used, torn): the complete lines of ``buf``; ``torn`` when bytes
    follow the last complete line."""
    records: list[dict[str, Any]] = []
    pos = 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return records, pos, True
        records.append(_decode_line(buf[pos:nl]))
        pos = nl + 1
    return records, pos, False


def header(gen: str) -> dict[str, Any]:
    return {"journal": MAGIC, "gen": gen}


def gen_of(first: Mapping[str, Any]) -> str:
    """The gen a header names; :class:`JournalCorrupt` when it is no header."""
    gen = first.get("gen")
    if first.get("journal") != MAGIC or not isinstance(gen, str) or not gen:
        raise JournalCorrupt("journal header missing")
    return gen


def record(
    volumes: Mapping[str, Any],
    removed: Sequence[str],
    top: Mapping[str, Any],
    top_removed: Sequence[str],
) -> dict[str, Any]:
    """One commit's record (empty parts left out)."""
    out: dict[str, Any] = {}
    for name, part in (
        ("v", volumes),
        ("vd", list(removed)),
        ("t", top),
        ("td", list(top_removed)),
    ):
        if part:
            out[name] = part
    return out


def check_record(rec: Mapping[str, Any]) -> None:
    """:class:`JournalCorrupt` unless ``rec`` has the shape :func:`record` gives."""
    vols, top = rec.get("v", {}), rec.get("t", {})
    ok = (
        set(rec) <= {"v", "vd", "t", "td"}
        and isinstance(vols, dict)
        and all(isinstance(e, dict) for e in vols.values())
        and isinstance(top, dict)
        and "volumes" not in top
        and all(
            isinstance(rec.get(k, []), list) and all(isinstance(x, str) for x in rec.get(k, []))
            for k in ("vd", "td")
        )
        and all(isinstance(top[k], list) for k in ("pending", "replaced") if k in top)
        and all(isinstance(x, dict) for k in ("pending", "replaced") for x in top.get(k, []))
    )
    if not ok:
        raise JournalCorrupt("journal record has a malformed shape")


def read_from(path: str, offset: int) -> tuple[int, int, bytes] | None:
    """(inode, size, bytes from ``offset``) of the journal; None when there is none.
    ``OSError`` other than a missing file is raised."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        chunks, pos = [], offset
        while pos < st.st_size:
            chunk = os.pread(fd, st.st_size - pos, pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
        return st.st_ino, offset + sum(map(len, chunks)), b"".join(chunks)
    finally:
        os.close(fd)


def fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def replace_durably(path: str, data: bytes) -> None:
    """Make ``path`` hold ``data`` atomically and durably: a temporary file beside it
    (``.ledger-*.tmp``: the ledger sweeps those a crash left), ``fsync``, rename over
    ``path``, ``fsync`` of the directory.  A missing directory is made private (0700)."""
    directory = os.path.dirname(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", suffix=".tmp", dir=directory)
    except FileNotFoundError:  # the first write: the directory is made private
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ledger-", suffix=".tmp", dir=directory)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def create(path: str, gen: str) -> tuple[int, int]:
    """A new journal holding only the header for ``gen``, renamed into place; (inode, size)
    (under the ledger lock: nobody replaces it meanwhile)."""
    data = encode(header(gen))
    replace_durably(path, data)
    return os.stat(path).st_ino, len(data)


def append(path: str, data: bytes, ino: int, size: int) -> int:
    """Append ``data`` to the journal (inode ``ino``, ``size`` bytes so far), durably;
    the new size.  On a failure the journal is cut back to ``size`` (best effort)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_ino != ino or st.st_size != size:
            raise OSError(f"journal {path} changed under the ledger lock")
        try:
            write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise
    finally:
        os.close(fd)
    return size + len(data)


def truncate(path: str, size: int) -> None:
    """Cut a torn last line off (under the ledger lock)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
