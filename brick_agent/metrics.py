"""Node-side metrics: attach/detach latency per protocol and phase, failures by error
type, and the leftovers of the last audit.

Usage (what the connectors do)::

    @metrics.timed("attach")                  # on connect_volume: latency, failures, flush
    def connect_volume(self, props): ...

    with metrics.phase("ISCSI", "login"):     # one step of an attach or detach
        ...

How the numbers travel.  Several processes use brick_agent on one host (nova-compute,
cinder-volume, the CLI), so each records into memory first (a dict under a mutex: no I/O,
no prometheus_client import; about a microsecond per span).  When one of its attaches or
detaches ends, a background thread of the process merges what it recorded (within
``FLUSH_DELAY``; what is left at exit is written then) into the host's state file,
``metrics.json`` beside the attachment ledger, under the host-wide lock
``brick_agent-metrics`` in ``lock_path``, replaced atomically (temp + rename).  All
processes thus add to the same totals, which outlive them.  When ``[brick_agent]
metrics_textfile_path`` is set, the same flush renders the totals in the Prometheus text
format there (temp + rename, for node-exporter's textfile collector; no listening port).
``brick-agent metrics`` prints the same text.  A flush that fails keeps its numbers for
the next one.  An attach pays about 15 µs on its own thread for all this; the background
write costs 0.4 ms, 2.5 ms with the textfile (tools/bench/bench_metrics.py).

Only connectors with a ledger (the real host) flush; connectors on fake trees (unit
tests) record in memory only.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import functools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

LOG = logging.getLogger(__name__)

STATE_FILE = "metrics.json"
LOCK_NAME = "brick_agent-metrics"
FORMAT_VERSION = 1
#: seconds a flush waits for another process's flush
FLUSH_LOCK_TIMEOUT = 2.0

#: histogram upper bounds in seconds (+Inf implied): 1 ms .. 2 min
BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)

OPERATION_SECONDS = "brick_agent_operation_duration_seconds"
PHASE_SECONDS = "brick_agent_phase_duration_seconds"
FAILURES = "brick_agent_operation_failures"
LEFTOVERS = "brick_agent_audit_leftovers"
AUDIT_TIME = "brick_agent_audit_last_run_timestamp_seconds"

#: name -> (type, label names, help)
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    OPERATION_SECONDS: (
        "histogram",
        ("protocol", "operation"),
        "Duration of whole attaches and detaches (failed ones included).",
    ),
    PHASE_SECONDS: (
        "histogram",
        ("protocol", "phase"),
        "Duration of one step of an attach or detach (login/connect, scan, wait, "
        "verify, map, flush, remove, logout/disconnect).",
    ),
    FAILURES: (
        "counter",
        ("protocol", "operation", "error"),
        "Failed attaches and detaches by error type.",
    ),
    LEFTOVERS: ("gauge", ("kind",), "Leftovers the last audit found, by kind."),
    AUDIT_TIME: ("gauge", (), "When the last audit ran (Unix time)."),
}

Labels = tuple[str, ...]


class _Recorded:
    """What this process recorded since its last flush."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.histograms: dict[tuple[str, Labels], list[float]] = {}
        self.counters: dict[tuple[str, Labels], float] = {}
        self.gauges: dict[str, dict[Labels, float]] = {}

    def take(self) -> _Recorded:
        """Move everything recorded into a new object (this one starts empty)."""
        out = _Recorded()
        with self.mutex:
            out.histograms, self.histograms = self.histograms, {}
            out.counters, self.counters = self.counters, {}
            out.gauges, self.gauges = self.gauges, {}
        return out

    def give_back(self, other: _Recorded) -> None:
        """Add ``other`` (a failed flush) back to what is recorded."""
        with self.mutex:
            for key, cells in other.histograms.items():
                _add_cells(self.histograms.setdefault(key, _new_cells()), cells)
            for key, value in other.counters.items():
                self.counters[key] = self.counters.get(key, 0.0) + value
            for name, family in other.gauges.items():
                self.gauges.setdefault(name, family)

    def empty(self) -> bool:
        return not (self.histograms or self.counters or self.gauges)


def _new_cells() -> list[float]:
    """Per-bucket counts (non-cumulative, +Inf last), then the sum, then the count."""
    return [0.0] * (len(BUCKETS) + 3)


def _add_cells(into: list[float], cells: list[float]) -> None:
    for i, value in enumerate(cells):
        into[i] += value


_recorded = _Recorded()


def observe(name: str, labels: Labels, seconds: float) -> None:
    """Record one duration in histogram ``name``."""
    index = bisect.bisect_left(BUCKETS, seconds)
    key = (name, labels)
    with _recorded.mutex:
        cells = _recorded.histograms.get(key)
        if cells is None:
            cells = _recorded.histograms[key] = _new_cells()
        cells[index] += 1
        cells[-2] += seconds
        cells[-1] += 1


def count(name: str, labels: Labels, amount: float = 1.0) -> None:
    """Add ``amount`` to counter ``name``."""
    key = (name, labels)
    with _recorded.mutex:
        _recorded.counters[key] = _recorded.counters.get(key, 0.0) + amount


def set_family(name: str, values: Mapping[Labels, float]) -> None:
    """Replace the whole gauge family ``name`` (series not given disappear)."""
    with _recorded.mutex:
        _recorded.gauges[name] = dict(values)


class phase:
    """Time one step: ``with phase("ISCSI", "login"): ...`` (exceptions included)."""

    __slots__ = ("labels", "start")

    def __init__(self, protocol: str, name: str) -> None:
        self.labels = (protocol, name)
        self.start = 0.0

    def __enter__(self) -> phase:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        observe(PHASE_SECONDS, self.labels, time.perf_counter() - self.start)


F = TypeVar("F", bound=Callable[..., Any])


def timed(operation: str) -> Callable[[F], F]:
    """Decorator of a connector method: its latency, its failures by error type, then a
    flush of this process's numbers (see the module doc).  Outermost, so the ledger's
    work counts too."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            protocol = str(getattr(self, "protocol", "") or "unknown")
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            except BaseException as exc:
                count(FAILURES, (protocol, operation, type(exc).__name__))
                raise
            finally:
                observe(OPERATION_SECONDS, (protocol, operation), time.perf_counter() - start)
                flush_for(self)

        return cast(F, wrapper)

    return decorate


def step(name: str) -> Callable[[F], F]:
    """Decorator of a method of an object with a ``protocol`` attribute: time it as phase
    ``name`` of that protocol (``@metrics.step("scan")``)."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                observe(PHASE_SECONDS, (self.protocol, name), time.perf_counter() - start)

        return cast(F, wrapper)

    return decorate


def record_audit(counts: Mapping[str, int], when: float | None = None) -> None:
    """The leftovers an audit found, by kind (replaces the previous audit's)."""
    set_family(LEFTOVERS, {(kind,): float(n) for kind, n in counts.items()})
    set_family(AUDIT_TIME, {(): time.time() if when is None else when})


# --------------------------------------------------------------------------- where
def state_path(conf: Any) -> str | None:
    """The host's state file: ``metrics.json`` beside the ledger (None: no ledger path)."""
    ledger_path = conf.brick_agent.ledger_path
    if not ledger_path:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(ledger_path)), STATE_FILE)


def flush_for(connector: Any) -> None:
    """After an operation of ``connector`` on the real host (it has a ledger): have this
    process's numbers written soon, in the background (never raises, never blocks)."""
    ledger = getattr(connector, "ledger", None)
    if ledger is None:
        return
    try:
        opts = connector.conf.brick_agent
        path = os.path.join(os.path.dirname(ledger.path), STATE_FILE)
        _flusher.request((path, opts.lock_path, opts.metrics_textfile_path))
    except Exception as exc:  # a caller's configuration without our options, a thread limit
        LOG.debug("metrics not flushed: %s", exc)


def flush_conf(conf: Any) -> None:
    """Flush now to the places ``conf`` names (the CLI after an audit)."""
    path = state_path(conf)
    if path is not None:
        opts = conf.brick_agent
        flush(path, lock_path=opts.lock_path, textfile=opts.metrics_textfile_path)


#: seconds the background writer gathers operations before it writes (a burst of
#: attaches is written once); what is still pending at exit is written then
FLUSH_DELAY = 0.5

_Target = tuple[str, "str | None", "str | None"]  # state file, lock path, textfile


class _Flusher:
    """One daemon thread per process, started at the first request, that writes the
    numbers to the requested places; an ``atexit`` hook drains it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.targets: list[_Target] = []
        self.thread: threading.Thread | None = None

    def request(self, target: _Target) -> None:
        with self.cond:
            if target not in self.targets:
                self.targets.append(target)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="brick-agent-metrics", daemon=True
                )
                self.thread.start()
                _register_exit_drain()
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.targets:
                    self.cond.wait()
            time.sleep(FLUSH_DELAY)
            self.drain()

    def forget(self) -> None:
        """Drop the places waiting to be written (tests)."""
        with self.cond:
            self.targets = []

    def drain(self) -> None:
        with self.cond:
            targets, self.targets = self.targets, []
        for path, lock_path, textfile in targets:
            flush(path, lock_path=lock_path, textfile=textfile)


_flusher = _Flusher()
_exit_registered = False


def _register_exit_drain() -> None:
    global _exit_registered
    if not _exit_registered:
        atexit.register(drain)
        _exit_registered = True


def drain() -> None:
    """Write now what operations requested (at exit; tests)."""
    _flusher.drain()


# --------------------------------------------------------------------------- flush
def flush(path: str, *, lock_path: str | None, textfile: str | None = None) -> bool:
    """Merge what this process recorded into the state file ``path`` (and render
    ``textfile``); True when done.  On any error the numbers are kept for the next flush."""
    taken = _recorded.take()
    if taken.empty() and not textfile:
        return True
    try:
        _merge_locked(path, taken, lock_path, textfile)
    except Exception as exc:  # metrics never fail the operation
        _recorded.give_back(taken)
        LOG.warning("metrics not written to %s (kept for the next flush): %s", path, exc)
        return False
    return True


def _merge_locked(path: str, taken: _Recorded, lock_path: str | None, textfile: str | None) -> None:
    from brick_agent import locking

    with locking.host_file_lock(LOCK_NAME, lock_path=lock_path, timeout=FLUSH_LOCK_TIMEOUT):
        state = load_state(path)
        merge(state, taken)
        _write_atomic(path, json.dumps(state, sort_keys=True, separators=(",", ":")))
        if textfile:
            write_textfile(textfile, state)


def load_state(path: str) -> dict[str, Any]:
    """The state file's content; empty when missing or malformed (counters restart)."""
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
    except FileNotFoundError:
        return _empty_state()
    except ValueError as exc:
        LOG.warning("metrics state %s is malformed (%s): starting again from zero", path, exc)
        return _empty_state()
    if not isinstance(state, dict) or state.get("version") != FORMAT_VERSION:
        return _empty_state()
    return state


def _empty_state() -> dict[str, Any]:
    return {"version": FORMAT_VERSION, "buckets": list(BUCKETS), "series": {}}


def _series_key(name: str, labels: Labels) -> str:
    return json.dumps([name, *labels])


def merge(state: dict[str, Any], taken: _Recorded) -> None:
    """Add ``taken`` to ``state`` (histograms and counters add up, gauge families replace)."""
    if state.get("buckets") != list(BUCKETS):  # another bucket layout: restart histograms
        state["series"] = {k: v for k, v in state["series"].items() if not isinstance(v, list)}
        state["buckets"] = list(BUCKETS)
    series = state["series"]
    for (name, labels), cells in taken.histograms.items():
        key = _series_key(name, labels)
        current = series.get(key)
        if not isinstance(current, list) or len(current) != len(cells):
            current = series[key] = _new_cells()
        _add_cells(current, cells)
    for (name, labels), value in taken.counters.items():
        key = _series_key(name, labels)
        series[key] = float(series.get(key, 0.0)) + value
    for name, family in taken.gauges.items():
        for key in [k for k in series if json.loads(k)[0] == name]:
            del series[key]
        for labels, value in family.items():
            series[_series_key(name, labels)] = {"gauge": value}


def _write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".metrics-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- render
def families(state: Mapping[str, Any]) -> list[Any]:
    """prometheus_client metric families of ``state`` (every known metric, maybe empty)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    kinds = {
        "histogram": HistogramMetricFamily,
        "counter": CounterMetricFamily,
        "gauge": GaugeMetricFamily,
    }
    out = {}
    for name, (kind, labelnames, help_text) in METRICS.items():
        # counters are named without _total here: the library appends it
        out[name] = kinds[kind](name, help_text, labels=list(labelnames))
    bounds = [str(b) for b in state.get("buckets", BUCKETS)] + ["+Inf"]
    for key, value in sorted(state.get("series", {}).items()):
        name, *labels = json.loads(key)
        family = out.get(name)
        if family is None:
            continue
        _add_sample(family, METRICS[name][0], labels, value, bounds)
    return list(out.values())


def _add_sample(family: Any, kind: str, labels: list[str], value: Any, bounds: list[str]) -> None:
    if kind == "histogram":
        cumulative, running = [], 0.0
        for bound, n in zip(bounds, value[: len(bounds)], strict=True):
            running += n
            cumulative.append((bound, running))
        family.add_metric(labels, buckets=cumulative, sum_value=value[-2])
    elif kind == "counter":
        family.add_metric(labels, float(value))
    else:
        family.add_metric(labels, float(value["gauge"]))


def registry_of(state: Mapping[str, Any]) -> Any:
    """A prometheus_client registry serving ``state`` (not the library's global one)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector

    class StateCollector(Collector):
        def collect(self) -> Iterable[Any]:
            return families(state)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector())
    return registry


def render(state: Mapping[str, Any]) -> str:
    """``state`` in the Prometheus text exposition format."""
    from prometheus_client import generate_latest

    return generate_latest(registry_of(state)).decode("utf-8")


def write_textfile(path: str, state: Mapping[str, Any]) -> None:
    """Write ``state`` for node-exporter's textfile collector (temp + rename, mode 0644)."""
    from prometheus_client import write_to_textfile

    write_to_textfile(path, registry_of(state))


@contextlib.contextmanager
def recording_reset() -> Iterator[None]:
    """Tests: start with nothing recorded or waiting to be written in this process, and
    drop it after (a write another test asked for would take this test's numbers)."""
    _recorded.take()
    _flusher.forget()
    try:
        yield
    finally:
        _recorded.take()
        _flusher.forget()


def pending_series() -> dict[str, Any]:
    """What this process recorded and has not flushed (a copy, for tests and tools)."""
    with _recorded.mutex:
        return {
            "histograms": {k: list(v) for k, v in _recorded.histograms.items()},
            "counters": dict(_recorded.counters),
            "gauges": {k: dict(v) for k, v in _recorded.gauges.items()},
        }
