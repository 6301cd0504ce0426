"""Property-based tests: parsers return a model or raise InvalidConnectionProperties.

Never any other exception, never a mutated input, never a secret in a message or
in a model's repr/dict -- for arbitrary JSON-like dicts and for near-valid
mutations of realistic driver outputs.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brick_agent.errors import InvalidConnectionProperties
from brick_agent.properties import parse_fc, parse_iscsi, parse_nvmeof
from tests.unit.test_properties_support import (
    DISC_SECRET,
    LVM_LIO_ISCSI,
    LVM_NVMET,
    NETAPP_ISCSI,
    POWERMAX_FC,
    POWERSTORE_NVME,
    PURE_FC,
    PURE_ISCSI,
    PURE_NVME,
    REPLICATED_NVME,
    SECRET,
    SPDK_OLD_NVME,
)

# BRICK_FUZZ_EXAMPLES=5000 for a long run; the default keeps the unit suite fast.
FUZZ = settings(
    max_examples=int(os.environ.get("BRICK_FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KNOWN_KEYS = sorted(
    {
        k
        for d in (
            LVM_LIO_ISCSI,
            NETAPP_ISCSI,
            PURE_ISCSI,
            LVM_NVMET,
            PURE_NVME,
            POWERSTORE_NVME,
            REPLICATED_NVME,
            SPDK_OLD_NVME,
            PURE_FC,
            POWERMAX_FC,
        )
        for k in d
    }
    | {
        "discovery_auth_method",
        "discovery_auth_username",
        "discovery_auth_password",
        "device_path",
        "target_wwns",
        "address",
        "port",
        "transport",
        "replica_count",
    }
)
NASTY = [
    "",
    " ",
    "-",
    ";",
    "$(id)",
    "\x00",
    "\n",
    "é",
    "[",
    "]",
    ":",
    "0x",
    "%",
    ",",
    "=",
    "../",
    "A" * 300,
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(NASTY)
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=12) | st.integers(-3, 3)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner, inner)
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=20,
)

PARSERS = {"iscsi": parse_iscsi, "nvmeof": parse_nvmeof, "fc": parse_fc}
EXAMPLES = {
    "iscsi": [
        LVM_LIO_ISCSI,
        NETAPP_ISCSI,
        PURE_ISCSI,
        {
            **LVM_LIO_ISCSI,
            "discovery_auth_method": "CHAP",
            "discovery_auth_username": "d",
            "discovery_auth_password": DISC_SECRET,
        },
    ],
    "nvmeof": [LVM_NVMET, PURE_NVME, POWERSTORE_NVME, REPLICATED_NVME, SPDK_OLD_NVME],
    "fc": [PURE_FC, POWERMAX_FC],
}


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indexes) into nested dicts/lists/tuples of ``obj``."""
    out = []
    if isinstance(obj, dict):
        items = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        items = list(enumerate(obj))
    else:
        return out
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_paths(v, prefix + (k,)))
    return out


def _set(obj: Any, path: tuple, op: str, value: Any) -> Any:
    """A copy of ``obj`` with ``op`` ('set', 'del', 'mangle') applied at ``path``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, tuple):
        obj = list(obj)
        was_tuple = True
    else:
        was_tuple = False
    if rest:
        obj[head] = _set(obj[head], rest, op, value)
    elif op == "del":
        del obj[head]
    elif op == "mangle" and isinstance(obj[head], str):
        text, (pos, piece) = obj[head], value
        pos = pos % (len(text) + 1)
        obj[head] = text[:pos] + piece + text[pos:]
    else:
        obj[head] = value
    return tuple(obj) if was_tuple else obj


@st.composite
def near_valid(draw, protocol: str) -> dict:
    base = copy.deepcopy(draw(st.sampled_from(EXAMPLES[protocol])))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(base)
        op = draw(st.sampled_from(["set", "del", "mangle", "add"]))
        if op == "add" or not paths:
            base[draw(keys)] = draw(json_like)
            continue
        path = draw(st.sampled_from(paths))
        if op == "mangle":
            value = (draw(st.integers(0, 300)), draw(st.sampled_from(NASTY) | st.text(max_size=3)))
        else:
            value = draw(json_like)
        base = _set(base, path, op, value)
    return base


def _check(protocol: str, props: Any) -> None:
    before = repr(props)
    snapshot = copy.deepcopy(props)
    try:
        model = PARSERS[protocol](props)
    except InvalidConnectionProperties as err:
        text = str(err) + repr(err) + err.key + err.problem
        assert SECRET not in text and DISC_SECRET not in text
        assert len(err.problem) < 400
    else:
        text = repr(model) + json.dumps(model.to_dict())
        assert SECRET not in text and DISC_SECRET not in text
        assert model == PARSERS[protocol](snapshot)
    assert repr(props) == before


@FUZZ
@given(
    protocol=st.sampled_from(sorted(PARSERS)), props=st.dictionaries(keys, json_like, max_size=8)
)
def test_arbitrary_dicts(protocol, props):
    _check(protocol, props)


@FUZZ
@given(protocol=st.sampled_from(sorted(PARSERS)), props=json_like)
def test_arbitrary_values(protocol, props):
    _check(protocol, props)


@FUZZ
@given(props=near_valid("iscsi"))
def test_near_valid_iscsi(props):
    _check("iscsi", props)


@FUZZ
@given(props=near_valid("nvmeof"))
def test_near_valid_nvmeof(props):
    _check("nvmeof", props)


@FUZZ
@given(props=near_valid("fc"))
def test_near_valid_fc(props):
    _check("fc", props)


def test_examples_are_valid():
    for protocol, examples in EXAMPLES.items():
        for example in examples:
            PARSERS[protocol](example)
