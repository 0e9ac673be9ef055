"""Reading an SDK request: the key first, then the body, in the order that costs an attacker the most.

Browser SDKs do not send what server SDKs send (README "Collect from the browser"): posthog-js posts
gzip with ``Content-Type: text/plain`` and no ``Content-Encoding`` (or with ``?compression=gzip-js``), or
a form ``data=<base64 JSON>`` on its unload beacon; analytics.js posts plain JSON as ``text/plain`` (no
CORS preflight for a simple request). So the encoding is recognised by the body's own first bytes.

Order of work (issue 18.7: an unknown key must not buy an inflate and a parse):

1. Auth on and a key in a header (Basic ``KEY:``, ``Authorization: Bearer``, ``X-API-Key``): the key is
   checked and the budget charged before the body is read at all.
2. Auth on and no header key: the client IP's unknown-key limit is checked (429 costs nothing), the raw
   body is read (bounded), and the key fields (``api_key``/``token``, ``writeKey``) are found by a byte scan
   of the JSON text, no parse. A gzip body must be inflated for that scan (bounded by the body limit;
   that is the one cost a key-less sender can cause, and it is counted), but it is parsed only when
   one of the scanned values is a known key. A key escaped in the JSON text (``\\u0065a_...``) is not seen
   by the scan: send keys as plain text, as every SDK does.
3. The body is parsed and the view authenticates the key the parsed body carries, as before.

``BODY_WORK`` counts inflates and parses, so tests (and operators) can see refusals cost neither.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import parse_qsl

from flask import Request
from prometheus_client import Counter

from ..errors import ApiError
from ..ingest import rules
from ..ingest.body import READ_CHUNK, _read_limited

BODY_WORK = Counter(
    "eventsapp_sdk_body_work_total", "SDK request bodies inflated (gzip) or parsed (JSON), by step", ["step"]
)

GZIP_MAGIC = b"\x1f\x8b"
JSON_TYPES = frozenset({"application/json", "text/plain"})
FORM_TYPE = "application/x-www-form-urlencoded"
# At most this many distinct values of a key field are looked up before a body is refused unparsed:
# a nested property may share the field's name, but a flood of distinct values must not buy lookups.
MAX_KEY_CANDIDATES = 4


@dataclass
class RawBody:
    """The request body as text to parse (inflated / base64-decoded), not parsed yet."""

    text: bytes


def _key_pattern(field: str) -> re.Pattern[bytes]:
    return re.compile(rb'"' + field.encode() + rb'"\s*:\s*"([^"\\]{1,256})"')


KEY_PATTERNS: dict[str, re.Pattern[bytes]] = {
    name: _key_pattern(name) for name in ("api_key", "token", "writeKey")
}


def _check_type(request: Request) -> str:
    mimetype = request.mimetype or ""
    if mimetype in JSON_TYPES or mimetype == FORM_TYPE:
        return mimetype
    raise ApiError(
        f"Content-Type must be application/json, text/plain or {FORM_TYPE}, " f"got {mimetype or 'none'!r}.",
        status_code=415,
    )


def _wants_gzip(request: Request, data: bytes) -> bool:
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise ApiError(f"Content-Encoding {encoding!r} is not supported; use gzip or none.", status_code=415)
    compression = request.args.get("compression", "")
    # posthog-js marks nothing (text/plain, no header) or says ?compression=gzip-js; the bytes decide.
    return encoding == "gzip" or compression in ("gzip", "gzip-js") or data[:2] == GZIP_MAGIC


def _inflate(data: bytes, limit: int) -> bytes:
    """Inflate a whole gzip stream, at most ``limit`` bytes out; 413 past it, 400 when corrupt."""
    BODY_WORK.labels("inflate").inc()
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    chunks: list[bytes] = []
    size = 0
    try:
        pending = data
        while pending:
            chunk = inflater.decompress(pending, READ_CHUNK)
            pending = inflater.unconsumed_tail
            size += len(chunk)
            if size > limit:
                raise ApiError(f"Request body inflates to more than {limit} bytes.", status_code=413)
            chunks.append(chunk)
            if inflater.eof:
                break
        chunks.append(inflater.flush())
    except zlib.error as exc:
        raise ApiError(f"Request body is not valid gzip: {exc}.", status_code=400) from None
    if not inflater.eof:
        raise ApiError("Request body is not valid gzip: the stream is truncated.", status_code=400)
    if inflater.unused_data:
        raise ApiError("Request body is not valid gzip: bytes after the end of the stream.", status_code=400)
    out = b"".join(chunks)
    if len(out) > limit:
        raise ApiError(f"Request body inflates to more than {limit} bytes.", status_code=413)
    return out


def _unform(data: bytes) -> bytes:
    """posthog-js's beacon without gzip: ``data=<base64 of the JSON>`` as a url-encoded form."""
    try:
        fields = dict(parse_qsl(data.decode("ascii"), keep_blank_values=True, strict_parsing=True))
    except (UnicodeDecodeError, ValueError):
        raise ApiError("Form body is not valid url-encoded text.", status_code=400) from None
    encoded = fields.get("data")
    if encoded is None:
        raise ApiError(
            'Form body must carry the events as "data=<base64 JSON>".',
            status_code=400,
            errors={"form": {"data": [rules.MSG_MISSING]}},
        )
    try:
        # A "+" left unescaped arrives as a space.
        return base64.b64decode(encoded.replace(" ", "+"), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            'Form field "data" is not valid base64.',
            status_code=400,
            errors={"form": {"data": ["Not valid base64."]}},
        ) from None


def read_body(request: Request, limit: int) -> RawBody:
    """The body's JSON text: read bounded, un-gzipped and un-based64'd as the sender encoded it."""
    mimetype = _check_type(request)
    data = _read_limited(request, limit)
    if _wants_gzip(request, data):
        data = _inflate(data, limit)
    if mimetype == FORM_TYPE:
        data = _unform(data)
        if data[:2] == GZIP_MAGIC:
            data = _inflate(data, limit)
    return RawBody(data)


def key_candidates(body: RawBody, fields: Iterable[str]) -> list[str]:
    """Distinct values of the first of ``fields`` that the JSON text holds, found without parsing it."""
    for field in fields:
        found: list[str] = []
        for match in KEY_PATTERNS[field].finditer(body.text):
            try:
                value = match.group(1).decode("utf-8")
            except UnicodeDecodeError:
                continue
            if value not in found:
                found.append(value)
                if len(found) >= MAX_KEY_CANDIDATES:
                    break
        if found:
            return found
    return []


def parse(body: RawBody) -> Any:
    """The parsed JSON (numbers exact, NaN marked), or 400 saying where it is not JSON."""
    BODY_WORK.labels("parse").inc()
    try:
        return rules.loads_json(body.text)
    except (ValueError, RecursionError) as exc:
        raise ApiError(f"Request body is not valid JSON: {exc}.", status_code=400) from None
