"""Start the real server (waitress, wsgi:app) as a subprocess, as a user would."""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
_started: list["ServerProcess"] = []


@atexit.register
def _stop_leftovers() -> None:
    # A failing test may raise before its terminate(): stop its server (and so its embedded PostgreSQL).
    for server in _started:
        if server.proc.poll() is None:
            server.proc.terminate()
            try:
                server.proc.wait(30)
            except subprocess.TimeoutExpired:
                server.proc.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        full_env["EVENTSAPP_AUTH"] = "off"  # API keys (default: required) are tested in test_security*.py
        full_env.update(env)
        self.proc = subprocess.Popen(
            [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{self.port}", "wsgi:app"],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        _started.append(self)

    def wait_ready(self, timeout: float = 30.0, expect: int = 200) -> requests.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stdout.read().decode()}")
            try:
                response = requests.get(f"{self.url}/ready", timeout=2)
                if response.status_code == expect:
                    return response
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow to answer
                pass
            time.sleep(0.05)
        raise AssertionError("server did not become ready")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.proc.stdout.read().decode() if self.proc.stdout else ""


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """PostgreSQL processes serving ``data_dir``."""
    found = []
    for proc in psutil.process_iter(attrs=("name", "cmdline")):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(str(data_dir) in part for part in cmdline):
            found.append(proc)
    return found


def wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()
