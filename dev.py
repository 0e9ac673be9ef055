#!/usr/bin/env python3
"""Quick start with nothing but Python 3.11+:

    python3 dev.py serve   # venv + install, embedded PostgreSQL, sample data, http://127.0.0.1:8000
                           # (with DATABASE_URL: that database, migrated first with `flask db upgrade`)
    python3 dev.py test    # venv + install, the whole test suite (extra args go to pytest)

Uses only the standard library until the virtual environment exists.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".eventsapp-installed"


def ensure_installed() -> None:
    """Create .venv and install the project with its test tools, again only when setup.cfg changes."""
    if sys.version_info < (3, 11):
        sys.exit(f"eventsapp needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "setup.cfg").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing eventsapp and its test tools into .venv (first run takes a minute) ...", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "-e", ".[test]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def serve(args: list[str]) -> int:
    host = os.environ.get("EVENTSAPP_HOST", "127.0.0.1")
    port = os.environ.get("EVENTSAPP_PORT", "8000")
    env = dict(os.environ)
    if "EVENTSAPP_AUTH" not in env:
        env["EVENTSAPP_AUTH"] = "off"
        print("auth is OFF for this local quick start (listening on 127.0.0.1 only); "
              "set EVENTSAPP_AUTH=required and create keys with `flask keys create` for anything shared.")
    hint = f"Choose another with EVENTSAPP_PORT, e.g. EVENTSAPP_PORT={int(port) + 1} python3 dev.py serve"
    if not _port_free(host, int(port)):
        print(f"Error: Port {port} on {host} is already in use by another program. {hint}", file=sys.stderr)
        return 1
    if env.get("DATABASE_URL"):
        # The embedded database is migrated by the app itself; a database of the user's is migrated by
        # `flask db upgrade` (as in production). This is the quick start: do it for them, and say so.
        print("DATABASE_URL is set: bringing its schema up to date (flask db upgrade) ...", flush=True)
        upgraded = subprocess.run([str(PYTHON), "-m", "flask", "db", "upgrade"], cwd=ROOT, env=env)
        if upgraded.returncode != 0:
            print("Error: `flask db upgrade` failed (see above); fix DATABASE_URL or the database, then run "
                  "python3 dev.py serve again.", file=sys.stderr)
            return upgraded.returncode
    print("loading the sample data set (data/sample_events.csv) ...", flush=True)
    subprocess.run(
        [str(PYTHON), "-m", "flask", "import-csv", "data/sample_events.csv", "-k", "sample-v1", "--quiet"],
        cwd=ROOT, env=env, check=True,
    )
    # `flask serve` is waitress with the app's settings and a graceful stop on SIGTERM/SIGINT. It prints
    # the URL once it listens, and says which port is taken (with our hint) if another program took it.
    command = [str(PYTHON), "-m", "flask", "serve", "--host", host, "--port", port, "--port-hint", hint, *args]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    signal.signal(signal.SIGTERM, lambda signum, frame: server.send_signal(signal.SIGTERM))
    while True:
        try:
            return server.wait()
        except KeyboardInterrupt:
            continue  # Ctrl-C reached the server too; wait while it stops its database


def _port_free(host: str, port: int) -> bool:
    """Whether we could listen on host:port (checked before the sample import, so a taken port fails fast)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress binds
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def test(args: list[str]) -> int:
    return subprocess.call([str(PYTHON), "-m", "pytest", *args], cwd=ROOT)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("serve", "test", "install"):
        print(__doc__)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    ensure_installed()
    if command == "install":
        return 0
    return serve(rest) if command == "serve" else test(rest)


if __name__ == "__main__":
    sys.exit(main())
