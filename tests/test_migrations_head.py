"""The importer's lean start-up reads the migrations' head from the files without Alembic; it must
agree with Alembic, or `flask import-csv` would write into a schema it wrongly thinks is current."""
from __future__ import annotations

from eventsapp.database import MIGRATIONS_DIR, current_revision, head_revision
from eventsapp.importer.bootstrap import head_revision_fast


def test_fast_head_reading_agrees_with_alembic():
    assert head_revision_fast(MIGRATIONS_DIR / "versions") == head_revision()


def test_test_database_is_at_that_head(engine):
    with engine.connect() as connection:
        assert current_revision(connection) == head_revision()
