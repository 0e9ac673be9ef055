"""The one set of rules an event must satisfy, whether it arrives over HTTP or from a CSV file.

Both the Marshmallow schema (the documented contract) and the fast batch validator on the hot path
call these functions, so their verdicts and messages cannot drift apart.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import orjson

MAX_EVENTS_PER_BATCH = 10_000
USER_ID_MAX_CHARS = 256
EVENT_TYPE_MAX_CHARS = 128
PROPERTIES_MAX_BYTES = 32 * 1024
EARLIEST_OCCURRED_AT = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_FUTURE_SKEW = timedelta(days=1)

REQUIRED_FIELDS = ("event_id", "occurred_at", "user_id", "event_type")
ALL_FIELDS = frozenset(REQUIRED_FIELDS + ("properties",))

# Marshmallow's own wording, so the fast validator and the schema say the same thing.
MSG_MISSING = "Missing data for required field."
MSG_UNKNOWN = "Unknown field."
MSG_NULL = "Field may not be null."
MSG_NOT_OBJECT = "Invalid input type."

UTC = timezone.utc


class Invalid(ValueError):
    """A field's value breaks a rule; the message says which."""


class NonFiniteNumber:
    """Stands in for NaN/Infinity found by the lenient JSON parser, so the field holding it is named."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def loads_lenient(data: bytes | str) -> Any:
    """Parse JSON that orjson refused, keeping NaN/Infinity as markers instead of failing the whole body."""
    return json.loads(data, parse_constant=NonFiniteNumber)


def _check_text(value: Any, max_chars: int) -> str:
    if not isinstance(value, str):
        raise Invalid("Not a valid string.")
    if not value:
        raise Invalid(f"Length must be between 1 and {max_chars}.")
    if len(value) > max_chars:
        raise Invalid(f"Length must be between 1 and {max_chars}.")
    if "\x00" in value:
        raise Invalid("NUL characters (\\u0000) are not allowed.")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("Not valid UTF-8 (lone surrogate).") from None
    return value


def check_user_id(value: Any) -> str:
    """A user id: a string of 1..256 characters without NUL."""
    return _check_text(value, USER_ID_MAX_CHARS)


def check_event_type(value: Any) -> str:
    """An event type: a string of 1..128 characters without NUL."""
    return _check_text(value, EVENT_TYPE_MAX_CHARS)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_event_id(value: Any) -> str:
    """Return the canonical text of a UUID."""
    if not isinstance(value, str):
        raise Invalid("Not a valid UUID.")
    if len(value) == 36 and _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Invalid("Not a valid UUID.") from None


def parse_occurred_at(value: Any, now: datetime) -> datetime:
    """Return an aware datetime; naive input is UTC. Refuse dates before 1970 or over a day ahead of ``now``."""
    if not isinstance(value, str):
        raise Invalid("Not a valid datetime.")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid("Not a valid ISO-8601 datetime (years 1970..9999, e.g. 2025-08-01T12:00:00Z).") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        if parsed < EARLIEST_OCCURRED_AT:
            raise Invalid("Must not be earlier than 1970-01-01T00:00:00Z.")
        if parsed > now + MAX_FUTURE_SKEW:
            raise Invalid("Must not be more than 1 day in the future.")
    except OverflowError:
        raise Invalid("Not a valid ISO-8601 datetime (out of range).") from None
    return parsed


_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def encode_properties(value: Any) -> str:
    """Return the properties object as compact JSON text, refusing what PostgreSQL's jsonb cannot hold."""
    if not isinstance(value, dict):
        raise Invalid("Not a valid mapping type.")
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        if "NonFiniteNumber" in str(exc):
            raise Invalid("NaN and Infinity are not valid JSON numbers.") from None
        raise Invalid(f"Cannot be stored as JSON: {exc}.") from None
    if len(encoded) > PROPERTIES_MAX_BYTES:
        raise Invalid(f"Must be at most {PROPERTIES_MAX_BYTES} bytes as JSON, got {len(encoded)}.")
    # orjson writes NUL as the escape \u0000; an escaped backslash followed by "u0000" is plain text.
    if b"\\u0000" in encoded and _ESCAPED_NUL.search(encoded):
        raise Invalid("NUL characters (\\u0000) are not allowed.")
    return encoded.decode("utf-8")


# A valid event ready for COPY: (event_id, occurred_at ISO text, user_id, event_type, properties JSON text).
EventRow = tuple[str, str, str, str, str]


def validate_event(item: Any, now: datetime) -> tuple[EventRow | None, dict[str, list[str]]]:
    """Check one event object; return its row, or None and the errors by field name."""
    # Fast path for the common valid event; any doubt falls through to the path that collects every error.
    if type(item) is dict and item.keys() <= ALL_FIELDS:
        try:
            properties = item.get("properties", _NO_PROPERTIES)
            return (
                parse_event_id(item["event_id"]),
                parse_occurred_at(item["occurred_at"], now).isoformat(),
                check_user_id(item["user_id"]),
                check_event_type(item["event_type"]),
                "{}" if properties is _NO_PROPERTIES else encode_properties(properties),
            ), {}
        except (KeyError, Invalid):
            pass
    return _validate_event_collecting_errors(item, now)


_NO_PROPERTIES = object()


def _validate_event_collecting_errors(item: Any, now: datetime) -> tuple[EventRow | None, dict[str, list[str]]]:
    if not isinstance(item, dict):
        return None, {"_schema": [MSG_NOT_OBJECT]}
    errors: dict[str, list[str]] = {}
    for name in item.keys() - ALL_FIELDS:
        errors[str(name)] = [MSG_UNKNOWN]
    values: list[Any] = []
    for name, check in _CHECKS:
        if name not in item:
            if name == "properties":
                values.append("{}")
            else:
                errors[name] = [MSG_MISSING]
            continue
        value = item[name]
        if value is None:
            errors[name] = [MSG_NULL]
            continue
        try:
            values.append(check(value, now))
        except Invalid as exc:
            errors[name] = [str(exc)]
    if errors:
        return None, errors
    event_id, occurred_at, user_id, event_type, properties = values
    return (event_id, occurred_at.isoformat(), user_id, event_type, properties), {}


_CHECKS = (
    ("event_id", lambda v, now: parse_event_id(v)),
    ("occurred_at", parse_occurred_at),
    ("user_id", lambda v, now: check_user_id(v)),
    ("event_type", lambda v, now: check_event_type(v)),
    ("properties", lambda v, now: encode_properties(v)),
)


def validate_events(items: Iterable[Any], now: datetime | None = None) -> tuple[list[EventRow], dict[int, dict]]:
    """Check a batch; return the rows and the errors keyed by event index (empty when all are valid)."""
    now = now or datetime.now(UTC)
    rows: list[EventRow] = []
    errors: dict[int, dict] = {}
    for index, item in enumerate(items):
        row, item_errors = validate_event(item, now)
        if item_errors:
            errors[index] = item_errors
        else:
            rows.append(row)  # type: ignore[arg-type]
    return rows, errors
