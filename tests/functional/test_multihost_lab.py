"""Proves the multi-host lab (``tools/kernel-lab/lab run --hosts 2``).

Every VM of the group runs this module; the tests branch on BRICK_LAB_HOST.
Host 2 serves on the lab network (10.77.0.2) and host 1 connects to it: they
exchange their identities over TCP and each checks that none is shared, then
host 2 exports an iSCSI LUN on 10.77.0.2:3260 with an ACL for host 1's IQN,
host 1 logs in across the network and writes a block, and host 2 finds that
block in the LUN's backing file. Skipped outside a multi-host run (the normal
single-VM lab stage does not set BRICK_LAB_HOSTS).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import pytest

from brick_lab import LioIscsiTarget
from brick_lab.initiator import iscsi_login, iscsi_logout
from brick_lab.rawhost import BLOCK, disks_with, read, sessions_of, wait, write_read

HOSTS = int(os.environ.get("BRICK_LAB_HOSTS", "0"))
HOST = int(os.environ.get("BRICK_LAB_HOST", "0"))

pytestmark = [
    pytest.mark.realkernel,
    pytest.mark.multihost,
    pytest.mark.skipif(HOSTS < 2, reason="multi-host lab test: lab run --hosts 2"),
]

EXCHANGE_PORT = 7777
PEER_TIMEOUT = 240  # host 2 may start pytest well after host 1 (TCG, 1 vCPU each)
SEED = 77


def group() -> dict[int, tuple[str, str]]:
    """{host number: (address, hostname)} from /run/brick-lab/hosts."""
    hosts = {}
    with open(os.environ["BRICK_LAB_HOSTS_FILE"]) as f:
        for line in f:
            i, addr, name = line.split()
            hosts[int(i)] = (addr, name)
    return hosts


def identities() -> dict[str, Any]:
    with open("/etc/iscsi/initiatorname.iscsi") as f:
        iqn = next(line.split("=", 1)[1].strip() for line in f if line.startswith("InitiatorName="))
    return {
        "host": HOST,
        "hostname": socket.gethostname(),
        "address": group()[HOST][0],
        "iqn": iqn,
        "hostnqn": read("/etc/nvme/hostnqn"),
        "hostid": read("/etc/nvme/hostid"),
        "machine_id": read("/etc/machine-id"),
    }


def assert_distinct(mine: dict[str, Any], peer: dict[str, Any]) -> None:
    assert mine.keys() == peer.keys()
    for key in mine:
        assert mine[key], f"empty {key} on host {HOST}"
        assert peer[key], f"empty {key} on host {peer['host']}"
        assert mine[key] != peer[key], f"host {HOST} and host {peer['host']} share {key}"


def send(f: Any, msg: dict[str, Any]) -> None:
    f.write(json.dumps(msg) + "\n")
    f.flush()


def recv(f: Any) -> dict[str, Any]:
    line = f.readline()
    assert line, "the peer closed the connection"
    return json.loads(line)


def connect(addr: str, port: int, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return socket.create_connection((addr, port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_own_identity_and_address() -> None:
    hosts = group()
    assert sorted(hosts) == list(range(1, HOSTS + 1))
    addr, name = hosts[HOST]
    assert addr == f"10.77.0.{HOST}"
    assert socket.gethostname() == name == f"brick-lab-{HOST}"
    # the address is configured here: binding to it works
    with socket.socket() as s:
        s.bind((addr, 0))
    assert (
        read("/etc/nvme/hostnqn") == f"nqn.2014-08.org.nvmexpress:uuid:{read('/etc/nvme/hostid')}"
    )


@pytest.mark.skipif(HOST > 2, reason="hosts 1 and 2 only")
def test_two_hosts_distinct_identities_and_iscsi_across() -> None:
    hosts = group()
    mine = identities()
    if HOST == 2:
        _serve(hosts, mine)
    else:
        _client(hosts, mine)


def _serve(hosts: dict[int, tuple[str, str]], mine: dict[str, Any]) -> None:
    addr = hosts[2][0]
    with socket.create_server((addr, EXCHANGE_PORT)) as srv:
        srv.settimeout(PEER_TIMEOUT)
        conn, peer_addr = srv.accept()
    with conn:
        assert peer_addr[0] == hosts[1][0]
        conn.settimeout(PEER_TIMEOUT)
        f = conn.makefile("rw")
        send(f, {"ids": mine})
        peer = recv(f)["ids"]
        assert peer["host"] == 1
        assert_distinct(mine, peer)
        portal = f"{addr}:3260"
        with LioIscsiTarget(luns=1, portals=(portal,), initiators=[peer["iqn"]]) as t:
            lun = t.luns[0]
            send(f, {"iqn": t.iqn, "portal": portal, "wwid": lun.wwid})
            done = recv(f)
            assert done.get("ok"), f"host 1 failed: {done}"
            # the block host 1 wrote over the network is in this host's backing file
            # (write_read's pattern for that seed, one block at offset 0)
            expect = bytes((done["seed"] + i) % 251 for i in range(BLOCK))
            with open(lun.path, "rb") as b:
                assert b.read(BLOCK) == expect, "host 1's write is not in the backing file"
            send(f, {"bye": True})


def _client(hosts: dict[int, tuple[str, str]], mine: dict[str, Any]) -> None:
    with connect(hosts[2][0], EXCHANGE_PORT, PEER_TIMEOUT) as conn:
        assert conn.getsockname()[0] == hosts[1][0]
        conn.settimeout(PEER_TIMEOUT)
        f = conn.makefile("rw")
        peer = recv(f)["ids"]
        send(f, {"ids": mine})
        assert peer["host"] == 2
        assert_distinct(mine, peer)
        tgt = recv(f)
        try:
            iscsi_login(tgt["iqn"], tgt["portal"])
            wait(lambda: sessions_of(tgt["iqn"]), 30, "iSCSI session to host 2")
            disk = wait(lambda: disks_with(tgt["wwid"]), 30, "host 2's LUN as a disk")[0]
            link = f"/dev/disk/by-path/ip-{tgt['portal']}-iscsi-{tgt['iqn']}-lun-0"
            wait(lambda: os.path.exists(link), 30, link)
            assert os.path.realpath(link) == f"/dev/{disk}"
            write_read(link, SEED)
        except BaseException as e:
            send(f, {"ok": False, "error": repr(e)})
            raise
        finally:
            iscsi_logout(tgt["iqn"], tgt["portal"])
        assert not sessions_of(tgt["iqn"])
        send(f, {"ok": True, "seed": SEED})
        assert recv(f) == {"bye": True}
