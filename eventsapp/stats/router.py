"""Where each question is read from: one decision, in one place.

Every question has up to three variants, named by what they read (as SQLAlchemy's
``examples/performance/bulk_inserts.py`` names its variants):

- ``project_rollup``: the project-timezone rollups (the project timezone, no segment);
- ``utc_day_rollup``: the timezone-free rollups (per user and UTC day, per user, per 15-minute bucket),
  in any other timezone whose calendar over the question's span PostgreSQL shows they answer exactly;
- ``scan``: a scan of ``events`` with each event's local date from ``AT TIME ZONE`` (segments, or a
  timezone the rollups cannot answer exactly). Always exact; the reference the others must agree with.

Adding a question means writing its variant functions and one ``Question`` entry in ``queries.QUESTIONS``.
A new engine (a columnar store, say) is one more kind here, not an edit of the routes.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa

from .calendar import Calendar, read_calendar
from .schemas import Segment

KINDS = ("project_rollup", "utc_day_rollup", "scan")


@dataclass(frozen=True)
class Scope:
    """Where a question is asked: its timezone, the project timezone the rollups hold, and its filters.

    ``calendar`` is set for the ``utc_day_rollup`` variants: the span's day boundaries from PostgreSQL.
    """

    tz: str
    rollup_tz: str
    segments: tuple[Segment, ...] = ()
    calendar: Calendar | None = None

    @property
    def project_rollups(self) -> bool:
        return not self.segments and self.tz == self.rollup_tz


Variant = Callable[..., Any]


@dataclass(frozen=True)
class Question:
    """A question's variants, the local dates it reads (``span``), and when the tz-free rollups fit."""

    name: str
    project_rollup: Variant | None  # None: no rollup can answer it (funnels); the scan always does
    utc_day_rollup: Variant | None
    scan: Variant
    span: Callable[..., tuple[date, date]]
    utc_day_rollup_fits: Callable[[Calendar], bool] = lambda calendar: calendar.exact


def route(connection: sa.Connection, question: Question, scope: Scope, arguments: dict[str, Any]) -> tuple[str, Scope]:
    """Return the kind of variant that answers ``question`` in ``scope`` exactly, and the scope it runs in."""
    if scope.project_rollups and question.project_rollup is not None:
        return "project_rollup", scope
    if not scope.segments and question.utc_day_rollup is not None:
        first, last = question.span(**arguments)
        calendar = read_calendar(connection, scope.tz, first, last)
        if question.utc_day_rollup_fits(calendar):
            return "utc_day_rollup", dataclasses.replace(scope, calendar=calendar)
    return "scan", scope


def answer(connection: sa.Connection, question: Question, scope: Scope, arguments: dict[str, Any],
           kind: str | None = None) -> Any:
    """Answer ``question`` with the routed variant, or with the variant of ``kind`` (tests compare them)."""
    if kind is None:
        kind, scope = route(connection, question, scope, arguments)
    elif kind not in KINDS:
        raise ValueError(f"unknown variant kind {kind!r}; one of {KINDS}")
    elif kind == "utc_day_rollup":
        first, last = question.span(**arguments)
        scope = dataclasses.replace(scope, calendar=read_calendar(connection, scope.tz, first, last))
    return getattr(question, kind)(connection, scope, **arguments)
