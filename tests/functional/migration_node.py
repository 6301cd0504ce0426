"""A compute host of the live-migration lab (``lab run --hosts 3``, hosts 2 and 3).

It runs what a compute host runs for a volume during a live migration, and nothing else
decides for it: Nova's own libvirt volume drivers (compat_driver.py in ``.venv-nova``, on
brick_agent through the os-brick compatibility layer), run as the ``nova`` service user that
reaches root only through sudo and nova-rootwrap, and brick_agent's gate app bound to
the lab network with a bearer token.  The test driver on host 1 (the array) sends it one
JSON command per line over TCP and gets one reply per line:

* ``setup`` (token, callers): write the gate's config (0600), start ``brick-agent gate`` on
  ``<this host's address>:8776``, multipathd and Nova's processes; reply with the host
  name, gate URL and Nova's start-up times;
* ``nova`` (caller ``single``/``multipath``, op ``connect``/``disconnect``, driver,
  volume, connection_info): Nova's volume driver call; reply with Nova's result;
* ``io`` (op ``write``/``read``, path, block, seed): one O_DIRECT block;
* ``device`` (path): the kernel name and identity (SCSI WWID, NVMe UUID) behind a path;
* ``orphan``/``unorphan`` (kind ``iscsi``, ``nvme`` or ``link``): leave an object of a
  volume behind on purpose, with the stock CLIs (iscsiadm login, nvme connect, a dangling
  by-path link), and remove it again;
* ``bye``: stop the gate and the Nova processes, end.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from typing import Any

from brick_lab.initiator import iscsi_node, nvme_disconnect, sh
from brick_lab.rawhost import BLOCK, read, wait
from brick_lab.service_user import ServiceUser
from tests.functional.callers import NOVA_PY, Caller

CONTROL_PORT = 7781
GATE_PORT = 8776
REPO = pathlib.Path(__file__).resolve().parents[2]
GUEST_MULTIPATHD = REPO / "tools" / "kernel-lab" / "guest-multipathd"


def pattern(seed: int) -> bytes:
    """The block a test writes for ``seed``."""
    return bytes((seed * 7 + i) % 251 for i in range(BLOCK))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def block_io(path: str, block: int, data: bytes | None = None) -> bytes:
    """Write ``data`` (O_DIRECT, fsync) at ``block`` of ``path``, or read that block."""
    buf = mmap.mmap(-1, BLOCK)
    fd = os.open(path, (os.O_RDWR if data is not None else os.O_RDONLY) | os.O_DIRECT)
    try:
        if data is not None:
            buf.write(data)
            assert os.pwritev(fd, [buf], block * BLOCK) == BLOCK
            os.fsync(fd)
            return data
        assert os.preadv(fd, [buf], block * BLOCK) == BLOCK
        return bytes(buf)
    finally:
        os.close(fd)


class ComputeNode:
    """The commands above, for one control connection."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="compute-"))
        #: Nova runs as its service user, reaching root through sudo and nova-rootwrap
        self.user = ServiceUser("nova", NOVA_PY.parent.parent)
        self.state = self.user.state  # its locks and ledger; the gate (root) reads them
        self.callers: dict[str, Caller] = {}
        self.gate: subprocess.Popen[bytes] | None = None
        self.gate_url = f"http://{address}:{GATE_PORT}"

    # ---------------------------------------------------------------- setup
    def op_setup(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.user.create()
        conf = self.work / "gate.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(
                "[brick_agent]\n"
                "gate_enabled = true\n"
                f"gate_host = {self.address}\n"
                f"gate_port = {GATE_PORT}\n"
                f"gate_token = {cmd['token']}\n"
                "use_multipath = true\n"
                f"lock_path = {self.state / 'brick-locks'}\n"
                f"ledger_path = {self.state / 'ledger'}\n"
            )
        subprocess.run([str(GUEST_MULTIPATHD), "start"], check=True, capture_output=True)
        log = open(self.work / "gate.log", "wb")
        self.gate = subprocess.Popen(
            [sys.executable, "-m", "brick_agent.cli", "--config-file", str(conf), "gate"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait(self._gate_up, 120, f"the gate at {self.gate_url}", interval=0.5)
        started = {}
        for kind in cmd.get("callers", ()):  # Nova's start-up, not the first attach's cost
            begin = time.monotonic()
            self.caller(kind)
            started[kind] = round(time.monotonic() - begin, 2)
        return {"hostname": socket.gethostname(), "gate": self.gate_url, "nova_startup": started}

    def _gate_up(self) -> bool:
        assert self.gate is not None and self.gate.poll() is None, self._gate_log()
        try:
            with urllib.request.urlopen(self.gate_url + "/health", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def _gate_log(self) -> str:
        return (self.work / "gate.log").read_text(errors="replace")[-3000:]

    def caller(self, kind: str) -> Caller:
        """Nova's process: ``single`` (volume_use_multipath off) or ``multipath`` (on)."""
        if kind not in self.callers:
            extra = "[libvirt]\nvolume_use_multipath = True\n" if kind == "multipath" else ""
            c = Caller(NOVA_PY, "nova", self.work, self.user, extra_conf=extra, name=f"nova-{kind}")
            self.callers[kind] = c.ready()
            assert c.uid() == self.user.uid, "Nova's process is not its service user's"
        return self.callers[kind]

    # ------------------------------------------------------------- commands
    def op_nova(self, cmd: dict[str, Any]) -> dict[str, Any]:
        start = time.monotonic()
        reply = self.caller(cmd["caller"]).call(
            cmd["op"],
            driver=cmd["driver"],
            volume=cmd["volume"],
            connection_info=cmd.get("connection_info"),
        )
        return {"result": reply["result"], "seconds": round(time.monotonic() - start, 3)}

    def op_io(self, cmd: dict[str, Any]) -> dict[str, Any]:
        data = pattern(cmd["seed"]) if cmd["op"] == "write" else None
        return {"digest": digest(block_io(cmd["path"], cmd["block"], data))}

    def op_device(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = os.path.basename(os.path.realpath(cmd["path"]))
        sysdir = f"/sys/class/block/{name}"
        slaves = sorted(os.listdir(f"{sysdir}/slaves")) if os.path.isdir(f"{sysdir}/slaves") else []
        first = slaves[0] if slaves else name
        return {
            "name": name,
            "slaves": slaves,
            "wwid": read(f"/sys/class/block/{first}/device/wwid"),
            "uuid": read(f"/sys/class/block/{first}/uuid"),
        }

    def op_orphan(self, cmd: dict[str, Any]) -> dict[str, Any]:
        kind = cmd["kind"]
        if kind == "iscsi":  # a login behind brick_agent's back: session and LUNs
            iscsi_node(cmd["iqn"], cmd["portal"], "-o", "new")
            iscsi_node(cmd["iqn"], cmd["portal"], "--login")
            disks = wait(lambda: _disks(cmd["wwid"]), 60, "the orphaned LUN's disk")
            return {"objects": disks}
        if kind == "nvme":
            host, port = cmd["portal"].rsplit(":", 1)
            sh("nvme", "connect", "-t", "tcp", "-a", host, "-s", port, "-n", cmd["nqn"])
            heads = wait(lambda: _heads(cmd["uuid"]), 60, "the orphaned namespace")
            return {"objects": heads}
        link = f"/dev/disk/by-path/{cmd['name']}"
        os.makedirs(os.path.dirname(link), exist_ok=True)  # udev drops it with its last link
        os.symlink("../../sdzz", link)
        return {"objects": [link]}

    def op_unorphan(self, cmd: dict[str, Any]) -> dict[str, Any]:
        kind = cmd["kind"]
        if kind == "iscsi":
            iscsi_node(cmd["iqn"], cmd["portal"], "--logout", check=False)
            iscsi_node(cmd["iqn"], cmd["portal"], "-o", "delete", check=False)
            wait(lambda: not _disks(cmd["wwid"]), 60, "the orphaned LUN to go")
        elif kind == "nvme":
            nvme_disconnect(cmd["nqn"])
            wait(lambda: not _heads(cmd["uuid"]), 60, "the orphaned namespace to go")
        else:
            os.unlink(f"/dev/disk/by-path/{cmd['name']}")
        subprocess.run(["udevadm", "settle", "--timeout=30"], check=False)
        return {}

    def close(self) -> None:
        for c in self.callers.values():
            c.close()
        if self.gate is not None:
            self.gate.terminate()
            try:
                self.gate.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.gate.kill()
        subprocess.run([str(GUEST_MULTIPATHD), "stop"], capture_output=True)


def _disks(wwid: str) -> list[str]:
    from brick_lab.rawhost import disks_with

    return disks_with(wwid)


def _heads(uuid: str) -> list[str]:
    from brick_lab.rawhost import nvme_heads_with

    return nvme_heads_with(uuid)


def serve(address: str, accept_timeout: float) -> None:
    """Serve one control connection from the test driver until ``bye`` or EOF."""
    node = ComputeNode(address)
    with socket.create_server((address, CONTROL_PORT)) as srv:
        srv.settimeout(accept_timeout)
        conn, _ = srv.accept()
    try:
        with conn, conn.makefile("rw") as f:
            for line in f:
                cmd = json.loads(line)
                if cmd["cmd"] == "bye":
                    f.write(json.dumps({"ok": True}) + "\n")
                    f.flush()
                    break
                f.write(json.dumps(_run(node, cmd), default=str) + "\n")
                f.flush()
    finally:
        node.close()


def _run(node: ComputeNode, cmd: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"ok": True, **getattr(node, "op_" + cmd["cmd"])(cmd)}
    except BaseException as exc:  # reported to the driver, which fails the test
        return {"ok": False, "error": repr(exc), "traceback": traceback.format_exc()}
