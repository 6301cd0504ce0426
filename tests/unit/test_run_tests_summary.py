"""tools/test_summary.py: the closing lines of the README's test command (CI shows its tail)."""

from __future__ import annotations

import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def _summary_module():
    spec = importlib.util.spec_from_file_location("test_summary", REPO / "tools/test_summary.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="{errors}" failures="{failures}" skipped="0"
 tests="{tests}">{cases}</testsuite></testsuites>"""
PASSED = '<testcase classname="tests.functional.test_x" name="test_ok" time="1"/>'
FAILED = (
    '<testcase classname="tests.functional.test_x" name="test_bad" time="1">'
    '<failure message="AssertionError: LUN 0 did not appear&#10;more">trace</failure></testcase>'
)


def test_each_stage_with_its_failed_tests_and_a_dead_vms_console_tail(tmp_path):
    summary = _summary_module()
    (tmp_path / "unit.xml").write_text(JUNIT.format(errors=0, failures=0, tests=1, cases=PASSED))
    (tmp_path / "functional.xml").write_text(
        JUNIT.format(errors=0, failures=1, tests=2, cases=PASSED + FAILED)
    )
    # another stage's file beside it is not the functional stage's
    (tmp_path / "functional-6.12.xml").write_text(
        JUNIT.format(errors=0, failures=0, tests=1, cases=PASSED)
    )
    for host in (1, 2):
        (tmp_path / f"functional-multihost-{host}.xml").write_text(
            JUNIT.format(errors=0, failures=0, tests=1, cases=PASSED)
        )
    (tmp_path / "functional-6.12.log").write_text(
        "".join(f"line {n}\r\n" for n in range(100)) + "Kernel panic - not syncing\n"
    )
    lines = summary.summarise(
        tmp_path,
        [("unit", 0), ("functional", 1), ("functional-multihost", 0), ("functional-6.12", 125)],
    )
    assert lines[0] == "unit: ok; 1 tests, 0 failed, 0 errors, 0 skipped"
    assert lines[1] == "functional: FAILED (exit 1); 2 tests, 1 failed, 0 errors, 0 skipped"
    assert lines[2] == (
        "    tests.functional.test_x::test_bad (failure) AssertionError: LUN 0 did not appear"
    )
    assert lines[3] == "functional-multihost: ok; 2 tests, 0 failed, 0 errors, 0 skipped"
    # the 6.12 stage's stale JUnit file is counted, and the console says why the VM died
    assert lines[4].startswith("functional-6.12: FAILED (exit 125)")
    assert lines[-1] == "    | Kernel panic - not syncing"
    assert len([line for line in lines if line.startswith("    | ")]) == summary.TAIL_LINES


def test_a_failed_stage_without_tests_or_log_is_still_named(tmp_path):
    summary = _summary_module()
    assert summary.summarise(tmp_path, [("ruff", 1), ("mypy", 0)]) == [
        "ruff: FAILED (exit 1)",
        "mypy: ok",
    ]
