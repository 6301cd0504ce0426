"""``brick-agent health``: each check healthy and broken, on trees captured from the lab's
kernel (sysfs, /etc) with a fake /proc beside them."""

from __future__ import annotations

import io
import json
import os
import time

import pytest

from brick_agent import cli, config, health
from brick_agent.commands import CommandResult
from brick_agent.errors import CommandFailed, InvalidArgument
from brick_agent.health import fc, iscsi, local, multipath, nvme
from brick_agent.host.roots import HostRoots
from tests.unit.sysfs_trees import extract_tree

BOOT = 1_700_000_000


def add_proc(roots: HostRoots, pid: int, comm: str, *, exe: str | None = None, ticks: int = 500):
    """A fake /proc/<pid> (comm, stat with start time ``ticks``, exe link) and /proc/stat."""
    os.makedirs(roots.procfs(str(pid)), exist_ok=True)
    with open(roots.procfs("stat"), "w") as fh:
        fh.write(f"cpu  1 2 3\nbtime {BOOT}\n")
    with open(roots.procfs(str(pid), "comm"), "w") as fh:
        fh.write(comm + "\n")
    fields = ["S"] + ["0"] * 18 + [str(ticks)] + ["0"] * 10
    with open(roots.procfs(str(pid), "stat"), "w") as fh:
        fh.write(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    if exe:
        os.symlink(exe, roots.procfs(str(pid), "exe"))


def fake_run(answers: dict[str, str | None]):
    """A command runner: argv[0] -> stdout (None: the command fails)."""
    calls = []

    def run(argv, *, timeout, **_kw):
        calls.append(list(argv))
        out = answers.get(os.path.basename(argv[0]))
        if out is None:
            raise CommandFailed(list(argv), None, "No such file or directory")
        return CommandResult(list(argv), 0, out, "", 0.01)

    run.calls = calls  # type: ignore[attr-defined]
    return run


GOOD_VERSIONS = {"iscsiadm": "iscsiadm version 2.1.8\n", "iscsid": "iscsid version 2.1.8\n"}


def ctx_for(roots: HostRoots, tmp_path, run=None, probe=None, **overrides) -> health.Context:
    conf = config.new_conf(
        overrides={
            "lock_path": str(tmp_path / "locks"),
            "ledger_path": str(tmp_path / "state" / "attachments.json"),
            **overrides,
        }
    )
    return health.Context(conf=conf, roots=roots, run=run, privsep_probe=probe)


def only(checks) -> health.Check:
    checks = list(checks)
    assert len(checks) == 1, checks
    return checks[0]


@pytest.fixture
def iscsi_host(tmp_path):
    roots = extract_tree("iscsi-single", tmp_path)
    os.makedirs(roots.proc, exist_ok=True)
    return roots


# ------------------------------------------------------------------ iSCSI
def test_iscsid_running_missing_socket_activated_and_replaced(iscsi_host, tmp_path):
    ctx = ctx_for(iscsi_host, tmp_path)
    broken = only(iscsi.check_iscsid(ctx))
    assert broken.status == "fail" and "not running" in broken.message
    assert "systemctl" in broken.fix

    os.makedirs(iscsi_host.procfs("net"))
    with open(iscsi_host.procfs("net", "unix"), "w") as fh:
        fh.write(
            "Num       RefCount Protocol Flags    Type St Inode Path\n"
            "0000: 00000002 00000000 00010000 0001 01 20 @ISCSIADM_ABSTRACT_NAMESPACE\n"
        )
    assert only(iscsi.check_iscsid(ctx)).status == "ok"  # iscsid.socket

    add_proc(iscsi_host, 321, "iscsid", exe="/usr/sbin/iscsid")
    good = only(iscsi.check_iscsid(ctx))
    assert good.status == "ok" and "321" in good.message

    add_proc(iscsi_host, 322, "iscsid", exe="/usr/sbin/iscsid (deleted)")
    replaced = only(iscsi.check_iscsid(ctx))
    assert replaced.status == "warn" and "replaced" in replaced.message


def test_versions_match_mismatch_missing_and_not_run(iscsi_host, tmp_path):
    add_proc(iscsi_host, 321, "iscsid", exe="/opt/open-iscsi/sbin/iscsid")
    run = fake_run(GOOD_VERSIONS)
    assert only(iscsi.check_versions(ctx_for(iscsi_host, tmp_path, run))).status == "ok"
    # the running daemon's own binary is asked, not whatever iscsid is on PATH
    assert ["/opt/open-iscsi/sbin/iscsid", "--version"] in run.calls

    mixed = fake_run({**GOOD_VERSIONS, "iscsid": "iscsid version 2.0.874\n"})
    bad = only(iscsi.check_versions(ctx_for(iscsi_host, tmp_path, mixed)))
    assert bad.status == "fail" and "2.1.8" in bad.message and "2.0.874" in bad.message

    none = only(iscsi.check_versions(ctx_for(iscsi_host, tmp_path, fake_run({}))))
    assert none.status == "fail" and "iscsiadm" in none.message

    assert only(iscsi.check_versions(ctx_for(iscsi_host, tmp_path, None))).status == "skip"


def _write_initiator(roots: HostRoots, text: str) -> None:
    with open(roots.etcfs("iscsi", "initiatorname.iscsi"), "w") as fh:
        fh.write(text)


def test_initiator_name_present_missing_empty_and_malformed(iscsi_host, tmp_path):
    ctx = ctx_for(iscsi_host, tmp_path)
    good = only(iscsi.check_initiator_name(ctx))
    assert good.status == "ok" and good.message.startswith("iqn.")

    _write_initiator(iscsi_host, "GenerateName=yes\n")
    assert "no InitiatorName" in only(iscsi.check_initiator_name(ctx)).message
    _write_initiator(iscsi_host, "InitiatorName=my-host\n")
    bad = only(iscsi.check_initiator_name(ctx))
    assert bad.status == "fail" and "my-host" in bad.message and "iscsi-iname" in bad.fix
    os.unlink(iscsi_host.etcfs("iscsi", "initiatorname.iscsi"))
    assert only(iscsi.check_initiator_name(ctx)).status == "fail"


def test_initiator_name_changed_under_a_logged_in_session(iscsi_host, tmp_path):
    ctx = ctx_for(iscsi_host, tmp_path)
    add_proc(iscsi_host, 321, "iscsid", ticks=100)  # started long before the file's mtime
    os.utime(iscsi_host.etcfs("iscsi", "initiatorname.iscsi"), (BOOT - 10, BOOT - 10))
    good = only(iscsi.check_initiator_stable(ctx))
    assert good.status == "ok", good  # the captured session logged in with the file's name

    _write_initiator(iscsi_host, "InitiatorName=iqn.2004-10.com.example:other\n")
    bad = only(iscsi.check_initiator_stable(ctx))
    assert bad.status == "fail" and "session1" in bad.message and "other" in bad.message


def test_initiator_name_changed_after_iscsid_started(tmp_path):
    roots = HostRoots.under(str(tmp_path / "host"))
    os.makedirs(roots.etcfs("iscsi"))
    os.makedirs(roots.sysfs("class", "iscsi_session"))
    _write_initiator(roots, "InitiatorName=iqn.2004-10.com.example:new\n")
    add_proc(roots, 321, "iscsid", ticks=100)  # BOOT + 1 s: the file is newer
    stale = only(iscsi.check_initiator_stable(ctx_for(roots, tmp_path)))
    assert stale.status == "warn" and "restart iscsid" in stale.fix
    os.utime(roots.etcfs("iscsi", "initiatorname.iscsi"), (BOOT - 10, BOOT - 10))
    assert only(iscsi.check_initiator_stable(ctx_for(roots, tmp_path))).status == "ok"


def test_manual_scan_supported_or_not(iscsi_host, tmp_path):
    new = fake_run(GOOD_VERSIONS)
    assert only(iscsi.check_manual_scan(ctx_for(iscsi_host, tmp_path, new))).status == "ok"
    old = fake_run({"iscsiadm": "iscsiadm version 2.0.873\n"})
    assert only(iscsi.check_manual_scan(ctx_for(iscsi_host, tmp_path, old))).status == "warn"


# ------------------------------------------------------------------ NVMe
@pytest.fixture
def nvme_host(tmp_path):
    return extract_tree("nvme-tcp", tmp_path)


def test_nvme_modules_loaded_missing_transport_and_missing_fabrics(nvme_host, tmp_path):
    ctx = ctx_for(nvme_host, tmp_path)
    for module in ("nvme_fabrics", "nvme_tcp"):
        os.makedirs(nvme_host.sysfs("module", module), exist_ok=True)
    good = only(nvme.check_modules(ctx))
    assert good.status == "ok" and "nvme_tcp" in good.message
    os.rmdir(nvme_host.sysfs("module", "nvme_tcp"))
    assert only(nvme.check_modules(ctx)).status == "warn"
    os.rmdir(nvme_host.sysfs("module", "nvme_fabrics"))
    misc = nvme_host.sysfs("class", "misc", "nvme-fabrics")
    if os.path.lexists(misc):
        os.unlink(misc)
    bad = only(nvme.check_modules(ctx))
    assert bad.status == "fail" and "modprobe" in bad.fix


def _write_nqn(roots: HostRoots, nqn: str | None, hostid: str | None = "keep") -> None:
    path = roots.etcfs("nvme", "hostnqn")
    if nqn is None:
        os.unlink(path)
    else:
        with open(path, "w") as fh:
            fh.write(nqn + "\n")
    if hostid != "keep":
        with open(roots.etcfs("nvme", "hostid"), "w") as fh:
            fh.write(hostid or "")


def test_nvme_identity_good_missing_invalid_placeholder_and_without_hostid(nvme_host, tmp_path):
    ctx = ctx_for(nvme_host, tmp_path)
    assert only(nvme.check_identity(ctx)).status == "ok"
    _write_nqn(nvme_host, "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000")
    shared = only(nvme.check_identity(ctx))
    assert shared.status == "fail" and "placeholder" in shared.message
    _write_nqn(nvme_host, "not an nqn")
    assert only(nvme.check_identity(ctx)).status == "fail"
    _write_nqn(nvme_host, None)
    assert only(nvme.check_identity(ctx)).status == "warn"  # created at the first attach
    _write_nqn(
        nvme_host, "nqn.2014-08.org.nvmexpress:uuid:8d1e6a2c-4f7b-4c1e-9c55-0e0f4c1e2a3b", ""
    )
    assert only(nvme.check_identity(ctx)).status == "warn"


def test_nvme_identity_changed_under_connected_controllers(nvme_host, tmp_path):
    ctx = ctx_for(nvme_host, tmp_path)
    good = only(nvme.check_identity_stable(ctx))
    assert good.status == "ok" and "2 fabric controller" in good.message
    _write_nqn(nvme_host, "nqn.2014-08.org.nvmexpress:uuid:8d1e6a2c-4f7b-4c1e-9c55-0e0f4c1e2a3b")
    bad = only(nvme.check_identity_stable(ctx))
    assert bad.status == "fail" and "nvme0" in bad.message and "nvme1" in bad.message


# ------------------------------------------------------------------ FC
def test_fc_hbas_online_partly_and_none(tmp_path):
    roots = extract_tree("fcoe", tmp_path)
    ctx = ctx_for(roots, tmp_path)
    good = only(fc.check_hbas(ctx))
    assert good.status == "ok" and "host0" in good.message and "host1" in good.message
    states = [
        os.path.join(roots.sysfs("class", "fc_host", h), "port_state")
        for h in sorted(os.listdir(roots.sysfs("class", "fc_host")))
    ]
    with open(states[0], "w") as fh:
        fh.write("Linkdown\n")
    assert only(fc.check_hbas(ctx)).status == "warn"
    with open(states[1], "w") as fh:
        fh.write("Offline\n")
    bad = only(fc.check_hbas(ctx))
    assert bad.status == "fail" and "Linkdown" in bad.message and "Offline" in bad.message
    empty = HostRoots.under(str(tmp_path / "empty"))
    assert only(fc.check_hbas(ctx_for(empty, tmp_path))).status == "fail"


# ------------------------------------------------------------------ multipath
def test_multipathd_skipped_unconfigured_then_required(iscsi_host, tmp_path):
    ctx = ctx_for(iscsi_host, tmp_path)
    assert not os.path.exists(iscsi_host.etcfs("multipath.conf"))
    assert only(multipath.check_multipathd(ctx)).status == "skip"
    configured = ctx_for(iscsi_host, tmp_path, use_multipath=True)
    bad = only(multipath.check_multipathd(configured))
    assert bad.status == "fail" and "multipathd" in bad.fix
    add_proc(iscsi_host, 400, "multipathd")
    assert only(multipath.check_multipathd(configured)).status == "ok"


def test_multipath_conf_settings_that_work_against_us(tmp_path):
    roots = extract_tree("fcoe", tmp_path)  # the lab's multipath.conf
    ctx = ctx_for(roots, tmp_path)
    assert only(multipath.check_multipathd(ctx)).status == "fail"  # conf, no multipathd
    good = only(multipath.check_config(ctx))
    assert good.status == "ok", good
    os.makedirs(roots.etcfs("multipath", "conf.d"))
    with open(roots.etcfs("multipath", "conf.d", "site.conf"), "w") as fh:
        fh.write(
            "defaults {\n  find_multipaths strict\n  user_friendly_names yes  # mpathN\n}\n"
            'blacklist {\n  devnode "^sd[a-z]"\n  device {\n    vendor "X"\n  }\n}\n'
        )
    bad = only(multipath.check_config(ctx))
    assert bad.status == "warn"
    for what in ("find_multipaths strict", "user_friendly_names yes", "^sd[a-z]"):
        assert what in bad.message
    assert "user_friendly_names no" in bad.fix


# ------------------------------------------------------------------ local
def test_lock_dir_good_missing_loose_world_writable_and_not_a_directory(tmp_path):
    roots = HostRoots.under(str(tmp_path / "host"))
    ctx = ctx_for(roots, tmp_path)
    locks = tmp_path / "locks"
    assert only(local.check_lock_dir(ctx)).status == "warn"  # created at first use
    locks.mkdir(mode=0o700)
    assert only(local.check_lock_dir(ctx)).status == "ok"
    locks.chmod(0o755)
    assert only(local.check_lock_dir(ctx)).status == "warn"
    locks.chmod(0o1777)
    bad = only(local.check_lock_dir(ctx))
    assert bad.status == "fail" and "every user" in bad.message and "chmod 0700" in bad.fix
    locks.rmdir()
    locks.write_text("")
    assert only(local.check_lock_dir(ctx)).status == "fail"


def test_ledger_good_missing_unreadable_corrupt_loose_and_open_directory(tmp_path):
    roots = HostRoots.under(str(tmp_path / "host"))
    ctx = ctx_for(roots, tmp_path)
    state = tmp_path / "state"
    assert only(local.check_ledger(ctx)).status == "ok"  # no directory yet
    state.mkdir(mode=0o700)
    ledger = state / "attachments.json"
    ledger.write_text(json.dumps({"version": 1, "volumes": {}, "pending": []}))
    ledger.chmod(0o600)
    good = only(local.check_ledger(ctx))
    assert good.status == "ok" and "0 volume" in good.message
    ledger.chmod(0o644)
    assert only(local.check_ledger(ctx)).status == "warn"
    ledger.write_text("{not json")
    assert only(local.check_ledger(ctx)).status == "warn"  # rebuilt at the next attach
    ledger.unlink()
    ledger.mkdir()  # unreadable as a file, even for root
    bad = only(local.check_ledger(ctx))
    assert bad.status == "fail" and "fails closed" in bad.message
    ledger.rmdir()
    state.chmod(0o777)
    assert only(local.check_ledger(ctx)).status == "fail"


def test_privsep_started_failing_hanging_unprivileged_and_in_process(tmp_path):
    roots = HostRoots.under(str(tmp_path / "host"))

    def root(timeout):
        return {"pid": 42, "uid": 0, "cap_eff": 1 << local.CAP_SYS_ADMIN}

    assert only(local.check_privsep(ctx_for(roots, tmp_path, probe=root))).status == "ok"

    def refused(timeout):
        raise CommandFailed(["sudo", "privsep-helper"], 1, "a password is required")

    bad = only(local.check_privsep(ctx_for(roots, tmp_path, probe=refused)))
    assert bad.status == "fail" and "password is required" in bad.message

    def user(timeout):
        return {"pid": 42, "uid": 1000, "cap_eff": 0}

    assert only(local.check_privsep(ctx_for(roots, tmp_path, probe=user))).status == "fail"
    in_process = ctx_for(roots, tmp_path, probe=root, privsep_in_process=True)
    assert only(local.check_privsep(in_process)).status == "skip"


def test_start_privsep_gives_up_after_its_timeout(monkeypatch):
    from brick_agent import privileged
    from brick_agent.privileged import diag

    monkeypatch.setattr(privileged, "init", lambda conf: None)
    monkeypatch.setattr(diag, "identity", lambda: time.sleep(5))
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        local.start_privsep(config.new_conf(), 0.2)
    assert time.monotonic() - start < 2


# ------------------------------------------------------------------ the report and the CLI
def test_protocols_found_on_the_host(tmp_path):
    assert health.detect_protocols(extract_tree("fcoe", tmp_path)) == [
        "ISCSI",
        "NVMEOF",
        "FIBRE_CHANNEL",
    ]
    assert health.detect_protocols(HostRoots.under(str(tmp_path / "bare"))) == []


def test_cli_health_on_a_host_tree_exits_7_and_names_each_failure(iscsi_host, tmp_path):
    conf_file = tmp_path / "brick_agent.conf"
    conf_file.write_text(
        f"[brick_agent]\nlock_path = {tmp_path}/locks\nledger_path = {tmp_path}/l/a.json\n"
    )
    (tmp_path / "locks").mkdir(mode=0o700)
    out = io.StringIO()
    argv = ["--config-file", str(conf_file), "--host-root", os.path.dirname(iscsi_host.sys)]
    code = cli.main([*argv, "health", "--protocol", "iscsi"], stdout=out)
    report = json.loads(out.getvalue())
    assert code == cli.EXIT_UNHEALTHY == 7
    assert report["healthy"] is False and report["protocols"] == ["ISCSI"]
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status["iscsi.iscsid"] == "fail"  # no iscsid in the tree's /proc
    assert status["iscsi.versions"] == "skip" and status["local.privsep"] == "skip"
    assert status["local.lock_path"] == "ok"

    add_proc(iscsi_host, 321, "iscsid")
    human = io.StringIO()
    code = cli.main([*argv, "health", "--human", "--protocol", "ISCSI"], stdout=human)
    assert code == cli.EXIT_OK
    lines = human.getvalue().splitlines()
    assert lines[0].startswith("OK    iscsi.iscsid: running (pid 321)")
    assert lines[-1] == "healthy (ISCSI checked)"


def test_only_the_named_checks_are_reported_and_privsep_is_started_only_for_its_own(
    iscsi_host, tmp_path
):
    started = []

    def probe(timeout):
        started.append(timeout)
        return {"pid": 42, "uid": 0, "cap_eff": 1 << local.CAP_SYS_ADMIN}

    ctx = ctx_for(iscsi_host, tmp_path, probe=probe)
    report = health.run(ctx, ["ISCSI"], only=["iscsi.iscsid", "local.lock_path"])
    assert [c.name for c in report.checks] == ["iscsi.iscsid", "local.lock_path"]
    assert started == []  # the daemon start is not paid for a check nobody asked for
    assert report.healthy is False  # iscsid is not running in the tree: still a failure
    by_prefix = health.run(ctx, ["ISCSI"], only=["local"])
    assert {c.name for c in by_prefix.checks} == {
        "local.lock_path",
        "local.ledger",
        "local.privsep",
    }
    assert len(started) == 1 and by_prefix.checks[-1].status == "ok"
    assert len(health.run(ctx, ["ISCSI"]).checks) > len(by_prefix.checks)  # no filter: all


def test_a_check_name_that_selects_nothing_is_refused_not_reported_healthy(iscsi_host, tmp_path):
    ctx = ctx_for(iscsi_host, tmp_path)
    with pytest.raises(InvalidArgument, match="no check named iscsi.iscsd"):
        health.run(ctx, ["ISCSI"], only=["iscsi.iscsd"])
    with pytest.raises(InvalidArgument, match="nvme"):  # not a protocol checked
        health.run(ctx, ["ISCSI"], only=["nvme"])
    out = io.StringIO()
    argv = ["--host-root", os.path.dirname(iscsi_host.sys), "health", "--protocol", "ISCSI"]
    assert cli.main([*argv, "--check", "iscsi.versionz"], stdout=out) == cli.EXIT_USAGE
    out = io.StringIO()
    assert cli.main([*argv, "--check", "local.lock_path"], stdout=out) in (cli.EXIT_OK, 7)
    assert [c["name"] for c in json.loads(out.getvalue())["checks"]] == ["local.lock_path"]


def test_cli_metrics_prints_the_state_beside_the_ledger(tmp_path):
    from brick_agent import metrics
    from prometheus_client.parser import text_string_to_metric_families

    conf_file = tmp_path / "brick_agent.conf"
    conf_file.write_text(
        f"[brick_agent]\nlock_path = {tmp_path}/locks\nledger_path = {tmp_path}/l/a.json\n"
    )
    with metrics.recording_reset():
        metrics.observe(metrics.PHASE_SECONDS, ("ISCSI", "login"), 0.2)
        assert metrics.flush(f"{tmp_path}/l/metrics.json", lock_path=f"{tmp_path}/locks")
    out = io.StringIO()
    assert cli.main(["--config-file", str(conf_file), "metrics"], stdout=out) == 0
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(out.getvalue())
        for s in f.samples
        if s.labels.get("phase") == "login"
    }
    assert samples["brick_agent_phase_duration_seconds_count"] == 1
