"""Query parameters shared by /users and /export: the stats helpers for timezones and segments (imported
here only), local dates as UTC instants, and a parser whose errors are 400s naming each parameter."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema
from webargs.flaskparser import FlaskParser

from ..errors import ApiError
from ..stats.schemas import SEGMENT_HELP, TZ_HELP, Segment, SegmentField, TimezoneField, parse_segment, parse_timezone

__all__ = ["QueryBlueprint", "RangeArgs", "Segment", "SegmentField", "TimezoneField", "local_range",
           "parse_segment", "parse_timezone", "SEGMENT_HELP", "TZ_HELP"]


class _QueryParser(FlaskParser):
    """Bad query parameters are the client's mistake: 400 naming each parameter, unknown ones included."""

    DEFAULT_VALIDATION_STATUS = 400
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": RAISE, "querystring": RAISE}

    def handle_error(self, error, req, schema, *, error_status_code, error_headers) -> NoReturn:
        names = sorted(name for location in error.messages.values() if isinstance(location, dict)
                       for name in location)
        raise ApiError(f"Invalid query parameter(s): {', '.join(names)}.", status_code=400,
                       errors=error.messages)


class QueryBlueprint(Blueprint):
    ARGUMENTS_PARSER = _QueryParser()


class RangeArgs(Schema):
    """`from`/`to` local dates (inclusive) in `tz`; either may be left open."""

    class Meta:
        unknown = RAISE

    from_ = fields.Date(data_key="from", load_default=None,
                        metadata={"description": "First local date (inclusive), YYYY-MM-DD."})
    to = fields.Date(load_default=None, metadata={"description": "Last local date (inclusive), YYYY-MM-DD."})
    tz = TimezoneField(load_default=None, metadata={"description": TZ_HELP, "example": "Europe/Kyiv"})

    @validates_schema
    def _check_range(self, data: dict, **kwargs: Any) -> None:
        if data.get("from_") and data.get("to") and data["from_"] > data["to"]:
            raise ValidationError("Must not be before `from`.", "to")


def day_start(day: date, tz: str) -> datetime:
    """The first instant (UTC) of local date ``day`` in ``tz``."""
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(tz)).astimezone(timezone.utc)


def local_range(first: date | None, last: date | None, tz: str) -> tuple[datetime | None, datetime | None]:
    """Local dates [first, last] in ``tz`` as UTC instants [start, end); None where open."""
    start = day_start(first, tz) if first else None
    end = day_start(last + timedelta(days=1), tz) if last else None
    return start, end

