"""Import events from CSV sources through the one write path, exactly once, resumably.

Rows are parsed and validated (``ingest.rules``, the rules of ``POST /events``) in the calling thread
while a writer thread stores the previous batch with ``ingest.service.write_events``, one transaction
per batch, so Python's work overlaps PostgreSQL's. A batch is visible to readers as soon as it commits.
An interrupted import leaves only whole batches behind; running it again skips the events already
stored (dedupe by event_id) and reports them as duplicates. A third thread folds the rollup outbox
(``stats.rollups.fold_outbox``) while batches are still arriving, and once more after the last one.

With an idempotency key the key is held by a session advisory lock for the whole import and stored
in ``processed_keys`` (kind 'import', the content checksum, the totals) only after every batch has
committed.
"""
from __future__ import annotations

import csv
import io
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Callable

import orjson
import sqlalchemy as sa

from ..ingest import rules
from . import sources as src

DEFAULT_BATCH_SIZE = 10_000
COLUMNS = ("event_id", "occurred_at", "user_id", "event_type", "properties_json")
REQUIRED_COLUMNS = COLUMNS[:4]
REJECT_COLUMNS = COLUMNS + ("file", "line", "error")
KEY_KIND = "import"

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, "int | None"], None]  # rows read, raw bytes read, total bytes


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


@dataclass
class RowError:
    file: str
    line: int
    errors: dict[str, list[str]]

    def messages(self) -> list[str]:
        return [f"{self.file}:{self.line}: {name}: {message}"
                for name, messages in self.errors.items() for message in messages]


class ImportError_(Exception):  # noqa: N801 - the builtin name is taken
    """The import stopped; ``exit_code`` is what the command exits with, ``totals`` what was committed."""

    exit_code = 1

    def __init__(self, message: str, totals: ImportTotals | None = None,
                 details: list[str] | None = None) -> None:
        super().__init__(message)
        self.totals = totals
        self.details = details or []


class BadRow(ImportError_):
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


class KeyConflict(ImportError_):
    """The idempotency key was already used for different content."""

    exit_code = 2


class Interrupted(ImportError_):
    exit_code = 130


# --- header and rows --------------------------------------------------------------------------------


def _column_indexes(header: list[str], name: str) -> tuple[int, int, int, int, int | None]:
    if header and header[0].startswith("\ufeff"):  # a byte-order mark from spreadsheet exports
        header[0] = header[0][1:]
    names = [column.strip() for column in header]
    problems = []
    unknown = [column for column in names if column not in COLUMNS]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
    repeated = sorted({column for column in names if names.count(column) > 1})
    if repeated:
        problems.append(f"repeated column(s) {', '.join(map(repr, repeated))}")
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        problems.append(f"missing column(s) {', '.join(map(repr, missing))}")
    if problems:
        raise ImportError_(
            f"{name}:1: header: {'; '.join(problems)}. Expected the columns {', '.join(COLUMNS)} "
            "(any order; properties_json may be left out)."
        )
    props = names.index("properties_json") if "properties_json" in names else None
    return (names.index("event_id"), names.index("occurred_at"), names.index("user_id"),
            names.index("event_type"), props)


_json_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def parse_properties(text: str) -> tuple[Any, str | None]:
    """The properties cell as a value for the rules (an empty cell means {}); or an error message."""
    try:
        return _json_loads(text), None
    except _JSONDecodeError:
        pass
    try:
        # NaN/Infinity come back as markers, so the property rule reports them as over HTTP.
        return rules.loads_lenient(text), None
    except ValueError as exc:
        return None, f"Not valid JSON: {getattr(exc, 'msg', exc)} (character {getattr(exc, 'pos', 0) + 1})."


def validate_csv_row(fields: list[str], indexes: tuple[int, int, int, int, int | None],
                     now: datetime) -> tuple[rules.EventRow | None, dict[str, list[str]]]:
    """Validate one CSV row as ``POST /events`` validates the same event; errors are keyed by CSV column."""
    i_id, i_at, i_user, i_type, i_props = indexes
    item: dict[str, Any] = {"event_id": fields[i_id], "occurred_at": fields[i_at],
                            "user_id": fields[i_user], "event_type": fields[i_type]}
    cell_error = None
    if i_props is not None and fields[i_props]:
        try:
            item["properties"] = _json_loads(fields[i_props])
        except _JSONDecodeError:
            item["properties"], cell_error = parse_properties(fields[i_props])
    row, errors = rules.validate_event(item, now)
    if cell_error is not None:
        errors.pop("properties", None)
        errors["properties_json"] = [cell_error]
        return None, errors
    if errors and "properties" in errors:
        errors["properties_json"] = errors.pop("properties")
    return row, errors


# --- the writer thread ------------------------------------------------------------------------------


def _find_fold() -> Callable[[sa.Connection, str | None], int] | None:
    try:
        from ..stats.rollups import fold_outbox
    except ImportError:
        return None
    return fold_outbox


class _Folder(threading.Thread):
    """Folds the rollup outbox on its own connection while batches are still being written, so the
    rollup work runs beside the inserts (on another core) rather than after them. A failed fold only
    delays the rollups: the rows stay queued and the next read or import folds them."""

    def __init__(self, engine: sa.Engine, fold: Callable[[sa.Connection, str | None], int],
                 project_tz: str | None) -> None:
        super().__init__(name="import-folder", daemon=True)
        self.engine = engine
        self.fold = fold
        self.project_tz = project_tz
        self.pending = threading.Event()
        self.done = False

    def run(self) -> None:
        try:
            with self.engine.connect() as connection:
                while True:
                    self.pending.wait()
                    self.pending.clear()
                    finished = self.done
                    with connection.begin():
                        self.fold(connection, self.project_tz)
                    if finished:
                        return
        except Exception:  # noqa: BLE001
            log.warning("folding the rollup outbox failed; the next read will fold it", exc_info=True)

    def poke(self) -> None:
        self.pending.set()

    def finish(self, timeout: float | None = None) -> None:
        self.done = True
        self.pending.set()
        self.join(timeout)


class _Writer(threading.Thread):
    """Stores batches in order, one transaction each; remembers the first failure and drains the rest."""

    def __init__(self, engine: sa.Engine, project_tz: str | None = None) -> None:
        super().__init__(name="import-writer", daemon=True)
        self.engine = engine
        self.batches: queue.Queue[list | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.inserted = 0
        self.duplicates = 0
        self.stop_requested = False
        fold = _find_fold()
        self.folder = _Folder(engine, fold, project_tz) if fold is not None else None

    def run(self) -> None:
        from ..ingest.service import write_events

        if self.folder is not None:
            self.folder.start()
        try:
            with self.engine.connect() as connection:
                while True:
                    batch = self.batches.get()
                    if batch is None:
                        break
                    if self.error is not None or self.stop_requested:
                        continue
                    try:
                        with connection.begin():
                            result = write_events(connection, batch)
                        self.inserted += result.ingested
                        self.duplicates += result.duplicates
                        if self.folder is not None and result.ingested:
                            self.folder.poke()
                    except BaseException as exc:  # noqa: BLE001 - reported by the importing thread
                        self.error = exc
        except BaseException as exc:  # noqa: BLE001
            if self.error is None:
                self.error = exc
            while self.batches.get() is not None:  # let the producer finish putting
                pass
        finally:
            if self.folder is not None:
                # One last fold for the last batch; the import ends when the rollups are current.
                self.folder.finish(timeout=None if self.error is None and not self.stop_requested else 30)

    def put(self, batch: list) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.batches.put(batch, timeout=0.5)
                return
            except queue.Full:
                if not self.is_alive():
                    raise RuntimeError("the import writer stopped unexpectedly") from self.error

    def finish(self) -> None:
        self.batches.put(None)
        self.join()
        if self.error is not None:
            raise self.error


# --- idempotency keys -------------------------------------------------------------------------------


def _lock_key(connection: sa.Connection, key: str) -> None:
    locked = connection.execute(
        sa.text("SELECT pg_try_advisory_lock(hashtextextended('import:' || :key, 0))"), {"key": key}
    ).scalar_one()
    if not locked:
        raise ImportError_(f"Another import with the key {key!r} is running; wait for it to finish.")


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


# --- the import -------------------------------------------------------------------------------------


@dataclass
class _RejectSink:
    path: str | None
    on_reject: Callable[[RowError], None] | None
    _file: Any = field(default=None, init=False)
    _writer: Any = field(default=None, init=False)

    def open(self) -> None:
        if self.path:
            self._file = open(self.path, "w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file, lineterminator="\n")
            self._writer.writerow(REJECT_COLUMNS)

    def add(self, fields: list[str], header: list[str], row_error: RowError) -> None:
        if self._writer is not None:
            by_name = dict(zip(header, fields))
            message = "; ".join(f"{name}: {m}" for name, ms in row_error.errors.items() for m in ms)
            self._writer.writerow([by_name.get(column, "") for column in COLUMNS]
                                  + [row_error.file, row_error.line, message])
        if self.on_reject is not None:
            self.on_reject(row_error)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


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
    """Import every row of ``sources`` (in order) and return the totals; raise ImportError_ on failure.

    ``project_tz`` (EVENTSAPP_TIMEZONE) is handed to the rollup fold, which runs beside the writes.
    """
    started = time.perf_counter()
    totals = ImportTotals(sources=[s.name for s in sources])
    try:
        return _import_with_key(engine, sources, totals, started, idempotency_key, batch_size, skip_invalid,
                                rejects_path, on_progress, on_reject, project_tz)
    except sa.exc.DBAPIError as exc:
        raise ImportError_(
            f"Database error: {_first_line(exc)}. {totals.inserted:,} new events were committed before it; "
            "run the same command again to finish (safe: events already stored are skipped).",
            totals,
        ) from None


def _first_line(exc: sa.exc.DBAPIError) -> str:
    return (str(exc.orig or exc).strip().splitlines() or ["unknown"])[0]


def _import_with_key(engine, sources, totals, started, idempotency_key, batch_size, skip_invalid,
                     rejects_path, on_progress, on_reject, project_tz) -> ImportResult:
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        if idempotency_key is not None:
            _lock_key(connection, idempotency_key)
        try:
            if idempotency_key is not None:
                stored = stored_key(connection, idempotency_key)
                if stored is not None:
                    return _replay(stored, sources, idempotency_key, started)
            fingerprint = _import_rows(engine, sources, totals, batch_size, skip_invalid, rejects_path,
                                       on_progress, on_reject, project_tz)
            totals.elapsed = round(time.perf_counter() - started, 3)
            if idempotency_key is not None:
                _store_key(connection, idempotency_key, fingerprint, totals)
        finally:
            if idempotency_key is not None:
                try:
                    _unlock_key(connection, idempotency_key)
                except sa.exc.DBAPIError:
                    pass  # the session is gone, and its lock with it
    return ImportResult(totals=totals, key=idempotency_key)


def _replay(stored: sa.Row, sources: list[src.Source], key: str, started: float) -> ImportResult:
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


def _import_rows(engine, sources, totals, batch_size, skip_invalid, rejects_path, on_progress, on_reject,
                 project_tz) -> str:
    now = datetime.now(rules.UTC)
    digest = src.new_digest()
    writer = _Writer(engine, project_tz)
    rejects = _RejectSink(rejects_path, on_reject)
    done_bytes = 0
    writer.start()
    try:
        rejects.open()
        batch: list = []
        for source in sources:
            opened = src.OpenSource(source, digest)
            name = source.name
            try:
                text = io.TextIOWrapper(opened.stream, encoding="utf-8", newline="")
                text._CHUNK_SIZE = 1 << 18  # type: ignore[attr-defined]  # fewer, larger decode steps
                reader = csv.reader(text, strict=True)
                try:
                    header = next(reader, None)
                    if header is None:
                        raise ImportError_(f"{name}:1: the file is empty; expected a header line "
                                           f"({','.join(COLUMNS)}).")
                    indexes = _column_indexes(header, name)
                    width = len(header)
                    line = reader.line_num
                    for fields in reader:
                        start_line = line + 1
                        line = reader.line_num
                        if len(fields) != width:
                            if not fields:
                                continue  # a blank line
                            row = None
                            errors = {"row": [
                                f"Expected {width} columns as in the header, got {len(fields)}."]}
                        else:
                            row, errors = validate_csv_row(fields, indexes, now)
                        totals.rows += 1
                        if row is not None:
                            batch.append(row)
                            if len(batch) >= batch_size:
                                writer.put(batch)
                                batch = []
                                if on_progress is not None:
                                    on_progress(totals.rows, done_bytes + opened.consumed(),
                                                src.total_size(sources))
                            continue
                        row_error = RowError(name, start_line, errors)
                        if not skip_invalid:
                            totals.rows -= 1
                            if batch:
                                writer.put(batch)
                                batch = []
                            _finish(writer, totals)
                            raise BadRow(row_error, totals)
                        totals.rejected += 1
                        rejects.add(fields, [c.strip().lstrip("\ufeff") for c in header], row_error)
                except csv.Error as exc:
                    raise ImportError_(f"{name}:{reader.line_num}: not valid CSV: {exc}.") from None
                except UnicodeDecodeError:
                    raise ImportError_(f"{name}:{reader.line_num + 1}: not valid UTF-8 text.") from None
                except (OSError, EOFError) as exc:
                    raise ImportError_(f"{name}: cannot read after line {reader.line_num}: {exc}") from None
            finally:
                done_bytes += opened.consumed()
                opened.close()
            digest.update(src.SOURCE_SEPARATOR)
        if batch:
            writer.put(batch)
        if on_progress is not None:
            on_progress(totals.rows, done_bytes, src.total_size(sources))
        _finish(writer, totals)
    except src.SourceError as exc:
        _abandon(writer, totals)
        raise ImportError_(str(exc), totals) from None
    except (KeyboardInterrupt, SystemExit):
        _abandon(writer, totals)
        raise Interrupted(
            f"Interrupted. {totals.inserted:,} new events were committed in complete batches; run the same "
            "command again to finish (events already stored are skipped).",
            totals,
        ) from None
    except ImportError_ as exc:
        if writer.is_alive():
            _abandon(writer, totals)
        if exc.totals is None:
            exc.totals = totals
        raise
    except sa.exc.DBAPIError as exc:
        _abandon(writer, totals)
        raise ImportError_(
            f"Database error: {_first_line(exc)}. {totals.inserted:,} new events were committed in complete "
            "batches before it; run the same command again to finish (safe: events already stored are "
            "skipped).",
            totals,
        ) from None
    finally:
        rejects.close()
    return digest.hexdigest()


def _finish(writer: _Writer, totals: ImportTotals) -> None:
    try:
        writer.finish()
    finally:
        totals.inserted, totals.duplicates = writer.inserted, writer.duplicates


def _abandon(writer: _Writer, totals: ImportTotals) -> None:
    """Let the batch in flight finish, drop the queued ones, and stop the writer."""
    writer.stop_requested = True
    try:
        writer.batches.put(None, timeout=5)
    except queue.Full:
        pass
    writer.join(timeout=30)
    totals.inserted, totals.duplicates = writer.inserted, writer.duplicates
