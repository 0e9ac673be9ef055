"""Export: every event in a range, in (occurred_at, event_id) order, as NDJSON or import-format CSV.

PostgreSQL writes the lines itself (``COPY (SELECT ...) TO STDOUT``), and they go out as they come: to a
file for ``flask export-events``, through a small bounded queue for HTTP, so memory stays flat whatever
the range holds. The CSV is exactly what ``flask import-csv`` reads: header
``event_id,occurred_at,user_id,event_type,properties_json``, occurred_at in UTC with every fraction digit
stored, properties as jsonb text (integers of any size stay exact); importing it into an empty database
reproduces every event.
"""
from __future__ import annotations

import queue
import threading
import zlib
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Sequence

import sqlalchemy as sa

from ..people.params import LocalRange
from ..stats.schemas import conditions_sql

FORMATS = ("ndjson", "csv")
CSV_COLUMNS = "event_id,occurred_at,user_id,event_type,properties_json"
# Level 1: several times faster than the default 6 for about 10% more bytes; an export is large and
# usually read once.
GZIP_LEVEL = 1
CHUNK_BYTES = 256 * 1024
QUEUED_CHUNKS = 8

# UTC, ISO 8601, as many fraction digits as stored (none for whole seconds): exact, and about half the
# cost of to_char.
_AT = "replace((occurred_at AT TIME ZONE 'UTC')::text, ' ', 'T') || 'Z'"

COLUMNS_SQL = {
    "csv": f"event_id, {_AT} AS occurred_at, user_id, event_type, properties AS properties_json",
    # One JSON object per row: to_json quotes and escapes a text as a JSON string; jsonb's text is JSON.
    "ndjson": f"'{{\"event_id\":\"' || event_id::text || '\",\"occurred_at\":\"' || {_AT} || '\",\"user_id\":'"
              " || to_json(user_id)::text || ',\"event_type\":' || to_json(event_type)::text"
              " || ',\"properties\":' || properties::text || '}'",
}
# NDJSON goes through COPY's CSV mode with a quote and a delimiter that JSON text never holds raw (control
# characters are escaped in JSON, and the line has one column), so every line comes out as it is.
COPY_OPTIONS = {"csv": "FORMAT csv, HEADER", "ndjson": "FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02'"}


def export_sql(fmt: str, local: LocalRange, segments: Sequence[Any], params: dict[str, Any]) -> str:
    """The COPY of every event on the local dates of ``local`` matching ``segments``, in export order."""
    # The filter is /stats's own, in the driver's parameter style (COPY is sent by psycopg2 directly).
    conditions = [local.sql(params, style="driver"), conditions_sql(segments, params, driver_style=True)]
    select = (f"SELECT {COLUMNS_SQL[fmt]} FROM events WHERE {' AND '.join(conditions)} "
              "ORDER BY occurred_at, event_id")
    return f"COPY ({select}) TO STDOUT WITH ({COPY_OPTIONS[fmt]})"


class _Counting:
    """A file for COPY: passes data on, counts lines (one COPY message is one row)."""

    def __init__(self, write: Callable[[bytes], Any], on_rows: Callable[[int], None] | None, header: bool) -> None:
        self._write = write
        self._on_rows = on_rows
        self.rows = -1 if header else 0  # events, not lines
        self._pending = self.rows

    def write(self, data: bytes) -> None:
        self._write(data)
        self.rows += 1
        self._pending += 1
        if self._on_rows is not None and self._pending >= 10_000:
            self._on_rows(self._pending)
            self._pending = 0

    def close(self) -> None:
        if self._on_rows is not None and self._pending > 0:
            self._on_rows(self._pending)


def export_to(connection: sa.Connection, out: BinaryIO | Callable[[bytes], Any], *, local: LocalRange,
              segments: Sequence[Any] = (), fmt: str = "ndjson",
              on_rows: Callable[[int], None] | None = None) -> int:
    """Write the export to ``out`` (a binary file or a write function); return how many events it holds."""
    params: dict[str, Any] = {}
    sql = export_sql(fmt, local, segments, params)
    sink = _Counting(out.write if hasattr(out, "write") else out, on_rows, header=fmt == "csv")  # type: ignore[union-attr]
    with connection.connection.dbapi_connection.cursor() as cursor:
        cursor.copy_expert(cursor.mogrify(sql, params).decode(), sink, size=CHUNK_BYTES)
    sink.close()
    return sink.rows


def estimate_events(connection: sa.Connection, local: LocalRange) -> int | None:
    """About how many events the local dates hold, from the quarter-hour rollup (for a progress bar: events
    not folded yet are missing, a quarter hour is counted by its start). None when it knows nothing."""
    params: dict[str, Any] = {}
    condition = local.sql(params).replace("occurred_at", "bucket")
    total = connection.execute(sa.text(f"SELECT sum(events) FROM rollup_type_quarter WHERE {condition}"),
                               params).scalar()
    return int(total) if total else None


def gzipped(chunks: Iterable[bytes], level: int = GZIP_LEVEL) -> Iterator[bytes]:
    """The chunks as one gzip stream, compressed as they come."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    try:
        for chunk in chunks:
            out = compressor.compress(chunk)
            if out:
                yield out
        yield compressor.flush()
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a client gone mid-stream: stop what produces the chunks


class _Stopped(Exception):
    """The reader went away (client disconnected): abandon the COPY."""


_DONE = object()


def stream_export(engine: sa.Engine, **arguments: Any) -> Iterator[bytes]:
    """The export as chunks of about CHUNK_BYTES, for an HTTP response.

    A thread runs the COPY on a connection of its own and hands chunks over a queue of QUEUED_CHUNKS: a
    slow client slows the COPY down instead of filling memory. Closing the generator (client gone) stops
    the COPY and drops its connection.
    """
    chunks: queue.Queue = queue.Queue(maxsize=QUEUED_CHUNKS)
    stop = threading.Event()
    buffer: list[bytes] = []
    size = 0

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Stopped

    def write(data: bytes) -> None:
        nonlocal size
        buffer.append(data)
        size += len(data)
        if size >= CHUNK_BYTES:
            put(b"".join(buffer))
            buffer.clear()
            size = 0

    def run() -> None:
        try:
            with engine.connect() as connection:
                try:
                    with connection.begin():
                        export_to(connection, write, **arguments)
                except _Stopped:
                    connection.invalidate()  # the COPY was cut off mid-stream: never reuse this connection
                    return
            if buffer:
                put(b"".join(buffer))
            put(_DONE)
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, raised there
            try:
                put(exc)
            except _Stopped:
                pass

    thread = threading.Thread(target=run, name="eventsapp-export", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)
