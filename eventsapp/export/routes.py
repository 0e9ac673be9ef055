"""``GET /export/events``: every matching event, streamed."""
from __future__ import annotations

from typing import Any, Iterator

from flask import Response, current_app, request
from marshmallow import fields, validate

from ..errors import document_errors
from ..extensions import db
from ..people.params import SEGMENT_HELP, LocalRange, QueryBlueprint, RangeArgs, SegmentField, check_timezone
from . import service

blp = QueryBlueprint("export", __name__, url_prefix="/export",
                     description="Take the data out: every event of a range as NDJSON or import-format CSV.")

MEDIA_TYPES = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


class ExportArgs(RangeArgs):
    from_ = fields.Date(required=True, data_key="from",
                        metadata={"description": "First local date (inclusive), YYYY-MM-DD."})
    to = fields.Date(required=True, metadata={"description": "Last local date (inclusive), YYYY-MM-DD."})
    segment = fields.List(SegmentField(), load_default=list, metadata={"description": SEGMENT_HELP})
    format = fields.String(load_default="ndjson", validate=validate.OneOf(service.FORMATS),
                           metadata={"description": "`ndjson` (one POST /events event per line) or `csv` "
                                                    "(the `flask import-csv` format)."})


@blp.route("/events")
@blp.arguments(ExportArgs, location="query", as_kwargs=True)
@blp.response(200, description="The events in (occurred_at, event_id) order, streamed; gzip-compressed "
              "when Accept-Encoding allows gzip.")
@blp.doc(responses={"200": {"content": {media: {"schema": {"type": "string"}} for media in ("application/x-ndjson", "text/csv")}}})
@document_errors(blp, {400: "A malformed parameter (errors.query names it)."})
def export_events(from_, to, tz, segment, format: str, **_: Any):
    """Export every event of a range."""
    tz = check_timezone(db.engine, tz or current_app.config["EVENTSAPP_TIMEZONE"])
    chunks = service.stream_export(db.engine, local=LocalRange(from_, to, tz), segments=segment, fmt=format)
    # The first chunk before the answer starts: a database that is away is still a 503, not a cut-off 200.
    first = next(chunks, None)
    return _streamed(_after(first, chunks), format, f"events-{from_}-{to}.{format}")


def _after(first: bytes | None, chunks) -> Iterator[bytes]:
    # A generator (not itertools.chain) so that closing the response, as the server does when the client
    # goes away, closes ``chunks`` and so stops the COPY.
    try:
        if first:
            yield first
        yield from chunks
    finally:
        chunks.close()


def _streamed(chunks, fmt: str, filename: str) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Vary": "Accept-Encoding"}
    if request.accept_encodings["gzip"] > 0:
        chunks = service.gzipped(chunks)
        headers["Content-Encoding"] = "gzip"
    return Response(chunks, mimetype=MEDIA_TYPES[fmt], headers=headers, direct_passthrough=True)
