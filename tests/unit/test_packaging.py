"""Package layout: brick_lab (the kernel lab's target library) ships beside brick_agent,
and the product code never depends on it."""

from __future__ import annotations

import ast
import configparser
import importlib
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_brick_agent_never_imports_brick_lab():
    offenders = sorted(
        str(path.relative_to(REPO))
        for path in (REPO / "brick_agent").rglob("*.py")
        if any(
            name == "brick_lab" or name.startswith("brick_lab.") for name in _imported_modules(path)
        )
    )
    assert offenders == []


def test_setup_cfg_installs_brick_lab_and_not_tests():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    find = cfg["options.packages.find"]
    include = find.get("include", "").split() or ["*"]
    packages = setuptools.find_packages(
        str(REPO), include=include, exclude=find.get("exclude", "").split()
    )
    assert {"brick_agent", "brick_agent.gate", "brick_lab"} <= set(packages)
    assert not [p for p in packages if p == "tests" or p.startswith("tests.")]


def test_brick_lab_modules_import_outside_the_lab():
    """Importing builds nothing (targets are made by create()/with), so tools and test
    collection can import the library on any host."""
    for name in ("brick_lab", "brick_lab.rawhost", "brick_lab.initiator", "brick_lab.scenarios"):
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().is_relative_to(REPO / "brick_lab")
