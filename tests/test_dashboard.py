"""The dashboard page as served: redirect, markup, offline assets, and open access with auth on.

What the page draws is checked in a real browser in test_dashboard_browser.py.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from eventsapp.dashboard.routes import STATIC_DIR, timezone_names


class _Assets(HTMLParser):
    """Collect the page's asset URLs and its labelled form controls."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.label_for: set[str] = set()
        self.controls: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("src", "href"):
            if attributes.get(name):
                self.urls.append(attributes[name])
        if tag == "label" and attributes.get("for"):
            self.label_for.add(attributes["for"])
        if tag in ("input", "select"):
            self.controls.append((tag, attributes))


def _parse(html: str) -> _Assets:
    parser = _Assets()
    parser.feed(html)
    return parser


def test_root_redirects_to_the_dashboard(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/dashboard")


def test_page_selects_the_project_timezone_and_labels_every_control(app, client):
    response = client.get("/dashboard")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    project_tz = app.config["EVENTSAPP_TIMEZONE"]
    assert f'data-project-timezone="{project_tz}"' in html
    selected = re.findall(r"<option selected>([^<]+)</option>", html)
    assert selected == [project_tz]
    offered = re.findall(r"<option(?: selected)?>([^<]+)</option>", html)
    assert "Europe/Kyiv" in offered and "America/New_York" in offered
    assert offered == sorted(offered)

    page = _parse(html)
    for tag, attributes in page.controls:
        if attributes.get("type") == "radio":
            continue  # radios sit inside their <label>
        assert attributes.get("id") in page.label_for, f"<{tag} id={attributes.get('id')}> has no <label for>"


def test_every_asset_is_served_by_the_app_and_nothing_comes_from_elsewhere(client):
    html = client.get("/dashboard").get_data(as_text=True)
    urls = _parse(html).urls
    assert urls, "the page references its script and stylesheet"
    for url in urls:
        assert url.startswith("/"), f"{url} is not served by the app"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.data) > 0
    kinds = {client.get(url).mimetype for url in urls}
    assert {"text/css", "text/javascript"} <= kinds or {"text/css", "application/javascript"} <= kinds

    # Nothing fetched from another host at run time: no absolute URLs except the SVG namespace.
    texts = [html] + [path.read_text() for path in STATIC_DIR.iterdir() if path.suffix in (".js", ".css")]
    for text in texts:
        for found in re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"')]*", text):
            assert found == "http://www.w3.org/2000/svg", f"external reference {found}"


def test_asset_urls_change_when_the_file_changes(client):
    html = client.get("/dashboard").get_data(as_text=True)
    versions = re.findall(r"dashboard\.(?:js|css)\?v=([0-9a-f]+)", html)
    assert len(versions) == 2 and versions[0] != versions[1]


def test_timezone_list_holds_only_names_the_server_can_resolve(client, engine):
    from urllib.parse import quote

    names = timezone_names(engine)
    assert "UTC" in names and "Europe/Kyiv" in names
    assert not [name for name in names if name.startswith(("posix/", "right/"))]
    assert not {"CET", "EET", "MET", "WET", "localtime", "posixrules"} & set(names)
    for name in names[:: max(1, len(names) // 40)]:
        assert client.get(f"/stats/dau?from=2025-10-01&to=2025-10-02&tz={quote(name)}").status_code == 200, name


@pytest.fixture
def auth_required(app):
    previous = app.config.get("EVENTSAPP_AUTH")
    app.config["EVENTSAPP_AUTH"] = "required"
    yield
    app.config["EVENTSAPP_AUTH"] = previous


def test_page_and_assets_are_open_while_the_stats_need_a_key(client, auth_required):
    html = client.get("/dashboard")
    assert html.status_code == 200
    for url in _parse(html.get_data(as_text=True)).urls:
        assert client.get(url).status_code == 200, url
    assert client.get("/").status_code == 302
    stats = client.get("/stats/dau?from=2026-01-01&to=2026-01-02")
    assert stats.status_code == 401


def test_package_data_ships_the_template_and_static_files():
    """setup.cfg must list these, or an installed (non-editable) copy serves 404s."""
    setup_cfg = (Path(__file__).resolve().parent.parent / "setup.cfg").read_text()
    line = next(line for line in setup_cfg.splitlines() if line.startswith("eventsapp.dashboard ="))
    package_dir = STATIC_DIR.parent
    globs = [pattern.strip() for pattern in line.split("=", 1)[1].split(",")]
    shipped = {path for pattern in globs for path in package_dir.glob(pattern) if path.is_file()}
    needed = {path for path in package_dir.rglob("*")
              if path.is_file() and path.suffix in (".html", ".js", ".css", ".svg")}
    assert needed and needed <= shipped, sorted(str(p) for p in needed - shipped)
