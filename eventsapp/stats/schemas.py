"""Query parameters and answers of the stats endpoints. Every parameter error is a 400 naming it."""
from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_dump, validate, validates_schema

MAX_RANGE_DAYS = 366
SEGMENT_HELP = (
    "Filter, repeatable (all must hold): `event_type:NAME` or `properties.KEY=VALUE` "
    "(the property compared as text; numbers and booleans as their JSON text)."
)
TZ_HELP = "IANA timezone name, e.g. Europe/Kyiv. Default: the project timezone (EVENTSAPP_TIMEZONE)."


@dataclass(frozen=True)
class Segment:
    """One filter: ``event_type`` equals ``value``, or property ``key`` (as text) equals ``value``."""

    kind: str  # "event_type" | "property"
    value: str
    key: str | None = None


@functools.lru_cache(maxsize=1)
def known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() | {"UTC"})


def parse_timezone(name: str) -> str:
    if name not in known_timezones():
        raise ValidationError(f"Unknown timezone {name!r}.")
    return name


def parse_segment(text: str) -> Segment:
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


class _QueryArgs(Schema):
    class Meta:
        unknown = RAISE


class RangeArgs(_QueryArgs):
    from_ = fields.Date(required=True, data_key="from",
                        metadata={"description": "First local date (inclusive), YYYY-MM-DD."})
    to = fields.Date(required=True, metadata={"description": "Last local date (inclusive), at most 366 days "
                                                             "after `from`."})
    tz = _tz_field()
    segment = _segment_field()

    @validates_schema(skip_on_field_errors=True)
    def _check_range(self, data: dict, **kwargs: Any) -> None:
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


class RetentionArgs(_QueryArgs):
    start_date = fields.Date(required=True, metadata={"description": "Local date the first cohort starts."})
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


class DauRowSchema(Schema):
    date = fields.Date(required=True)
    dau = fields.Integer(required=True, metadata={"description": "Distinct users with a matching event."})


class TopEventRowSchema(Schema):
    event_type = fields.String(required=True)
    count = fields.Integer(required=True)


class RetentionRowSchema(Schema):
    """One cohort; besides these fields it has w0..w{windows-1}: the share of members active in window k."""

    cohort_start_date = fields.Date(required=True)
    size = fields.Integer(required=True, metadata={"description": "Members of the cohort."})

    @post_dump(pass_original=True)
    def _add_windows(self, data: dict, original: dict, **kwargs: Any) -> dict:
        data.update((key, value) for key, value in original.items() if key[:1] == "w" and key[1:].isdigit())
        return data


class SummarySchema(Schema):
    first_date = fields.Date(allow_none=True, required=True,
                             metadata={"description": "Local date of the earliest stored event (any range)."})
    last_date = fields.Date(allow_none=True, required=True,
                            metadata={"description": "Local date of the latest stored event (any range)."})
    events = fields.Integer(required=True, metadata={"description": "Matching events in the range."})
    users = fields.Integer(required=True, metadata={"description": "Distinct users with a matching event "
                                                                   "in the range."})
