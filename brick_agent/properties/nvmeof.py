"""NVMe-oF connection properties (the three shapes os-brick accepts).

1. New, single target::

     {'target_nqn', 'vol_uuid', 'portals': [(address, port, transport), ...],
      'volume_nguid'?, 'ns_id'?, 'host_nqn'?}

   ``vol_uuid`` is the namespace UUID.  Portals may be 3-item lists/tuples or
   dicts ``{'address', 'port', 'transport'}``.
2. Replicated: ``{'vol_uuid' (the Cinder volume id), 'alias' (md name),
   'replica_count', 'volume_replicas': [<target as in 1.>, ...]}``.
3. Old: ``{'nqn', 'transport_type', 'target_portal', 'target_port',
   'volume_nguid'?, 'ns_id'?, 'host_nqn'?}``.

Namespace identifiers: ``uuid`` (canonical lower hyphenated), ``nguid`` (canonical
32 lower hex; the kernel's ``/sys/block/nvmeXnY/nguid`` prints it hyphenated
8-4-4-4-12 with ``%pU`` -- compare with :func:`sysfs_id_matches`), ``nsid``.
A target without any of them is accepted (old drivers send none) but
:attr:`NvmeTarget.identified` is False; connectors must then not guess.

Note that sysfs ``uuid`` falls back to showing the NGUID when the namespace has
no UUID, so a match on ``uuid`` must be against our ``uuid`` field only.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal

from brick_agent.nqn import nqn_problem
from brick_agent.properties import _checks as c
from brick_agent.properties.common import CommonProperties, parse_common

Transport = Literal["tcp", "rdma", "fc"]
MAX_NQN = 223  # characters c.string reads; bytes: brick_agent.nqn.MAX_NQN_BYTES
MAX_NSID = 0xFFFFFFFE  # 0 is invalid, 0xFFFFFFFF is the broadcast value

_ALIAS_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_FC_ADDR_RE = re.compile(r"nn-0x([0-9a-fA-F]{16}):pn-0x([0-9a-fA-F]{16})")
_TRANSPORTS: dict[str, Transport] = {
    "tcp": "tcp",
    "rdma": "rdma",
    "rocev2": "rdma",
    "roce": "rdma",
    "fc": "fc",
}


@dataclasses.dataclass(frozen=True)
class NvmePortal:
    """One controller path: ``address`` is an IP literal (tcp/rdma) or
    ``nn-0x<16hex>:pn-0x<16hex>`` (fc); ``port`` is None for fc."""

    address: str
    port: int | None
    transport: Transport

    @property
    def trsvcid(self) -> str:
        return "none" if self.port is None else str(self.port)


@dataclasses.dataclass(frozen=True)
class NvmeTarget:
    nqn: str
    portals: tuple[NvmePortal, ...]
    uuid: str | None = None
    nguid: str | None = None
    nsid: int | None = None
    host_nqn: str | None = None

    @property
    def identified(self) -> bool:
        """True if the namespace can be recognised by uuid, nguid or nsid."""
        return self.uuid is not None or self.nguid is not None or self.nsid is not None

    @property
    def nguid_sysfs(self) -> str | None:
        """The NGUID as ``/sys/block/nvmeXnY/nguid`` shows it (hyphenated 8-4-4-4-12)."""
        return None if self.nguid is None else hyphenate(self.nguid)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NvmeofProperties(CommonProperties):
    targets: tuple[NvmeTarget, ...]
    replicated: bool = False
    replica_count: int = 1
    alias: str | None = None
    vol_uuid: str | None = None
    format: Literal["new", "replicated", "old"] = "new"

    @property
    def target(self) -> NvmeTarget:
        """The single target of a non-replicated volume (first replica otherwise)."""
        return self.targets[0]


def hyphenate(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def canonical_id(text: str) -> str | None:
    """32 lower hex from sysfs text: ``uuid``/``nguid`` (hyphenated) or ``wwid``
    ('uuid.<uuid>' or 'eui.<32 hex>'); None for anything else (eui64, 'nvme.' wwids)."""
    text = text.strip().lower()
    for prefix in ("eui.", "uuid."):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    text = text.replace("-", "")
    if len(text) == 32 and all(ch in "0123456789abcdef" for ch in text):
        return text
    return None


def sysfs_id_matches(expected: str | None, sysfs_text: str | None) -> bool:
    """True if ``sysfs_text`` (nguid/uuid/wwid file content) names the same 16-byte id.

    ``expected`` may be our canonical NGUID or UUID form.  Nil ids never match.
    """
    if expected is None or sysfs_text is None:
        return False
    want, got = canonical_id(expected), canonical_id(sysfs_text)
    return want is not None and want == got and want != "0" * 32


def parse_nqn(value: Any, path: str) -> str:
    """An NQN the kernel accepts (:func:`brick_agent.nqn.nqn_problem`): the spec's dated and
    UUID forms, Cinder LVM+nvmet's undated ``nqn.<name>`` forms."""
    text = c.string(value, path, MAX_NQN)
    problem = nqn_problem(text)
    if problem:
        c.fail(path, f"{problem}: {c.shown(text)}")
    return text


def parse_transport(value: Any, path: str) -> Transport:
    text = c.string(value, path, 16)
    transport = _TRANSPORTS.get(text.lower())
    if transport is None:
        c.fail(path, f"must be tcp, rdma (or RoCEv2) or fc, got {c.shown(text)}")
    return transport


def _portal(address: Any, port: Any, transport: Any, path: str) -> NvmePortal:
    kind = parse_transport(transport, f"{path}.transport" if path else "transport_type")
    addr_path = f"{path}.address" if path else "target_portal"
    port_path = f"{path}.port" if path else "target_port"
    text = c.string(address, addr_path, 64)
    if kind == "fc":
        m = _FC_ADDR_RE.fullmatch(text)
        if not m:
            c.fail(addr_path, f"must be 'nn-0x<16 hex>:pn-0x<16 hex>' for fc, got {c.shown(text)}")
        if not (port is None or (isinstance(port, str) and port in ("", "none"))):
            c.fail(port_path, "must be missing, empty or 'none' for fc")
        return NvmePortal(f"nn-0x{m.group(1).lower()}:pn-0x{m.group(2).lower()}", None, "fc")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if port is None:
        c.fail(port_path, f"is required for {kind}")
    return NvmePortal(c.host(text, addr_path, allow_names=False), c.port(port, port_path), kind)


def _portals(value: Any, path: str) -> tuple[NvmePortal, ...]:
    result = []
    for i, item in enumerate(c.sequence(value, path)):
        ipath = f"{path}[{i}]"
        if isinstance(item, Mapping):
            item = c.mapping(item, ipath)
            fields = [
                c.require(item, k, ipath) if k != "port" else item.get("port")
                for k in ("address", "port", "transport")
            ]
        elif isinstance(item, (list, tuple)):
            if len(item) != 3:
                c.fail(ipath, f"must have 3 items (address, port, transport), has {len(item)}")
            fields = list(item)
        else:
            c.fail(
                ipath,
                f"must be a (address, port, transport) list or a dict, not {type(item).__name__}",
            )
        address, port, transport = fields
        portal = _portal(address, port, transport, ipath)
        if portal not in result:
            result.append(portal)
    return tuple(result)


def _ids(props: Mapping[str, Any], path: str, uuid_key: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if uuid_key and c.present(props, uuid_key):
        out["uuid"] = c.uuid_text(props[uuid_key], c.join(path, uuid_key))
    if c.present(props, "volume_nguid"):
        out["nguid"] = c.nguid_text(props["volume_nguid"], c.join(path, "volume_nguid"))
    if c.present(props, "ns_id"):
        nsid = props["ns_id"]
        if isinstance(nsid, str) and re.fullmatch(r"[0-9]{1,10}", nsid):
            nsid = int(nsid)
        out["nsid"] = c.integer(nsid, c.join(path, "ns_id"), 1, MAX_NSID)
    if c.present(props, "host_nqn"):
        out["host_nqn"] = parse_nqn(props["host_nqn"], c.join(path, "host_nqn"))
    return out


def _new_target(props: Mapping[str, Any], path: str) -> NvmeTarget:
    nqn = parse_nqn(c.require(props, "target_nqn", path), c.join(path, "target_nqn"))
    portals = _portals(c.require(props, "portals", path), c.join(path, "portals"))
    return NvmeTarget(nqn, portals, **_ids(props, path, "vol_uuid"))


def _old_target(props: Mapping[str, Any]) -> NvmeTarget:
    nqn = parse_nqn(c.require(props, "nqn", ""), "nqn")
    portal = _portal(
        c.require(props, "target_portal", ""),
        props.get("target_port"),
        c.require(props, "transport_type", ""),
        "",
    )
    return NvmeTarget(nqn, (portal,), **_ids(props, "", None))


def parse_nvmeof(props: Mapping[str, Any]) -> NvmeofProperties:
    """Validate an NVMe-oF ``connection_properties`` dict (never mutated)."""
    props = c.mapping(props, c.ROOT)
    common = parse_common(props)
    vol_uuid = c.uuid_text(props["vol_uuid"], "vol_uuid") if c.present(props, "vol_uuid") else None
    if c.present(props, "volume_replicas"):
        replicas = c.sequence(props["volume_replicas"], "volume_replicas", 64)
        targets = tuple(
            _new_target(c.mapping(r, f"volume_replicas[{i}]"), f"volume_replicas[{i}]")
            for i, r in enumerate(replicas)
        )
        count = c.integer(c.require(props, "replica_count", ""), "replica_count", 1, 64)
        if count != len(targets):
            c.fail("replica_count", f"is {count} but volume_replicas has {len(targets)} items")
        alias = c.token(c.require(props, "alias", ""), "alias", 128)
        if not _ALIAS_RE.fullmatch(alias):
            c.fail(
                "alias",
                f"must be a plain md device name ([A-Za-z0-9_][A-Za-z0-9._-]*): {c.shown(alias)}",
            )
        return NvmeofProperties(
            targets=targets,
            replicated=True,
            replica_count=count,
            alias=alias,
            vol_uuid=vol_uuid,
            format="replicated",
            **common,
        )
    if c.present(props, "target_nqn") or c.present(props, "portals"):
        return NvmeofProperties(
            targets=(_new_target(props, ""),), vol_uuid=vol_uuid, format="new", **common
        )
    if c.present(props, "nqn"):
        return NvmeofProperties(
            targets=(_old_target(props),), vol_uuid=vol_uuid, format="old", **common
        )
    c.fail("target_nqn", "is required (or volume_replicas, or the old-format nqn)")
