"""Host NQN / host ID: stable, created once, derived from DMI when usable."""

from __future__ import annotations

import os
import uuid

import pytest

from brick_agent.connectors.nvmeof import identity as ident
from brick_agent.errors import NotSupported
from brick_agent.host import nvme_identity
from brick_agent.host.roots import HostRoots

DMI = "4c4c4544-0042-3510-8052-b4c04f4e3232"


@pytest.fixture
def roots(tmp_path):
    r = HostRoots.under(str(tmp_path))
    os.makedirs(r.etcfs("nvme"))
    return r


def put(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text + "\n")


class FileWriter:
    """The privileged writer's contract: create missing files, never overwrite."""

    def __init__(self, roots):
        self.roots, self.calls = roots, []

    def __call__(self, hostnqn, hostid):
        self.calls.append((hostnqn, hostid))
        for name, value in (("hostnqn", hostnqn), ("hostid", hostid)):
            path = self.roots.etcfs("nvme", name)
            if value is not None and not os.path.exists(path):
                put(path, value)


def test_existing_files_are_returned_without_writing(roots):
    put(roots.etcfs("nvme", "hostnqn"), "nqn.2014-08.org.nvmexpress:uuid:" + DMI)
    put(roots.etcfs("nvme", "hostid"), DMI)
    writer = FileWriter(roots)
    got = ident.ensure_identity(roots, writer)
    assert got == nvme_identity.HostIdentity("nqn.2014-08.org.nvmexpress:uuid:" + DMI, DMI)
    assert writer.calls == []


def test_created_from_dmi_once_and_stable(roots):
    put(roots.sysfs("class", "dmi", "id", "product_uuid"), DMI.upper())
    writer = FileWriter(roots)
    first = ident.ensure_identity(roots, writer)
    second = ident.ensure_identity(roots, writer)
    assert (
        first == second == nvme_identity.HostIdentity("nqn.2014-08.org.nvmexpress:uuid:" + DMI, DMI)
    )
    assert len(writer.calls) == 1


@pytest.mark.parametrize(
    "dmi",
    [
        None,
        "00000000-0000-0000-0000-000000000000",
        "03000200-0400-0500-0006-000700080009",
        "garbage",
    ],
)
def test_random_identity_when_dmi_unusable_is_written_once(roots, dmi):
    if dmi is not None:
        put(roots.sysfs("class", "dmi", "id", "product_uuid"), dmi)
    writer = FileWriter(roots)
    first = ident.ensure_identity(roots, writer)
    assert uuid.UUID(first.hostid).int != 0 and first.hostid != dmi
    assert first.hostnqn == "nqn.2014-08.org.nvmexpress:uuid:" + first.hostid
    for _ in range(3):
        assert ident.ensure_identity(roots, writer) == first
    assert len(writer.calls) == 1


def test_missing_hostid_derived_from_existing_hostnqn(roots):
    u = str(uuid.uuid4())
    put(roots.etcfs("nvme", "hostnqn"), "nqn.2014-08.org.nvmexpress:uuid:" + u)
    writer = FileWriter(roots)
    assert ident.ensure_identity(roots, writer).hostid == u
    assert writer.calls == [("nqn.2014-08.org.nvmexpress:uuid:" + u, u)]
    assert nvme_identity.read_identity(roots)[0] == "nqn.2014-08.org.nvmexpress:uuid:" + u


def test_racing_writer_result_wins(roots):
    """Another process created the files first: what is on disk is the identity."""
    winner = str(uuid.uuid4())

    def writer(hostnqn, hostid):
        put(roots.etcfs("nvme", "hostnqn"), "nqn.2014-08.org.nvmexpress:uuid:" + winner)
        put(roots.etcfs("nvme", "hostid"), winner)

    assert ident.ensure_identity(roots, writer).hostid == winner


def test_writer_that_cannot_write_raises_not_supported(roots):
    with pytest.raises(NotSupported):
        ident.ensure_identity(roots, lambda a, b: None)


def test_invalid_file_content_is_replaced_through_writer_not_trusted(roots):
    put(roots.etcfs("nvme", "hostnqn"), "not an nqn")
    assert nvme_identity.read_identity(roots) == (None, None)


def test_connector_properties(roots):
    put(roots.sysfs("module", "nvme_core", "parameters", "multipath"), "Y")
    put(roots.sysfs("class", "dmi", "id", "product_uuid"), DMI)
    assert ident.connector_properties(roots, create=False) == {"nvme_native_multipath": True}
    props = ident.connector_properties(roots, FileWriter(roots))
    assert props == {
        "nvme_native_multipath": True,
        "nvme_hostid": DMI,
        "nqn": "nqn.2014-08.org.nvmexpress:uuid:" + DMI,
    }
    assert ident.connector_properties(roots, create=False) == props


def test_connector_properties_without_privileges_omits_identity(roots):
    def denied(hostnqn, hostid):
        raise PermissionError("read-only /etc")

    assert ident.connector_properties(roots, denied) == {"nvme_native_multipath": False}
