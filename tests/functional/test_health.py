"""``brick-agent health`` and the metrics on the lab VM's real kernel.

The lab host is healthy for iSCSI and NVMe/TCP; then each thing a protocol needs is
broken in turn (iscsid stopped, initiator name corrupted or changed under a session,
host NQN changed under a controller, NVMe modules unloaded, lock directory open to all,
ledger unreadable, multipath configured without multipathd, privsep helper failing),
the command must name it and exit 7, and the host is restored.  A broken host is looked
at as an operator looks again at one thing (``--check NAME``: no privsep daemon start, which
costs 15 s under emulation, unless that is the check); the healthy host gets the full
report.  Last, a real attach and detach must leave non-zero phase histograms in the
node-exporter textfile.

Run: tools/kernel-lab/lab run -- tools/kernel-lab/guest-pytest tests/functional/test_health.py -q
The healthy report (--human) and a metrics sample are written to results/ for the notes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from brick_agent import metrics
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_agent.connectors.nvmeof.connector import NVMeOFConnector
from brick_lab import LioIscsiTarget, NvmetSubsystem
from brick_lab.initiator import iscsi_login, iscsi_logout, nvme_connect, nvme_disconnect, sh
from brick_lab.rawhost import nvme_ctrls_of, sessions_of
from tests.functional.conftest import PRIVSEP_DAEMON, make_conf

pytestmark = pytest.mark.realkernel

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(REPO, "results")
INITIATOR = "/etc/iscsi/initiatorname.iscsi"
HOSTNQN = "/etc/nvme/hostnqn"
PROTOCOLS = ("--protocol", "ISCSI", "--protocol", "NVMEOF")


def conf_file(tmp_path, **options: str) -> str:
    """A brick_agent.conf for the command: locks and ledger under ``tmp_path``."""
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700, exist_ok=True)
    lines = [
        "[brick_agent]",
        f"lock_path = {locks}",
        f"ledger_path = {tmp_path / 'state' / 'attachments.json'}",
    ]
    lines += [f"{k} = {v}" for k, v in options.items()]
    path = tmp_path / "brick_agent.conf"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def health(tmp_path, *args: str, **options: str) -> tuple[int, dict[str, dict]]:
    """Run ``brick-agent health`` (a fresh process, as an operator would): exit code and
    the checks by name."""
    argv = [
        sys.executable,
        "-m",
        "brick_agent.cli",
        "--config-file",
        conf_file(tmp_path, **options),
    ]
    p = subprocess.run(
        [*argv, "health", *PROTOCOLS, *args], capture_output=True, text=True, timeout=180, cwd=REPO
    )
    report = json.loads(p.stdout)
    assert report["healthy"] is (p.returncode == 0), p.stderr
    return p.returncode, {c["name"]: c for c in report["checks"]}


def assert_named(result: tuple[int, dict[str, dict]], name: str, status: str = "fail") -> dict:
    code, checks = result
    assert checks[name]["status"] == status, checks[name]
    if status != "ok":
        assert checks[name]["fix"], checks[name]
    if status == "fail":
        assert code == 7
    return checks[name]


def named(tmp_path, name: str, status: str = "fail", *args: str, **options: str) -> dict:
    """``brick-agent health --check name``: only that check runs (no privsep daemon start
    unless it is local.privsep) and must have ``status``; the check's report."""
    return assert_named(health(tmp_path, "--check", name, *args, **options), name, status)


def assert_healthy(result: tuple[int, dict[str, dict]]) -> None:
    code, checks = result
    bad = {n: c for n, c in checks.items() if c["status"] in ("fail", "warn")}
    assert code == 0 and not bad, bad


def wait(predicate, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def iscsid_pids() -> list[str]:
    return sh("pidof", "iscsid", check=False).stdout.split()


def iscsid_answers() -> bool:
    # 21: no sessions (iscsid answered); 20 or others: cannot connect to iscsid
    return sh("iscsiadm", "-m", "session", check=False).returncode in (0, 21)


@contextlib.contextmanager
def restored(path: str) -> Iterator[None]:
    """Put ``path`` back (content and times) afterwards."""
    st = os.stat(path)
    with open(path, "rb") as fh:
        content = fh.read()
    try:
        yield
    finally:
        with open(path, "wb") as fh:
            fh.write(content)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# ---------------------------------------------------------------- healthy
@contextlib.contextmanager
def multipathd_for_the_test() -> Iterator[None]:
    """multipathd running (guest-multipathd writes multipath.conf when missing); the
    daemon and the file as they were afterwards.  Earlier lab tests leave a
    multipath.conf behind, and a host with one needs multipathd to be healthy."""
    had_conf = os.path.exists("/etc/multipath.conf")
    was_running = bool(sh("pidof", "multipathd", check=False).stdout.strip())
    guest_multipathd = os.path.join(REPO, "tools", "kernel-lab", "guest-multipathd")
    sh(guest_multipathd, "start")
    try:
        yield
    finally:
        sh(guest_multipathd, "start" if was_running else "stop")
        if not had_conf:
            os.unlink("/etc/multipath.conf")


def test_the_lab_host_is_healthy_for_iscsi_and_nvme_tcp(tmp_path):
    with multipathd_for_the_test():
        _the_lab_host_is_healthy(tmp_path)


def _the_lab_host_is_healthy(tmp_path):
    result = health(tmp_path)
    assert_healthy(result)
    _, checks = result
    for name in (
        "iscsi.iscsid",
        "iscsi.versions",
        "iscsi.initiator_name",
        "iscsi.initiator_name_stable",
        "iscsi.manual_scan",
        "nvme.modules",
        "nvme.host_identity",
        "nvme.host_identity_stable",
        "local.lock_path",
        "local.ledger",
        "local.privsep",  # a real privsep daemon, started through the default helper
        "multipath.multipathd",
    ):
        assert checks[name]["status"] == "ok", checks[name]
    # the readable report, for the notes
    human = subprocess.run(
        [
            sys.executable,
            "-m",
            "brick_agent.cli",
            "--config-file",
            conf_file(tmp_path),
            "health",
            "--human",
            *PROTOCOLS,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert human.returncode == 0 and human.stdout.splitlines()[-1].startswith("healthy")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "health-lab-human.txt"), "w") as fh:
        fh.write(human.stdout)
    print("\n" + human.stdout)


# ---------------------------------------------------------------- iSCSI broken
def test_iscsid_stopped(tmp_path):
    assert iscsid_pids()
    sh("kill", *iscsid_pids())
    try:
        wait(lambda: not iscsid_pids(), what="iscsid to stop")
        check = named(tmp_path, "iscsi.iscsid")
        assert "not running" in check["message"]
    finally:
        if not iscsid_pids():
            sh("iscsid")
        wait(iscsid_answers, what="iscsid to answer")
    named(tmp_path, "iscsi.iscsid", "ok")


def test_initiator_name_corrupted_or_removed(tmp_path):
    with restored(INITIATOR):
        with open(INITIATOR, "w") as fh:
            fh.write("GenerateName=yes\n")
        assert "no InitiatorName" in named(tmp_path, "iscsi.initiator_name")["message"]
        os.unlink(INITIATOR)
        named(tmp_path, "iscsi.initiator_name")
    named(tmp_path, "iscsi.initiator_name", "ok")


def test_initiator_name_changed_under_a_session(tmp_path):
    with LioIscsiTarget(luns=1) as t:
        iscsi_login(t.iqn, t.portals[0])
        try:
            wait(lambda: sessions_of(t.iqn), what="session")
            with restored(INITIATOR):
                with open(INITIATOR, "w") as fh:
                    fh.write("InitiatorName=iqn.2004-10.org.brick-lab:someone-else\n")
                check = named(tmp_path, "iscsi.initiator_name_stable")
                assert "someone-else" in check["message"] and "session" in check["message"]
        finally:
            iscsi_logout(t.iqn, t.portals[0])
    named(tmp_path, "iscsi.initiator_name_stable", "ok")


# ---------------------------------------------------------------- NVMe broken
def test_hostnqn_changed_under_a_controller(tmp_path):
    with NvmetSubsystem(namespaces=1) as s:
        nvme_connect(s.nqn, s.ports[0])
        try:
            wait(lambda: nvme_ctrls_of(s.nqn), what="controller")
            with restored(HOSTNQN):
                with open(HOSTNQN, "w") as fh:
                    fh.write(
                        "nqn.2014-08.org.nvmexpress:uuid:0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\n"
                    )
                check = named(tmp_path, "nvme.host_identity_stable")
                assert "0f1e2d3c" in check["message"]
        finally:
            nvme_disconnect(s.nqn)
    named(tmp_path, "nvme.host_identity_stable", "ok")


def test_nvme_modules_unloaded(tmp_path):
    gone = sh("modprobe", "-r", "nvme_tcp", "nvme_fabrics", check=False)
    try:
        if gone.returncode != 0 or os.path.isdir("/sys/module/nvme_fabrics"):
            pytest.skip(f"nvme_fabrics is in use here: {gone.stderr.strip()}")
        check = named(tmp_path, "nvme.modules")
        assert "nvme_fabrics" in check["message"] and "modprobe" in check["fix"]
    finally:
        sh("modprobe", "-a", "nvme_fabrics", "nvme_tcp")
    named(tmp_path, "nvme.modules", "ok")


# ---------------------------------------------------------------- local state broken
def test_lock_directory_world_writable(tmp_path):
    conf_file(tmp_path)
    (tmp_path / "locks").chmod(0o777)
    check = named(tmp_path, "local.lock_path")
    assert "every user" in check["message"]
    (tmp_path / "locks").chmod(0o700)
    named(tmp_path, "local.lock_path", "ok")


def test_ledger_unreadable(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "attachments.json").mkdir()  # root reads any file: a directory it cannot
    check = named(tmp_path, "local.ledger")
    assert "fails closed" in check["message"]
    (state / "attachments.json").rmdir()
    named(tmp_path, "local.ledger", "ok")


def test_multipath_configured_but_multipathd_stopped(tmp_path):
    had_conf = os.path.exists("/etc/multipath.conf")
    was_running = bool(sh("pidof", "multipathd", check=False).stdout.strip())
    guest_multipathd = os.path.join(REPO, "tools", "kernel-lab", "guest-multipathd")
    try:
        sh(guest_multipathd, "start")
        named(tmp_path, "multipath.multipathd", "ok", "--multipath")
        sh(guest_multipathd, "stop")
        check = named(tmp_path, "multipath.multipathd", use_multipath="true")
        assert "not running" in check["message"]
    finally:
        sh(guest_multipathd, "start" if was_running else "stop")
        if not had_conf:
            os.unlink("/etc/multipath.conf")


def test_privsep_helper_that_cannot_start(tmp_path):
    check = named(tmp_path, "local.privsep", privsep_helper_command="/bin/false")
    assert "/bin/false" in check["message"]


# ---------------------------------------------------------------- metrics
def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _count(samples, metric: str, **labels: str) -> float:
    return samples.get((f"{metric}_count", tuple(sorted(labels.items()))), 0.0)


def test_a_real_attach_and_detach_fill_the_phase_histograms_of_the_textfile(tmp_path):
    textfile = tmp_path / "collector" / "brick_agent.prom"
    textfile.parent.mkdir()
    conf = make_conf(
        tmp_path,
        ledger_path=str(tmp_path / "state" / "attachments.json"),
        metrics_textfile_path=str(textfile),
        **PRIVSEP_DAEMON,
    )
    with LioIscsiTarget(luns=1) as t:
        iscsi = ISCSIConnector(conf=conf)
        props = {"target_portal": t.portals[0], "target_iqn": t.iqn, "target_lun": 0}
        info = iscsi.connect_volume(props)
        iscsi.disconnect_volume(props, info)
    with NvmetSubsystem(namespaces=1) as s:
        nvme = NVMeOFConnector(conf=conf)
        ns = s.namespaces[1]
        props = {
            "target_nqn": s.nqn,
            "vol_uuid": ns.uuid,
            "portals": [[p.traddr, int(p.trsvcid), "tcp"] for p in s.ports],
        }
        info = nvme.connect_volume(props)
        nvme.disconnect_volume(props, info)
    wait(lambda: textfile.exists(), 10 * metrics.FLUSH_DELAY + 5, "the textfile")
    metrics.drain()
    text = textfile.read_text()
    samples = _samples(text)
    op = metrics.OPERATION_SECONDS
    for protocol in ("ISCSI", "NVMEOF"):
        for operation in ("attach", "detach"):
            assert _count(samples, op, protocol=protocol, operation=operation) == 1
    phase = metrics.PHASE_SECONDS
    for name in ("login", "scan", "wait", "verify", "flush", "remove", "logout"):
        assert _count(samples, phase, protocol="ISCSI", phase=name) >= 1, name
    for name in ("connect", "wait", "verify", "flush", "disconnect"):
        assert _count(samples, phase, protocol="NVMEOF", phase=name) >= 1, name
    login = samples[(f"{phase}_sum", (("phase", "login"), ("protocol", "ISCSI")))]
    assert 0 < login < 30
    # the command prints the same totals
    p = subprocess.run(
        [sys.executable, "-m", "brick_agent.cli", "--config-file", conf_file(tmp_path), "metrics"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert p.returncode == 0
    assert (
        _samples(p.stdout)[(f"{op}_count", (("operation", "attach"), ("protocol", "ISCSI")))] == 1
    )
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "metrics-lab-sample.prom"), "w") as fh:
        fh.write(text)
