"""``GET /stats/dau``, ``/stats/top-events``, ``/stats/retention``, ``/stats/summary``, ``/stats/timezones``."""
from __future__ import annotations

from typing import Any

from flask import current_app

from ..database import analytics_engine
from ..errors import QueryBlueprint, document_errors
from ..extensions import db
from . import queries
from .calendar import accepted_timezones
from .schemas import (DauArgs, DauRowSchema, RetentionArgs, RetentionRowSchema, SummaryArgs, SummarySchema,
                      TimezonesSchema, TopEventRowSchema, TopEventsArgs)


blp = QueryBlueprint("stats", __name__, url_prefix="/stats",
                      description="Analytics in any timezone: DAU, top events, retention, summary.")

_ERRORS = {
    400: "A malformed parameter (errors.query names it): unknown timezone or segment, `from` after `to`, "
    "a range over 366 days, a date outside 1900-01-01..9999-12-01, a limit/windows/cohorts out of range, "
    "a NUL character, a parameter given twice, or an unknown parameter.",
    503: "The query ran longer than EVENTSAPP_QUERY_TIMEOUT_MS, the database is unavailable or not "
    "migrated, or EVENTSAPP_TIMEZONE is not a timezone the database accepts. Honour Retry-After.",
}


_document_errors = document_errors(blp, _ERRORS)


def _answer(question, **arguments: Any):
    config = current_app.config
    return queries.run_read(db.engine, question, project_tz=config["EVENTSAPP_TIMEZONE"],
                            timeout_ms=config["EVENTSAPP_QUERY_TIMEOUT_MS"],
                            analytics_engine=analytics_engine(current_app), **arguments)


@blp.route("/dau")
@blp.arguments(DauArgs, location="query", as_kwargs=True)
@blp.response(200, DauRowSchema(many=True), description="One row per local date in range, zero-filled.")
@_document_errors
def dau(**arguments: Any):
    """Count distinct active users per day."""
    return _answer(queries.daily_active_users, **arguments)


@blp.route("/top-events")
@blp.arguments(TopEventsArgs, location="query", as_kwargs=True)
@blp.response(200, TopEventRowSchema(many=True),
              description='By count descending, then event_type by code point (COLLATE "C").')
@_document_errors
def top_events(**arguments: Any):
    """List the most frequent event types."""
    return _answer(queries.top_events, **arguments)


@blp.route("/retention")
@blp.arguments(RetentionArgs, location="query", as_kwargs=True)
@blp.response(200, RetentionRowSchema(many=True),
              description="One row per cohort with w0..w{windows-1}: the share (0..1, 4 decimals) of its "
              "members with a matching event in window k; 0.0 for an empty cohort; null for a window that "
              "has not ended yet (its last local day is today or later in `tz`).")
@_document_errors
def retention(**arguments: Any):
    """Measure cohort retention."""
    return _answer(queries.retention, **arguments)


@blp.route("/summary")
@blp.arguments(SummaryArgs, location="query", as_kwargs=True)
@blp.response(200, SummarySchema)
@_document_errors
def summary(**arguments: Any):
    """Summarise stored events and a range's events and users."""
    return _answer(queries.summary, **arguments)


@blp.route("/timezones")
@blp.response(200, TimezonesSchema)
@_document_errors
def timezones():
    """List the timezone names the stats endpoints accept."""
    return {"timezones": sorted(accepted_timezones(db.engine)),
            "project_timezone": current_app.config["EVENTSAPP_TIMEZONE"]}


# --- trends, stickiness, lifecycle (issue 13) -----------------------------------------------------------

from . import trends as trend_queries  # noqa: E402  (kept in this block so merges stay local)
from .trends_schemas import (LifecycleArgs, LifecycleRowSchema, StickinessArgs, StickinessRowSchema,  # noqa: E402
                             TrendRowSchema, TrendsArgs)

_TREND_ERRORS = {
    **_ERRORS,
    400: "A malformed parameter (errors.query names it): unknown measure, interval or timezone; a property "
    "measure without `property` (or `property` with another measure); wau/mau with interval week or month; "
    "a malformed breakdown or segment; limit out of 1..100; more than 2,000 buckets; `from` after `to` or a "
    "range over 366 days; an unknown parameter.",
}


@blp.route("/trends")
@blp.arguments(TrendsArgs, location="query", as_kwargs=True)
@blp.response(200, TrendRowSchema(many=True),
              description="One zero-filled series per breakdown group, buckets in order: the top values by "
              "rank, then `other`, then `none`.")
@document_errors(blp, _TREND_ERRORS)
def trends(**arguments: Any):
    """Measure events, users or a property per bucket, split and compared."""
    return _answer(trend_queries.trends, **arguments)


@blp.route("/stickiness")
@blp.arguments(StickinessArgs, location="query", as_kwargs=True)
@blp.response(200, StickinessRowSchema(many=True), description="n = 1..intervals in range, zero-filled.")
@_document_errors
def stickiness(**arguments: Any):
    """Count users by how many days or weeks they were active."""
    return _answer(trend_queries.stickiness, **arguments)


@blp.route("/lifecycle")
@blp.arguments(LifecycleArgs, location="query", as_kwargs=True)
@blp.response(200, LifecycleRowSchema(many=True), description="One row per bucket touching the range.")
@_document_errors
def lifecycle(**arguments: Any):
    """Split each bucket's users into new, returning, resurrecting and dormant."""
    return _answer(trend_queries.lifecycle, **arguments)

# --- funnels (issue 14) ---------------------------------------------------------------------------

from . import funnels as _funnels  # noqa: E402  (appended section: keeps merges with other sections local)
from .funnel_schemas import FunnelArgs, FunnelRowSchema  # noqa: E402

_FUNNEL_ERRORS = {
    **_ERRORS,
    400: _ERRORS[400] + " For funnels also: fewer than 2 or more than 10 `step`s, a malformed step or "
    "`exclude` filter, `exclude` naming a step outside 1..n or with i ≥ j, `window` outside 1..7776000, an "
    "unknown `order`, a `breakdown` other than properties.KEY, `limit` outside 1..100.",
}


@blp.route("/funnel")
@blp.arguments(FunnelArgs, location="query", as_kwargs=True)
@blp.response(200, FunnelRowSchema(many=True),
              description="One row per step for each breakdown group (values by rank, then other, then none); "
                          "entries are step-1 events with a local date in [from, to], later steps may fall "
                          "after `to`.")
@document_errors(blp, _FUNNEL_ERRORS)
def funnel(**arguments: Any):
    """Count users through ordered steps within a conversion window."""
    return _answer(_funnels.funnel, **arguments)
