"""``/dashboard``: the analytics page, and ``/`` redirecting to it.

Plain Flask (not in the OpenAPI document): the page is HTML and its data comes from the documented
``/stats/*`` endpoints, called by the page's own script with the reader's key when auth is on.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
import sqlalchemy as sa
from flask import Blueprint, current_app, redirect, render_template, url_for

from ..extensions import db
from ..stats.calendar import accepted_timezones

STATIC_DIR = Path(__file__).resolve().parent / "static"

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)


def timezone_names(engine: sa.Engine) -> tuple[str, ...]:
    """The names the stats API accepts (the database's list), so the selector never offers one it refuses.

    With the database down the page still renders (its data calls say what is wrong), offering no names.
    """
    try:
        return tuple(sorted(accepted_timezones(engine)))
    except sa.exc.DBAPIError:
        return ()


@lru_cache(maxsize=None)
def asset_version(filename: str) -> str:
    """A content hash for cache-busting, so a browser never pairs a new page with an old script."""
    return hashlib.sha256((STATIC_DIR / filename).read_bytes()).hexdigest()[:12]


@bp.get("/")
def index():
    """Send visitors to the dashboard."""
    return redirect(url_for("dashboard.dashboard"))


@bp.get("/dashboard")
def dashboard():
    """Render the dashboard page."""
    return render_template(
        "dashboard/index.html",
        project_timezone=current_app.config["EVENTSAPP_TIMEZONE"],
        timezones=timezone_names(db.engine),
        asset_version=asset_version,
    )
