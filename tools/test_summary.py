"""The closing summary of tools/run-tests.sh: one line per stage, then what failed.

CI shows only the tail of the output, so the failures of an early stage (the single-VM lab
stage runs for about 20 minutes before two more) must be repeated at the end: the failing
tests of each stage's JUnit files and, for a lab stage whose VM failed or timed out
(exit 125: no JUnit file is written), the last lines of its console log.

Usage: test_summary.py RESULTS_DIR "STAGE RC" ...
"""

from __future__ import annotations

import pathlib
import re
import sys
import xml.etree.ElementTree as ET

#: the exit code of ``tools/kernel-lab/lab run`` when the VM failed or timed out
VM_FAILED = 125
#: console lines quoted from a lab stage without a pytest summary
TAIL_LINES = 60


def junit_files(results: pathlib.Path, stage: str) -> list[pathlib.Path]:
    """The JUnit files a stage writes: ``STAGE.xml``, or one per lab host (``STAGE-2.xml``;
    not another stage's ``STAGE-6.12.xml``)."""
    own = re.compile(re.escape(stage) + r"(-\d+)?\.xml")
    return sorted(p for p in results.glob(f"{stage}*.xml") if own.fullmatch(p.name))


def failures(path: pathlib.Path) -> tuple[dict[str, int], list[str]]:
    """Counts (tests, failures, errors, skipped) and one line per failed or erroring test."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    lines = []
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            for outcome in ("failure", "error"):
                found = case.find(outcome)
                if found is None:
                    continue
                message = (found.get("message") or "").strip().splitlines()
                first = message[0][:200] if message else ""
                lines.append(f"{case.get('classname')}::{case.get('name')} ({outcome}) {first}")
    return counts, lines


def tail(path: pathlib.Path, n: int = TAIL_LINES) -> list[str]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace").replace("\r", "\n")
    return [line for line in text.splitlines() if line.strip()][-n:]


def summarise(results: pathlib.Path, stages: list[tuple[str, int]]) -> list[str]:
    out = []
    for name, rc in stages:
        verdict = "ok" if rc == 0 else f"FAILED (exit {rc})"
        files = junit_files(results, name)
        totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        failed: list[str] = []
        for path in files:
            counts, lines = failures(path)
            for key, value in counts.items():
                totals[key] += value
            failed += lines
        counted = (
            f"; {totals['tests']} tests, {totals['failures']} failed, "
            f"{totals['errors']} errors, {totals['skipped']} skipped"
            if files
            else ""
        )
        out.append(f"{name}: {verdict}{counted}")
        out += [f"    {line}" for line in failed]
        if rc == VM_FAILED or (rc != 0 and not files):
            log = results / f"{name}.log"
            quoted = tail(log)
            if quoted:
                out.append(f"    the last lines of {log}:")
                out += [f"    | {line}" for line in quoted]
    return out


def main(argv: list[str]) -> int:
    results = pathlib.Path(argv[1])
    stages = []
    for arg in argv[2:]:
        name, _, rc = arg.rpartition(" ")
        stages.append((name, int(rc)))
    print("\n".join(summarise(results, stages)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
