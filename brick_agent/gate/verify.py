"""Check across hosts that a volume is where it should be and nowhere else.

After a live migration the volume must be attached on the destination and leave
nothing behind on the source.  This asks each host's gate app
(``brick-agent gate``) what it has of the volume (``POST /v1/paths``)::

    BRICK_GATE_TOKEN_FILE=/etc/ci/gate-token brick-agent verify-detach --protocol ISCSI \\
        --properties vol.json --present http://dest:8776 --absent http://src:8776

A ``--present`` host passes when it has the volume with every path its properties name;
an ``--absent`` host when nothing of the volume is left: no path, device, map, link
(dangling ones naming the volume included), nor a session or controller of its target
left without any volume.  With ``--audit`` every ``--absent`` host must also pass the
gate's leftover audit (``GET /v1/audit``): no orphan at all, of any volume.

Output: a JSON verdict on stdout (``--human``: a summary naming each host, the volume and
what is wrong); ``--junit FILE`` also writes one JUnit test case per host.  The bearer
token of the gates comes from ``--token-file``, ``$BRICK_GATE_TOKEN_FILE`` or
``$BRICK_GATE_TOKEN``, never the command line (every user of a host can read it there).
Every request has ``--timeout`` seconds; unreachable gates, 5xx and 429 answers are asked
again ``--retries`` times (1, 2, 4... s apart, at most 10 s, or the gate's Retry-After up
to 10 s), so a run takes at most hosts x (retries + 1) x (timeout + 10) seconds.

Exit status: 0 pass, 1 fail (something of the volume where it must be gone, or a path
missing where it must be), 2 usage error, 3 a gate could not be asked (unreachable, an
HTTP error, not a gate's answer) and nothing failed.  Standard library only: on a CI node
without brick_agent's dependencies, ``PYTHONPATH=<checkout> python3 -m
brick_agent.gate.verify ...`` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TextIO
from xml.etree import ElementTree

PROG = "brick-agent verify-detach"

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
#: kept for callers of the earlier name
EXIT_ERROR = EXIT_USAGE

MAX_BACKOFF = 10.0
TOKEN_ENV = "BRICK_GATE_TOKEN"
TOKEN_FILE_ENV = "BRICK_GATE_TOKEN_FILE"


class HostError(Exception):
    """A gate could not be asked (unreachable, HTTP error, not JSON)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: None: asking again will not help (4xx); else seconds to wait first (0: backoff)
        self.retry_after = retry_after


class UsageError(Exception):
    """Bad options, unreadable properties or token."""


@dataclasses.dataclass(frozen=True)
class Asker:
    """How the gates are asked: token, per-request timeout, bounded retries."""

    token: str | None = None
    timeout: float = 10.0
    retries: int = 2
    sleep: Callable[[float], None] = time.sleep

    def call(self, url: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer of ``url`` (GET, or POST of ``body``), asked again on failures
        that may pass (unreachable, 5xx, 429)."""
        attempt = 0
        while True:
            try:
                return _call(_request(url, self.token, body), self.timeout)
            except HostError as exc:
                if exc.retry_after is None or attempt >= self.retries:
                    if attempt:
                        raise HostError(f"{exc} (after {attempt + 1} attempts)") from None
                    raise
                self.sleep(min(MAX_BACKOFF, exc.retry_after or 2.0**attempt))
                attempt += 1


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
        raise HostError(f"HTTP {exc.code} {text}", _retry_after(exc)) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HostError(f"unreachable: {reason}", 0.0) from None


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    """Seconds before asking again after this HTTP error; None: do not ask again."""
    if exc.code != 429 and exc.code < 500:
        return None
    try:
        return max(0.0, float(exc.headers.get("Retry-After", "0")))
    except (TypeError, ValueError):
        return 0.0


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


def ask_audit(base_url: str, asker: Asker) -> dict[str, Any]:
    """The gate's leftover audit report of the host at ``base_url``."""
    data = asker.call(base_url.rstrip("/") + "/v1/audit")
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise HostError("answer is not an audit report")
    return data


def ask_paths(
    base_url: str, protocol: str, properties: dict[str, Any], asker: Asker
) -> dict[str, Any]:
    """The gate's ``/v1/paths`` answer for this volume at ``base_url``."""
    data = asker.call(
        base_url.rstrip("/") + "/v1/paths",
        {"protocol": protocol, "connection_properties": properties},
    )
    if not isinstance(data, dict) or not isinstance(data.get("paths"), list):
        raise HostError("answer is not a paths document")
    return data


# ----------------------------------------------------------------- judging


def _objects(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The volume's objects in a gate's answer (a gate before 'objects': its paths)."""
    if isinstance(answer.get("objects"), list):
        return [o for o in answer["objects"] if isinstance(o, dict)]
    return [{"kind": "path", "name": str(p), "detail": ""} for p in answer["paths"]]


def _describe(obj: dict[str, Any]) -> str:
    detail = f" ({obj['detail']})" if obj.get("detail") else ""
    return f"{obj.get('kind')} {obj.get('name')}{detail}"


def judge_absent(answer: dict[str, Any]) -> list[str]:
    """What is left of the volume on a host where it must be gone (its paths count only
    through its objects: a path to a ``shared`` namespace is not left behind)."""
    return [f"left behind: {_describe(o)}" for o in _objects(answer)]


def judge_present(answer: dict[str, Any]) -> list[str]:
    """What is missing of the volume on a host where it must be attached."""
    if not answer["paths"]:
        return ["the volume is not attached: no path"]
    return [f"missing path: {m}" for m in answer.get("missing") or []]


def _check_host(
    url: str, role: str, protocol: str, properties: dict[str, Any], asker: Asker, audit: bool
) -> dict[str, Any]:
    entry: dict[str, Any] = {"url": url, "host": url, "expect": role}
    try:
        answer = ask_paths(url, protocol, properties, asker)
    except HostError as exc:
        entry.update(ok=False, error=str(exc), problems=[f"gate not asked: {exc}"])
        return entry
    entry["host"] = str(answer.get("host") or url)
    entry.update(
        paths=[str(p) for p in answer["paths"]],
        objects=_objects(answer),
        missing=list(answer.get("missing") or []),
        shared=list(answer.get("shared") or []),
    )
    problems = judge_present(answer) if role == "present" else judge_absent(answer)
    if audit and role == "absent":
        try:
            report = ask_audit(url, asker)
        except HostError as exc:
            entry.update(ok=False, error=f"audit: {exc}", problems=problems + [f"audit: {exc}"])
            return entry
        entry["findings"] = report["findings"]
        if report.get("errors"):
            entry["audit_errors"] = report["errors"]
        problems += [f"audit: {f.get('kind')} {f.get('detail')}" for f in report["findings"]]
        problems += [f"audit error: {e}" for e in report.get("errors") or []]
        if report.get("clean") is not True and not report["findings"]:
            problems.append("audit: the host's report is not clean")
    entry.update(ok=not problems, problems=problems)
    return entry


def volume_label(protocol: str, properties: dict[str, Any]) -> str:
    """A name for the volume in reports: its id, else its address and identity."""
    for key in ("volume_id", "vol_uuid"):
        if properties.get(key):
            return str(properties[key])
    if protocol.upper().startswith("NVME"):
        ident = properties.get("volume_nguid") or properties.get("ns_id")
        return f"{properties.get('target_nqn')} {ident or ''}".strip()
    target = properties.get("target_iqn") or properties.get("target_wwn")
    return f"{target} LUN {properties.get('target_lun')}"


def verify(
    present: Sequence[str],
    absent: Sequence[str],
    protocol: str,
    properties: dict[str, Any],
    asker: Asker | None = None,
    audit: bool = False,
    volume: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Ask every host; return (exit status, verdict document)."""
    asker = asker or Asker()
    hosts = [
        _check_host(url, role, protocol, properties, asker, audit)
        for role, urls in (("present", present), ("absent", absent))
        for url in urls
    ]
    if any(not h["ok"] and "error" not in h for h in hosts):
        status = EXIT_FAIL
    elif any("error" in h for h in hosts):
        status = EXIT_UNREACHABLE
    else:
        status = EXIT_PASS
    verdict = {
        "verdict": {EXIT_PASS: "pass", EXIT_FAIL: "fail", EXIT_UNREACHABLE: "error"}[status],
        "protocol": protocol,
        "volume": volume or volume_label(protocol, properties),
        "hosts": hosts,
    }
    return status, verdict


# ----------------------------------------------------------------- reports


def human_summary(verdict: dict[str, Any]) -> str:
    """One line for the verdict, then one per host (and one per problem)."""
    lines = [
        f"verify-detach {verdict['protocol']} volume {verdict['volume']}: "
        f"{verdict['verdict'].upper()}"
    ]
    for h in verdict["hosts"]:
        where = h["host"] if h["host"] == h["url"] else f"{h['host']} ({h['url']})"
        want = "has the volume" if h["expect"] == "present" else "has nothing of the volume"
        if h["ok"]:
            extra = f": {', '.join(h.get('paths') or [])}" if h["expect"] == "present" else ""
            lines.append(f"  ok    {where} {want}{extra}")
            lines += [f"        kept, shared: {_describe(o)}" for o in h.get("shared") or []]
            continue
        mark = "ERROR" if "error" in h else "FAIL"
        must = "must have the volume" if h["expect"] == "present" else "must have nothing of it"
        lines.append(f"  {mark:<5} {where} {must}")
        lines += [f"        {p}" for p in h["problems"]]
    return "\n".join(lines)


def junit_xml(verdict: dict[str, Any], seconds: float) -> bytes:
    """The verdict as a JUnit XML test suite: one test case per host."""
    suite = ElementTree.Element(
        "testsuite",
        name="verify-detach",
        tests=str(len(verdict["hosts"])),
        failures=str(sum(1 for h in verdict["hosts"] if not h["ok"] and "error" not in h)),
        errors=str(sum(1 for h in verdict["hosts"] if "error" in h)),
        time=f"{seconds:.3f}",
    )
    for h in verdict["hosts"]:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=f"verify-detach.{verdict['protocol']}",
            name=f"volume {verdict['volume']} {h['expect']} on {h['host']}",
        )
        if not h["ok"]:
            tag = "error" if "error" in h else "failure"
            node = ElementTree.SubElement(case, tag, message="; ".join(h["problems"])[:1000])
            node.text = "\n".join(h["problems"])
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)


# --------------------------------------------------------------- arguments


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


def read_token(token_file: str | None, environ: dict[str, str]) -> str | None:
    """The gates' bearer token: ``token_file``, else the file ``$BRICK_GATE_TOKEN_FILE``
    names, else ``$BRICK_GATE_TOKEN``; None when none is given."""
    path = token_file or environ.get(TOKEN_FILE_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror}") from None
        if not token:
            raise UsageError(f"the token file {path} is empty")
        return token
    return environ.get(TOKEN_ENV) or None


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 pass, 1 fail, 2 usage error, 3 a gate could not be asked",
    )
    add = parser.add_argument
    add(
        "--present",
        action="append",
        default=[],
        metavar="URL",
        help="gate base URL of a host where the volume must be attached (repeatable)",
    )
    add(
        "--absent",
        action="append",
        default=[],
        metavar="URL",
        help="gate base URL of a host where nothing of the volume may be left (repeatable)",
    )
    add("--protocol", required=True, help="ISCSI, NVMEOF or FIBRE_CHANNEL")
    add(
        "--properties",
        required=True,
        metavar="FILE",
        help="JSON connection properties ('-' for stdin)",
    )
    add("--volume", metavar="NAME", help="the volume's name in reports (default: its id)")
    add(
        "--token-file",
        metavar="FILE",
        help=f"file holding the gates' bearer token (default ${TOKEN_FILE_ENV}, "
        f"else the token in ${TOKEN_ENV})",
    )
    add("--token", help=argparse.SUPPRESS)  # refused: see main()
    add(
        "--audit",
        action="store_true",
        help="also require a clean leftover audit on every --absent host",
    )
    add("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    add(
        "--retries",
        type=int,
        default=2,
        help="times an unreachable or failing (5xx, 429) gate is asked again (default 2)",
    )
    add("--human", action="store_true", help="print a summary instead of the JSON verdict")
    add("--junit", metavar="FILE", help="also write the verdict as JUnit XML to FILE")
    return parser


def _parse(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, stdin: TextIO
) -> tuple[argparse.Namespace, dict[str, Any], Asker]:
    args = parser.parse_args(argv)
    if args.token is not None:
        raise UsageError(
            "--token is refused: a token on the command line is visible to every user of "
            f"the host; use --token-file or ${TOKEN_FILE_ENV} / ${TOKEN_ENV}"
        )
    if not args.present and not args.absent:
        raise UsageError("give at least one --present or --absent URL")
    if not 0 < args.timeout <= 600 or not 0 <= args.retries <= 10:
        raise UsageError("--timeout must be 0-600 s and --retries 0-10")
    try:
        properties = _load_properties(args.properties, stdin)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read properties: {exc}") from None
    asker = Asker(read_token(args.token_file, dict(os.environ)), args.timeout, args.retries)
    return args, properties, asker


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    prog: str = PROG,
) -> int:
    """``brick-agent verify-detach ARGS``: print the verdict, return the exit status."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    parser = build_parser(prog)
    try:
        args, properties, asker = _parse(parser, argv, stdin)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_PASS
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    start = time.monotonic()
    status, verdict = verify(
        args.present, args.absent, args.protocol, properties, asker, args.audit, args.volume
    )
    if args.junit:
        try:
            with open(args.junit, "wb") as handle:
                handle.write(junit_xml(verdict, time.monotonic() - start))
        except OSError as exc:
            print(f"{prog}: cannot write {args.junit}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    if args.human:
        stdout.write(human_summary(verdict) + "\n")
    else:
        json.dump(verdict, stdout, indent=2, sort_keys=True)
        stdout.write("\n")
    return status


if __name__ == "__main__":
    sys.exit(main(prog="python -m brick_agent.gate.verify"))
