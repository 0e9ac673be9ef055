"""Swagger UI at /docs renders the API's operations in a real headless browser with no network."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium not installed (runs in CI)")
def test_swagger_ui_lists_operations_offline(live_server):
    assert CHROMIUM, "CI must have chromium (.ci/run installs it)"
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                # Everything but the app's own address fails to resolve: the page must need nothing else.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--virtual-time-budget=10000", "--dump-dom", f"{live_server}/docs",
            ],
            capture_output=True, text=True, timeout=120,
        ).stdout
    assert 'class="swagger-ui' in dom
    assert "opblock-summary-path" in dom
    assert "/events" in dom
    assert "Store a batch of events exactly once." in dom
