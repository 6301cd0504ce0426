"""The core connector object has os-brick's ``uuid`` / ``system uuid`` keys, and the iSCSI
connector its ``get_initiator()``; the compat layer uses the same implementation."""

from __future__ import annotations

import os

import pytest

from brick_agent import config
from brick_agent.connector_properties import get_connector_properties
from brick_agent.connectors.iscsi.connector import ISCSIConnector
from brick_agent.host.roots import HostRoots

IQN = "iqn.1993-08.org.debian:01:abc"
SUUID = "4c4c4544-0035-4b10-8044-b3c04f4b4d32"
FSUUID = "0f6b5c1e-aaaa-bbbb-cccc-8d7e6f5a4b3c"


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


@pytest.fixture
def host(tmp_path):
    roots = HostRoots.under(str(tmp_path / "host"))
    _write(roots.etcfs("iscsi", "initiatorname.iscsi"), f"InitiatorName={IQN}\n")
    _write(roots.sysfs("class", "dmi", "id", "product_uuid"), SUUID + "\n")
    _write(roots.devfs("vda1"), "")
    os.makedirs(roots.devfs("disk", "by-uuid"))
    os.symlink("../../vda1", roots.devfs("disk", "by-uuid", FSUUID))
    _write(roots.procfs("self", "mountinfo"), "22 1 252:1 / / rw - ext4 /dev/vda1 rw\n")
    return roots


def test_core_connector_object_has_uuid_system_uuid_and_initiator(host):
    props = get_connector_properties(
        None, "192.0.2.5", False, False, host="h", roots=host, create_nvme_identity=False
    )
    assert props["uuid"] == FSUUID and props["system uuid"] == SUUID
    assert props["initiator"] == IQN


def test_compat_connector_object_is_the_core_one(host):
    pytest.importorskip("os_brick")
    from brick_agent.os_brick_compat import properties

    core = get_connector_properties("sudo", "192.0.2.5", True, True, host="h", roots=host)
    compat = properties.brick_agent_properties("sudo", "192.0.2.5", True, True, "h", roots=host)
    assert compat == core


def test_root_on_overlay_has_no_uuid(host):
    _write(host.procfs("self", "mountinfo"), "1 0 0:50 / / rw - overlay overlay rw\n")
    props = get_connector_properties(roots=host, create_nvme_identity=False)
    assert "uuid" not in props and props["system uuid"] == SUUID


def test_iscsi_connector_get_initiator(host, tmp_path):
    conf = config.new_conf(overrides={"lock_path": str(tmp_path / "locks")})
    assert ISCSIConnector(None, conf=conf, roots=host, ledger=False).get_initiator() == IQN
    bare = HostRoots.under(str(tmp_path / "bare"))
    assert ISCSIConnector(None, conf=conf, roots=bare, ledger=False).get_initiator() is None


def test_connector_object_of_a_fake_tree_never_writes_the_live_hosts_identity(host, monkeypatch):
    from brick_agent.privileged import nvme as priv_nvme

    calls = []
    monkeypatch.setattr(priv_nvme, "write_host_identity", lambda *a: calls.append(a))
    props = get_connector_properties(None, "192.0.2.5", False, False, host="h", roots=host)
    assert calls == [] and "nqn" not in props  # nothing on the tree, nothing made
