"""Check across hosts that a volume is where it should be and nowhere else.

After a live migration the volume must be attached on the destination and leave
nothing behind on the source.  This asks each host's gate app
(``brick-agent gate``) for the volume's paths (``POST /v1/paths``) and checks::

    brick-agent verify-detach --protocol ISCSI --properties vol.json \\
        --present http://dest:8776 --absent http://src:8776 [--token T]

With ``--audit`` every ``--absent`` host must also pass the gate's leftover
audit (``GET /v1/audit``): no orphaned session, device, map, controller or link,
even one the volume's own paths no longer show.

Prints a JSON verdict on stdout.  Exit status: 0 pass, 1 fail (present where it
should be absent or the reverse), 2 usage error or a host unreachable / answering
with an error.  Standard library only (urllib): on a CI node without brick_agent's
dependencies, ``PYTHONPATH=<checkout> python3 -m brick_agent.gate.verify ...`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

PROG = "brick-agent verify-detach"

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_ERROR = 2


class HostError(Exception):
    """A gate could not be asked (unreachable, HTTP error, not JSON)."""


def _call(req: urllib.request.Request, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc)
            text = f"{detail.get('error')}: {detail.get('message')}"
        except (ValueError, AttributeError):
            text = exc.reason
        raise HostError(f"HTTP {exc.code} {text}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HostError(f"unreachable: {reason}") from None


def _request(
    url: str, token: str | None, body: dict[str, Any] | None = None
) -> urllib.request.Request:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method="GET" if body is None else "POST",
        headers={"Accept": "application/json"},
    )
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    return req


def ask_audit(base_url: str, token: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """The gate's leftover audit report of the host at ``base_url``."""
    data = _call(_request(base_url.rstrip("/") + "/v1/audit", token), timeout)
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise HostError("answer is not an audit report")
    return data


def ask_paths(
    base_url: str,
    protocol: str,
    properties: dict[str, Any],
    token: str | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """The gate's ``/v1/paths`` answer for this volume at ``base_url``."""
    req = _request(
        base_url.rstrip("/") + "/v1/paths",
        token,
        {"protocol": protocol, "connection_properties": properties},
    )
    data = _call(req, timeout)
    if not isinstance(data, dict) or not isinstance(data.get("paths"), list):
        raise HostError("answer is not a paths document")
    return data


def verify(
    present: Sequence[str],
    absent: Sequence[str],
    protocol: str,
    properties: dict[str, Any],
    token: str | None = None,
    timeout: float = 10.0,
    audit: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Ask every host; return (exit status, verdict document)."""
    hosts: list[dict[str, Any]] = []
    status = EXIT_PASS
    for role, urls in (("present", present), ("absent", absent)):
        for url in urls:
            entry: dict[str, Any] = {"url": url, "expect": role}
            try:
                answer = ask_paths(url, protocol, properties, token, timeout)
            except HostError as exc:
                entry.update(ok=False, error=str(exc))
                status = EXIT_ERROR
            else:
                paths = [str(p) for p in answer["paths"]]
                ok = bool(paths) if role == "present" else not paths
                entry.update(ok=ok, paths=paths)
                if audit and role == "absent":
                    try:
                        report = ask_audit(url, token, timeout)
                    except HostError as exc:
                        entry.update(ok=False, error=f"audit: {exc}")
                        status = EXIT_ERROR
                    else:
                        entry["findings"] = report["findings"]
                        if report.get("errors"):
                            entry["audit_errors"] = report["errors"]
                        entry["ok"] = ok = ok and report.get("clean") is True
                if not ok and status == EXIT_PASS:
                    status = EXIT_FAIL
            hosts.append(entry)
    verdict = {
        "verdict": {EXIT_PASS: "pass", EXIT_FAIL: "fail", EXIT_ERROR: "error"}[status],
        "protocol": protocol,
        "hosts": hosts,
    }
    return status, verdict


def _load_properties(source: str, stdin: TextIO) -> dict[str, Any]:
    if source == "-":
        data = json.load(stdin)
    else:
        with open(source, encoding="utf-8") as handle:
            data = json.load(handle)
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]  # Cinder's {driver_volume_type, data} envelope
    if not isinstance(data, dict):
        raise ValueError("connection properties must be a JSON object")
    return data


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 pass, 1 fail, 2 usage error or host unreachable",
    )
    parser.add_argument(
        "--present",
        action="append",
        default=[],
        metavar="URL",
        help="gate base URL of a host where the volume must be attached (repeatable)",
    )
    parser.add_argument(
        "--absent",
        action="append",
        default=[],
        metavar="URL",
        help="gate base URL of a host where the volume must be gone (repeatable)",
    )
    parser.add_argument("--protocol", required=True, help="ISCSI, NVMEOF or FIBRE_CHANNEL")
    parser.add_argument(
        "--properties",
        required=True,
        metavar="FILE",
        help="JSON connection properties ('-' for stdin)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("BRICK_GATE_TOKEN"),
        help="bearer token of the gates (default $BRICK_GATE_TOKEN)",
    )
    parser.add_argument(
        "--audit",
        action="store_true",
        help="also require a clean leftover audit on every --absent host",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per request (default 10)"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    prog: str = PROG,
) -> int:
    """``brick-agent verify-detach ARGS``: print the JSON verdict, return the exit status."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_ERROR if exc.code else EXIT_PASS
    if not args.present and not args.absent:
        print(f"{prog}: give at least one --present or --absent URL", file=sys.stderr)
        return EXIT_ERROR
    try:
        properties = _load_properties(args.properties, stdin)
    except (OSError, ValueError) as exc:
        print(f"{prog}: cannot read properties: {exc}", file=sys.stderr)
        return EXIT_ERROR
    status, verdict = verify(
        args.present,
        args.absent,
        args.protocol,
        properties,
        args.token,
        args.timeout,
        audit=args.audit,
    )
    json.dump(verdict, stdout, indent=2, sort_keys=True)
    stdout.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main(prog="python -m brick_agent.gate.verify"))
