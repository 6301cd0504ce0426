"""The import direction of brick_agent's layers (docs/architecture.md), read from the source.

Every ``import`` / ``from ... import`` in ``brick_agent/**/*.py`` counts, those
inside functions too (a lazy import is still a dependency), and so does
``importlib.import_module("literal")``.  A violation is reported as
``file:line: imports X — rule``.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Callable, Iterator

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "brick_agent"


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@dataclasses.dataclass(frozen=True)
class Rule:
    text: str  # the rule, as the failure message shows it
    applies: Callable[[str, str], bool]  # (importing module, its file name) -> bool
    forbidden: tuple[str, ...]  # packages (or modules) it must not import


def _in(*packages: str) -> Callable[[str, str], bool]:
    return lambda module, _filename: _under(module, *packages)


def _connector_not_actions(module: str, filename: str) -> bool:
    return _under(module, "brick_agent.connectors") and filename != "actions.py"


RULES = (
    Rule(
        "properties/ (validated connection properties) imports no connectors/, host/, "
        "privileged/, ledger/ or gate/",
        _in("brick_agent.properties"),
        (
            "brick_agent.connectors",
            "brick_agent.host",
            "brick_agent.privileged",
            "brick_agent.ledger",
            "brick_agent.gate",
        ),
    ),
    Rule(
        "host/ (read-only views of the host) imports no connectors/, privileged/, ledger/, "
        "gate/ or os_brick_compat/",
        _in("brick_agent.host"),
        (
            "brick_agent.connectors",
            "brick_agent.privileged",
            "brick_agent.ledger",
            "brick_agent.gate",
            "brick_agent.os_brick_compat",
        ),
    ),
    Rule(
        "privileged/ (runs as root) imports no connectors/, ledger/, gate/ or os_brick_compat/",
        _in("brick_agent.privileged"),
        (
            "brick_agent.connectors",
            "brick_agent.ledger",
            "brick_agent.gate",
            "brick_agent.os_brick_compat",
        ),
    ),
    Rule(
        "within connectors/ only actions.py modules import brick_agent.privileged",
        _connector_not_actions,
        ("brick_agent.privileged",),
    ),
    Rule(
        "within cleanup/ only actions.py imports brick_agent.privileged",
        lambda module, filename: _under(module, "brick_agent.cleanup") and filename != "actions.py",
        ("brick_agent.privileged",),
    ),
    Rule("ledger/ imports no connectors/", _in("brick_agent.ledger"), ("brick_agent.connectors",)),
    Rule(
        "brick_agent imports nothing of tests/ or brick_lab", _in(PACKAGE), ("tests", "brick_lab")
    ),
)


@dataclasses.dataclass(frozen=True)
class Import:
    path: str  # relative to the repository
    line: int
    module: str  # the importing module
    targets: tuple[str, ...]  # what it imports: ``from m import a`` imports m and m.a


def module_name(relpath: str) -> str:
    parts = relpath[: -len(".py")].split(os.sep)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against the importing module's package
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        # ``from brick_agent import privileged`` imports brick_agent.privileged
        return [base] + [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    if (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and (
            getattr(node.func, "attr", None) == "import_module"
            or getattr(node.func, "id", None) in ("import_module", "__import__")
        )
    ):
        return [node.args[0].value]
    return []


def imports_of(root: str, package: str = PACKAGE) -> Iterator[Import]:
    """Every import in ``<root>/<package>/**/*.py``."""
    for directory, dirs, files in os.walk(os.path.join(root, package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for filename in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(directory, filename)
            rel = os.path.relpath(path, root)
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read(), filename=rel)
            module = module_name(rel)
            for node in ast.walk(tree):
                targets = _targets(node, module, filename == "__init__.py")
                if targets:
                    yield Import(rel, node.lineno, module, tuple(targets))


def violations(root: str, rules: tuple[Rule, ...] = RULES) -> list[str]:
    """``file:line: imports X — rule`` for every import a rule forbids."""
    found = []
    for imp in imports_of(root):
        filename = os.path.basename(imp.path)
        for rule in rules:
            if not rule.applies(imp.module, filename):
                continue
            bad = [t for t in imp.targets if _under(t, *rule.forbidden)]
            if bad:
                found.append(f"{imp.path}:{imp.line}: imports {max(bad, key=len)} — {rule.text}")
    return sorted(found)


def test_brick_agent_keeps_its_import_direction():
    found = violations(REPO)
    assert not found, "layer rule broken (see docs/architecture.md):\n  " + "\n  ".join(found)


def test_the_walk_sees_brick_agent():
    """The check reads the real tree (not an empty walk), lazy imports included."""
    seen = {(imp.module, target) for imp in imports_of(REPO) for target in imp.targets}
    assert len({module for module, _ in seen}) > 50
    # a lazy import inside a method of a connectors actions module
    assert any(
        module == "brick_agent.connectors.nvmeof.actions"
        and _under(target, "brick_agent.privileged")
        for module, target in seen
    )


def _tree(tmp_path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize(
    "rel, source, line, rule",
    [
        (
            "brick_agent/host/x.py",
            "def f():\n    from brick_agent.privileged import nvme\n",
            2,
            "host/",
        ),
        ("brick_agent/host/x.py", "import os\nfrom brick_agent import connectors\n", 2, "host/"),
        ("brick_agent/properties/x.py", "from ..host import sysfs\n", 1, "properties/"),
        ("brick_agent/privileged/x.py", "import brick_agent.ledger.store\n", 1, "privileged/"),
        (
            "brick_agent/connectors/iscsi/sessions.py",
            "class S:\n    def m(self):\n        from brick_agent.privileged import iscsi\n",
            3,
            "only actions.py",
        ),
        (
            "brick_agent/ledger/x.py",
            "import importlib\nimportlib.import_module('brick_agent.connectors.fc')\n",
            2,
            "ledger/",
        ),
        ("brick_agent/audit.py", "from tests.unit import sysfs_trees\n", 1, "tests/"),
    ],
)
def test_a_violation_names_file_line_and_rule(tmp_path, rel, source, line, rule):
    found = violations(_tree(tmp_path, {rel: source}))
    assert len(found) == 1, found
    assert found[0].startswith(f"{rel}:{line}: imports ")
    assert rule in found[0].split(" — ", 1)[1]


def test_allowed_imports_pass(tmp_path):
    root = _tree(
        tmp_path,
        {
            "brick_agent/connectors/iscsi/actions.py": (
                "def f():\n    from brick_agent.privileged import iscsi\n"
            ),
            "brick_agent/connectors/actions.py": "from brick_agent.privileged import block\n",
            "brick_agent/privileged/x.py": "from brick_agent.host import iscsiadm\n",
            "brick_agent/host/x.py": "from brick_agent import commands, errors\n",
            "brick_agent/ledger/x.py": (
                "from brick_agent.host import block\nimport brick_agent.properties\n"
            ),
        },
    )
    assert violations(root) == []
