"""Fixtures of the gate tests: an enabled config, a fake host and a small test connector."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pytest

from brick_agent import config, errors
from brick_agent.connectors.base import Connector
from brick_agent.host.block import resolve_dev_path
from brick_agent.host.roots import HostRoots
from brick_agent.properties import parse_iscsi
from tests.unit.gate.fakehost import FakeHost

IQN = "iqn.2003-01.org.linux-iscsi.target:vol1"
WWID = "naa.6001405aaaaaaaaaaaaaaaaaaaaaaaa1"
PASSWORD = "Sup3r-S3cret-CHAP-pw"
PROPS = {
    "target_portal": "192.0.2.10:3260",
    "target_iqn": IQN,
    "target_lun": 1,
    "auth_method": "CHAP",
    "auth_username": "user1",
    "auth_password": PASSWORD,
    "volume_id": "vol-1",
}


def by_path_name(portal: str, iqn: str, lun: int) -> str:
    return f"ip-{portal}-iscsi-{iqn}-lun-{lun}"


class LinkConnector(Connector):
    """An iSCSI-like test connector: validates with the real parser, reads /dev/disk/by-path.

    Read-only methods only; attaching is not something the gate may call.
    """

    protocol = "ISCSI"

    def connect_volume(self, connection_properties):  # pragma: no cover - never called
        raise AssertionError("the gate must never attach")

    def disconnect_volume(
        self, connection_properties, device_info, force=False, ignore_errors=False
    ):  # pragma: no cover - never called
        raise AssertionError("the gate must never detach")

    def extend_volume(self, connection_properties):  # pragma: no cover - never called
        raise AssertionError("the gate must never extend")

    def get_search_path(self) -> str:
        return "/dev/disk/by-path"

    def get_volume_paths(self, connection_properties: Mapping[str, Any]) -> list[str]:
        props = parse_iscsi(connection_properties)
        out = []
        for t in props.targets:
            name = by_path_name(t.portal.address, t.iqn, t.lun)
            if resolve_dev_path(self.roots, self.roots.devfs("disk", "by-path", name)):
                out.append(f"/dev/disk/by-path/{name}")
        return out

    def get_all_available_volumes(self, connection_properties=None) -> list[dict[str, Any]]:
        base = self.roots.devfs("disk", "by-path")
        names = sorted(os.listdir(base)) if os.path.isdir(base) else []
        return [{"path": f"/dev/disk/by-path/{n}"} for n in names if "-iscsi-" in n]


class FailingConnector(LinkConnector):
    """Raises whatever ``ERROR`` holds (set by a test) from every read."""

    ERROR: BaseException = RuntimeError("boom")

    def get_volume_paths(self, connection_properties):
        raise self.ERROR

    def get_all_available_volumes(self, connection_properties=None):
        raise self.ERROR


def link_factory(protocol: str, *, conf=None, roots: HostRoots, cls=LinkConnector) -> Connector:
    """connector_factory for create_app: ISCSI only, like the real factory's errors otherwise."""
    if protocol.upper() not in ("ISCSI", "ISER"):
        if protocol.upper() in ("NVMEOF", "NVME", "FIBRE_CHANNEL", "FC"):
            raise errors.NotSupported(f"{protocol} not available in this test")
        raise errors.InvalidConnectorProtocol(f"no connector for protocol {protocol!r}")
    return cls(conf=conf, roots=roots)


def make_conf(**overrides: Any):
    conf = config.new_conf()
    conf.set_override("gate_enabled", True, group="brick_agent")
    for key, value in overrides.items():
        conf.set_override(key, value, group="brick_agent")
    return conf


def host_with_volume(base) -> FakeHost:
    """A fake host with the iSCSI volume of PROPS attached (session, LUN, by-path link)."""
    h = FakeHost(base)
    s = h.iscsi_session(1, 2, IQN, portal="192.0.2.10")
    h.scsi_lun(s, "2:0:0:1", "sda", WWID)
    h.disk_link("by-path", by_path_name("192.0.2.10:3260", IQN, 1), "sda")
    return h


@pytest.fixture
def conf():
    return make_conf()


@pytest.fixture
def fakehost(tmp_path) -> FakeHost:
    return host_with_volume(tmp_path / "host")


@pytest.fixture
def app(conf, fakehost):
    from brick_agent.gate.app import create_app

    return create_app(conf, roots=fakehost.roots, connector_factory=link_factory)


@pytest.fixture
def client(app):
    return app.test_client()
