"""The one NQN check of brick_agent: connection properties, privileged entrypoints and the
host identity all accept the same names.

The rule is the kernel's, whose fabrics option parser (drivers/nvme/host/fabrics.c,
``nvmf_parse_options``) takes ``nqn=`` / ``hostnqn=`` values shorter than
``NVMF_NQN_SIZE`` (223) bytes and knows nothing of their structure; options are
comma-separated ``key=value`` pairs, so ``,`` and ``=`` (and whitespace or control
characters, which end a line or hide in logs) are refused.  The NVMe base spec's
``nqn.`` prefix is required; after it anything else goes: the spec's dated form
(``nqn.2014-08.org.nvmexpress:uuid:<uuid>``), Cinder LVM+nvmet's undated ones
(``nqn.nvme-subsystem-1-<uuid>``, ``nqn.iqn.2010-10.org.openstack:-<uuid>``).
"""

from __future__ import annotations

#: Longest NQN the kernel accepts, in bytes (``strlen < NVMF_NQN_SIZE``).
MAX_NQN_BYTES = 222
PREFIX = "nqn."
_FORBIDDEN = frozenset(",=")


def nqn_problem(value: object) -> str | None:
    """Why ``value`` is not an NQN the kernel accepts (None: it is one).

    >>> nqn_problem("nqn.nvme-subsystem-1-0b9f8a34-5c1e-4a43-9f4f-2d5f0e3c1a77") is None
    True
    """
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value.startswith(PREFIX) or len(value) == len(PREFIX):
        return "must start with 'nqn.' and name something after it"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if size > MAX_NQN_BYTES:
        return f"is longer than {MAX_NQN_BYTES} bytes"
    bad = sorted({ch for ch in value if ch in _FORBIDDEN or ch.isspace() or not ch.isprintable()})
    if bad:
        return f"contains {', '.join(repr(ch) for ch in bad)}"
    return None
