"""The live-migration gate across hosts (issue 15): ``lab run --hosts 3``.

Host 1 is the array (LIO iSCSI on two portals 10.77.0.1 and 10.77.0.11, nvmet NVMe/TCP)
and the gate job; hosts 2 (source) and 3 (destination) are compute hosts, each with its
own initiator IQN, host NQN/ID, udev, iscsid, multipathd, Nova (its libvirt volume
drivers on brick_agent through the os-brick layer, as the ``nova`` service user behind
sudo and nova-rootwrap) and brick_agent's gate app on
``10.77.0.I:8776`` with a bearer token (tests/functional/migration_node.py).  The driver
learns each host's connector from its gate (``GET /v1/connector``, as Nova's
``get_volume_connector`` feeds Cinder), exports the volumes to those initiators, runs
Nova's sequence (pre_live_migration connects on the destination, the source disconnects
after the switch; a rollback disconnects the destination) and checks every step with
``brick-agent verify-detach`` over HTTP against both gates (its exit status and verdict),
for iSCSI single path, iSCSI multipath over two portals and NVMe/TCP:

* migration: both hosts attached at once, data written on each side reads back on the
  destination, the source keeps nothing of the volume while another volume on the same
  target stays attached there and keeps working (NVMe: its namespace stays visible
  through the controller the other volume uses; the gate reports it as ``shared``);
* orphans left on the source on purpose (a login or connect behind brick_agent's back,
  a dangling by-path link) fail the verifier, which names host, volume and object;
* rollback: the destination is clean and the source intact;
* LUN reuse across hosts: the array maps a new volume at the old LUN id for the source
  (per-initiator LUN map) while the destination keeps the old one: the source gets the
  new volume's device, the destination still the old volume's data.

Step timings go to stderr (the lab console).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from brick_lab import LioIscsiTarget, NvmetSubsystem
from brick_lab.rawhost import BLOCK
from tests.functional.callers import NOVA_PY
from tests.functional.migration_node import CONTROL_PORT, digest, pattern, serve

HOSTS = int(os.environ.get("BRICK_LAB_HOSTS", "0"))
HOST = int(os.environ.get("BRICK_LAB_HOST", "0"))
ARRAY, SRC, DST = 1, 2, 3
PORTAL_A = "10.77.0.1:3260"
PORTAL_B = "10.77.0.11:3260"
NVME_PORT = "10.77.0.1:4420"
PEER_TIMEOUT = 300.0  # the peers may start pytest well after each other (TCG)
REPLY_TIMEOUT = 300.0
TIMINGS: list[tuple[str, float]] = []

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.multihost,
    pytest.mark.skipif(HOSTS < 3, reason="live-migration lab: lab run --hosts 3"),
    pytest.mark.skipif(
        not NOVA_PY.exists(),
        reason=f"{NOVA_PY} missing: build it with tools/compat/run-nova-tests.sh",
    ),
]

driver_only = pytest.mark.skipif(HOST != ARRAY, reason="the gate job runs on host 1")


def say(text: str) -> None:
    sys.__stderr__.write(f"migration: {text}\n")
    sys.__stderr__.flush()


@dataclass
class Step:
    """Time one step of a flow (reported on stderr and in the summary)."""

    label: str
    start: float = field(default_factory=time.monotonic)

    def __enter__(self) -> Step:
        return self

    def __exit__(self, *exc: object) -> None:
        took = time.monotonic() - self.start
        TIMINGS.append((self.label, took))
        say(f"{self.label}: {took:.2f}s")


# ------------------------------------------------------------------ compute hosts


@pytest.mark.skipif(HOST not in (SRC, DST), reason="compute hosts only")
def test_compute_host_serves() -> None:
    """Hosts 2 and 3: serve the driver's commands until it says bye."""
    serve(f"10.77.0.{HOST}", PEER_TIMEOUT)


class Node:
    """The driver's handle of one compute host: its control connection and gate."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.address = f"10.77.0.{number}"
        deadline = time.monotonic() + PEER_TIMEOUT
        while True:
            try:
                self.sock = socket.create_connection((self.address, CONTROL_PORT), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        self.sock.settimeout(REPLY_TIMEOUT)
        self.f = self.sock.makefile("rw")
        self.hostname = ""
        self.gate = ""
        self.connector: dict[str, Any] = {}
        self.attached: dict[str, Volume] = {}

    def send(self, cmd: str, **kw: Any) -> None:
        self.f.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.f.flush()

    def receive(self, cmd: str) -> dict[str, Any]:
        line = self.f.readline()
        assert line, f"host {self.number} closed the control connection"
        reply = json.loads(line)
        assert reply["ok"], (
            f"host {self.number} {cmd} failed: {reply['error']}\n{reply['traceback']}"
        )
        return reply

    def call(self, cmd: str, **kw: Any) -> dict[str, Any]:
        self.send(cmd, **kw)
        return self.receive(cmd)

    def set_up(self, token: str) -> None:
        """Read the reply of ``setup`` (sent to every host first: they start in parallel)."""
        r = self.receive("setup")
        self.hostname, self.gate = r["hostname"], r["gate"]
        for kind, took in r["nova_startup"].items():
            TIMINGS.append((f"Nova ({kind}) start-up on {self.hostname}", took))
        req = urllib.request.Request(
            self.gate + "/v1/connector", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            self.connector = json.load(resp)

    def nova(self, op: str, vol: Volume, info: dict | None = None) -> dict[str, Any]:
        with Step(f"{vol.flow.name} {op} {vol.name} on {self.hostname}"):
            r = self.call(
                "nova",
                caller=vol.flow.caller,
                op=op,
                driver=vol.flow.driver,
                volume=vol.name,
                connection_info=info,
            )
        return r["result"]

    def attach(self, vol: Volume) -> str:
        """Nova's connect_volume; the device path Nova keeps in its BDM."""
        info = self.nova("connect", vol, vol.connection_info())
        self.attached[vol.name] = vol
        return info["data"]["device_path"]

    def detach(self, vol: Volume) -> None:
        """Nova's disconnect_volume."""
        self.nova("disconnect", vol)
        self.attached.pop(vol.name, None)

    def detach_all(self) -> None:
        """After a failed test: what it left attached, before its target goes away."""
        for vol in list(self.attached.values()):
            try:
                self.detach(vol)
            except AssertionError as exc:
                say(f"cleanup on host {self.number}: {exc}")
                self.attached.pop(vol.name, None)

    def write(self, path: str, block: int, seed: int) -> None:
        self.call("io", op="write", path=path, block=block, seed=seed)

    def read(self, path: str, block: int) -> str:
        return self.call("io", op="read", path=path, block=block)["digest"]

    def close(self) -> None:
        try:
            self.call("bye")
        finally:
            self.sock.close()


@pytest.fixture(scope="module")
def token(tmp_path_factory) -> tuple[str, str]:
    """The gates' bearer token and the 0600 file the verifier reads it from."""
    value = secrets.token_urlsafe(24)
    path = tmp_path_factory.mktemp("gate") / "token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, str(path)


@pytest.fixture(scope="module")
def nodes(token, request) -> Iterator[dict[int, Node]]:
    subprocess.run(["ip", "addr", "add", "10.77.0.11/24", "dev", _lab_nic()], check=False)
    started = time.monotonic()
    found = {n: Node(n) for n in (SRC, DST)}
    try:
        with Step("compute hosts: gates, multipathd and Nova started, connectors read"):
            for n in found.values():
                n.send("setup", token=token[0], callers=["single", "multipath"])
            for n in found.values():
                n.set_up(token[0])
        say(f"both compute hosts ready {time.monotonic() - started:.1f}s after the driver")
        assert found[SRC].connector["initiator"] != found[DST].connector["initiator"]
        assert found[SRC].connector["nqn"] != found[DST].connector["nqn"]
        yield found
    finally:
        for n in found.values():
            n.close()
        report = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if report is not None and capture is not None:  # on the console even when all pass
            with capture.global_and_fixture_disabled():
                report.write_line("")
                for label, took in TIMINGS:
                    report.write_line(f"migration step {took:7.2f}s  {label}")


def _lab_nic() -> str:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if " 10.77.0.1/" in line:
            return line.split()[1]
    raise AssertionError(f"no lab NIC with 10.77.0.1:\n{out.stdout}")


# ------------------------------------------------------------------ the array


@dataclass
class Flow:
    name: str
    protocol: str  # the verifier's --protocol
    driver: str  # Nova's volume driver
    caller: str  # Nova with volume_use_multipath off (single) or on (multipath)
    target: Any = None

    def volume(self, index: int, name: str | None = None) -> Volume:
        return Volume(self, index, name or f"{self.name}-{index}-{uuid.uuid4().hex[:6]}")


@dataclass
class Volume:
    flow: Flow
    index: int  # LUN id / namespace id
    name: str
    uuid: str | None = None  # NVMe: the namespace's

    def data(self) -> dict[str, Any]:
        t = self.flow.target
        keys = {"volume_id": self.name, "access_mode": "rw", "encrypted": False}
        if self.flow.driver == "nvme":
            port = t.ports[0]
            return {
                "target_nqn": t.nqn,
                "vol_uuid": self.uuid or t.namespaces[self.index].uuid,
                "portals": [[port.traddr, str(port.trsvcid), "tcp"]],
                "ns_id": str(self.index),
                **keys,
            }
        data = {
            "target_discovered": False,
            "target_portal": t.portals[0],
            "target_iqn": t.iqn,
            "target_lun": self.index,
            **keys,
        }
        if len(t.portals) > 1:
            data.update(
                target_portals=list(t.portals),
                target_iqns=[t.iqn] * len(t.portals),
                target_luns=[self.index] * len(t.portals),
            )
        return data

    def connection_info(self) -> dict[str, Any]:
        drv = "nvmeof" if self.flow.driver == "nvme" else "iscsi"
        return {"driver_volume_type": drv, "data": self.data(), "serial": self.name}


FLOWS = ["iscsi-single", "iscsi-multipath", "nvme-tcp"]


@pytest.fixture(params=FLOWS)
def flow(request, nodes) -> Iterator[Flow]:
    iqns = [nodes[n].connector["initiator"] for n in (SRC, DST)]
    name = request.param
    if name == "nvme-tcp":
        with NvmetSubsystem(namespaces=2, ports=(NVME_PORT,)) as s:
            yield Flow(name, "NVMEOF", "nvme", "single", s)
        return
    portals = (PORTAL_A, PORTAL_B) if name == "iscsi-multipath" else (PORTAL_A,)
    caller = "multipath" if name == "iscsi-multipath" else "single"
    with LioIscsiTarget(luns=2, portals=portals, initiators=iqns) as t:
        yield Flow(name, "ISCSI", "iscsi", caller, t)


@pytest.fixture
def hosts(nodes, flow) -> Iterator[dict[int, Node]]:
    """The compute hosts for one flow; whatever a failed test left attached is detached
    before the flow's target is torn down (so no controller or session outlives it)."""
    yield nodes
    for n in nodes.values():
        n.detach_all()


# ------------------------------------------------------------------ the verifier


def verify(
    token: tuple[str, str],
    vol: Volume,
    present: list[Node] = (),  # type: ignore[assignment]
    absent: list[Node] = (),  # type: ignore[assignment]
    *,
    audit: bool = False,
    human: bool = False,
) -> tuple[int, Any]:
    """``python -m brick_agent.gate.verify`` as a gate job runs it; (exit status, verdict
    (JSON) or summary (--human))."""
    props = f"/tmp/verify-{vol.name}.json"
    with open(props, "w") as f:
        json.dump(vol.connection_info(), f)
    argv = [sys.executable, "-m", "brick_agent.gate.verify", "--protocol", vol.flow.protocol]
    argv += ["--properties", props, "--token-file", token[1], "--timeout", "60"]
    for n in present:
        argv += ["--present", n.gate]
    for n in absent:
        argv += ["--absent", n.gate]
    argv += ["--audit"] if audit else []
    argv += ["--human"] if human else []
    where = ",".join(f"+{n.number}" for n in present) + ",".join(f"-{n.number}" for n in absent)
    with Step(f"{vol.flow.name} verify {vol.name} {where}{' audit' if audit else ''}"):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), f"verifier exit {proc.returncode}: {proc.stderr}{proc.stdout}"
    return proc.returncode, (proc.stdout if human else json.loads(proc.stdout))


def assert_pass(result: tuple[int, Any]) -> dict[str, Any]:
    code, verdict = result
    assert code == 0, json.dumps(verdict, indent=1)
    return verdict


# ------------------------------------------------------------------ the flows


@driver_only
def test_live_migration(hosts, flow, token) -> None:
    src, dst = hosts[SRC], hosts[DST]
    a, b = (
        flow.volume(0 if flow.driver == "iscsi" else 1),
        flow.volume(1 if flow.driver == "iscsi" else 2),
    )
    path_a = src.attach(a)
    path_b = src.attach(b)  # another volume on the same target stays on the source
    src.write(path_a, 0, seed=1)
    src.write(path_b, 0, seed=5)
    assert_pass(verify(token, a, present=[src], absent=[dst]))
    # pre_live_migration: the destination attaches the same volume; both hosts have it
    dst_a = dst.attach(a)
    verdict = assert_pass(verify(token, a, present=[src, dst]))
    if flow.name == "iscsi-multipath":
        for h in verdict["hosts"]:
            kinds = [o["kind"] for o in h["objects"]]
            assert kinds.count("device") == 2 and "map" in kinds, h
    assert dst.read(dst_a, 0) == digest(pattern(1))
    dst.write(dst_a, 1, seed=2)
    # post_live_migration: the source disconnects
    src.detach(a)
    verdict = assert_pass(verify(token, a, present=[dst], absent=[src], audit=True))
    src_view = verdict["hosts"][1]
    assert src_view["objects"] == [], src_view
    if flow.driver == "nvme":  # visible through the controller volume b keeps
        assert src_view["shared"][0]["kind"] == "device", src_view
    # the other volume on the shared target still works on the source
    assert src.read(path_b, 0) == digest(pattern(5))
    src.write(path_b, 1, seed=6)
    assert src.read(path_b, 1) == digest(pattern(6))
    # both sides' data on the destination
    assert dst.read(dst_a, 0) == digest(pattern(1))
    assert dst.read(dst_a, 1) == digest(pattern(2))
    src.detach(b)
    assert_pass(verify(token, b, absent=[src, dst], audit=True))
    assert_pass(verify(token, a, present=[dst], absent=[src], audit=True))
    check_orphans_are_named(token, flow, a, src, dst)
    dst.detach(a)
    assert_pass(verify(token, a, absent=[src, dst], audit=True))


def check_orphans_are_named(token, flow: Flow, a: Volume, src: Node, dst: Node) -> None:
    """Leave an object of ``a`` on the source behind brick_agent's back: the verifier fails
    naming the host, the volume and the object; once removed, it passes again."""
    t = flow.target
    if flow.driver == "nvme":
        spec = {"kind": "nvme", "nqn": t.nqn, "portal": NVME_PORT, "uuid": t.namespaces[1].uuid}
    else:
        spec = {"kind": "iscsi", "iqn": t.iqn, "portal": PORTAL_A, "wwid": t.luns[0].wwid}
    orphans = src.call("orphan", **spec)["objects"]
    try:
        code, text = verify(token, a, present=[dst], absent=[src], human=True)
        assert code == 1, text
        assert f"volume {a.name}: FAIL" in text, text
        fail = [ln for ln in text.splitlines() if ln.lstrip().startswith("FAIL")]
        assert len(fail) == 1 and src.hostname in fail[0] and src.gate in fail[0], text
        for name in orphans:
            assert f"device {name} " in text, text
        code, verdict = verify(token, a, present=[dst], absent=[src])
        assert code == 1 and verdict["verdict"] == "fail"
        assert [h["ok"] for h in verdict["hosts"]] == [True, False]
    finally:
        src.call("unorphan", **spec)
    assert_pass(verify(token, a, present=[dst], absent=[src], audit=True))
    if flow.name != "iscsi-single":
        return
    name = f"ip-{PORTAL_A}-iscsi-{t.iqn}-lun-0"
    src.call("orphan", kind="link", name=name)
    try:
        code, text = verify(token, a, present=[dst], absent=[src], human=True)
        assert code == 1 and f"link /dev/disk/by-path/{name}" in text, text
    finally:
        src.call("unorphan", kind="link", name=name)
    assert_pass(verify(token, a, present=[dst], absent=[src]))


@driver_only
def test_rollback(hosts, flow, token) -> None:
    """rollback_live_migration_at_destination: the destination disconnects instead."""
    src, dst = hosts[SRC], hosts[DST]
    a = flow.volume(0 if flow.driver == "iscsi" else 1)
    path = src.attach(a)
    src.write(path, 0, seed=3)
    dst_path = dst.attach(a)
    assert dst.read(dst_path, 0) == digest(pattern(3))
    dst.detach(a)
    assert_pass(verify(token, a, present=[src], absent=[dst], audit=True))
    assert src.read(path, 0) == digest(pattern(3))
    src.write(path, 1, seed=4)
    assert src.read(path, 1) == digest(pattern(4))
    src.detach(a)
    assert_pass(verify(token, a, absent=[src, dst], audit=True))


@driver_only
def test_lun_reuse_across_hosts(hosts, flow, token) -> None:
    """After the migration the array gives the old LUN id (namespace id) to a new volume for
    the source: the source's attach returns the new volume's device, never the old one."""
    src, dst = hosts[SRC], hosts[DST]
    t = flow.target
    old = flow.volume(0 if flow.driver == "iscsi" else 1)
    path = src.attach(old)
    src.write(path, 0, seed=7)
    dst_path = dst.attach(old)
    src.detach(old)
    assert_pass(verify(token, old, present=[dst], absent=[src], audit=True))
    new = flow.volume(old.index, name=f"{flow.name}-reuse-{uuid.uuid4().hex[:6]}")
    if flow.driver == "nvme":
        # nvmet has no per-host namespace map: the destination lets go first, then the
        # namespace id is reused
        dst.detach(old)
        t.remove_namespace(old.index)
        new.uuid = t.add_namespace(nsid=old.index).uuid
        backing = t.namespaces[old.index].backing.path
    else:
        backing = remap_for_initiator(t, src.connector["initiator"], old.index)
    with open(backing, "r+b") as f:
        f.write(pattern(9))
    new_path = src.attach(new)
    dev = src.call("device", path=new_path)
    if flow.driver == "nvme":
        assert dev["uuid"] == new.uuid, dev
    else:
        assert dev["wwid"] == t.luns[REUSE_LUN].wwid != t.luns[old.index].wwid, dev
    assert src.read(new_path, 0) == digest(pattern(9)) != digest(pattern(7))
    assert_pass(verify(token, new, present=[src]))
    if flow.driver != "nvme":  # the destination still has the old volume and its data
        assert dst.read(dst_path, 0) == digest(pattern(7))
        assert_pass(verify(token, old, present=[dst]))
        dst.detach(old)
    src.detach(new)
    assert_pass(verify(token, new, absent=[src, dst], audit=True))


REUSE_LUN = 5


def remap_for_initiator(t: LioIscsiTarget, iqn: str, lun_id: int) -> str:
    """The array's per-host LUN map: a new backstore exported as TPG LUN 5, and ``iqn``'s
    mapped LUN ``lun_id`` pointed at it (others keep the old volume); its backing file."""
    lun = t.add_lun(lun_id=REUSE_LUN)
    for tpg, acl in t.acls:
        if acl != iqn:
            continue
        mapped = os.path.join(tpg, "acls", acl, f"lun_{lun_id}")
        for entry in os.listdir(mapped):
            if os.path.islink(os.path.join(mapped, entry)):
                os.unlink(os.path.join(mapped, entry))
        os.rmdir(mapped)
        os.mkdir(mapped)
        os.symlink(os.path.join(tpg, "lun", f"lun_{REUSE_LUN}"), os.path.join(mapped, "lun"))
    return lun.path


assert BLOCK == 4096
