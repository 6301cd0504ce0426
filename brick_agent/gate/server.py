"""Serve the gate app with a real WSGI server: waitress.

Why waitress: it is pure Python (no compiler, wheels for every platform, installs
from PyPI with pip alone), production-grade (HTTP/1.1, keep-alive, request size
limits, slow-client buffering), multi-threaded in one process without forking
(the gate has no shared state worth forking for, and fork-based servers such as
gunicorn do not mix well with oslo.privsep daemons or threads), and embeddable:
:func:`make_server` returns a server object a test can run in a thread on port 0.
Flask's own development server is not meant for services; cheroot would work too
but waitress's smaller API and clean shutdown suit a gate tool better.

``brick-agent gate`` calls :func:`serve`.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import Any

from oslo_config import cfg

from brick_agent.gate.app import (
    MAX_BODY_BYTES,
    GateConfigurationError,
    check_gate_config,
    create_app,
)
from brick_agent.host.roots import DEFAULT_ROOTS, HostRoots

LOG = logging.getLogger(__name__)

THREADS = 4


def make_server(
    conf: cfg.ConfigOpts | None,
    roots: HostRoots = DEFAULT_ROOTS,
    *,
    host: str | None = None,
    port: int | None = None,
    connector_factory: Any = None,
) -> Any:
    """A bound (not yet running) waitress server of the gate app.

    ``host``/``port`` override ``gate_host``/``gate_port`` (``port=0`` picks a free
    port: read it from ``server.effective_port``).  An overriding ``host`` must obey
    the same rule as the configured one (non-loopback needs ``gate_token``).
    Raises :class:`~brick_agent.gate.app.GateConfigurationError` when the
    configuration does not allow the gate.
    """
    import waitress.server

    conf, opts = check_gate_config(conf)
    bind_host = str(opts.gate_host) if host is None else host
    bind_port = int(opts.gate_port) if port is None else int(port)
    if host is not None:
        conf.set_override("gate_host", host, group="brick_agent")
        try:
            check_gate_config(conf)
        finally:
            conf.clear_override("gate_host", group="brick_agent")
    from brick_agent import privileged

    privileged.configure(conf)  # applied before the first privileged call
    app = create_app(conf, roots=roots, connector_factory=connector_factory)
    server = waitress.server.create_server(
        app,
        host=bind_host,
        port=bind_port,
        threads=THREADS,
        ident="brick-agent-gate",
        clear_untrusted_proxy_headers=True,
        max_request_body_size=MAX_BODY_BYTES,
        channel_timeout=60,
    )
    if not isinstance(server, waitress.server.BaseWSGIServer):
        # a host name with several addresses: waitress made one listener for each (a
        # MultiSocketServer), which the JSON error channel and serve() do not handle
        server.close()
        raise GateConfigurationError(
            f"gate host {bind_host!r} resolves to several addresses: give one address"
        )
    server.channel_class = _json_error_channel()
    return server


def _json_error_channel() -> type:
    """waitress's channel whose own error answers (413, 400, 431...) are JSON like the app's."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            # types-waitress types Task.request as the error itself: it is the request
            # parser, and the error is its .error
            err = self.request.error  # type: ignore[attr-defined]
            body = json.dumps(
                {"error": type(err).__name__, "message": err.body, "key": None}
            ).encode()
            self.status = f"{err.code} {err.reason}"
            self.response_headers = [
                *self.response_headers,
                ("Content-Type", "application/json"),
                ("Connection", "close"),
            ]
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


def serve(conf: cfg.ConfigOpts | None, roots: HostRoots = DEFAULT_ROOTS) -> None:
    """Run the gate app until SIGINT/SIGTERM (blocks; logs where it listens)."""
    server = make_server(conf, roots=roots)
    LOG.warning(
        "brick_agent gate (gate/CI hosts only) listening on http://%s:%s",
        server.effective_host,
        server.effective_port,
    )
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        server.run()  # returns after SIGINT/SIGTERM, worker threads already stopped
    finally:
        _close_all(server)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _close_all(server: Any) -> None:
    """Close every socket of ``server`` (listener, connections, trigger); loop thread only."""
    for dispatcher in list(server._map.values()):
        try:
            dispatcher.close()
        except OSError:
            pass


def stop_server(server: Any, timeout: float = 5.0) -> None:
    """Stop a server whose ``run()`` loop runs in another thread; that loop then returns.

    In-flight requests finish first (worker threads are joined), then the sockets
    are closed from inside the loop thread (through waitress's trigger) so no
    thread ever writes to a closed descriptor.
    """
    server.task_dispatcher.shutdown(timeout=timeout)
    done = threading.Event()

    def close_in_loop() -> None:
        _close_all(server)
        done.set()

    try:
        server.trigger.pull_trigger(close_in_loop)
    except OSError:
        pass
    if not done.wait(timeout):  # the loop is not running: close from here
        _close_all(server)
