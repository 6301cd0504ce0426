"""What the gate reports of one volume (``volume_presence`` of the real connectors) and how
the verifier judges it: devices, maps, links, empty sessions/controllers, missing paths,
NVMe namespaces kept by a shared controller; the human summary, JUnit XML and retries."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from xml.etree import ElementTree

import pytest

pytest.importorskip("brick_agent.connectors.iscsi.connector")

from brick_agent.connectors import factory  # noqa: E402
from brick_agent.gate import verify as verify_detach  # noqa: E402
from tests.unit.gate.conftest import IQN, WWID, by_path_name, make_conf  # noqa: E402
from tests.unit.gate.fakehost import FakeHost  # noqa: E402
from tests.unit.gate.test_server import running  # noqa: E402

NQN = "nqn.2014-08.org.test:subsys1"
UUID_A = "5b2a0c9e-1111-4d6f-8e3a-0123456789ab"
UUID_B = "5b2a0c9e-2222-4d6f-8e3a-0123456789ab"
MP_PROPS = {
    "target_portals": ["192.0.2.10:3260", "192.0.2.11:3260"],
    "target_iqns": [IQN, IQN],
    "target_luns": [1, 1],
    "target_portal": "192.0.2.10:3260",
    "target_iqn": IQN,
    "target_lun": 1,
    "volume_id": "vol-mp",
}
NVME = {
    "target_nqn": NQN,
    "vol_uuid": UUID_A,
    "portals": [["192.0.2.20", 4420, "tcp"], ["192.0.2.21", 4420, "tcp"]],
}


class _Ledger:
    """The ledger content a connector reads (AttachmentLedger.read's and view's shape)."""

    def __init__(self, *uuids: str) -> None:
        self.data = {
            "volumes": {
                f"v{i}": {"identity": u, "attachments": {"a": {"access_mode": "rw"}}}
                for i, u in enumerate(uuids)
            }
        }

    def read(self):
        return self.data

    view = read


def _presence(protocol, host, props, multipath=False, ledger=None):
    conn = factory(
        protocol, conf=make_conf(use_multipath=multipath), roots=host.roots, ledger=ledger
    )
    return conn.volume_presence(props)


def _kinds(found):
    return sorted((o.kind, o.name) for o in found.objects)


def _mp_host(base) -> FakeHost:
    h = FakeHost(base)
    s1 = h.iscsi_session(1, 2, IQN, portal="192.0.2.10")
    s2 = h.iscsi_session(2, 3, IQN, portal="192.0.2.11")
    h.scsi_lun(s1, "2:0:0:1", "sda", WWID)
    h.scsi_lun(s2, "3:0:0:1", "sdb", WWID)
    h.multipath_map(0, "mpatha", "36001405aaaaaaaaaaaaaaaaaaaaaaaa1", ["sda", "sdb"])
    h.disk_link("by-path", by_path_name("192.0.2.10:3260", IQN, 1), "sda")
    h.disk_link("by-path", by_path_name("192.0.2.11:3260", IQN, 1), "sdb")
    h.disk_link("by-id", "dm-uuid-mpath-36001405aaaaaaaaaaaaaaaaaaaaaaaa1", "dm-0")
    return h


def test_iscsi_multipath_volume_everything_named(tmp_path):
    h = _mp_host(tmp_path / "h")
    found = _presence("ISCSI", h, MP_PROPS, multipath=True)
    kinds = _kinds(found)
    assert ("device", "sda") in kinds and ("device", "sdb") in kinds
    assert ("map", "mpatha") in kinds
    assert ("link", "/dev/disk/by-id/dm-uuid-mpath-36001405aaaaaaaaaaaaaaaaaaaaaaaa1") in kinds
    assert found.missing == [] and found.shared == []
    # one path gone: named as missing, with multipath only
    h.remove_lun("3:0:0:1")
    found = _presence("ISCSI", h, MP_PROPS, multipath=True)
    assert found.missing == [f"192.0.2.11:3260 {IQN} LUN 1"]
    assert ("session", "session2") in _kinds(found)  # its session has no LUN left
    assert ("link", f"/dev/disk/by-path/{by_path_name('192.0.2.11:3260', IQN, 1)}") in _kinds(
        found
    )  # dangling
    assert _presence("ISCSI", h, MP_PROPS, multipath=False).missing == []


def test_iscsi_shared_target_other_lun_is_not_this_volume(tmp_path):
    """Another volume's LUN on the same session: its session is kept and nothing of it is
    reported for this volume; a dangling link of LUN 10 is not LUN 1's."""
    h = FakeHost(tmp_path / "h")
    s = h.iscsi_session(1, 2, IQN)
    h.scsi_lun(s, "2:0:0:2", "sdc", "naa.6001405bbbbbbbbbbbbbbbbbbbbbbbb2")
    h.disk_link("by-path", by_path_name("192.0.2.10:3260", IQN, 2), "sdc")
    h.disk_link("by-path", by_path_name("192.0.2.10:3260", IQN, 10), "sdz")  # dangling
    props = {"target_portal": "192.0.2.10:3260", "target_iqn": IQN, "target_lun": 1}
    found = _presence("ISCSI", h, props)
    assert found.objects == [] and found.missing == [f"192.0.2.10:3260 {IQN} LUN 1"]
    # a dangling link of LUN 1 (and of a partition of it) is this volume's
    h.disk_link("by-path", by_path_name("192.0.2.10:3260", IQN, 1), "sdd")
    h.disk_link("by-path", by_path_name("192.0.2.10:3260", IQN, 1) + "-part1", "sdd1")
    assert [o.kind for o in _presence("ISCSI", h, props).objects] == ["link", "link"]


def test_nvme_namespace_shared_controller_and_empty_controller(tmp_path):
    h = FakeHost(tmp_path / "h")
    h.nvme_controller(0, 0, NQN, traddr="192.0.2.20")
    h.nvme_namespace(0, [0], 1, UUID_A)
    h.nvme_namespace(0, [0], 2, UUID_B)
    found = _presence("NVMEOF", h, NVME, ledger=_Ledger(UUID_B))
    # A is visible only because nvme0 serves B, which is attached: shared, not left behind
    assert [(o.kind, o.name) for o in found.shared] == [
        ("device", "nvme0n1"),
        ("link", f"/dev/disk/by-id/nvme-uuid.{UUID_A}"),
    ]
    assert found.objects == []
    assert found.missing == [f"tcp 192.0.2.21:4420 {NQN}"]
    # nobody uses B (or there is no ledger to tell): A is left behind
    for ledger in (_Ledger(), None):
        found = _presence("NVMEOF", h, NVME, ledger=ledger)
        assert found.shared == [] and ("device", "nvme0n1") in _kinds(found)
    # a controller of the subsystem with no namespace at all is left behind
    h2 = FakeHost(tmp_path / "h2")
    h2.nvme_controller(0, 0, NQN, traddr="192.0.2.20")
    found = _presence("NVMEOF", h2, NVME)
    assert _kinds(found) == [("controller", "nvme0")]
    assert f"namespace uuid={UUID_A} of {NQN}" in found.missing
    # only A on its controller: the namespace itself is left behind
    h3 = FakeHost(tmp_path / "h3")
    h3.nvme_controller(0, 0, NQN, traddr="192.0.2.20")
    h3.nvme_namespace(0, [0], 1, UUID_A)
    assert ("device", "nvme0n1") in _kinds(_presence("NVMEOF", h3, NVME))


# ------------------------------------------------------------------ the verifier


def test_verifier_names_host_volume_and_objects(tmp_path):
    dest = _mp_host(tmp_path / "dest")
    src = _mp_host(tmp_path / "src")
    src.remove_lun("3:0:0:1")  # one path's LUN left behind on the source: sda
    props = tmp_path / "props.json"
    props.write_text(json.dumps(MP_PROPS))
    junit = tmp_path / "verify.xml"
    conf = make_conf(use_multipath=True)
    with running(conf, dest.roots) as dest_url, running(conf, src.roots) as src_url:
        args = ["--protocol", "ISCSI", "--properties", str(props)]
        args += ["--present", dest_url, "--absent", src_url, "--junit", str(junit)]
        out = io.StringIO()
        assert verify_detach.main(args + ["--human"], stdout=out) == 1
        text = out.getvalue()
        assert text.startswith("verify-detach ISCSI volume vol-mp: FAIL\n")
        ok_line = text.splitlines()[1]
        assert ok_line.startswith(f"  ok    {socket.gethostname()} ({dest_url}) has the volume")
        fail_line = next(line for line in text.splitlines() if "FAIL " in line)
        assert src_url in fail_line and "must have nothing of it" in fail_line
        assert "left behind: device sda (LUN 1 of session1" in text
        assert "left behind: map mpatha" in text
        suite = ElementTree.parse(junit).getroot()
        assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
        failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
        assert len(failed) == 1 and "absent" in failed[0].get("name")
        assert "device sda" in failed[0].find("failure").get("message")


class _Flaky(http.server.BaseHTTPRequestHandler):
    """503 (with Retry-After 0) for the first ``fail`` requests, then a clean answer."""

    fail = 2
    seen = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).seen <= type(self).fail:
            self._send(503, {"error": "Busy", "message": "later"}, {"Retry-After": "0"})
        else:
            self._send(200, {"paths": [], "host": "flaky", "objects": [], "missing": []})

    def _send(self, code, body, headers=None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def _flaky_gate(fail: int) -> Iterator[str]:
    handler = type("Handler", (_Flaky,), {"fail": fail, "seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_verifier_retries_are_bounded(tmp_path):
    props = tmp_path / "p.json"
    props.write_text(json.dumps({"target_iqn": IQN, "target_lun": 1}))
    sleeps: list[float] = []
    asker = verify_detach.Asker(retries=2, sleep=sleeps.append)
    with _flaky_gate(fail=2) as url:
        status, verdict = verify_detach.verify([], [url], "ISCSI", {}, asker)
    assert status == 0 and verdict["hosts"][0]["host"] == "flaky"
    assert sleeps == [1.0, 2.0]  # Retry-After 0: the backoff
    sleeps.clear()
    with _flaky_gate(fail=5) as url:
        status, verdict = verify_detach.verify([], [url], "ISCSI", {}, asker)
    assert status == 3 and len(sleeps) == 2
    assert verdict["hosts"][0]["error"] == "HTTP 503 Busy: later (after 3 attempts)"
