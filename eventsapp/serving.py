"""Serving with waitress: options from config, and a graceful stop.

On SIGTERM or SIGINT the server stops accepting connections, lets requests already received finish
and their responses reach the client (up to EVENTSAPP_SHUTDOWN_TIMEOUT seconds), closes idle
keep-alive connections, and only then exits (which also stops an embedded PostgreSQL).
Plain ``waitress-serve`` would instead drop in-flight requests: its worker threads are daemons and
its main loop stops flushing responses as soon as the signal arrives.

Slow clients are bounded (waitress alone only drops connections that send nothing for
EVENTSAPP_CHANNEL_TIMEOUT, so a byte every few seconds holds a connection forever, and 100 such
connections stop the server accepting): a request must arrive whole within
EVENTSAPP_REQUEST_READ_TIMEOUT seconds of its first byte, and one client IP may hold at most
EVENTSAPP_MAX_CONNECTIONS_PER_IP connections (more are answered 503 and closed).
"""

from __future__ import annotations

import errno
import logging
import signal
import time
from typing import Callable

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger(__name__)

# What a client over its connection limit gets before we hang up (we have not read its request).
_TOO_MANY_BODY = b'{"code": 503, "status": "Service Unavailable", "message": "Too many connections from your address."}'
_TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Retry-After: 5\r\nContent-Length: " + str(len(_TOO_MANY_BODY)).encode() + b"\r\n\r\n" + _TOO_MANY_BODY
)


class PortInUse(click.ClickException):
    """The port is taken; says which and how to choose another."""

    def __init__(self, host: str, port: int, hint: str) -> None:
        super().__init__(f"Port {port} on {host} is already in use by another program. {hint}")


class _GuardedChannel(HTTPChannel):
    """A connection that remembers when its current request started arriving."""

    request_started: float | None = None

    def received(self, data: bytes) -> bool:
        if data and self.request is None and self.request_started is None:
            self.request_started = time.monotonic()
        result = super().received(data)
        if self.request is None:  # nothing partial left: the next request's clock starts at its first byte
            self.request_started = None
        return result


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server with a whole-request read deadline and a per-client-IP connection limit."""

    def __init__(self, app: Flask, *, read_timeout: int, max_per_ip: int, **adjustments) -> None:
        self.read_timeout = read_timeout
        self.max_per_ip = max_per_ip
        adj = Adjustments(**adjustments)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adj.threads)
        super().__init__(app, map={}, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])

    # waitress's handle_accept calls ``self.channel_class(self, conn, addr, adj, map=...)``.
    def channel_class(self, server, conn, addr, adj, map=None):  # type: ignore[override]
        address = addr[0] if isinstance(addr, tuple) else addr
        if self.max_per_ip > 0:
            held = sum(1 for channel in self.active_channels.values() if channel.addr[0] == address)
            if held >= self.max_per_ip:
                log.warning("refused a connection: %s already holds %s", address, held,
                            extra={"remote_addr": address})
                try:
                    conn.send(_TOO_MANY_CONNECTIONS)
                except OSError:
                    pass
                conn.close()
                return None
        return _GuardedChannel(server, conn, addr, adj, map=map)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = time.monotonic() - self.read_timeout
        for channel in list(self.active_channels.values()):
            started = getattr(channel, "request_started", None)
            if started is not None and started < cutoff and not channel.requests and not channel.will_close:
                log.warning("closed a connection: its request did not arrive within %s s", self.read_timeout,
                            extra={"remote_addr": channel.addr[0]})
                channel.will_close = True


STOP_POLL_SECONDS = 0.2


def _busy(channel) -> bool:
    # A request being received, queued or answered, or response bytes not yet sent.
    return bool(
        channel.requests or channel.total_outbufs_len or getattr(channel, "request", None) is not None
    )


def drain(server, timeout: float) -> int:
    """Stop accepting, finish in-flight requests (bounded by ``timeout``); return how many were cut off."""
    server.accepting = False
    server.del_channel()
    server.socket.close()
    deadline = time.monotonic() + timeout
    while server.active_channels and time.monotonic() < deadline:
        for channel in list(server.active_channels.values()):
            if not _busy(channel):
                channel.will_close = True
        wasyncore.loop(timeout=0.05, map=server._map, use_poll=server.adj.asyncore_use_poll, count=1)
    cut_off = len(server.active_channels)
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
    wasyncore.close_all(server._map)
    return cut_off


def serve(
    app: Flask, host: str, port: int, on_listening: Callable[[str], None] | None = None,
    port_hint: str = "Choose another with --port.",
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then stop gracefully. PortInUse if ``port`` is taken."""
    config = app.config
    from .observability import announce_start, configure_logging, effective_log_level

    configure_logging(effective_log_level(config["EVENTSAPP_LOG_LEVEL"], serving=True))
    timeouts = (config["EVENTSAPP_CHANNEL_TIMEOUT"], config["EVENTSAPP_REQUEST_READ_TIMEOUT"])
    try:
        server = GuardedServer(
            app,
            read_timeout=config["EVENTSAPP_REQUEST_READ_TIMEOUT"],
            max_per_ip=config["EVENTSAPP_MAX_CONNECTIONS_PER_IP"],
            host=host,
            port=port,
            threads=config["EVENTSAPP_THREADS"],
            # Idle clients are disconnected after this many seconds without progress.
            channel_timeout=config["EVENTSAPP_CHANNEL_TIMEOUT"],
            # waitress only looks for timed-out channels every cleanup_interval seconds (default 30).
            cleanup_interval=max(1, min(30, *(timeout // 2 for timeout in timeouts))),
            # Bound what a client can make us buffer. Bodies a little over our limit still reach the app,
            # which answers a JSON 413; far larger ones waitress refuses before buffering them.
            max_request_header_size=64 * 1024,
            max_request_body_size=2 * config["EVENTSAPP_MAX_BODY_BYTES"] + 1024 * 1024,
            ident="eventsapp",
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port, port_hint) from None
        raise
    announce_start(app)

    stopping: list[int] = []

    def stop(signum, frame):
        # Only note the signal: an exception raised here would land inside whichever waitress handler is
        # running, and waitress swallows handler errors ("uncaptured python exception, closing channel"),
        # so the stop would be lost. Signals after the first are noted too, never fatal mid-exit.
        stopping.append(signum)

    _warn_if_no_keys(app)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    url = f"http://{server.effective_host}:{server.effective_port}"
    log.info(
        "serving on %s",
        url,
        extra={
            "threads": config["EVENTSAPP_THREADS"],
            "channel_timeout": config["EVENTSAPP_CHANNEL_TIMEOUT"],
        },
    )
    if on_listening:
        on_listening(url)
    # One poll at a time so the flag is seen within STOP_POLL_SECONDS of a signal (poll is retried
    # after a handler that returns normally, so the signal alone does not end it).
    poll_timeout = min(server.adj.asyncore_loop_timeout, STOP_POLL_SECONDS)
    try:
        while not stopping:
            wasyncore.loop(
                timeout=poll_timeout, map=server._map, use_poll=server.adj.asyncore_use_poll, count=1
            )
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    shutdown_timeout = config["EVENTSAPP_SHUTDOWN_TIMEOUT"]
    log.info("stopping: finishing in-flight requests (up to %s s)", shutdown_timeout)
    cut_off = drain(server, shutdown_timeout)
    log.info("stopped", extra={"connections_cut_off": cut_off})
    # The process is on its way out: a repeated SIGTERM (supervisors repeat themselves) must not kill it by
    # signal halfway through exit and the embedded server's stop. Ignored, not our handler: Python puts
    # its own handlers back to the default while finalizing, but leaves ignored signals ignored.
    for sig in previous:
        signal.signal(sig, signal.SIG_IGN)


def _warn_if_no_keys(app: Flask) -> None:
    """With auth required and no key yet, say how to make one instead of leaving users with 401s."""
    if app.config.get("EVENTSAPP_AUTH") == "off":
        return
    from .extensions import db
    from .security import keys

    try:
        with app.app_context():
            active = [key for key in keys.list_keys(db.engine) if key.revoked_at is None]
    except Exception:  # the database may be down at start; /ready will say so
        return
    if not active:
        log.warning(
            "no API keys yet: every API call will get 401. Create one with "
            "`flask keys create --name me --scope ingest --scope read`, "
            "or run locally with EVENTSAPP_AUTH=off"
        )


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--port-hint", default="Choose another with --port.", hidden=True,
              help="What to suggest when the port is taken (dev.py names EVENTSAPP_PORT).")
@with_appcontext
def serve_command(host: str, port: int, port_hint: str) -> None:
    """Serve the app with waitress (EVENTSAPP_THREADS, _CHANNEL_TIMEOUT); stop gracefully on SIGTERM."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    serve(app, host, port, on_listening=_say_listening, port_hint=port_hint)


def _say_listening(url: str) -> None:
    # Printed only once the socket is bound, so a URL on screen is one that answers.
    click.echo(f"eventsapp listening on {url}/  (API docs: /docs, dashboard: /dashboard; Ctrl-C stops)")
