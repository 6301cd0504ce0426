"""Metrics: what is recorded, how processes merge into one state file, the textfile and
its format (parsed back with prometheus_client's own parser)."""

from __future__ import annotations

import json
import os
import stat
import time
import types

import pytest
from prometheus_client.parser import text_string_to_metric_families

from brick_agent import config, metrics
from tests.unit.multiproc import run_processes


@pytest.fixture(autouse=True)
def _fresh():
    with metrics.recording_reset():
        yield


def _parse(text: str) -> dict[str, list]:
    """samples by name: [(labels, value)]"""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _value(samples: dict[str, list], name: str, **labels: str) -> float:
    found = [v for lab, v in samples.get(name, []) if lab == labels]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def _flush(tmp_path, textfile=None) -> bool:
    return metrics.flush(
        str(tmp_path / "state" / metrics.STATE_FILE),
        lock_path=str(tmp_path / "locks"),
        textfile=textfile,
    )


def _state(tmp_path) -> dict:
    return metrics.load_state(str(tmp_path / "state" / metrics.STATE_FILE))


def test_a_phase_lands_in_its_bucket_with_sum_and_count():
    metrics.observe(metrics.PHASE_SECONDS, ("ISCSI", "login"), 0.3)
    with metrics.phase("ISCSI", "login"):
        pass
    cells = metrics.pending_series()["histograms"][(metrics.PHASE_SECONDS, ("ISCSI", "login"))]
    assert cells[-1] == 2  # count
    assert 0.3 <= cells[-2] < 0.31  # sum
    assert cells[metrics.BUCKETS.index(0.5)] == 1  # 0.3 s: the (0.25, 0.5] bucket
    assert cells[0] == 1  # the empty with-block: under 1 ms


class _FakeConnector:
    protocol = "NVMEOF"

    def __init__(self, tmp_path, ledger: bool = True, textfile: str | None = None):
        self.conf = config.new_conf(
            overrides={"lock_path": str(tmp_path / "locks"), "metrics_textfile_path": textfile}
        )
        path = str(tmp_path / "state" / "attachments.json")
        self.ledger = types.SimpleNamespace(path=path) if ledger else None

    @metrics.timed("attach")
    def connect_volume(self, fail: BaseException | None = None) -> str:
        with metrics.phase(self.protocol, "connect"):
            if fail is not None:
                raise fail
        return "ok"

    @metrics.step("wait")
    def wait(self) -> None:
        pass


def test_timed_records_latency_and_failures_by_type_then_flushes_beside_the_ledger(tmp_path):
    c = _FakeConnector(tmp_path)
    assert c.connect_volume() == "ok"
    with pytest.raises(TimeoutError):
        c.connect_volume(TimeoutError("slow"))
    metrics.drain()  # the background writer's work, now
    c.wait()
    # everything before the drain went to the state file
    assert set(metrics.pending_series()["histograms"]) == {
        (metrics.PHASE_SECONDS, ("NVMEOF", "wait"))
    }
    text = metrics.render(_state(tmp_path))
    samples = _parse(text)
    assert (
        _value(
            samples,
            "brick_agent_operation_duration_seconds_count",
            protocol="NVMEOF",
            operation="attach",
        )
        == 2
    )
    assert (
        _value(
            samples, "brick_agent_phase_duration_seconds_count", protocol="NVMEOF", phase="connect"
        )
        == 2
    )
    assert (
        _value(
            samples,
            "brick_agent_operation_failures_total",
            protocol="NVMEOF",
            operation="attach",
            error="TimeoutError",
        )
        == 1
    )


def test_the_background_writer_writes_within_its_delay(tmp_path):
    c = _FakeConnector(tmp_path)
    c.connect_volume()
    path = tmp_path / "state" / metrics.STATE_FILE
    deadline = time.monotonic() + 10 * metrics.FLUSH_DELAY + 5
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists()
    assert metrics.pending_series()["histograms"] == {}


def test_a_connector_without_ledger_records_in_memory_only(tmp_path):
    c = _FakeConnector(tmp_path, ledger=False)
    c.connect_volume()
    metrics.drain()
    assert not (tmp_path / "state").exists()
    assert metrics.pending_series()["histograms"]  # kept for whoever flushes


def test_flushes_add_up_and_the_textfile_is_parseable(tmp_path):
    textfile = str(tmp_path / "collector" / "brick_agent.prom")
    os.makedirs(os.path.dirname(textfile))
    for seconds in (0.2, 0.4):
        metrics.observe(metrics.OPERATION_SECONDS, ("ISCSI", "detach"), seconds)
        metrics.count(metrics.FAILURES, ("ISCSI", "detach", "LeftoversRemain"))
        assert _flush(tmp_path, textfile)
    with open(textfile) as fh:
        samples = _parse(fh.read())
    labels = {"protocol": "ISCSI", "operation": "detach"}
    assert _value(samples, "brick_agent_operation_duration_seconds_count", **labels) == 2
    assert _value(samples, "brick_agent_operation_duration_seconds_sum", **labels) == pytest.approx(
        0.6
    )
    # cumulative buckets: nothing up to 0.1, one by 0.25, both by 0.5 and +Inf
    assert _value(samples, "brick_agent_operation_duration_seconds_bucket", le="0.1", **labels) == 0
    assert (
        _value(samples, "brick_agent_operation_duration_seconds_bucket", le="0.25", **labels) == 1
    )
    assert (
        _value(samples, "brick_agent_operation_duration_seconds_bucket", le="+Inf", **labels) == 2
    )
    assert (
        _value(
            samples,
            "brick_agent_operation_failures_total",
            error="LeftoversRemain",
            **labels,
        )
        == 2
    )
    assert stat.S_IMODE(os.stat(textfile).st_mode) & 0o044 == 0o044  # node-exporter reads it
    assert os.listdir(os.path.dirname(textfile)) == ["brick_agent.prom"]  # no temp left


def test_the_state_file_is_replaced_not_rewritten_and_a_failed_write_keeps_the_numbers(
    tmp_path, monkeypatch
):
    metrics.observe(metrics.PHASE_SECONDS, ("ISCSI", "scan"), 0.01)
    assert _flush(tmp_path)
    path = tmp_path / "state" / metrics.STATE_FILE
    before_inode, before_text = os.stat(path).st_ino, path.read_text()

    metrics.observe(metrics.PHASE_SECONDS, ("ISCSI", "scan"), 0.01)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(metrics.os, "replace", broken_replace)
    assert not _flush(tmp_path)
    assert path.read_text() == before_text  # readers never see a partial file
    assert [n for n in os.listdir(path.parent) if n.endswith(".tmp")] == []
    monkeypatch.undo()

    assert _flush(tmp_path)  # the failed flush's observation was kept
    assert os.stat(path).st_ino != before_inode
    cells = json.loads(path.read_text())["series"][
        json.dumps([metrics.PHASE_SECONDS, "ISCSI", "scan"])
    ]
    assert cells[-1] == 2


def test_a_malformed_state_file_restarts_from_zero(tmp_path, caplog):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / metrics.STATE_FILE).write_text("{not json")
    metrics.count(metrics.FAILURES, ("FIBRE_CHANNEL", "attach", "DeviceNotFound"))
    assert _flush(tmp_path)
    samples = _parse(metrics.render(_state(tmp_path)))
    assert (
        _value(
            samples,
            "brick_agent_operation_failures_total",
            protocol="FIBRE_CHANNEL",
            operation="attach",
            error="DeviceNotFound",
        )
        == 1
    )
    assert "malformed" in caplog.text


def test_the_last_audit_replaces_the_previous_one(tmp_path):
    metrics.record_audit({"dangling_link": 3, "iscsi_session_without_luns": 1}, when=1000.0)
    assert _flush(tmp_path)
    metrics.record_audit({"dangling_link": 1}, when=2000.0)
    assert _flush(tmp_path)
    samples = _parse(metrics.render(_state(tmp_path)))
    assert samples["brick_agent_audit_leftovers"] == [({"kind": "dangling_link"}, 1.0)]
    assert _value(samples, "brick_agent_audit_last_run_timestamp_seconds") == 2000.0


def test_an_empty_state_renders_every_metric_with_help_and_type():
    text = metrics.render(metrics.load_state("/nonexistent/metrics.json"))
    for name, (kind, _labels, _help) in metrics.METRICS.items():
        shown = f"{name}_total" if kind == "counter" else name  # the library adds _total
        assert f"# TYPE {shown} {kind}" in text
    assert list(text_string_to_metric_families(text))  # parses


def _worker(barrier, results, state_dir: str, lock_dir: str, n: int) -> None:
    with metrics.recording_reset():
        barrier.wait()
        for _ in range(n):
            metrics.observe(metrics.OPERATION_SECONDS, ("ISCSI", "attach"), 0.05)
            ok = metrics.flush(
                os.path.join(state_dir, metrics.STATE_FILE), lock_path=lock_dir, textfile=None
            )
            assert ok
    results.put(n)


def test_processes_flushing_at_once_lose_nothing(tmp_path):
    state_dir, lock_dir = str(tmp_path / "state"), str(tmp_path / "locks")
    done = run_processes(_worker, [(state_dir, lock_dir, 25)] * 4)
    assert sum(done) == 100
    samples = _parse(
        metrics.render(metrics.load_state(os.path.join(state_dir, metrics.STATE_FILE)))
    )
    labels = {"protocol": "ISCSI", "operation": "attach"}
    assert _value(samples, "brick_agent_operation_duration_seconds_count", **labels) == 100


def test_state_path_is_beside_the_ledger():
    conf = config.new_conf(overrides={"ledger_path": "/srv/brick/attachments.json"})
    assert metrics.state_path(conf) == "/srv/brick/metrics.json"
