"""The gate app: a read-only JSON view of this host's volumes for CI gates.

Meant for check/gate jobs only (e.g. verifying after a live migration that the
source host kept no orphaned device); it never attaches or detaches anything.
Safety rules, enforced by :func:`create_app`:

* it refuses to start unless ``[brick_agent] gate_enabled`` is true;
* a bind to anything but loopback needs ``gate_token``; when a token is set,
  every endpoint except ``/health`` needs ``Authorization: Bearer <token>``;
* every error is a JSON body ``{"error": <TypeName>, "message": ..., "key": ...}``
  (400 for bad requests, never a traceback) and request secrets are scrubbed
  from every response.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import ipaddress
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flask import Flask, Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from oslo_config import cfg
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import brick_agent
from brick_agent import config, errors, json_input
from brick_agent.connectors.base import Connector
from brick_agent.gate.openapi import PROTOCOL_NAMES, openapi_spec
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots
from brick_agent.secrets import MASK, Secret, mask_text

LOG = logging.getLogger(__name__)

ConnectorFactory = Callable[..., Connector]

MAX_BODY_BYTES = 1 << 20

# Keys of connection properties whose values are secrets (CHAP, DH-HMAC-CHAP).
_SECRET_KEY_PARTS = ("password", "secret", "dhchap", "psk", "token")

# HTTP status of each typed error (first match wins; unlisted BrickErrors -> 500).
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (errors.InvalidConnectionProperties, 400),
    (errors.InvalidArgument, 400),
    (errors.InvalidConnectorProtocol, 400),
    (errors.DeviceNotFound, 404),
    (errors.VolumeIdentityMismatch, 409),
    (errors.DeviceBusy, 409),
    (errors.NotSupported, 501),
    (errors.TargetUnreachable, 502),
    (errors.AuthenticationFailed, 502),
    (errors.LockTimeout, 503),
)

#: Audits that may wait (``nvme_grace`` > 0) at once; the server has more threads, so
#: /health and quick requests always find one free.
SLOW_AUDITS = 2


class GateConfigurationError(errors.ConfigurationError):
    """The gate app refuses to start with this configuration."""


class GateDisabled(GateConfigurationError):
    """``[brick_agent] gate_enabled`` is false (the default)."""


class InvalidRequest(errors.InvalidArgument):
    """The HTTP request itself is malformed (body, content type, parameters)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(message)


class Unauthorized(errors.BrickError):
    """Missing or wrong bearer token."""


class GateBusy(errors.BrickError):
    """Too many slow requests at once; retry after ``retry_after`` seconds (429)."""

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


@contextlib.contextmanager
def _slow_slot(slots: threading.Semaphore, seconds: float) -> Iterator[None]:
    """Hold one of the slow-request slots, or raise :class:`GateBusy` at once."""
    if not slots.acquire(blocking=False):
        raise GateBusy(
            f"{SLOW_AUDITS} audits with nvme_grace already run; retry later",
            retry_after=max(1, math.ceil(seconds)),
        )
    try:
        yield
    finally:
        slots.release()


def is_loopback(host: str) -> bool:
    """True if binding to ``host`` only accepts connections from this host."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


def available_protocols() -> tuple[str, ...]:
    """Protocol names whose connector this build has (its module imports)."""
    from brick_agent.connectors import connector_class

    out = []
    for name in PROTOCOL_NAMES:
        try:
            connector_class(name)
        except ImportError:
            continue
        out.append(name)
    return tuple(out)


def gate_options(conf: cfg.ConfigOpts | None) -> tuple[cfg.ConfigOpts, Any]:
    """``conf`` (a fresh default one if None) and its ``[brick_agent]`` group."""
    if conf is None:
        conf = config.new_conf()
    try:
        opts = conf.brick_agent
        opts.gate_enabled  # noqa: B018 - raises if the options are not registered
    except (cfg.NoSuchOptError, AttributeError):
        config.register_opts(conf)
        opts = conf.brick_agent
    return conf, opts


def check_gate_config(conf: cfg.ConfigOpts | None) -> tuple[cfg.ConfigOpts, Any]:
    """Raise :class:`GateConfigurationError` unless ``conf`` allows the gate to run."""
    conf, opts = gate_options(conf)
    if not opts.gate_enabled:
        raise GateDisabled(
            "the gate app is disabled: set [brick_agent] gate_enabled = true (gate/CI hosts "
            "only, never production)"
        )
    if not is_loopback(str(opts.gate_host)) and not opts.gate_token:
        raise GateConfigurationError(
            f"refusing to bind the gate app to non-loopback address {opts.gate_host!r} "
            "without [brick_agent] gate_token"
        )
    return conf, opts


class _GateJsonProvider(DefaultJSONProvider):
    """JSON that never fails on what connectors return, and never reveals a Secret."""

    sort_keys = True

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, Secret):
            return MASK
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        if hasattr(o, "to_dict"):
            return o.to_dict()
        return str(o)


def _secret_values(value: Any, key: str = "") -> list[str]:
    """String values stored under secret-looking keys anywhere in ``value``."""
    out: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            out += _secret_values(v, str(k))
    elif isinstance(value, list):
        for v in value:
            out += _secret_values(v, key)
    elif isinstance(value, str) and value and any(p in key.lower() for p in _SECRET_KEY_PARTS):
        out.append(value)
    return out


def _status_of(exc: BaseException) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: BaseException, message: str | None = None) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {
        "error": type(exc).__name__,
        "message": str(exc) if message is None else message,
        "key": getattr(exc, "key", None),
    }


def _protocol_arg(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(
            f"{where} must be a protocol name (ISCSI, NVMEOF, FIBRE_CHANNEL)", key="protocol"
        )
    return value.strip().upper()


MAX_NVME_GRACE = 60.0


def _grace_arg(values: list[str]) -> float:
    """The audit's ``nvme_grace`` query parameter: seconds, 0 to MAX_NVME_GRACE."""
    if not values:
        return 0.0
    if len(values) > 1:
        raise InvalidRequest("give nvme_grace at most once", key="nvme_grace")
    try:
        grace = float(values[0])
    except ValueError:
        grace = -1.0
    if not 0.0 <= grace <= MAX_NVME_GRACE:  # also rejects nan
        raise InvalidRequest(
            f"nvme_grace must be a number of seconds from 0 to {MAX_NVME_GRACE:g}", key="nvme_grace"
        )
    return grace


def _json_object() -> dict[str, Any]:
    """The request body as a JSON object, or :class:`InvalidRequest`."""
    if not request.is_json:
        raise InvalidRequest(
            "request body must be JSON (Content-Type: application/json)", key="Content-Type"
        )
    try:
        data = json_input.loads(request.get_data(cache=True))
    except json_input.JsonInputError as exc:
        raise InvalidRequest(f"request body: {exc}", key="body") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object", key="body")
    g.gate_secrets = _secret_values(data)
    return data


def create_app(
    conf: cfg.ConfigOpts | None = None,
    roots: HostRoots = DEFAULT_ROOTS,
    connector_factory: ConnectorFactory | None = None,
) -> Flask:
    """Build the gate app for the host at ``roots``.

    ``connector_factory(protocol, conf=..., roots=...)`` builds connectors
    (default :func:`brick_agent.connectors.factory`); it must raise
    :class:`~brick_agent.errors.InvalidConnectorProtocol` for unknown protocols.
    Raises :class:`GateConfigurationError` when ``conf`` does not allow the gate.
    """
    conf, opts = check_gate_config(conf)
    if connector_factory is None:
        from brick_agent.connectors import factory

        make_connector: ConnectorFactory = factory
        protocols: tuple[str, ...] = available_protocols()
    else:
        make_connector = connector_factory
        protocols = PROTOCOL_NAMES
    token: str | None = opts.gate_token or None
    gate = _Gate(
        conf, opts, roots, protocols, make_connector, threading.BoundedSemaphore(SLOW_AUDITS)
    )

    app = Flask("brick_agent.gate", static_folder=None)
    app.json = _GateJsonProvider(app)
    app.config["BRICK_ROOTS"] = roots
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    _add_auth(app, token)
    _add_error_handlers(app)
    _add_routes(app, gate)
    return app


# ---------------------------------------------------------------------- auth
def _add_auth(app: Flask, token: str | None) -> None:
    """The bearer token check before every request (but /health), and the scrubbing of
    request secrets and the token from every JSON response."""

    @app.before_request
    def _authorize() -> None:
        g.gate_secrets = []
        if token is None or request.path == "/health":
            return
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8"), token.encode("utf-8")
        ):
            raise Unauthorized("missing or wrong bearer token")

    @app.after_request
    def _scrub(response: Response) -> Response:
        secrets = list(getattr(g, "gate_secrets", [])) + ([token] if token else [])
        if secrets and response.mimetype == "application/json" and not response.direct_passthrough:
            text = response.get_data(as_text=True)
            cleaned = mask_text(text, secrets)
            if cleaned != text:
                response.set_data(cleaned)
        response.headers["Cache-Control"] = "no-store"
        return response


# -------------------------------------------------------------------- errors
def _add_error_handlers(app: Flask) -> None:
    """Every error as a JSON :func:`error_body`, with its HTTP status."""
    app.register_error_handler(Unauthorized, _unauthorized)
    app.register_error_handler(GateBusy, _busy)
    app.register_error_handler(errors.BrickError, _brick_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)


def _unauthorized(exc: Unauthorized):
    resp = jsonify(error_body(exc))
    resp.status_code = 401
    resp.headers["WWW-Authenticate"] = 'Bearer realm="brick_agent gate"'
    return resp


def _busy(exc: GateBusy):
    resp = jsonify(error_body(exc))
    resp.status_code = 429
    resp.headers["Retry-After"] = str(exc.retry_after)
    return resp


def _brick_error(exc: errors.BrickError):
    status = _status_of(exc)
    if status >= 500:
        LOG.error(
            "gate request %s %s failed: %s",
            request.method,
            request.path,
            mask_text(str(exc), g.get("gate_secrets", [])),
        )
    return jsonify(error_body(exc)), status


def _http_error(exc: HTTPException):
    body = {"error": type(exc).__name__, "message": exc.description, "key": None}
    resp = jsonify(body)
    resp.status_code = exc.code or 500
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        resp.headers["Allow"] = ", ".join(exc.valid_methods)
    return resp


def _unexpected(exc: Exception):
    LOG.exception("gate request %s %s failed unexpectedly", request.method, request.path)
    return jsonify(
        {
            "error": "InternalError",
            "message": "internal error; the gate's log has the details",
            "key": None,
        }
    ), 500


# ----------------------------------------------------------------- endpoints
def _add_routes(app: Flask, gate: _Gate) -> None:
    """The read-only endpoints (each endpoint named after its :class:`_Gate` method)."""
    app.add_url_rule("/health", view_func=gate.health, methods=["GET"])
    app.add_url_rule("/openapi.json", view_func=gate.openapi, methods=["GET"])
    app.add_url_rule("/v1/connector", view_func=gate.connector_properties, methods=["GET"])
    app.add_url_rule("/v1/volumes", view_func=gate.volumes, methods=["GET"])
    app.add_url_rule("/v1/paths", view_func=gate.paths, methods=["POST"])
    app.add_url_rule("/v1/audit", view_func=gate.audit, methods=["GET", "POST"])


@dataclasses.dataclass(frozen=True)
class _Gate:
    """What the endpoints share: the configuration, the host, the connectors and the
    slots of slow audits."""

    conf: cfg.ConfigOpts
    opts: Any
    roots: HostRoots
    protocols: tuple[str, ...]
    make_connector: ConnectorFactory
    slow_slots: threading.Semaphore

    def connector_for(self, protocol: str) -> Connector:
        try:
            return self.make_connector(protocol, conf=self.conf, roots=self.roots)
        except ImportError as exc:
            LOG.warning("no connector module for %s: %s", protocol, exc)
            raise errors.NotSupported(
                f"the {protocol} connector is not available on this build"
            ) from None

    def health(self):
        return jsonify({"status": "ok", "version": brick_agent.__version__})

    def openapi(self):
        return jsonify(openapi_spec(self.protocols))

    def connector_properties(self):
        from brick_agent import connector_properties as cp

        props = cp.get_connector_properties(
            multipath=bool(self.opts.use_multipath),
            enforce_multipath=bool(self.opts.enforce_multipath),
            roots=self.roots,
            create_nvme_identity=False,
        )
        return jsonify(props)

    def volumes(self):
        from brick_agent.connectors import PROTOCOLS

        asked = request.args.getlist("protocol")
        if len(asked) > 1:
            raise InvalidRequest("give at most one protocol", key="protocol")
        if asked:
            protocol = _protocol_arg(asked[0], "query parameter 'protocol'")
            found = self.connector_for(protocol).get_all_available_volumes()
            return jsonify({"volumes": {protocol: list(found)}, "errors": {}})
        result: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        for protocol in PROTOCOLS:
            try:
                result[protocol] = list(self.connector_for(protocol).get_all_available_volumes())
            except errors.BrickError as exc:
                failures[protocol] = error_body(exc)
        return jsonify({"volumes": result, "errors": failures})

    def paths(self):
        data = _json_object()
        unknown = sorted(set(data) - {"protocol", "connection_properties"})
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}", key=unknown[0])
        protocol = _protocol_arg(data.get("protocol"), "field 'protocol'")
        props = data.get("connection_properties")
        if not isinstance(props, dict):
            raise InvalidRequest(
                "field 'connection_properties' must be a JSON object", key="connection_properties"
            )
        # Cinder's {'driver_volume_type': ..., 'data': {...}} envelope is accepted too.
        if isinstance(props.get("data"), dict) and "driver_volume_type" in props:
            props = props["data"]
        connector = self.connector_for(protocol)
        found = list(connector.get_volume_paths(props))
        return jsonify(
            {
                "protocol": protocol,
                "paths": found,
                "present": bool(found),
                "search_path": connector.get_search_path(),
                "host": socket.gethostname(),
                **connector.volume_presence(props).to_dict(),
            }
        )

    def audit(self):
        from brick_agent import audit as audit_mod

        expected = _posted_expected() if request.method == "POST" else None
        ledger = self._expected_ledger(posted=expected is not None)
        grace = _grace_arg(request.args.getlist("nvme_grace"))
        with _slow_slot(self.slow_slots, grace) if grace > 0 else contextlib.nullcontext():
            if ledger is not None:
                report = audit_mod.audit_against_ledger(ledger, self.roots, nvme_grace=grace)
            else:
                report = audit_mod.audit(roots=self.roots, expected=expected, nvme_grace=grace)
        return jsonify(report.to_dict())

    def _expected_ledger(self, posted: bool) -> Any:
        """The attachment ledger when the audit's query says ``expected=ledger`` (the volumes
        of ``[brick_agent] ledger_path`` are the expected ones), else None."""
        source = request.args.getlist("expected")
        if not source:
            return None
        if source != ["ledger"] or posted:
            raise InvalidRequest(
                "query 'expected' accepts only 'ledger', once, and not with a POSTed list",
                key="expected",
            )
        from brick_agent.ledger import AttachmentLedger

        ledger = AttachmentLedger.from_conf(self.conf)
        if ledger is None:
            raise InvalidRequest(
                "no attachment ledger: [brick_agent] ledger_path is empty", key="expected"
            )
        return ledger


def _posted_expected() -> list[Any]:
    """The expected volumes POSTed to the audit (``{"expected": [...]}``)."""
    from brick_agent import audit as audit_mod

    data = _json_object()
    unknown = sorted(set(data) - {"expected"})
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}", key=unknown[0])
    raw = data.get("expected")
    if not isinstance(raw, list):
        raise InvalidRequest("field 'expected' must be a list of volumes", key="expected")
    return [audit_mod.ExpectedVolume.from_dict(item, index=i) for i, item in enumerate(raw)]
