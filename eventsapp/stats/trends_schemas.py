"""Query parameters and answers of /stats/trends, /stats/stickiness and /stats/lifecycle (400 naming each
bad parameter, like every stats endpoint)."""
from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .schemas import RangeArgs
from .trends import INTERVALS, MEASURES, PROPERTY_MEASURES, WINDOW_DAYS, Breakdown

MEASURE_HELP = (
    "events: count; users: distinct users in the bucket; wau/mau: distinct users in the 7/30 local days "
    "ending with the bucket's day (the first points look before `from`; day or hour interval only); "
    "sum|avg|min|max|median|p90|p95|p99 of the numeric `property` (events where it is missing or not a "
    "JSON number are left out; percentiles are percentile_cont, i.e. linear interpolation); per_user_avg: "
    "events per active user."
)


class BreakdownField(fields.String):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Breakdown:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:  # PostgreSQL text cannot hold NUL: no stored property has such a key
            raise ValidationError("Must not contain a NUL character.")
        if text == "event_type":
            return Breakdown("event_type")
        if text.startswith("properties.") and len(text) > len("properties."):
            return Breakdown("property", text[len("properties."):])
        raise ValidationError(f"Malformed breakdown {text!r}: use 'event_type' or 'properties.KEY'.")


class TrendsArgs(RangeArgs):
    measure = fields.String(load_default="events", validate=validate.OneOf(MEASURES),
                            metadata={"description": MEASURE_HELP})
    property = fields.String(load_default=None,
                             validate=[validate.Length(1, 1000),
                                       validate.Regexp(r"^[^\x00]*$", error="Must not contain a NUL character.")],
                             metadata={"description": "Property key whose numbers the property measures "
                                                      "aggregate (required by them, refused otherwise)."})
    interval = fields.String(
        load_default="day", validate=validate.OneOf(INTERVALS),
        metadata={"description": "Local calendar buckets: hour (the real hours: 23 or 25 on DST days, a "
                                 "repeated hour twice with its UTC offset in the label), day, week (ISO, from "
                                 "Monday) or month; at most 2,000 buckets. Weeks and months touching the "
                                 "range's ends count only the days inside it."})
    breakdown = BreakdownField(
        load_default=None,
        metadata={"description": "event_type or properties.KEY: one series per value (numbers and booleans as "
                                 "their JSON text), top `limit` by events (events), distinct users (users, "
                                 "wau, mau, per_user_avg) or the measure (property measures) over the range, "
                                 "then one `other` series, then `none` (missing, null or empty value)."})
    limit = fields.Integer(load_default=25, validate=validate.Range(1, 100),
                           metadata={"description": "Breakdown values kept as their own series, 1..100."})
    compare = fields.String(load_default=None, validate=validate.OneOf(["previous"]),
                            metadata={"description": "previous: add previous_bucket/previous_value from the "
                                                     "same number of days just before `from`, bucket by "
                                                     "bucket (the i-th with the i-th)."})

    @validates_schema(skip_on_field_errors=True)
    def _check_measure(self, data: dict, **kwargs: Any) -> None:
        measure = data["measure"]
        if measure in PROPERTY_MEASURES and not data.get("property"):
            raise ValidationError(f"The measure {measure!r} needs `property` (a numeric property key).",
                                  "property")
        if measure not in PROPERTY_MEASURES and data.get("property"):
            raise ValidationError(f"Only the property measures use `property`, not {measure!r}.", "property")
        if measure in WINDOW_DAYS and data["interval"] in ("week", "month"):
            raise ValidationError(f"{measure} is a rolling count per day: use interval day or hour.", "interval")


class StickinessArgs(RangeArgs):
    interval = fields.String(load_default="day", validate=validate.OneOf(["day", "week"]),
                             metadata={"description": "Count active local days, or ISO weeks touching the range."})


class LifecycleArgs(RangeArgs):
    interval = fields.String(load_default="day", validate=validate.OneOf(["day", "week", "month"]),
                             metadata={"description": "Local calendar buckets touching the range."})


class NumberOrNull(fields.Raw):
    """A JSON number as computed (integers stay integers), or null."""


class TrendRowSchema(Schema):
    bucket = fields.String(required=True, metadata={
        "description": "Local date the bucket starts on, or for hours its local date-time with the UTC "
                       "offset (e.g. 2025-10-26T03:00:00+02:00)."})
    breakdown = fields.String(required=True, allow_none=True,
                              metadata={"description": "The breakdown value; null for other, none, and "
                                                       "without a breakdown."})
    group = fields.String(required=True, metadata={"description": "value, other or none.",
                                                   "enum": ["value", "other", "none"]})
    value = NumberOrNull(required=True, allow_none=True, metadata={
        "type": "number", "description": "The measure; an empty bucket is 0 for events, users, wau, mau and "
                                         "sum, null for the others."})
    previous_bucket = fields.String(allow_none=True, metadata={
        "description": "With compare=previous: the previous range's bucket at the same position (null if "
                       "that range has fewer buckets)."})
    previous_value = NumberOrNull(allow_none=True, metadata={"type": "number",
                                                             "description": "With compare=previous."})


class StickinessRowSchema(Schema):
    intervals = fields.Integer(required=True)
    users = fields.Integer(required=True, metadata={"description": "Users active in exactly `intervals` of "
                                                                   "the range's days or weeks."})


class LifecycleRowSchema(Schema):
    bucket = fields.Date(required=True)
    new = fields.Integer(required=True, metadata={"description": "First-ever matching event in this bucket."})
    returning = fields.Integer(required=True, metadata={"description": "Active in this and the previous bucket."})
    resurrecting = fields.Integer(required=True, metadata={
        "description": "Active, not new, not active in the previous bucket."})
    dormant = fields.Integer(required=True, metadata={
        "description": "Minus the users active in the previous bucket and not in this one."})
