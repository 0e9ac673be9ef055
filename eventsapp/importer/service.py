"""Import events from CSV sources through the one write path, exactly once, resumably.

Rows are parsed and validated (``rows``: the rules of ``POST /events``) in the calling thread while
writer threads (``pipeline``) store earlier batches with the write core's ``write_events``, one
transaction per batch, so Python's work overlaps PostgreSQL's. A batch is visible to readers as soon as
it commits. An interrupted import leaves only whole batches behind; running it again skips the events
already stored (dedupe by event_id) and reports them as duplicates. Another thread folds the rollup
outbox while batches are still arriving, and once more after the last one.

With an idempotency key the key is held by a session advisory lock for the whole import and stored
in ``processed_keys`` (kind 'import', the content checksum, the totals) only after every batch has
committed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Callable

import orjson
import sqlalchemy as sa

from ..ingest import rules
from . import sources as src
from .pipeline import APPLICATION_NAME, BatchWriter, import_connection  # noqa: F401 - APPLICATION_NAME is public
from .rows import CsvRows, RejectsFile, RowError

DEFAULT_BATCH_SIZE = 10_000
KEY_KIND = "import"

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, "int | None"], None]  # rows read, raw bytes read, total bytes


@dataclass(frozen=True)
class ImportOptions:
    """How to import: the CLI's options, and where progress and refused rows are reported."""

    idempotency_key: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    skip_invalid: bool = False
    rejects_path: str | None = None
    on_progress: ProgressCallback | None = None
    on_reject: Callable[[RowError], None] | None = None
    project_tz: str | None = None  # EVENTSAPP_TIMEZONE, for the rollup fold beside the writes


@dataclass
class ImportTotals:
    sources: list[str]
    rows: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    elapsed: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportResult:
    totals: ImportTotals
    replayed: bool = False
    key: str | None = None
    imported_at: str | None = None  # when a replayed key was first stored


class ImportFailed(Exception):
    """The import stopped; ``exit_code`` is what the command exits with, ``totals`` what was committed."""

    exit_code = 1

    def __init__(self, message: str, totals: ImportTotals | None = None,
                 details: list[str] | None = None) -> None:
        super().__init__(message)
        self.totals = totals
        self.details = details or []


class BadRow(ImportFailed):
    """A row breaks a rule and --skip-invalid is off."""

    def __init__(self, row_error: RowError, totals: ImportTotals) -> None:
        self.row_error = row_error
        super().__init__(
            f"Import stopped at the first bad row ({row_error.file}:{row_error.line}). The "
            f"{totals.inserted + totals.duplicates:,} valid rows before it are committed "
            f"({totals.inserted:,} new). Fix the row and run the same command again: events already stored "
            "are skipped. Or use --skip-invalid --rejects FILE to set bad rows aside.",
            totals,
            row_error.messages(),
        )


class KeyConflict(ImportFailed):
    """The idempotency key was already used for different content."""

    exit_code = 2


class Interrupted(ImportFailed):
    exit_code = 130


# --- idempotency keys and the schema ----------------------------------------------------------------


def _lock_key(connection: sa.Connection, key: str) -> None:
    locked = connection.execute(
        sa.text("SELECT pg_try_advisory_lock(hashtextextended('import:' || :key, 0))"), {"key": key}
    ).scalar_one()
    if not locked:
        raise ImportFailed(f"Another import with the key {key!r} is running; wait for it to finish.")


def _unlock_key(connection: sa.Connection, key: str) -> None:
    connection.execute(sa.text("SELECT pg_advisory_unlock(hashtextextended('import:' || :key, 0))"),
                       {"key": key})


def stored_key(connection: sa.Connection, key: str) -> sa.Row | None:
    return connection.execute(
        sa.text("SELECT fingerprint, result, created_at FROM processed_keys "
                "WHERE kind = :kind AND key = :key"),
        {"kind": KEY_KIND, "key": key},
    ).first()


def _store_key(connection: sa.Connection, key: str, fingerprint: str, totals: ImportTotals) -> None:
    connection.execute(
        sa.text(
            "INSERT INTO processed_keys (kind, key, fingerprint, status_code, result, expires_at) "
            "VALUES (:kind, :key, :fingerprint, 0, CAST(:result AS jsonb), NULL)"
        ),
        {"kind": KEY_KIND, "key": key, "fingerprint": fingerprint,
         "result": orjson.dumps(totals.as_dict()).decode()},
    )


def require_schema(connection: sa.Connection) -> None:
    """Refuse to start on a database whose schema is not at the migrations' head: the tables may be
    missing, and "run the same command again" would not help."""
    from ..database import MIGRATIONS_DIR, current_revision, head_revision
    from .bootstrap import head_revision_fast

    head = head_revision_fast(MIGRATIONS_DIR / "versions") or head_revision()
    current = current_revision(connection)
    if current != head:
        raise ImportFailed(
            f"The database schema is at {current or 'no revision (an empty database)'}; this eventsapp needs "
            f"{head}. Nothing was imported: run `flask db upgrade`, then this command again."
        )


# --- the import -------------------------------------------------------------------------------------


def import_sources(
    engine: sa.Engine,
    sources: list[src.Source],
    *,
    idempotency_key: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    skip_invalid: bool = False,
    rejects_path: str | None = None,
    on_progress: ProgressCallback | None = None,
    on_reject: Callable[[RowError], None] | None = None,
    project_tz: str | None = None,
) -> ImportResult:
    """Import every row of ``sources`` (in order) and return the totals; raise ImportFailed on failure.

    ``project_tz`` (EVENTSAPP_TIMEZONE) is handed to the rollup fold, which runs beside the writes.
    """
    options = ImportOptions(idempotency_key, batch_size, skip_invalid, rejects_path, on_progress, on_reject,
                            project_tz)
    started = time.perf_counter()
    totals = ImportTotals(sources=[s.name for s in sources])
    try:
        return _import_with_key(engine, sources, options, totals, started)
    except sa.exc.DBAPIError as exc:
        raise ImportFailed(
            f"Database error: {_first_line(exc)}. {totals.inserted:,} new events were committed before it; "
            "run the same command again to finish (safe: events already stored are skipped).",
            totals,
        ) from None
    finally:
        if not totals.elapsed:  # a stopped import's summary shows the time it ran too
            totals.elapsed = round(time.perf_counter() - started, 3)


def _first_line(exc: sa.exc.DBAPIError) -> str:
    return (str(exc.orig or exc).strip().splitlines() or ["unknown"])[0]


def _import_with_key(engine: sa.Engine, sources: list[src.Source], options: ImportOptions,
                     totals: ImportTotals, started: float) -> ImportResult:
    key = options.idempotency_key
    with import_connection(engine) as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        require_schema(connection)
        if key is not None:
            _lock_key(connection, key)
        try:
            if key is not None:
                stored = stored_key(connection, key)
                if stored is not None:
                    return _replay(stored, sources, key)
            fingerprint = _import_rows(engine, sources, options, totals)
            totals.elapsed = round(time.perf_counter() - started, 3)
            if key is not None:
                _store_key(connection, key, fingerprint, totals)
        finally:
            if key is not None:
                try:
                    _unlock_key(connection, key)
                except sa.exc.DBAPIError:
                    pass  # the session is gone, and its lock with it
    return ImportResult(totals=totals, key=key)


def _replay(stored: sa.Row, sources: list[src.Source], key: str) -> ImportResult:
    fingerprint = src.checksum(sources)
    if fingerprint != stored.fingerprint:
        raise KeyConflict(
            f"The idempotency key {key!r} was used on {stored.created_at:%Y-%m-%d %H:%M:%S %Z} for different "
            f"content (checksum {stored.fingerprint[:12]}…, this content {fingerprint[:12]}…); nothing was "
            "written. Use a new key for new content."
        )
    previous = stored.result
    totals = ImportTotals(**{name: previous.get(name, default) for name, default in
                             (("sources", []), ("rows", 0), ("inserted", 0), ("duplicates", 0),
                              ("rejected", 0), ("elapsed", 0.0))})
    return ImportResult(totals=totals, replayed=True, key=key,
                        imported_at=f"{stored.created_at:%Y-%m-%d %H:%M:%S %Z}")


class _Batcher:
    """Collects valid rows into batches for the writer, dropping repeats of recent event ids.

    Event ids of the last ``id_window`` rows or more are kept, in two generations: a repeat of a recent
    row (a retried event, the usual kind) is counted as a duplicate here instead of sending its batch the
    slower ON CONFLICT way, and batches written at the same time never share an id. Older repeats are
    left to the database.
    """

    def __init__(self, engine: sa.Engine, options: ImportOptions) -> None:
        self.batch_size = options.batch_size
        self.id_window = min(max(3 * options.batch_size, 30_000), 300_000)
        self.writer = BatchWriter(engine, options.project_tz,
                                  max_lag=max(self.id_window // options.batch_size - 1, 1),
                                  fold_backlog=max(50_000, 3 * options.batch_size))
        self.recent: set[str] = set()
        self.older: set[str] = set()
        self.batch: list[rules.EventRow] = []

    def add(self, row: rules.EventRow) -> bool:
        """Queue a valid row; True when that completed a batch (handed to the writer)."""
        event_id = row[0]
        if event_id in self.recent or event_id in self.older:
            self.writer.repeats += 1
            return False
        self.recent.add(event_id)
        if len(self.recent) >= self.id_window:
            self.recent, self.older = set(), self.recent
        self.batch.append(row)
        if len(self.batch) < self.batch_size:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        if self.batch:
            self.writer.put(self.batch)
            self.batch = []

    def finish(self, totals: ImportTotals) -> None:
        """Write the last rows, wait for every batch and the last rollup fold; raise a writer's error."""
        try:
            self.flush()
            self.writer.finish()
        finally:
            self._count(totals)

    def abandon(self, totals: ImportTotals) -> None:
        self.writer.abandon()
        self._count(totals)

    def _count(self, totals: ImportTotals) -> None:
        writer = self.writer
        totals.inserted, totals.duplicates = writer.inserted, writer.duplicates + writer.repeats


def _import_rows(engine: sa.Engine, sources: list[src.Source], options: ImportOptions,
                 totals: ImportTotals) -> str:
    """Read, check and store every row; return the content checksum of the sources."""
    run = _ImportRun(_Batcher(engine, options), options, totals, src.total_size(sources))
    run.batcher.writer.start()
    try:
        run.rejects.open()
        for source in sources:
            run.import_source(source)
        run.batcher.flush()
        run.report_progress(0)
        run.batcher.finish(totals)
    except src.SourceError as exc:
        run.batcher.abandon(totals)
        raise ImportFailed(str(exc), totals) from None
    except (KeyboardInterrupt, SystemExit):
        run.batcher.abandon(totals)
        raise Interrupted(
            f"Interrupted. {totals.inserted:,} new events were committed in complete batches; run the same "
            "command again to finish (events already stored are skipped).",
            totals,
        ) from None
    except ImportFailed as exc:
        if run.batcher.writer.is_alive():
            run.batcher.abandon(totals)
        if exc.totals is None:
            exc.totals = totals
        raise
    except sa.exc.DBAPIError as exc:
        run.batcher.abandon(totals)
        raise ImportFailed(
            f"Database error: {_first_line(exc)}. {totals.inserted:,} new events were committed in complete "
            "batches before it; run the same command again to finish (safe: events already stored are "
            "skipped).",
            totals,
        ) from None
    finally:
        run.rejects.close()
    return run.digest.hexdigest()


class _ImportRun:
    """The state of one import across its sources: the checksum, the batches, the rejects, the counts."""

    def __init__(self, batcher: _Batcher, options: ImportOptions, totals: ImportTotals,
                 total_bytes: int | None) -> None:
        self.batcher = batcher
        self.options = options
        self.totals = totals
        self.digest = src.new_digest()
        self.rejects = RejectsFile(options.rejects_path, options.on_reject)
        self.now = datetime.now(rules.UTC)
        self.window = rules.TimeWindow(self.now)
        self.done_bytes = 0  # raw bytes of the sources already read
        self.total_bytes = total_bytes

    def report_progress(self, source_bytes: int) -> None:
        if self.options.on_progress is not None:
            self.options.on_progress(self.totals.rows, self.done_bytes + source_bytes, self.total_bytes)

    def import_source(self, source: src.Source) -> None:
        """Import the rows of one source; a bad row stops the import unless --skip-invalid."""
        totals, batcher = self.totals, self.batcher
        opened = src.OpenSource(source, self.digest, watch_digits=True)
        rows = CsvRows(opened, source.name, self.now, self.window)
        try:
            for checked in rows:
                totals.rows += 1
                if checked.row is not None:
                    if batcher.add(checked.row):
                        self.report_progress(opened.consumed())
                    continue
                row_error = RowError(source.name, checked.line, checked.errors)
                if not self.options.skip_invalid:
                    batcher.finish(totals)  # the rows before it are committed, as the message says
                    raise BadRow(row_error, totals)
                totals.rejected += 1
                self.rejects.add(checked.fields, rows.names, row_error)
        finally:
            self.done_bytes += opened.consumed()
            opened.close()
        self.digest.update(src.SOURCE_SEPARATOR)
