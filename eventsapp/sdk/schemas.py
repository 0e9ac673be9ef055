"""The documented shapes of the Segment and PostHog endpoints (for OpenAPI).

Bodies are parsed by ``service`` rather than loaded through these schemas: the SDKs send many fields
we ignore (``integrations``, ``$lib``...), so an unknown field must never be an error here.
"""
from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields


def _identifier(description: str = "") -> fields.Raw:
    """An id the SDKs send as a string or a number (a number becomes its text); null means absent."""
    return fields.Raw(allow_none=True, metadata={"anyOf": [{"type": "string"}, {"type": "number"}],
                                                 "nullable": True, "description": description})


class SegmentMessageSchema(Schema):
    class Meta:
        unknown = INCLUDE

    type = fields.String(metadata={"description": "track, identify, page, screen, group or alias "
                                   "(implied by the path on /v1/track etc.)."})
    messageId = _identifier("Becomes event_id; a non-UUID maps to a stable UUIDv5.")
    userId = _identifier("user_id; anonymousId is used when absent.")
    anonymousId = _identifier()
    event = fields.String(metadata={"description": "event_type of a track call."})
    properties = fields.Dict()
    traits = fields.Dict()
    context = fields.Dict(metadata={"description": 'Stored as properties["$context"].'})
    timestamp = fields.String(metadata={"description": "ISO-8601; corrected by sentAt for clock skew."})
    sentAt = fields.String()


class SegmentBatchSchema(Schema):
    class Meta:
        unknown = INCLUDE

    batch = fields.List(fields.Nested(SegmentMessageSchema), required=True,
                        metadata={"description": "1..2,500 messages, each at most 32 KB; body at most 500 KB."})
    sentAt = fields.String(metadata={"description": "When the SDK sent the batch (clock-skew correction)."})
    writeKey = fields.String(metadata={"description": "An ingest API key (or HTTP Basic auth `key:`)."})
    context = fields.Dict(metadata={"description": "Merged under every message's context."})


class SegmentSuccessSchema(Schema):
    success = fields.Boolean(required=True)
    ingested = fields.Integer(required=True, metadata={"description": "Events stored by this request."})
    duplicates = fields.Integer(required=True, metadata={"description": "Messages already stored."})


class PostHogEventSchema(Schema):
    class Meta:
        unknown = INCLUDE

    event = fields.String(required=True, metadata={"description": "event_type."})
    distinct_id = _identifier("user_id (or properties.distinct_id).")
    properties = fields.Dict()
    timestamp = fields.String(metadata={"description": "ISO-8601; corrected by sent_at for clock skew."})
    uuid = fields.UUID(allow_none=True, metadata={
        "description": "event_id; absent (or null) means a UUIDv5 of the event's content."})


class PostHogBatchSchema(Schema):
    class Meta:
        unknown = INCLUDE

    batch = fields.List(fields.Nested(PostHogEventSchema), required=True)
    api_key = fields.String(metadata={"description": "An ingest API key (or `token`, or Authorization: Bearer)."})
    sent_at = fields.String(metadata={"description": "When the SDK sent the batch (clock-skew correction)."})


class PostHogSuccessSchema(Schema):
    status = fields.Integer(required=True, metadata={"description": "Always 1."})
    ingested = fields.Integer(required=True, metadata={"description": "Events stored by this request."})
    duplicates = fields.Integer(required=True, metadata={"description": "Events already stored."})
