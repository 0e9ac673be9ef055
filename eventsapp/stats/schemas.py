"""Query parameters and answers of the stats endpoints. Every parameter error is a 400 naming it."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, post_dump, validate, validates_schema

from .calendar import MAX_DATE, MIN_DATE

MAX_RANGE_DAYS = 366
SEGMENT_HELP = (
    "Filter, repeatable (all must hold): `event_type:NAME` or `properties.KEY=VALUE` "
    "(the property compared as text; numbers and booleans as their JSON text)."
)
TZ_HELP = ("IANA timezone name as the database knows it, e.g. Europe/Kyiv (GET /stats/timezones lists them; "
           "abbreviations such as CET are refused). Default: the project timezone (EVENTSAPP_TIMEZONE).")
DATE_RANGE_HELP = f"Dates from {MIN_DATE} to {MAX_DATE}."


@dataclass(frozen=True)
class Segment:
    """One filter: ``event_type`` equals ``value``, or property ``key`` (as text) equals ``value``."""

    kind: str  # "event_type" | "property"
    value: str
    key: str | None = None


def conditions_sql(conditions: Iterable[Segment], params: dict[str, Any], prefix: str = "seg", *,
                   driver_style: bool = False) -> str:
    """``(cond AND cond …)`` holding when every condition holds (``TRUE`` when there are none).

    Values are bound into ``params`` as ``{prefix}_{i}`` (and ``{prefix}_{i}_key``) as ``:name`` binds for
    ``sa.text``, the project's one convention for raw SQL with parameters. ``driver_style`` writes them as
    ``%(name)s`` for the one statement SQLAlchemy does not run: the export's COPY, which psycopg2 is handed
    directly (``cursor.copy_expert`` takes no parameters, so they are filled in by ``cursor.mogrify``).
    A property compares as its text, numbers and booleans as their JSON text. The one definition of a
    filter for every question and export.
    """
    def mark(name: str) -> str:
        return f"%({name})s" if driver_style else f":{name}"

    parts = []
    for i, condition in enumerate(conditions):
        name = f"{prefix}_{i}"
        params[name] = condition.value
        if condition.kind == "event_type":
            parts.append(f"event_type = {mark(name)}")
        else:
            params[f"{name}_key"] = condition.key
            parts.append(f"(properties ->> {mark(name + '_key')}) = {mark(name)}")
    return "(" + (" AND ".join(parts) or "TRUE") + ")"


def parse_timezone(name: str) -> str:
    """Check the shape of a timezone name; whether the database knows it is checked per request
    (calendar.timezone_problem), against the server's own list."""
    if not name or "\x00" in name or len(name) > 100:
        raise ValidationError(f"Unknown timezone {name!r}.")
    return name


def parse_segment(text: str) -> Segment:
    if "\x00" in text:  # PostgreSQL text cannot hold NUL: no stored event can match it
        raise ValidationError("Must not contain a NUL character.")
    if text.startswith("event_type:"):
        name = text[len("event_type:"):]
        if name:
            return Segment("event_type", name)
    elif text.startswith("properties.") and "=" in text:
        key, value = text[len("properties."):].split("=", 1)
        if key:
            return Segment("property", value, key)
    raise ValidationError(f"Malformed segment {text!r}: use 'event_type:NAME' or 'properties.KEY=VALUE'.")


class TimezoneField(fields.String):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        return parse_timezone(super()._deserialize(value, attr, data, **kwargs))


class SegmentField(fields.String):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Segment:
        return parse_segment(super()._deserialize(value, attr, data, **kwargs))


def _tz_field() -> TimezoneField:
    return TimezoneField(load_default=None, metadata={"description": TZ_HELP, "example": "Europe/Kyiv"})


def _segment_field() -> fields.List:
    return fields.List(SegmentField(), load_default=list,
                       metadata={"description": SEGMENT_HELP, "example": ["event_type:purchase"]})


def _check_dates(first: date, last: date, first_name: str, last_name: str) -> None:
    """Every local date a question touches must be in [MIN_DATE, MAX_DATE]: a 400, not an overflow."""
    # Checked before any date arithmetic: 9999-12-31 plus a day is an OverflowError, not an answer.
    if first < MIN_DATE or first > MAX_DATE:
        raise ValidationError(f"Must be between {MIN_DATE} and {MAX_DATE}.", first_name)
    if last > MAX_DATE:
        raise ValidationError(f"Reaches {last}; the last date allowed is {MAX_DATE}.", last_name)


class _QueryArgs(Schema):
    class Meta:
        unknown = RAISE


class RangeArgs(_QueryArgs):
    from_ = fields.Date(required=True, data_key="from",
                        metadata={"description": "First local date (inclusive), YYYY-MM-DD. " + DATE_RANGE_HELP})
    to = fields.Date(required=True, metadata={"description": "Last local date (inclusive), at most 366 days "
                                                             "after `from`."})
    tz = _tz_field()
    segment = _segment_field()

    @validates_schema(skip_on_field_errors=True)
    def _check_range(self, data: dict, **kwargs: Any) -> None:
        _check_dates(data["from_"], data["to"], "from", "to")
        days = (data["to"] - data["from_"]).days + 1
        if days < 1:
            raise ValidationError("Must not be before 'from'.", "to")
        if days > MAX_RANGE_DAYS:
            raise ValidationError(f"The range covers {days} days; at most {MAX_RANGE_DAYS} are allowed.", "to")


class DauArgs(RangeArgs):
    pass


class TopEventsArgs(RangeArgs):
    limit = fields.Integer(load_default=10, validate=validate.Range(1, 1000),
                           metadata={"description": "How many event types, 1..1000."})


class SummaryArgs(RangeArgs):
    pass


class _EventFilterField(fields.String):
    """A filter like a funnel step: conditions in the segment syntax joined by ``;`` (issue 14)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        from .funnel_schemas import parse_step_filter  # it builds on this module's parse_segment

        return parse_step_filter(super()._deserialize(value, attr, data, **kwargs))


class RetentionArgs(_QueryArgs):
    start_date = fields.Date(required=True, metadata={"description": "Local date the first cohort starts. Every window must end by "
                                                      f"{MAX_DATE}; dates from {MIN_DATE}."})
    windows = fields.Integer(load_default=3, validate=validate.Range(1, 52),
                             metadata={"description": "Windows per cohort (w0..w{windows-1}), 1..52."})
    window_size = fields.String(load_default="daily", validate=validate.OneOf(["daily", "weekly"]),
                                metadata={"description": "Window (and cohort step) length: a day or 7 days."})
    cohort = fields.String(
        load_default="first_seen", validate=validate.OneOf(["first_seen", "active"]),
        metadata={"description": "first_seen: users whose first-ever matching event falls in window 0; "
                                 "active: users with any matching event in window 0."},
    )
    cohorts = fields.Integer(load_default=1, validate=validate.Range(1, 52),
                             metadata={"description": "Cohorts, each one step after the previous, 1..52."})
    tz = _tz_field()
    segment = _segment_field()
    # Issue 14: start and return events, and the return mode (eventsapp/stats/retention_events.py).
    start = _EventFilterField(load_default=None, metadata={
        "description": "Start event filter (segment syntax, conditions joined by `;`): decides membership, "
                       "with `cohort` keeping its meaning for it. Default: any event (the segments alone).",
        "example": "event_type:signup"})
    return_ = _EventFilterField(load_default=None, data_key="return", metadata={
        "description": "Return event filter: what a member must do to count as returned. Default: any "
                       "event (the segments alone).", "example": "event_type:purchase"})
    mode = fields.String(load_default="on", validate=validate.OneOf(["on", "on_or_after"]), metadata={
        "description": "on: a return event in window k; on_or_after: in window k or any later date "
                       "(unbounded)."})

    @validates_schema(skip_on_field_errors=True)
    def _check_span(self, data: dict, **kwargs: Any) -> None:
        step = 7 if data["window_size"] == "weekly" else 1
        start, days = data["start_date"], (data["cohorts"] + data["windows"] - 1) * step - 1
        _check_dates(start, start, "start_date", "start_date")
        if (MAX_DATE - start).days < days:
            raise ValidationError(f"The last window ends {days} days after start_date, past {MAX_DATE}.",
                                  "start_date")


class DauRowSchema(Schema):
    date = fields.Date(required=True)
    dau = fields.Integer(required=True, metadata={"description": "Distinct users with a matching event."})


class TopEventRowSchema(Schema):
    event_type = fields.String(required=True)
    count = fields.Integer(required=True)


class RetentionRowSchema(Schema):
    """One cohort; besides these fields it has w0..w{windows-1}: the share (0..1) of members active in
    window k, or null while window k has not ended (its last local day is today or later)."""

    class Meta:
        unknown = INCLUDE  # documents the dynamic wN keys: additionalProperties in the OpenAPI

    cohort_start_date = fields.Date(required=True)
    size = fields.Integer(required=True, metadata={"description": "Members of the cohort."})

    @post_dump(pass_original=True)
    def _add_windows(self, data: dict, original: dict, **kwargs: Any) -> dict:
        data.update((key, value) for key, value in original.items() if key[:1] == "w" and key[1:].isdigit())
        return data


class SummarySchema(Schema):
    data_first_date = fields.Date(
        allow_none=True, required=True,
        metadata={"description": "Local date of the earliest stored event, whatever the range and segments "
                                 "(null when nothing is stored)."})
    data_last_date = fields.Date(
        allow_none=True, required=True,
        metadata={"description": "Local date of the latest stored event, whatever the range and segments "
                                 "(null when nothing is stored)."})
    events = fields.Integer(required=True, metadata={"description": "Matching events in the range."})
    users = fields.Integer(required=True, metadata={"description": "Distinct users with a matching event "
                                                                   "in the range."})


class TimezonesSchema(Schema):
    timezones = fields.List(fields.String(), required=True,
                            metadata={"description": "Every name `tz` accepts, sorted (the database's tz data)."})
    project_timezone = fields.String(required=True, metadata={"description": "EVENTSAPP_TIMEZONE."})
