"""Map Segment and PostHog SDK payloads onto events and store them through the one write path.

Mapping (see README "Send events from your app"):

Segment message                         event
--------------------------------------  ------------------------------------------------------------
messageId (UUID)                        event_id as is
messageId (any other string/number)     event_id = uuid5(SEGMENT_NAMESPACE, messageId): retries dedupe
no messageId                            event_id = uuid5(SEGMENT_NAMESPACE, canonical JSON of message)
userId, else anonymousId                user_id (numbers become text)
track: event; identify/page/screen/     event_type; other types get "$identify", "$page", "$screen",
group/alias: the type                   "$group", "$alias"
traits, then properties (wins)          properties
context (batch context merged under)    properties["$context"]
anonymousId (when userId is set),       properties["$anonymous_id"], ["$name"], ["$category"],
name, category, groupId, previousId     ["$group_id"], ["$previous_id"]
timestamp (or originalTimestamp)        occurred_at = received_at - (sentAt - timestamp) when sentAt is
                                        present (message's, else the batch's), else timestamp, else
                                        received_at
integrations                            dropped (Segment routing settings)

PostHog event                           event
--------------------------------------  ------------------------------------------------------------
uuid                                    event_id (must be a UUID)
no uuid                                 event_id = uuid5(POSTHOG_NAMESPACE, canonical JSON of event)
distinct_id, else properties.           user_id
distinct_id / properties.$distinct_id
event                                   event_type
properties (+ top-level $set,           properties (the top-level ones only when properties lacks them)
$set_once)
timestamp, sent_at/sentAt, offset       occurred_at = received_at - (sent_at - timestamp); without
                                        sent_at: timestamp; without timestamp: received_at - offset ms,
                                        else received_at

A batch is all or nothing, as ``POST /events``: one invalid message refuses the whole request (400,
``errors.json`` naming each message by index and SDK field), so nothing is ever half-stored.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping

import orjson
import sqlalchemy as sa
from prometheus_client import Counter

from ..errors import ApiError
from ..ingest import rules
from ..ingest.groupcommit import GroupCommitter
from ..ingest.service import WriteResult, reject, write_events

# Fixed forever: changing them would make retries of already-stored messages store a second copy.
SEGMENT_NAMESPACE = uuid.UUID("5a3c1f0e-8f6b-5d1e-9c2a-7b4e0d6f1a21")
POSTHOG_NAMESPACE = uuid.UUID("9d7e2b4c-1a3f-5e6d-8b0c-2f4a6e8d0c13")

# Segment's documented HTTP API limits.
SEGMENT_MAX_MESSAGE_BYTES = 32 * 1024
SEGMENT_MAX_BATCH_BYTES = 500 * 1024
SEGMENT_MAX_MESSAGES = 2_500

SEGMENT_TYPES = {
    "track": None,  # the message's own "event"
    "identify": "$identify",
    "page": "$page",
    "screen": "$screen",
    "group": "$group",
    "alias": "$alias",
}

# Our field names -> the SDK's, so errors name what the sender actually wrote.
SEGMENT_FIELDS = {
    "event_id": "messageId",
    "occurred_at": "timestamp",
    "user_id": "userId",
    "event_type": "event",
    "properties": "properties",
}
POSTHOG_FIELDS = {
    "event_id": "uuid",
    "occurred_at": "timestamp",
    "user_id": "distinct_id",
    "event_type": "event",
    "properties": "properties",
}

SDK_EVENTS = Counter("eventsapp_sdk_events_total", "Events received through the SDK endpoints", ["sdk"])

FieldErrors = dict[str, list[str]]


@dataclass(frozen=True)
class SdkResult:
    ingested: int
    duplicates: int


# --- shared helpers ---------------------------------------------------------------------------------


def _parse_instant(value: Any) -> datetime:
    if not isinstance(value, str):
        raise rules.Invalid("Not a valid datetime.")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise rules.Invalid("Not a valid ISO-8601 datetime (e.g. 2025-08-01T12:00:00.000Z).") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=rules.UTC)


def occurred_at(
    timestamp: Any, sent_at: Any, received_at: datetime, errors: FieldErrors, *,
    timestamp_field: str, sent_at_field: str,
) -> str | None:
    """Return the event time corrected for the sender's clock skew: received_at - (sent_at - timestamp)."""
    if sent_at is not None and not isinstance(sent_at, str):
        errors[sent_at_field] = ["Not a valid datetime."]
        return None
    if timestamp is None:
        return received_at.isoformat()
    try:
        when = _parse_instant(timestamp)
    except rules.Invalid as exc:
        errors[timestamp_field] = [str(exc)]
        return None
    if sent_at is None:
        return when.isoformat()
    try:
        sent = _parse_instant(sent_at)
    except rules.Invalid as exc:
        errors[sent_at_field] = [str(exc)]
        return None
    try:
        return (received_at - (sent - when)).isoformat()
    except OverflowError:
        errors[timestamp_field] = ["Not a valid ISO-8601 datetime (out of range)."]
        return None


def _identifier(value: Any) -> Any:
    """SDKs send ids as strings or numbers; numbers become their text (never bools)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _uuid5(namespace: uuid.UUID, text: str) -> str:
    # uuid5 encodes its name as UTF-8, which a lone surrogate ("\ud800", valid JSON) cannot be.
    try:
        return str(uuid.uuid5(namespace, text))
    except UnicodeEncodeError:
        raise rules.Invalid(MSG_SURROGATE) from None


def _canonical_id(namespace: uuid.UUID, message: Mapping[str, Any]) -> str:
    """A stable id from the message's content, so a resent message maps to the same event_id."""
    try:
        text = json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=lambda o: getattr(o, "literal", repr(o)))
    except (RecursionError, ValueError):
        raise rules.Invalid("Nested too deeply to derive an id; send a messageId/uuid.") from None
    return _uuid5(namespace, text)


MSG_SURROGATE = "Not valid UTF-8 (lone surrogate)."


def _has_surrogate(value: Any, depth: int = 0) -> bool:
    if isinstance(value, str):
        return not value.isascii() and _bad_text(value)
    if depth > 200:
        return False  # deeper than any JSON we parse; the id check reports it as too deep
    if isinstance(value, dict):
        return any(_has_surrogate(key, depth + 1) or _has_surrogate(item, depth + 1)
                   for key, item in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(item, depth + 1) for item in value)
    return False


def _bad_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def surrogate_fields(message: Mapping[str, Any]) -> list[str]:
    """The top-level fields of a message holding a lone surrogate anywhere (in a key or a value).

    JSON allows ``"\ud800"`` but neither UTF-8 nor PostgreSQL can hold it, and a message must be refused
    (400 naming the field) before any field is mapped, dropped or hashed into an id. orjson refuses to
    write such text, so the common case costs one C-speed dump and no walk.
    """
    try:
        orjson.dumps(message)
        return []
    except (TypeError, ValueError, RecursionError):
        pass  # a surrogate, or a NaN marker / 64-bit+ integer / deep nesting: walk to tell which
    return [str(key) if not _has_surrogate(key) else "_schema" for key, value in message.items()
            if _has_surrogate(key) or _has_surrogate(value)]


def _refuse_surrogates(message: Mapping[str, Any], errors: FieldErrors) -> bool:
    fields = surrogate_fields(message)
    for field in fields:
        errors.setdefault(field, []).append(MSG_SURROGATE)
    return bool(fields)


def _object(value: Any, field: str, errors: FieldErrors) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors[field] = ["Not a valid mapping type."]
        return {}
    return value


def _finish(event: dict[str, Any], errors: FieldErrors, received_at: datetime,
            names: Mapping[str, str]) -> tuple[rules.EventRow | None, FieldErrors]:
    """Validate the mapped event with THE ingest rules; name failing fields as the SDK calls them.

    A field mapped to None was already refused while mapping (and named in ``errors``), so the rules'
    "may not be null" for it is not repeated.
    """
    row, rule_errors = rules.validate_event(event, received_at)
    for field, messages in rule_errors.items():
        if event.get(field) is not None or not errors:
            errors.setdefault(names.get(field, field), []).extend(messages)
    return (row if not errors else None), errors


# --- Segment ------------------------------------------------------------------------------------------


def segment_message_to_row(
    message: Any, received_at: datetime, *, batch_sent_at: Any = None,
    batch_context: Mapping[str, Any] | None = None, message_type: str | None = None,
) -> tuple[rules.EventRow | None, FieldErrors]:
    """Map one Segment message to an event row, or return the errors by Segment field name."""
    if not isinstance(message, dict):
        return None, {"_schema": [rules.MSG_NOT_OBJECT]}
    errors: FieldErrors = {}
    if _refuse_surrogates(message, errors):
        return None, errors
    try:
        size = len(orjson.dumps(message))
    except TypeError:
        size = 0  # holds NaN/Infinity: the properties check below names it
    if size > SEGMENT_MAX_MESSAGE_BYTES:
        errors["_schema"] = [f"A message must be at most {SEGMENT_MAX_MESSAGE_BYTES} bytes as JSON, got {size}."]

    kind = message_type or message.get("type")
    if not isinstance(kind, str) or kind not in SEGMENT_TYPES:
        errors["type"] = [f"Must be one of: {', '.join(SEGMENT_TYPES)}."]
        return None, errors
    event_type = message.get("event") if kind == "track" else SEGMENT_TYPES[kind]
    if kind == "track" and event_type is None:
        errors["event"] = [rules.MSG_MISSING]

    message_id = _identifier(message.get("messageId"))
    event_id: str | None = None
    if message_id is None:
        try:
            event_id = _canonical_id(SEGMENT_NAMESPACE, message)
        except rules.Invalid as exc:
            errors["messageId"] = [str(exc)]
    elif isinstance(message_id, str):
        try:
            event_id = str(uuid.UUID(message_id))
        except ValueError:
            event_id = _uuid5(SEGMENT_NAMESPACE, message_id)
    else:
        errors["messageId"] = ["Not a valid string."]

    user_id = _identifier(message.get("userId"))
    anonymous_id = _identifier(message.get("anonymousId"))
    if user_id is None and anonymous_id is None:
        errors["userId"] = ["Either userId or anonymousId is required."]

    properties = dict(_object(message.get("traits"), "traits", errors))
    properties.update(_object(message.get("properties"), "properties", errors))
    context = _object(message.get("context"), "context", errors)
    if batch_context:
        context = {**batch_context, **context}
    if context:
        properties["$context"] = context
    if user_id is not None and anonymous_id is not None:
        properties["$anonymous_id"] = anonymous_id
    for source, target in (("name", "$name"), ("category", "$category"), ("groupId", "$group_id"),
                           ("previousId", "$previous_id")):
        if message.get(source) is not None:
            properties[target] = message[source]

    sent_at = message.get("sentAt", batch_sent_at)
    when = occurred_at(message.get("timestamp", message.get("originalTimestamp")), sent_at, received_at,
                       errors, timestamp_field="timestamp", sent_at_field="sentAt")
    event = {
        "event_id": event_id,
        "occurred_at": when,
        "user_id": user_id if user_id is not None else anonymous_id,
        "event_type": event_type,
        "properties": properties,
    }
    return _finish(event, errors, received_at, SEGMENT_FIELDS)


def segment_rows(body: Any, received_at: datetime, message_type: str | None) -> list[rules.EventRow]:
    """Rows of a Segment request: ``/v1/batch`` (message_type None) or a single-call endpoint."""
    if not isinstance(body, dict):
        raise ApiError("Request body must be a JSON object.", status_code=400,
                       errors={"json": {"_schema": [rules.MSG_NOT_OBJECT]}})
    if message_type is not None:
        row, errors = segment_message_to_row(body, received_at, message_type=message_type)
        if errors:
            reject(1)
            raise ApiError(f"The {message_type} call is invalid; nothing was stored.", status_code=400,
                           errors={"json": errors})
        return [row]  # type: ignore[list-item]

    batch = body.get("batch")
    if not isinstance(batch, list) or not batch:
        raise ApiError('"batch" must be a non-empty array of messages.', status_code=400,
                       errors={"json": {"batch": ["Must be a non-empty array."]}})
    if len(batch) > SEGMENT_MAX_MESSAGES:
        raise ApiError(f"A batch holds at most {SEGMENT_MAX_MESSAGES} messages, got {len(batch)}.",
                       status_code=413, errors={"json": {"batch": [f"Longer than {SEGMENT_MAX_MESSAGES}."]}})
    batch_errors: FieldErrors = {}
    batch_context = _object(body.get("context"), "context", batch_errors)
    if batch_errors:
        raise ApiError("The batch is invalid; nothing was stored.", status_code=400,
                       errors={"json": batch_errors})
    return _collect(
        batch,
        lambda message: segment_message_to_row(message, received_at, batch_sent_at=body.get("sentAt"),
                                               batch_context=batch_context),
        location=("batch",),
        noun="messages",
    )


# --- PostHog ------------------------------------------------------------------------------------------


def posthog_event_to_row(event: Any, received_at: datetime, *, batch_sent_at: Any = None
                         ) -> tuple[rules.EventRow | None, FieldErrors]:
    """Map one PostHog event to an event row, or return the errors by PostHog field name."""
    if not isinstance(event, dict):
        return None, {"_schema": [rules.MSG_NOT_OBJECT]}
    errors: FieldErrors = {}
    if _refuse_surrogates(event, errors):
        return None, errors

    raw_uuid = event.get("uuid")
    event_id: str | None = None
    try:
        event_id = _canonical_id(POSTHOG_NAMESPACE, event) if raw_uuid is None else rules.parse_event_id(raw_uuid)
    except rules.Invalid as exc:
        errors["uuid"] = [str(exc)]

    properties = dict(_object(event.get("properties"), "properties", errors))
    for key in ("$set", "$set_once"):
        if key in event and key not in properties:
            properties[key] = event[key]

    distinct_id = _identifier(event.get("distinct_id"))
    if distinct_id is None:
        distinct_id = _identifier(properties.get("distinct_id", properties.get("$distinct_id")))
    if distinct_id is None:
        errors["distinct_id"] = ["Missing data for required field (top level or in properties)."]

    sent_at = event.get("sent_at", event.get("sentAt", batch_sent_at))
    timestamp = event.get("timestamp")
    if timestamp is None and event.get("offset") is not None:
        offset = event["offset"]
        if isinstance(offset, (int, float)) and not isinstance(offset, bool) and 0 <= offset < 10 ** 12:
            timestamp, sent_at = (received_at - timedelta(milliseconds=offset)).isoformat(), None
        else:
            errors["offset"] = ["Must be a non-negative number of milliseconds."]
    when = occurred_at(timestamp, sent_at, received_at, errors,
                       timestamp_field="timestamp", sent_at_field="sent_at")
    mapped = {
        "event_id": event_id,
        "occurred_at": when,
        "user_id": distinct_id,
        "event_type": event.get("event"),
        "properties": properties,
    }
    if mapped["event_type"] is None:
        errors["event"] = [rules.MSG_MISSING]
    return _finish(mapped, errors, received_at, POSTHOG_FIELDS)


def posthog_events(body: Any) -> tuple[list[Any], tuple[str, ...], Any, bool]:
    """The events of any PostHog capture body: ``{"batch": [...]}``, a bare array, or one event.

    Returns the events, where they sit in the body (for error paths), the batch's sent_at, and whether
    the body was a single event.
    """
    if isinstance(body, list):
        return body, (), None, False
    if isinstance(body, dict):
        if "batch" in body:
            if not isinstance(body["batch"], list):
                raise ApiError('"batch" must be an array of events.', status_code=400,
                               errors={"json": {"batch": ["Must be an array."]}})
            return body["batch"], ("batch",), body.get("sent_at", body.get("sentAt")), False
        if "event" in body:
            return [body], (), None, True
    raise ApiError('Request body must be {"batch": [...]}, an array of events, or one event object.',
                   status_code=400, errors={"json": {"_schema": [rules.MSG_NOT_OBJECT]}})


def posthog_rows(body: Any, received_at: datetime, max_events: int) -> list[rules.EventRow]:
    events, location, batch_sent_at, single = posthog_events(body)
    if not events:
        raise ApiError("The request holds no events.", status_code=400,
                       errors={"json": {location[0] if location else "_schema": ["Must not be empty."]}})
    if len(events) > max_events:
        raise ApiError(f"A request holds at most {max_events} events, got {len(events)}.", status_code=413)
    if single:
        row, errors = posthog_event_to_row(events[0], received_at)
        if errors:
            reject(1)
            raise ApiError("The event is invalid; nothing was stored.", status_code=400,
                           errors={"json": errors})
        return [row]  # type: ignore[list-item]
    return _collect(events, lambda event: posthog_event_to_row(event, received_at, batch_sent_at=batch_sent_at),
                    location=location, noun="events")


# --- both ---------------------------------------------------------------------------------------------


def _collect(items: list[Any], to_row: Callable[[Any], tuple[rules.EventRow | None, FieldErrors]], *,
             location: tuple[str, ...], noun: str) -> list[rules.EventRow]:
    rows: list[rules.EventRow] = []
    errors: dict[str, FieldErrors] = {}
    for index, item in enumerate(items):
        row, item_errors = to_row(item)
        if item_errors:
            errors[str(index)] = item_errors
        else:
            rows.append(row)  # type: ignore[arg-type]
    if errors:
        reject(len(items))
        located: dict[str, Any] = errors
        for key in reversed(location):
            located = {key: located}
        first = next(iter(errors))
        raise ApiError(
            f"{len(errors)} of {len(items)} {noun} are invalid (first: {noun[:-1]} {first}); nothing was stored.",
            status_code=400, errors={"json": located},
        )
    return rows


def ingest_segment(engine: sa.Engine, body: Any, message_type: str | None,
                   received_at: datetime | None = None, committer: GroupCommitter | None = None) -> dict[str, Any]:
    """Validate and store a Segment request body; return Segment's success answer."""
    rows = segment_rows(body, received_at or datetime.now(rules.UTC), message_type)
    result = store(engine, rows, "segment", committer)
    return {"success": True, "ingested": result.ingested, "duplicates": result.duplicates}


def ingest_posthog(engine: sa.Engine, body: Any, received_at: datetime | None = None,
                   max_events: int = rules.MAX_EVENTS_PER_BATCH,
                   committer: GroupCommitter | None = None) -> dict[str, Any]:
    """Validate and store a PostHog capture body; return PostHog's success answer."""
    rows = posthog_rows(body, received_at or datetime.now(rules.UTC), max_events)
    result = store(engine, rows, "posthog", committer)
    return {"status": 1, "ingested": result.ingested, "duplicates": result.duplicates}


def store(engine: sa.Engine, rows: Iterable[rules.EventRow], sdk: str,
          committer: GroupCommitter | None = None) -> SdkResult:
    """Write the rows through the one write path (dedupe by event_id, rollups, counters): in a transaction
    shared with other waiting requests when a ``committer`` is given, else in one of their own."""
    rows = list(rows)
    result: WriteResult
    if committer is not None:
        result = committer.submit(rows)
    else:
        with engine.begin() as connection:
            result = write_events(connection, rows)
    SDK_EVENTS.labels(sdk).inc(len(rows))
    return SdkResult(ingested=result.ingested, duplicates=result.duplicates)
