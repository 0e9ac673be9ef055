"""Retention with a start event and a return event (issue 14): "of those who signed up in week c, how many
came back to buy in week c+k?".

Cohorts and windows are those of ``queries.retention``. The *start* filter decides membership
(``first_seen``: the user's first-ever start event falls in the cohort's window 0; ``active``: any start
event there) and the *return* filter decides who came back: ``mode=on`` counts members with a return event
in window k; ``mode=on_or_after`` counts members with a return event in window k or any later one (on or
after window k's first local day, with no end: Amplitude's "unbounded"). Both filters also require the
request's segments; an absent filter is just the segments (as retention always was).

Rollups keep no per-event-type membership, so this is a scan of ``events`` (by the
``(event_type, occurred_at)`` index when the filters name event types); local dates from ``AT TIME ZONE``.
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa

from .funnel_schemas import StepFilter
from .router import Question, Scope
from .schemas import conditions_sql

MODES = ("on", "on_or_after")
PAD = "interval '3 hours'"  # as queries.PAD: a day start from AT TIME ZONE is off by at most a DST shift


def retention_counts_from_scan(connection: sa.Connection, scope: Scope, *, start_date: date, windows: int,
                               window_size: str, cohort: str, cohorts: int, start: StepFilter | None,
                               return_: StepFilter | None, mode: str) -> tuple[dict[int, int], dict[tuple[int, int], int]]:
    """Return ``(sizes by cohort c, returned members by (c, k))``."""
    step = 7 if window_size == "weekly" else 1
    spans = cohorts + windows - 1
    params: dict[str, Any] = {"tz": scope.tz, "start_date": start_date, "step": step, "cohorts": cohorts,
                              "windows": windows, "d_cohorts": start_date + timedelta(days=cohorts * step),
                              "d_end": start_date + timedelta(days=spans * step)}
    segment = conditions_sql(scope.segments, params, "seg")
    starts = f"{segment} AND {conditions_sql(start.conditions if start else (), params, 'st')}"
    returns = f"{segment} AND {conditions_sql(return_.conditions if return_ else (), params, 'rt')}"
    local = "(occurred_at AT TIME ZONE :tz)::date"
    window_of = f"(({local} - CAST(:start_date AS date)) / :step)"

    def instants(first: str, end: str) -> str:
        return (f"occurred_at >= (CAST(:{first} AS date)::timestamp AT TIME ZONE :tz) - {PAD}"
                f" AND occurred_at < (CAST(:{end} AS date)::timestamp AT TIME ZONE :tz) + {PAD}")

    if cohort == "first_seen":
        # First-ever start event over everything stored, also before start_date.
        members = f"""SELECT user_id, ((first_at AT TIME ZONE :tz)::date - CAST(:start_date AS date)) / :step AS c
                      FROM (SELECT user_id, min(occurred_at) AS first_at FROM events WHERE {starts} GROUP BY 1) AS f
                      WHERE (first_at AT TIME ZONE :tz)::date >= :start_date
                        AND (first_at AT TIME ZONE :tz)::date < :d_cohorts"""
    else:
        members = f"""SELECT DISTINCT user_id, {window_of} AS c FROM events
                      WHERE {instants('start_date', 'd_cohorts')} AND {starts}
                        AND {local} >= :start_date AND {local} < :d_cohorts"""
    if mode == "on":
        returned = f"""
            a AS (SELECT DISTINCT user_id, {window_of} AS g FROM events
                  WHERE {instants('start_date', 'd_end')} AND {returns}
                    AND {local} >= :start_date AND {local} < :d_end
                    AND user_id IN (SELECT user_id FROM m))
            SELECT m.c, a.g - m.c, count(*) FROM m JOIN a
                ON a.user_id = m.user_id AND a.g >= m.c AND a.g < m.c + :windows
            GROUP BY 1, 2"""
    else:
        # The member's last return window (any later date counts); windows k up to it are "on or after".
        returned = f"""
            a AS (SELECT user_id, max({window_of}) AS last_g FROM events
                  WHERE occurred_at >= (CAST(:start_date AS date)::timestamp AT TIME ZONE :tz) - {PAD}
                    AND {returns} AND {local} >= :start_date AND user_id IN (SELECT user_id FROM m)
                  GROUP BY 1)
            SELECT m.c, w.k, count(*) FROM m JOIN a ON a.user_id = m.user_id
                CROSS JOIN generate_series(0, :windows - 1) AS w(k)
            WHERE a.last_g >= m.c + w.k
            GROUP BY 1, 2"""
    # Aggregated CTEs have guessed row counts; a nested loop over two of them is quadratic.
    connection.exec_driver_sql("SET LOCAL enable_nestloop = off")
    cte, final = returned.split("SELECT m.c", 1)
    sql = f"""WITH m AS MATERIALIZED (SELECT * FROM ({members}) AS x WHERE c >= 0 AND c < :cohorts), {cte}
              SELECT c, -1, count(*) FROM m GROUP BY 1
              UNION ALL SELECT m.c{final}"""
    sizes: dict[int, int] = {}
    counts: dict[tuple[int, int], int] = {}
    for c, k, n in connection.execute(sa.text(sql), params):
        if k < 0:  # the size rows
            sizes[c] = n
        else:
            counts[(c, k)] = n
    return sizes, counts


def _span(*, start_date: date, windows: int, window_size: str, cohorts: int, **_: Any) -> tuple[date, date]:
    step = 7 if window_size == "weekly" else 1
    return start_date, start_date + timedelta(days=(cohorts + windows - 1) * step - 1)


# Only a scan: the rollups know who was active, not what they did.
RETENTION_EVENTS = Question("retention_events", None, None, retention_counts_from_scan, _span)
