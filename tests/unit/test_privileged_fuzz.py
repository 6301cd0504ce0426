"""Fuzz every privileged ``do_*`` body with wrong-typed (and some plausible) arguments.

Issue 13 §4: only BrickError subclasses may escape a privileged body (TypeError,
AttributeError and friends would reach the caller untyped through the privsep
channel).  The bodies run against the fake host of test_privileged_ownership, with a
recording runner, a fake /dev/nvme-fabrics and a fake resolver: nothing real executes.
"""

from __future__ import annotations

import inspect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brick_agent.errors import BrickError
from brick_agent.privileged import block, iscsi, iscsi_auth, links, md, multipath, nvme, scsi
from tests.unit.host.fakehost import FakeHost
from tests.unit.test_privileged_ownership import (
    DATA_IQN,
    DATA_PORTAL,
    FREE_IQN,
    FREE_PORTAL,
    HOSTID,
    HOSTNQN,
    SUBSYS,
    Runner,
    build,
)

#: Injected by the test, never fuzzed.
_INJECTED = {"roots", "run", "io", "resolve", "set_auth", "db_root", "root", "lock_dir", "flush"}
BODIES = sorted(
    (
        (f"{mod.__name__.rsplit('.', 1)[1]}.{name}", func)
        for mod in (scsi, block, iscsi, iscsi_auth, nvme, multipath, md, links)
        for name, func in vars(mod).items()
        if name.startswith("do_") and inspect.isfunction(func) and func.__module__ == mod.__name__
    ),
    key=lambda item: item[0],
)

WWID = "36001405aa6d2dc160f6b68a70cef7b43"
STALE_WWID = "36001405ffffffffffffffffffffffff6"  # in the wwids file, no device has it
DANGLING = "ip-192.0.2.99:3260-iscsi-iqn.2003-01.org.example:gone-lun-1"
#: Arguments each body accepts on the fake host (its own parameters, in order): a
#: draw keeps each one or replaces it, so wrong types reach every later check too.
VALID: dict[str, tuple] = {
    "block.do_flush_block_device": ("sdb", 5.0),
    "block.do_set_block_device_read_only": ("sdb", True, 5.0),
    "iscsi.do_discover": (
        FREE_PORTAL,
        "default",
        [("discovery.sendtargets.auth.authmethod", "None")],
        5.0,
    ),
    "iscsi.do_node_create": (FREE_IQN, FREE_PORTAL, "default", 5.0),
    "iscsi.do_node_delete": (FREE_IQN, FREE_PORTAL, "default", 5.0),
    "iscsi.do_node_login": (FREE_IQN, FREE_PORTAL, "default", 5.0),
    "iscsi.do_node_logout": (FREE_IQN, FREE_PORTAL, "default", 5.0),
    "iscsi.do_node_update": (
        FREE_IQN,
        FREE_PORTAL,
        "default",
        [("node.session.scan", "manual")],
        5.0,
    ),
    "iscsi_auth.do_discovery_set_auth": (
        FREE_PORTAL,
        [("discovery.sendtargets.auth.authmethod", "None")],
    ),
    "iscsi_auth.do_node_set_settings": (
        FREE_IQN,
        FREE_PORTAL,
        "default",
        [("node.session.scan", "manual"), ("node.session.auth.authmethod", "None")],
    ),
    "links.do_remove_dangling_link": ("by-path", DANGLING, "../../sdzz"),
    "md.do_create_or_assemble_raid1": ("vol-2", ["nvme1n1", "nvme4n1"]),
    "md.do_stop_raid": ("vol-1",),
    "multipath.do_add_path": ("sdb", 5.0),
    "multipath.do_add_wwid": (WWID, 5.0),
    "multipath.do_del_path": ("sde", 5.0),
    "multipath.do_flush_map": ("mpatha", 5.0),
    "multipath.do_forget_stale_wwid": (STALE_WWID, 5.0),
    "multipath.do_remove_wwid": (WWID, 5.0),
    "multipath.do_resize_map": ("mpatha", 5.0),
    "nvme.do_connect": ("tcp", "192.0.2.30", 4420, SUBSYS, HOSTNQN, HOSTID, None, 5.0),
    "nvme.do_disconnect": ("nvme4", 5.0),
    "nvme.do_rescan_controller": ("nvme1",),
    "nvme.do_write_host_identity": (HOSTNQN, HOSTID),
    "scsi.do_delete_scsi_device": ("2:0:0:1", 5.0),
    "scsi.do_rescan_scsi_device": ("2:0:0:1",),
    "scsi.do_scan_scsi_target": (2, 0, 0, 1),
}
#: Values of the right type that reach past the first checks.
PLAUSIBLE = [
    "sdb",
    "sde",
    "sda",
    "dm-0",
    "nvme1",
    "nvme1n1",
    "nvme0",
    "2:0:0:1",
    "0:0:0:0",
    "-",
    DATA_IQN,
    DATA_PORTAL,
    "192.0.2.30",
    "tcp",
    "fc",
    "loop",
    SUBSYS,
    HOSTNQN,
    "default",
    "vol-1",
    "mpatha",
    "36001405aa6d2dc160f6b68a70cef7b43",
    STALE_WWID,
    "by-path",
    "by-id",
    DANGLING,
    "../../sdzz",
    "0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77",
    "node.session.scan",
    "manual",
]
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=8),
    st.complex_numbers(),
    st.just(object()),
    st.just(Ellipsis),
    st.just(str),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=4)), max_size=5),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.dictionaries(
        st.one_of(st.text(max_size=8), st.integers()),
        st.one_of(st.none(), st.integers(), st.text(max_size=8)),
        max_size=3,
    ),
    st.sets(st.integers(), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=3),
)
VALUE = st.one_of(WRONG, st.sampled_from(PLAUSIBLE), st.text(max_size=12))


class Fabrics:
    def __call__(self, device, options):
        return "instance=9,cntlid=1\n"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    fh = build(FakeHost(tmp_path_factory.mktemp("fuzz") / "host"))
    fh.attr("etc/multipath/wwids", f"# Multipath wwids, Version : 1.0\n/{STALE_WWID}/")
    fh.link(f"dev/disk/by-path/{DANGLING}", "dev/sdzz")
    # the records iscsiadm --op new and a discovery write, for the record-file bodies
    address, port = FREE_PORTAL.rsplit(":", 1)
    fh.attr(f"etc/iscsi/nodes/{FREE_IQN}/{address},{port}", "node.session.scan = auto\n")
    fh.attr(f"etc/iscsi/send_targets/{address},{port}/st_config", "discovery.type = 0\n")
    return fh.roots


def _call(func, roots, values, extra):
    """Call ``func`` with ``values`` for its own parameters (in order) and ``extra``
    keyword arguments for a ``**kwargs`` it may take."""
    args, kwargs = [], {}
    params = [p for p in inspect.signature(func).parameters.values()]
    for p in params:
        if p.name in _INJECTED:
            injected = {
                "roots": roots,
                "run": Runner(),
                "io": Fabrics(),
                "resolve": lambda name: "192.0.2.40",
                "set_auth": lambda record, items: None,
                "flush": lambda dev, timeout: None,
                # open-iscsi's record database and its lock, in the fake host's tree
                "db_root": roots.etcfs("iscsi"),
                "root": roots.etcfs("iscsi"),
                "lock_dir": roots.runfs("lock", "iscsi"),
            }[p.name]
            (
                args.append(injected)
                if p.kind is p.POSITIONAL_OR_KEYWORD
                else kwargs.__setitem__(p.name, injected)
            )
        elif p.kind is p.VAR_KEYWORD:
            kwargs.update(extra)
        elif values:
            value = values.pop(0)
            if p.kind is p.KEYWORD_ONLY:
                kwargs[p.name] = value
            else:
                args.append(value)
    return func(*args, **kwargs)


def _arity(func) -> int:
    return sum(
        1
        for p in inspect.signature(func).parameters.values()
        if p.name not in _INJECTED and p.kind is not p.VAR_KEYWORD
    )


def test_every_body_is_fuzzed_from_arguments_it_accepts(roots):
    assert sorted(VALID) == [name for name, _ in BODIES]
    for name, func in BODIES:
        assert len(VALID[name]) == _arity(func), name
        _call(func, roots, list(VALID[name]), {})


@pytest.mark.parametrize("name, func", BODIES, ids=[name for name, _ in BODIES])
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_only_brick_errors_escape(roots, name, func, data):
    values = list(VALID[name])
    if values:  # one argument replaced, sometimes a second one too
        for i in data.draw(
            st.lists(st.integers(0, len(values) - 1), min_size=1, max_size=2), label="replaced"
        ):
            values[i] = data.draw(VALUE, label=f"arg {i}")
    extra = data.draw(
        st.dictionaries(
            st.sampled_from(["ctrl_loss_tmo", "keep_alive_tmo", "nr_io_queues"]), VALUE, max_size=2
        ),
        label="kwargs",
    )
    try:
        _call(func, roots, values, extra)
    except BrickError:
        pass
