"""Synthetic host trees (sysfs + /dev) with many iSCSI paths, built with the unit tests'
FakeHost."""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

LUNS_PER_SESSION = 64
IQN_FMT = "iqn.2010-10.org.bench:t{:04d}"


def build(base: str, paths: int) -> dict[str, Any]:
    """Lay out ``paths`` LUNs, 64 per session (one target per session), with by-path links.

    Returns the connection properties of the last LUN (the one looked up).
    """
    from tests.unit.host.fakehost import FakeHost, sd_name
    from pathlib import Path

    h = FakeHost(Path(base))
    props: dict[str, Any] = {}
    for i in range(paths):
        sess, lun = divmod(i, LUNS_PER_SESSION)
        iqn = IQN_FMT.format(sess)
        addr = f"10.{sess // 250}.{sess % 250}.1"
        if lun == 0:
            sdir = h.iscsi_session(sess + 1, sess + 10, iqn, addr)
        name = sd_name(i)
        h.scsi_disk(sdir, f"{sess + 10}:0:0:{lun}", name, wwid=f"naa.6001405{i:023x}")
        h.disk_link("by-path", f"ip-{addr}:3260-iscsi-{iqn}-lun-{lun}", name)
        props = {"target_portal": f"{addr}:3260", "target_iqn": iqn, "target_lun": lun}
    return props
