"""Sysfs/dev/etc trees captured from the lab VM's real kernel (tests/unit/data).

Made by tools/kernel-lab/capture_scenarios.py; each archive holds sys/, dev/,
etc/ and capture.json (scenario note, kernel, write-only attributes).

    roots = extract_tree("iscsi-single", tmp_path)
    os.listdir(roots.sysfs("class", "iscsi_session"))
"""

from __future__ import annotations

import json
import os
import pathlib
import tarfile

from brick_agent.host.roots import HostRoots

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
TREES = ("iscsi-single", "iscsi-shared-multipath", "nvme-tcp", "fcoe")


def tree_archive(name: str) -> pathlib.Path:
    path = DATA_DIR / f"{name}.tar.gz"
    if not path.is_file():
        raise FileNotFoundError(f"no captured tree {name!r} in {DATA_DIR}")
    return path


def extract_tree(name: str, tmp_path: os.PathLike | str) -> HostRoots:
    """Unpack tree ``name`` under ``tmp_path/name`` and return its HostRoots.

    Write-only kernel attributes (scan, delete, rescan, ...) are empty regular
    files, so code under test can write them and tests can read what it wrote.
    """
    base = pathlib.Path(tmp_path) / name
    base.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tree_archive(name)) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(base, filter="data")
        else:  # pragma: no cover - Python without extraction filters
            tf.extractall(base)
    # the "data" filter drops write bits on nothing we need, but make the
    # attribute files writable for the test user either way
    for dirpath, _dirs, files in os.walk(base):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    return HostRoots.under(str(base))


def tree_meta(name: str) -> dict:
    """capture.json of tree ``name`` (note, kernel, write_only list)."""
    with tarfile.open(tree_archive(name)) as tf:
        member = tf.extractfile("capture.json")
        assert member is not None
        return json.load(member)


def capture_note(roots: HostRoots) -> str:
    """The scenario note of the tree ``roots`` was extracted from (its capture.json)."""
    with open(os.path.join(os.path.dirname(roots.sys), "capture.json")) as f:
        return json.load(f)["note"]
