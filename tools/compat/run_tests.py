"""Run a service's own unit tests (Nova, Cinder) with or without the os-brick compat layer.

Usage: python run_tests.py --expect on|off MODULE [MODULE ...]

Before any test runs it checks that the layer really is (or is not) in effect
in this interpreter — ``import os_brick`` and the factory's iSCSI class — so a
"pass" can never come from the wrong mode.  Prints one JSON summary line
(``ran, passed, failures, errors, skipped, ...``) last; exit 0 only if all passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import unittest
import warnings


def compat_state() -> str:
    """The module of the class the factory builds for ISCSI after ``import os_brick``."""
    import os_brick  # noqa: F401  (the .pth hook enables the layer here)
    from os_brick.initiator import connector

    cls = type(connector.InitiatorConnector.factory("ISCSI", None))
    return f"{cls.__module__}.{cls.__name__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expect", choices=("on", "off"), required=True)
    parser.add_argument("--label", default="")
    parser.add_argument("modules", nargs="+")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    state = compat_state()
    on = state.startswith("brick_agent.")
    print(f"os-brick factory('ISCSI') -> {state}", file=sys.stderr)
    if on != (args.expect == "on"):
        print(f"compat layer is {'on' if on else 'off'}, expected {args.expect}", file=sys.stderr)
        return 3
    start = time.monotonic()
    suite = unittest.defaultTestLoader.loadTestsFromNames(args.modules)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1).run(suite)
    bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    summary = {
        "label": args.label,
        "compat": args.expect,
        "ran": result.testsRun,
        "passed": (result.testsRun - bad - len(result.skipped) - len(result.expectedFailures)),
        "expected_failures": len(result.expectedFailures),
        "failures": len(result.failures),
        "errors": len(result.errors),
        "skipped": len(result.skipped),
        "seconds": round(time.monotonic() - start, 1),
        "failed_tests": sorted(t.id() for t, _ in result.failures + result.errors),
    }
    print(json.dumps(summary))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
