"""The database engine for ``flask import-csv`` without building the whole web app.

``create_app`` imports the API, docs, metrics, rate limiting and Alembic, which is most of the command's
start-up time; an import needs only settings, the database URL and SQLAlchemy. The command is also
registered as a ``flask.commands`` plugin, so the ``flask`` CLI runs it without loading ``wsgi.py``;
it falls back to ``create_app`` (which migrates an embedded database) whenever the schema is not
plainly at the migrations' head.
"""
from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

_REVISION = re.compile(r"^revision\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN_REVISION = re.compile(r"^down_revision\s*(?::[^=\n]*)?=\s*(.+)$", re.M)


def head_revision_fast(versions_dir: Path) -> str | None:
    """The single head of a linear migration history read from the files, or None when unsure."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions_dir.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision = _REVISION.search(text)
        down = _DOWN_REVISION.search(text)
        if revision is None or down is None:
            return None
        value = down.group(1).strip()
        if value == "None":
            pass
        elif re.fullmatch(r"['\"][^'\"]+['\"]", value):
            parents.add(value[1:-1])
        else:
            return None  # merges or computed values: let Alembic decide
        revisions.add(revision.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _app_engine() -> sa.Engine:
    from .. import create_app
    from ..extensions import db

    app = create_app()
    with app.app_context():
        return db.engine


def engine_without_app() -> sa.Engine:
    """An engine on the configured database (embedded or DATABASE_URL) whose schema is at head."""
    from .. import config, embedded_pg
    from ..database import MIGRATIONS_DIR

    settings = config.from_env()
    url = settings["DATABASE_URL"] or embedded_pg.start(settings["EVENTSAPP_DATA_DIR"])
    head = head_revision_fast(MIGRATIONS_DIR / "versions")
    engine = sa.create_engine(url, **config.ENGINE_OPTIONS, pool_size=4, max_overflow=2)
    try:
        with engine.connect() as connection:
            has_versions = connection.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar()
            current = (connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                       if has_versions else None)
    except sa.exc.DBAPIError:
        engine.dispose()
        return _app_engine()  # let the app report (or fix) what is wrong, as `flask` would
    if head is not None and current == head:
        return engine
    engine.dispose()
    return _app_engine()
