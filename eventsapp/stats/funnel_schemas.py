"""Query parameters and answer of ``GET /stats/funnel``. Every parameter error is a 400 naming it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .schemas import RangeArgs, Segment, parse_segment

MIN_STEPS, MAX_STEPS = 2, 10
MAX_WINDOW_SECONDS = 90 * 86400
ORDERS = ("ordered", "strict", "any")
STEP_HELP = (
    "A step, repeated 2..10 times in funnel order. A filter in the segment syntax; several conditions joined "
    "by `;` must all hold: `event_type:signup`, `event_type:purchase;properties.plan=pro`."
)
EXCLUDE_HELP = (
    "`FILTER@i-j` (repeatable): an event matching FILTER strictly after step i and strictly before step j "
    "of an attempt (before the window closes when step j was not reached) voids that attempt; 1 ≤ i < j ≤ "
    "number of steps. The attempt's own step events never void it."
)


@dataclass(frozen=True)
class StepFilter:
    """Conditions that must all hold for an event to match, and the text they were written as."""

    text: str
    conditions: tuple[Segment, ...]

    def disjoint_from(self, other: StepFilter) -> bool:
        """True when no event can match both: some condition of each pins one field to different values."""
        return any(a.kind == b.kind and a.key == b.key and a.value != b.value
                   for a in self.conditions for b in other.conditions)


@dataclass(frozen=True)
class Exclusion:
    filter: StepFilter
    first: int  # step numbers, 1-based, first < last
    last: int


def parse_step_filter(text: str) -> StepFilter:
    parts = text.split(";")
    if not text or any(not part for part in parts):
        raise ValidationError(f"Malformed filter {text!r}: conditions joined by ';', none empty.")
    return StepFilter(text, tuple(parse_segment(part) for part in parts))


def parse_exclusion(text: str) -> Exclusion:
    filter_text, at, span = text.rpartition("@")
    first, dash, last = span.partition("-")
    if not at or not dash or not first.isdigit() or not last.isdigit():
        raise ValidationError(f"Malformed exclusion {text!r}: use 'FILTER@i-j', e.g. 'event_type:refund@1-3'.")
    if int(first) >= int(last):
        raise ValidationError(f"Exclusion {text!r}: i must be less than j.")
    return Exclusion(parse_step_filter(filter_text), int(first), int(last))


class StepFilterField(fields.String):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> StepFilter:
        return parse_step_filter(super()._deserialize(value, attr, data, **kwargs))


class ExclusionField(fields.String):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Exclusion:
        return parse_exclusion(super()._deserialize(value, attr, data, **kwargs))


class FunnelArgs(RangeArgs):
    step = fields.List(StepFilterField(), required=True,
                       metadata={"description": STEP_HELP, "example": ["event_type:app_open",
                                                                       "event_type:add_to_cart",
                                                                       "event_type:purchase"]})
    window = fields.Integer(load_default=86400, validate=validate.Range(1, MAX_WINDOW_SECONDS),
                            metadata={"description": "Conversion window in seconds (1 .. 90 days), from the "
                                                     "entry event, inclusive, in exact elapsed seconds."})
    order = fields.String(load_default="ordered", validate=validate.OneOf(ORDERS),
                          metadata={"description": "ordered: each step at or after the previous one (other "
                                                   "events may come between); strict: and no other event of "
                                                   "the user strictly between two steps; any: steps 2..n in "
                                                   "any order after the entry."})
    exclude = fields.List(ExclusionField(), load_default=list, metadata={"description": EXCLUDE_HELP})
    breakdown = fields.String(load_default=None, validate=validate.Regexp(r"^properties\..+"),
                              metadata={"description": "`properties.KEY`: split by the property's value on the "
                                                       "counted attempt's entry event."})
    limit = fields.Integer(load_default=25, validate=validate.Range(1, 100),
                           metadata={"description": "Breakdown values kept (by users at step 1 descending, then "
                                                    "value by code point), 1..100; the rest form `other`."})

    @validates_schema(skip_on_field_errors=True)
    def _check_steps(self, data: dict, **kwargs: Any) -> None:
        steps = len(data["step"])
        if not MIN_STEPS <= steps <= MAX_STEPS:
            raise ValidationError(f"Give {MIN_STEPS}..{MAX_STEPS} steps; got {steps}.", "step")
        for exclusion in data["exclude"]:
            if exclusion.last > steps or exclusion.first < 1:
                raise ValidationError(f"Exclusion {exclusion.filter.text}@{exclusion.first}-{exclusion.last} "
                                      f"names a step outside 1..{steps}.", "exclude")


class FunnelRowSchema(Schema):
    step = fields.Integer(required=True, metadata={"description": "Step number, 1-based."})
    filter = fields.String(required=True, metadata={"description": "The step's filter as given."})
    group = fields.String(required=True, metadata={"description": "value, other (values beyond `limit`) or "
                                                                   "none (property missing, null or empty)."})
    breakdown = fields.String(required=True, allow_none=True,
                              metadata={"description": "The breakdown value; null for other/none and without "
                                                       "a breakdown."})
    users = fields.Integer(required=True, metadata={"description": "Users whose counted attempt reached at "
                                                                   "least this step."})
    from_start = fields.Float(required=True, metadata={"description": "users / users at step 1 (4 decimals)."})
    from_previous = fields.Float(required=True,
                                 metadata={"description": "users / users at the previous step (4 decimals)."})
    median_seconds = fields.Float(required=True, allow_none=True,
                                  metadata={"description": "Median seconds from the previous step (null at step "
                                                           "1 or with no users)."})
    avg_seconds = fields.Float(required=True, allow_none=True,
                               metadata={"description": "Mean seconds from the previous step."})
