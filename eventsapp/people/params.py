"""Query parameters shared by /users and /export, and their checks: the stats rules for timezones, segments
and dates (imported here only), local dates as a SQL filter, and a parser whose errors are 400s naming
each parameter."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema

from ..errors import ApiError, QueryBlueprint
from ..stats.calendar import MAX_DATE, MIN_DATE, timezone_problem
from ..stats.schemas import SEGMENT_HELP, TZ_HELP, Segment, SegmentField, TimezoneField, parse_segment, parse_timezone

__all__ = ["MAX_DATE", "MIN_DATE", "QueryBlueprint", "RangeArgs", "Segment", "SegmentField", "TimezoneField", "LocalRange",
           "check_timezone", "parse_segment", "parse_timezone", "SEGMENT_HELP", "TZ_HELP", "timezone_problem"]

UTC = timezone.utc


class RangeArgs(Schema):
    """`from`/`to` local dates (inclusive) in `tz`; either may be left open."""

    class Meta:
        unknown = RAISE

    from_ = fields.Date(data_key="from", load_default=None,
                        metadata={"description": f"First local date (inclusive), {MIN_DATE}..{MAX_DATE}."})
    to = fields.Date(load_default=None, metadata={"description": f"Last local date (inclusive), {MIN_DATE}..{MAX_DATE}."})
    tz = TimezoneField(load_default=None, metadata={"description": TZ_HELP, "example": "Europe/Kyiv"})

    @validates_schema
    def _check_range(self, data: dict, **kwargs: Any) -> None:
        for name, key in (("from", "from_"), ("to", "to")):
            value = data.get(key)
            if value is not None and not MIN_DATE <= value <= MAX_DATE:
                raise ValidationError(f"Must be between {MIN_DATE} and {MAX_DATE}.", name)
        if data.get("from_") and data.get("to") and data["from_"] > data["to"]:
            raise ValidationError("Must not be before `from`.", "to")


def check_timezone(engine: sa.Engine, tz: str) -> str:
    """``tz`` if this server's PostgreSQL accepts it (the stats rule), else a 400 naming ``tz``."""
    problem = timezone_problem(engine, tz)
    if problem is not None:
        raise ApiError("Invalid query parameter(s): tz.", status_code=400, errors={"query": {"tz": [problem]}})
    return tz


class LocalRange:
    """Local dates [first, last] in ``tz`` (either end may be open) as a SQL filter on ``occurred_at``.

    The local date of an event is PostgreSQL's ``(occurred_at AT TIME ZONE tz)::date``, as in /stats;
    the UTC bounds a day either side only let an index narrow the scan (no offset exceeds 26 hours).
    """

    def __init__(self, first: date | None, last: date | None, tz: str) -> None:
        self.first, self.last, self.tz = first, last, tz

    def sql(self, params: dict[str, Any], style: str = "named") -> str:
        """Conditions (joined with AND, or TRUE) with ``:name`` binds for ``sa.text``; ``style="driver"``
        writes ``%(name)s`` instead, only for the export's COPY (see ``conditions_sql``)."""
        def p(name: str) -> str:
            return f":{name}" if style == "named" else f"%({name})s"

        conditions = []
        if self.first is not None:
            params.update(lr_lo=datetime.combine(self.first - timedelta(days=1), time(0), tzinfo=UTC),
                          lr_first=self.first)
            conditions.append(f"occurred_at >= {p('lr_lo')}")
        if self.last is not None:
            params.update(lr_hi=datetime.combine(self.last + timedelta(days=2), time(0), tzinfo=UTC),
                          lr_last=self.last)
            conditions.append(f"occurred_at < {p('lr_hi')}")
        if conditions:
            params["lr_tz"] = self.tz
            local = f"(occurred_at AT TIME ZONE {p('lr_tz')})::date"
            if self.first is not None:
                conditions.append(f"{local} >= {p('lr_first')}")
            if self.last is not None:
                conditions.append(f"{local} <= {p('lr_last')}")
        return " AND ".join(conditions) or "TRUE"
