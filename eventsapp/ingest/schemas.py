"""The documented contract of ``POST /events``. Each field delegates to ``rules``, as the fast path does."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields

from . import rules


def _delegating(base: type[fields.Field], check):
    class Field(base):  # type: ignore[misc, valid-type]
        def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
            try:
                return check(value)
            except rules.Invalid as exc:
                raise ValidationError(str(exc)) from None

    Field.__name__ = f"Rules{base.__name__}"
    return Field


EventIdField = _delegating(fields.UUID, rules.parse_event_id)
OccurredAtField = _delegating(fields.DateTime, lambda v: rules.parse_occurred_at(v, datetime.now(rules.UTC)))
UserIdField = _delegating(fields.String, rules.check_user_id)
EventTypeField = _delegating(fields.String, rules.check_event_type)
PropertiesField = _delegating(fields.Dict, rules.encode_properties)


class EventSchema(Schema):
    class Meta:
        unknown = RAISE

    event_id = EventIdField(required=True, metadata={"description": "UUID; the event is stored once per event_id."})
    occurred_at = OccurredAtField(
        required=True,
        metadata={"description": "ISO-8601; naive means UTC. 1970-01-01 .. now + 1 day."},
    )
    user_id = UserIdField(required=True, metadata={"description": "1..256 characters.", "maxLength": 256})
    event_type = EventTypeField(required=True, metadata={"description": "1..128 characters.", "maxLength": 128})
    properties = PropertiesField(
        load_default=dict,
        metadata={"description": "JSON object, at most 32 KB encoded; no NUL, NaN or Infinity."},
    )


class IngestResultSchema(Schema):
    ingested = fields.Integer(required=True, metadata={"description": "Events stored by this request."})
    duplicates = fields.Integer(
        required=True, metadata={"description": "Events already stored (same event_id), or repeated in the batch."}
    )
