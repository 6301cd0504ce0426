"""The ``brick-agent`` command: attach, detach and inspect volumes from a shell.

Machine-readable JSON on stdout by default (``--human`` for a table), progress and
errors on stderr, and exit codes a script can branch on (see ``EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from brick_agent import errors, json_input

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_IDENTITY = 4
EXIT_UNREACHABLE = 5
EXIT_LEFTOVERS = 6
EXIT_UNHEALTHY = 7  # health: a configured protocol cannot work

EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.InvalidConnectionProperties, EXIT_USAGE),
    (errors.InvalidArgument, EXIT_USAGE),
    (errors.InvalidConnectorProtocol, EXIT_USAGE),
    (errors.ConfigurationError, EXIT_USAGE),
    (errors.DeviceNotFound, EXIT_NOT_FOUND),
    (errors.VolumeIdentityMismatch, EXIT_IDENTITY),
    (errors.TargetUnreachable, EXIT_UNREACHABLE),
    (errors.AuthenticationFailed, EXIT_UNREACHABLE),
    (errors.LeftoversRemain, EXIT_LEFTOVERS),
)


#: Commands that act on the host through privileged entrypoints (never on a --host-root tree).
STATE_CHANGING = frozenset({"connect", "disconnect", "extend"})
#: The multi-host detach verifier (brick_agent.gate.verify, an HTTP client of the gates): it
#: takes its own options (everything after the command name), prints its own JSON verdict
#: and has its own exit statuses (0 pass, 1 fail, 2 usage error or a host unreachable).
VERIFY_DETACH = "verify-detach"


def _refuse_host_root(args: argparse.Namespace) -> None:
    """A state-changing command with --host-root would read the tree but act on this host."""
    if args.host_root and args.command in STATE_CHANGING:
        raise errors.InvalidArgument(
            f"'{args.command}' changes this host (logins, scans, device removal) and cannot "
            f"run against --host-root {args.host_root!r}, which is only read; --host-root "
            "works with read-only commands (connector, paths, volumes, audit, gate)"
        )


def _exit_code(exc: BaseException) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_ERROR


def _load_json(source: str, what: str, stdin: TextIO) -> Any:
    try:
        if source == "-":
            return json_input.loads(stdin.read())
        with open(source, encoding="utf-8") as handle:
            return json_input.loads(handle.read())
    except (OSError, ValueError) as exc:  # JsonInputError is a ValueError
        raise errors.InvalidArgument(f"cannot read {what} from {source}: {exc}") from None


def _connection_properties(args: argparse.Namespace, stdin: TextIO) -> dict[str, Any]:
    data = _load_json(args.properties, "connection properties", stdin)
    # Accept both the bare properties and Cinder's {'driver_volume_type', 'data'} envelope.
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    if not isinstance(data, dict):
        raise errors.InvalidArgument("connection properties must be a JSON object")
    return data


def _connector(args: argparse.Namespace):
    from brick_agent.connectors import factory

    return factory(
        args.protocol, use_multipath=args.multipath or None, conf=_conf(args), roots=_roots(args)
    )


def _roots(args: argparse.Namespace):
    from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

    return HostRoots.under(args.host_root) if args.host_root else DEFAULT_ROOTS


def _conf(args: argparse.Namespace):
    """Parse the configuration once per invocation and apply it process-wide.

    The privileged side takes it (as the default configuration) at its first call: a
    command that makes none (health checks, audit, listings) never imports oslo.privsep
    and eventlet (``health --check`` started in 0.32 s instead of 0.85 s on a host)."""
    if getattr(args, "conf", None) is not None:
        return args.conf
    from brick_agent import config, locking

    conf = config.new_conf(config_files=args.config_file or config.default_config_files())
    config.set_default_conf(conf)
    locking.configure(conf)
    args.conf = conf
    return conf


def cmd_connector(args: argparse.Namespace, stdin: TextIO) -> Any:
    from brick_agent.connector_properties import get_connector_properties

    _conf(args)
    return get_connector_properties(
        my_ip=args.my_ip,
        multipath=args.multipath,
        enforce_multipath=args.enforce_multipath,
        host=args.host,
        roots=_roots(args),
        create_nvme_identity=not args.host_root,
    )


def cmd_connect(args: argparse.Namespace, stdin: TextIO) -> Any:
    props = _connection_properties(args, stdin)
    connector = _connector(args)
    _progress(f"attaching {args.protocol} volume...")
    return connector.connect_volume(props)


def cmd_disconnect(args: argparse.Namespace, stdin: TextIO) -> Any:
    props = _connection_properties(args, stdin)
    device_info = _load_json(args.device_info, "device info", stdin) if args.device_info else None
    connector = _connector(args)
    _progress(f"detaching {args.protocol} volume...")
    connector.disconnect_volume(
        props, device_info, force=args.force, ignore_errors=args.ignore_errors
    )
    return {"disconnected": True}


def cmd_extend(args: argparse.Namespace, stdin: TextIO) -> Any:
    props = _connection_properties(args, stdin)
    return {"size_bytes": _connector(args).extend_volume(props)}


def cmd_paths(args: argparse.Namespace, stdin: TextIO) -> Any:
    props = _connection_properties(args, stdin)
    return _connector(args).get_volume_paths(props)


def cmd_volumes(args: argparse.Namespace, stdin: TextIO) -> Any:
    from brick_agent.connectors import PROTOCOLS

    protocols = [args.protocol] if args.protocol else list(PROTOCOLS)
    result: dict[str, Any] = {}
    for protocol in protocols:
        args.protocol = protocol
        result[protocol] = _connector(args).get_all_available_volumes()
    return result


def cmd_audit(args: argparse.Namespace, stdin: TextIO) -> Any:
    from brick_agent.audit import ExpectedVolume, audit, audit_against_ledger

    if args.expected and args.ledger:
        raise errors.InvalidArgument("give --expected or --ledger, not both")
    if args.ledger:
        from brick_agent.ledger import AttachmentLedger

        path = args.ledger if args.ledger != "-" else _conf(args).brick_agent.ledger_path
        if not path:
            raise errors.InvalidArgument("no ledger: [brick_agent] ledger_path is empty")
        report = audit_against_ledger(AttachmentLedger(os.path.abspath(path)), _roots(args))
    else:
        expected = None
        if args.expected:
            data = _load_json(args.expected, "expected volumes", stdin)
            if not isinstance(data, list):
                raise errors.InvalidArgument("expected volumes must be a JSON list")
            expected = [ExpectedVolume.from_dict(item, index=i) for i, item in enumerate(data)]
        report = audit(_roots(args), expected=expected)
    args.exit_code = EXIT_OK if report.clean else EXIT_LEFTOVERS
    if not args.host_root:  # this host's leftovers, for the metrics
        _record_audit(_conf(args), report)
    return report.to_dict()


def cmd_cleanup(args: argparse.Namespace, stdin: TextIO) -> Any:
    from brick_agent.cleanup import command

    result, args.exit_code = command.run(
        args, _conf(args), _roots(args), lambda src, what: _load_json(src, what, stdin)
    )
    return result


def _record_audit(conf: Any, report: Any) -> None:
    from collections import Counter

    from brick_agent import metrics

    metrics.record_audit(Counter(f.kind for f in report.findings))
    metrics.flush_conf(conf)


class Text(str):
    """A command result printed as it is (not as JSON)."""


def cmd_health(args: argparse.Namespace, stdin: TextIO) -> Any:
    from brick_agent import commands, health
    from brick_agent.health.local import start_privsep

    conf = _conf(args)
    ctx = health.Context(
        conf=conf,
        roots=_roots(args),
        run=None if args.host_root else commands.run,
        privsep_probe=None if args.host_root else lambda t: start_privsep(conf, t),
        multipath=args.multipath,
    )
    report = health.run(ctx, args.protocol, args.check or ())
    args.exit_code = EXIT_OK if report.healthy else EXIT_UNHEALTHY
    return Text("\n".join(report.lines()) + "\n") if args.human else report.to_dict()


def cmd_metrics(args: argparse.Namespace, stdin: TextIO) -> Any:
    from brick_agent import metrics

    path = metrics.state_path(_conf(args))
    if path is None:
        raise errors.InvalidArgument("no metrics: [brick_agent] ledger_path is empty")
    return Text(metrics.render(metrics.load_state(path)))


def cmd_gate(args: argparse.Namespace, stdin: TextIO) -> Any:
    from brick_agent.gate.server import serve

    serve(_conf(args), roots=_roots(args))
    return None


def cmd_os_brick_compat(args: argparse.Namespace, stdin: TextIO) -> Any:
    from brick_agent.os_brick_compat import install

    action = {"install": install.install, "uninstall": install.uninstall, "status": install.status}[
        args.action
    ]
    return action(site_dir=args.site_packages, python=args.python)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _human(value: Any, out: TextIO) -> None:
    """A readable rendering: key/value lines for objects, one row per item for lists."""
    if isinstance(value, dict):
        width = max((len(str(k)) for k in value), default=0)
        for key, item in value.items():
            if isinstance(item, (list, dict)):
                print(f"{key}:", file=out)
                _human(item, out)
            else:
                print(f"{str(key).ljust(width)}  {item}", file=out)
    elif isinstance(value, list):
        if not value:
            print("  (none)", file=out)
        for item in value:
            if isinstance(item, dict):
                print("  " + "  ".join(f"{k}={v}" for k, v in item.items()), file=out)
            else:
                print(f"  {item}", file=out)
    else:
        print(value, file=out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brick-agent", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config-file",
        action="append",
        metavar="PATH",
        help="oslo.config file with a [brick_agent] section (repeatable; "
        "default: $BRICK_AGENT_CONFIG or /etc/brick_agent/brick_agent.conf "
        "when it exists)",
    )
    parser.add_argument("--human", action="store_true", help="readable output instead of JSON")
    parser.add_argument("--debug", action="store_true", help="debug logging on stderr")
    parser.add_argument(
        "--host-root",
        metavar="DIR",
        help="read a host tree (DIR/sys, DIR/dev, DIR/etc) instead of this "
        "host, e.g. one captured for a bug report (read-only commands "
        "only: connect, disconnect and extend refuse it)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, func: Callable, help_text: str, protocol: bool = True, properties: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--multipath", action="store_true", help="use every path (dm-multipath)")
        if protocol:
            p.add_argument("protocol", help="ISCSI, NVMEOF or FIBRE_CHANNEL")
        if properties:
            p.add_argument(
                "properties",
                nargs="?",
                default="-",
                help="JSON file of connection properties ('-' or absent: stdin)",
            )
        return p

    p = add(
        "connector",
        cmd_connector,
        "print this host's connector properties",
        protocol=False,
        properties=False,
    )
    p.add_argument("--my-ip", default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--enforce-multipath", action="store_true")
    add("connect", cmd_connect, "attach a volume and print its device info")
    p = add("disconnect", cmd_disconnect, "detach a volume")
    p.add_argument("--device-info", metavar="FILE", help="JSON device info returned by connect")
    p.add_argument("--force", action="store_true", help="keep going past errors")
    p.add_argument(
        "--ignore-errors", action="store_true", help="exit 0 even when something was left behind"
    )
    add("extend", cmd_extend, "make the host see a volume's new size")
    add("paths", cmd_paths, "print the device paths of a volume present on this host")
    p = add("volumes", cmd_volumes, "list attached volumes", protocol=False, properties=False)
    p.add_argument("--protocol", default=None)
    p = add(
        "audit",
        cmd_audit,
        "look for leftovers (orphaned sessions, devices, maps, links); exit 6 when any",
        protocol=False,
        properties=False,
    )
    p.add_argument(
        "--expected",
        metavar="FILE",
        help="JSON list of volumes that should be attached "
        "({protocol, wwid|uuid|nguid}); '-' for stdin",
    )
    p.add_argument(
        "--ledger",
        metavar="FILE",
        nargs="?",
        const="-",
        default=None,
        help="expect exactly the volumes of the attachment ledger "
        "(FILE, or [brick_agent] ledger_path when FILE is omitted); "
        "without --ledger/--expected only leftovers are reported",
    )
    from brick_agent.cleanup.command import HELP, add_arguments

    add_arguments(add("cleanup", cmd_cleanup, HELP, protocol=False, properties=False))

    p = add(
        "health",
        cmd_health,
        "check what the protocols on this host need (iscsid, initiator name, multipathd, "
        "NVMe modules and host identity, HBAs, lock directory, ledger, privsep helper); "
        "exit 7 when a configured protocol cannot work",
        protocol=False,
        properties=False,
    )
    p.add_argument(
        "--protocol",
        action="append",
        type=str.upper,
        choices=("ISCSI", "NVMEOF", "FIBRE_CHANNEL"),
        help="check this protocol (repeatable; default: those this host is set up for)",
    )
    p.add_argument(
        "--check",
        action="append",
        metavar="NAME",
        help="report only this check or the checks under this prefix (iscsi.iscsid, local; "
        "repeatable), e.g. to look again at what was fixed; the privsep daemon is started "
        "only for local.privsep",
    )
    p.add_argument(  # also after the command: `brick-agent health --human`
        "--human", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    add(
        "metrics",
        cmd_metrics,
        "print the host's metrics (attach/detach latency per protocol and phase, failures, "
        "leftovers of the last audit) in the Prometheus text format",
        protocol=False,
        properties=False,
    )
    add(
        "gate",
        cmd_gate,
        "run the gate-only HTTP app (needs [brick_agent] gate_enabled)",
        protocol=False,
        properties=False,
    )
    p = add(
        "os-brick-compat",
        cmd_os_brick_compat,
        "make a Python environment's os-brick use brick_agent for iSCSI, NVMe-oF and FC "
        "(writes/removes a .pth file; restart the service after)",
        protocol=False,
        properties=False,
    )
    p.add_argument("action", choices=("install", "uninstall", "status"))
    p.add_argument(
        "--python",
        metavar="PATH",
        help="the service's Python (default: the one running brick-agent)",
    )
    p.add_argument("--site-packages", metavar="DIR", help="write into DIR instead")
    verify_help = (
        "check over HTTP, through each host's gate app, that a volume is attached "
        "where it should be and gone elsewhere (--audit: no leftovers); exit 0 pass, "
        "1 fail, 2 error (options: brick-agent verify-detach --help)"
    )
    sub.add_parser(VERIFY_DETACH, help=verify_help, description=verify_help, add_help=False)
    return parser


def main(
    argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == VERIFY_DETACH:
        from brick_agent.gate import verify

        return verify.main(rest, stdin=stdin, stdout=stdout)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        _refuse_host_root(args)
        result = args.func(args, stdin)
    except errors.BrickError as exc:
        print(f"brick-agent: {type(exc).__name__}: {exc}", file=sys.stderr)
        if isinstance(exc, errors.LeftoversRemain):
            json.dump({"error": type(exc).__name__, "leftovers": exc.leftovers}, stdout)
            stdout.write("\n")
        return _exit_code(exc)
    if result is None:
        return EXIT_OK
    if isinstance(result, Text):
        stdout.write(result)
    elif args.human:
        _human(result, stdout)
    else:
        json.dump(result, stdout, indent=2, sort_keys=True, default=str)
        stdout.write("\n")
    return getattr(args, "exit_code", EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
