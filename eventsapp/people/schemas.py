"""Parameters and answers of /users."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from ..ingest.rules import USER_ID_MAX_CHARS
from .params import RangeArgs

MAX_PAGE = 1000


def _no_nul(text: str) -> None:
    if "\x00" in text:  # PostgreSQL text cannot hold NUL: no stored event matches it
        raise ValidationError("Must not contain a NUL character.")


class TimelineArgs(RangeArgs):
    event_type = fields.String(load_default=None, validate=[validate.Length(1, 128), _no_nul],
                               metadata={"description": "Only events of this type."})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_PAGE),
                           metadata={"description": f"Events per page, 1..{MAX_PAGE}."})
    cursor = fields.String(load_default=None, validate=[validate.Length(1, 200), _no_nul],
                           metadata={"description": "`next_cursor` of the page before."})


class UserSchema(Schema):
    user_id = fields.String(required=True)
    first_seen = fields.DateTime(required=True)
    last_seen = fields.DateTime(required=True)
    events = fields.Integer(required=True)
    event_types = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                              metadata={"description": "Events per type, most frequent first."})


class UserEventSchema(Schema):
    event_id = fields.String(required=True)
    occurred_at = fields.DateTime(required=True, metadata={"description": "In the request's timezone."})
    user_id = fields.String(required=True)
    event_type = fields.String(required=True)
    properties = fields.Dict(required=True)


class TimelineSchema(Schema):
    events = fields.List(fields.Nested(UserEventSchema), required=True, metadata={"description": "Newest first."})
    next_cursor = fields.String(allow_none=True, required=True,
                                metadata={"description": "Pass as `cursor` for the next page; null on the last."})


class DeletionSchema(Schema):
    user_id = fields.String(required=True)
    events_deleted = fields.Integer(required=True)
    deleted_at = fields.DateTime(required=True)


def check_user_id(user_id: str) -> str:
    """The path's user_id, or a 400 naming it."""
    from ..errors import ApiError

    if len(user_id) > USER_ID_MAX_CHARS:
        raise ApiError("Invalid path parameter: user_id.", status_code=400,
                       errors={"path": {"user_id": [f"Longer than {USER_ID_MAX_CHARS} characters."]}})
    if "\x00" in user_id:  # PostgreSQL text cannot hold NUL, so no stored user_id has one
        raise ApiError("Invalid path parameter: user_id.", status_code=400,
                       errors={"path": {"user_id": ["Must not contain a NUL character."]}})
    return user_id
