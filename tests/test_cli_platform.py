"""The command line as a user meets it: quiet commands, a taken port, a quiet install."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from eventsapp.security import keys

REPO = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask"]


def cli_env(engine, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTSAPP_", "FLASK_"))}
    env["DATABASE_URL"] = engine.url.render_as_string(hide_password=False)
    env.update(extra)
    return env


@pytest.mark.slow
def test_flask_keys_list_prints_only_its_own_output(engine):
    keys.create_key(engine, "quiet-one", ["read"])
    done = subprocess.run([*FLASK, "keys", "list"], cwd=REPO, env=cli_env(engine), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no JSON log lines (database URL, migrations) amid the command's output
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SCOPES", "CREATED", "STATUS"]
    assert len(lines) == 2 and lines[1].startswith("quiet-one") and lines[1].endswith("active")


@pytest.mark.slow
def test_a_command_that_builds_the_app_is_quiet_too(engine):
    # `flask rollups fold` builds the whole app; with auth off it used to log that too, and the database.
    done = subprocess.run([*FLASK, "--app", "wsgi", "rollups", "fold"], cwd=REPO,
                          env=cli_env(engine, EVENTSAPP_AUTH="off"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("folded ")


@pytest.fixture
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.slow
def test_flask_serve_on_a_taken_port_says_so_and_exits_non_zero(engine, taken_port):
    done = subprocess.run([*FLASK, "--app", "wsgi", "serve", "--port", str(taken_port)], cwd=REPO,
                          env=cli_env(engine, EVENTSAPP_AUTH="off"), capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"Port {taken_port} on 127.0.0.1 is already in use" in output and "--port" in output
    assert "Traceback" not in output and "listening on" not in output and "serving on" not in output


@pytest.mark.slow
def test_dev_py_serve_on_a_taken_port_names_eventsapp_port(taken_port):
    if not (REPO / ".venv" / ".eventsapp-installed").exists():
        pytest.skip("dev.py's .venv is not installed in this checkout")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSAPP_")}
    env["EVENTSAPP_PORT"] = str(taken_port)
    done = subprocess.run([sys.executable, "dev.py", "serve"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"Port {taken_port} on 127.0.0.1 is already in use" in output and "EVENTSAPP_PORT" in output
    assert "Traceback" not in output and "http://" not in output
    assert "loading the sample data" not in output  # it fails before doing any work


@pytest.mark.slow
def test_building_the_package_is_quiet_and_ships_the_dashboard_files(tmp_path):
    source = Path(tempfile.mkdtemp(prefix="eventsapp-build-"))
    try:
        # A copy, so the build's own folders (build/, *.egg-info) never land in the checkout.
        shutil.copytree(REPO, source / "src", ignore=shutil.ignore_patterns(
            ".venv", ".git", "instance", "build", "*.egg-info", "node_modules", "__pycache__", "bench", "tests"))
        # As `pip install -e .` builds it: in an isolated environment with today's setuptools.
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path),
                               str(source / "src")], capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(source, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is absent from the `packages` configuration" not in done.stdout + done.stderr
    assert "absent from the packages" not in (done.stdout + done.stderr).replace("`", "")
    wheel = next(tmp_path.glob("eventsapp-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("eventsapp/dashboard/static/dashboard.js", "eventsapp/dashboard/static/dashboard.css",
                 "eventsapp/dashboard/templates/dashboard/index.html"):
        assert name in names
