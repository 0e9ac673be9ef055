"""Reading a JSON request body: size limits, gzip (bomb-safe) and precise parse errors."""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Any

from flask import Request

from ..errors import ApiError
from . import rules

READ_CHUNK = 64 * 1024


@dataclass
class JsonBody:
    value: Any
    sha256: str


def _too_large(limit: int) -> ApiError:
    return ApiError(f"Request body is larger than {limit} bytes.", status_code=413)


def _read_limited(request: Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    stream = request.stream
    chunks, size = [], 0
    while chunk := stream.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip_limited(data: bytes, limit: int) -> bytes:
    """Inflate at most ``limit`` bytes; a bomb is refused after inflating just past the limit."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise ApiError(f"Request body inflates to more than {limit} bytes.", status_code=413)
        out += inflater.flush()
        if not inflater.eof:
            raise ApiError("Request body is not valid gzip: the stream is truncated.", status_code=400)
    except zlib.error as exc:
        raise ApiError(f"Request body is not valid gzip: {exc}.", status_code=400) from None
    if len(out) > limit:
        raise ApiError(f"Request body inflates to more than {limit} bytes.", status_code=413)
    return out


def read_json_body(request: Request, limit: int) -> JsonBody:
    """Return the parsed JSON body and its SHA-256, or raise an ApiError saying what is wrong."""
    if request.mimetype != "application/json":
        raise ApiError(
            f"Content-Type must be application/json, got {request.mimetype or 'none'!r}.", status_code=415
        )
    data = _read_limited(request, limit)
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding == "gzip":
        data = _gunzip_limited(data, limit)
    elif encoding != "identity":
        raise ApiError(f"Content-Encoding {encoding!r} is not supported; use gzip or none.", status_code=415)
    try:
        # NaN/Infinity become markers the validator names by event and field; big integers stay exact.
        value = rules.loads_json(data)
    except (ValueError, RecursionError) as exc:
        raise ApiError(f"Request body is not valid JSON: {exc}.", status_code=400) from None
    return JsonBody(value=value, sha256=hashlib.sha256(data).hexdigest())
