"""Serving with waitress: options from config, and a graceful stop.

On SIGTERM or SIGINT the server stops accepting connections, lets requests already received finish
and their responses reach the client (up to EVENTSAPP_SHUTDOWN_TIMEOUT seconds), closes idle
keep-alive connections, and only then exits (which also stops an embedded PostgreSQL).
Plain ``waitress-serve`` would instead drop in-flight requests: its worker threads are daemons and
its main loop stops flushing responses as soon as the signal arrives.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Callable

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from waitress import wasyncore
from waitress.server import create_server

log = logging.getLogger(__name__)


class _Stop(BaseException):
    """Raised in the main thread by the signal handler to leave waitress's loop."""


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


def serve(app: Flask, host: str, port: int, on_listening: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` until SIGTERM/SIGINT, then stop gracefully."""
    config = app.config
    server = create_server(
        app,
        host=host,
        port=port,
        threads=config["EVENTSAPP_THREADS"],
        # Idle and slow clients are disconnected after this many seconds without progress.
        channel_timeout=config["EVENTSAPP_CHANNEL_TIMEOUT"],
        # waitress only looks for timed-out channels every cleanup_interval seconds (default 30).
        cleanup_interval=max(1, min(30, config["EVENTSAPP_CHANNEL_TIMEOUT"] // 2)),
        # Bound what a client can make us buffer. Bodies a little over our limit still reach the app,
        # which answers a JSON 413; far larger ones waitress refuses before buffering them.
        max_request_header_size=64 * 1024,
        max_request_body_size=2 * config["EVENTSAPP_MAX_BODY_BYTES"] + 1024 * 1024,
        ident="eventsapp",
    )

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise _Stop()

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
    try:
        wasyncore.loop(
            timeout=server.adj.asyncore_loop_timeout, map=server._map, use_poll=server.adj.asyncore_use_poll
        )
    except _Stop:
        log.info("stopping: finishing in-flight requests (up to %s s)", config["EVENTSAPP_SHUTDOWN_TIMEOUT"])
        cut_off = drain(server, config["EVENTSAPP_SHUTDOWN_TIMEOUT"])
        log.info("stopped", extra={"connections_cut_off": cut_off})
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
@with_appcontext
def serve_command(host: str, port: int) -> None:
    """Serve the app with waitress (EVENTSAPP_THREADS, _CHANNEL_TIMEOUT); stop gracefully on SIGTERM."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    serve(app, host, port)
