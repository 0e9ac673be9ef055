"""Import events from CSV sources through the one write path, exactly once, resumably.

Rows are parsed and validated (``ingest.rules``, the rules of ``POST /events``) in the calling thread
while two writer threads store earlier batches with ``ingest.service.write_events``, one transaction
per batch, so Python's work overlaps PostgreSQL's. A batch is visible to readers as soon as it commits.
An interrupted import leaves only whole batches behind; running it again skips the events already
stored (dedupe by event_id) and reports them as duplicates. Another thread folds the rollup outbox
(``stats.rollups.fold_outbox``) while batches are still arriving, and once more after the last one.

With an idempotency key the key is held by a session advisory lock for the whole import and stored
in ``processed_keys`` (kind 'import', the content checksum, the totals) only after every batch has
committed.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import io
import logging
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator

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


_JSONDecodeError = orjson.JSONDecodeError


def parse_properties(text: str) -> tuple[Any, str | None]:
    """The properties cell as a value for the rules (an empty cell means {}); or an error message."""
    try:
        # Exact: NaN/Infinity come back as markers, so the property rule reports them as over HTTP.
        return rules.loads_json(text), None
    except (ValueError, RecursionError) as exc:
        return None, f"Not valid JSON: {getattr(exc, 'msg', exc)} (character {getattr(exc, 'pos', 0) + 1})."


def validate_csv_row(fields: list[str], indexes: tuple[int, int, int, int, int | None], now: datetime,
                     window: rules.TimeWindow | None = None,
                     loads: Callable[[str], Any] = orjson.loads) -> tuple[rules.EventRow | None, dict[str, list[str]]]:
    """Validate one CSV row as ``POST /events`` validates the same event; errors are keyed by CSV column.

    ``loads`` parses the properties cell: orjson, or ``rules.loads_json`` for a source that may hold
    integers beyond 64 bits (which orjson would round).
    """
    i_id, i_at, i_user, i_type, i_props = indexes
    text = fields[i_props] if i_props is not None else ""
    try:
        properties = loads(text) if text else rules.NO_PROPERTIES
    except (_JSONDecodeError, ValueError, RecursionError):
        pass
    else:
        row = rules.plainly_valid_row(fields[i_id], fields[i_at], fields[i_user], fields[i_type], properties,
                                      window or rules.TimeWindow(now))
        if row is not None:
            return row, {}
    item: dict[str, Any] = {"event_id": fields[i_id], "occurred_at": fields[i_at],
                            "user_id": fields[i_user], "event_type": fields[i_type]}
    cell_error = None
    if text:
        item["properties"], cell_error = parse_properties(text)
    row, errors = rules.validate_event(item, now, window)
    if cell_error is not None:
        errors.pop("properties", None)
        errors["properties_json"] = [cell_error]
        return None, errors
    if errors and "properties" in errors:
        errors["properties_json"] = errors.pop("properties")
    return row, errors


# --- bytes that are not UTF-8 -----------------------------------------------------------------------
# The text layer decodes far ahead of the row being parsed, so a strict decoder fails thousands of lines
# early and takes the rows before it down too. Instead an invalid byte is kept as a lone surrogate
# (surrogateescape) and the row holding it is refused on its own line like any other bad row. Valid
# UTF-8 never decodes to a lone surrogate, so a surrogate in a row means a bad byte.
UTF8_ERRORS = "eventsapp-import-utf8"
_invalid_utf8_seen = 0  # bumped at every invalid byte decoded; rows are checked only once it moves


def _note_invalid_utf8(exc: UnicodeDecodeError) -> tuple[str, int]:
    global _invalid_utf8_seen
    _invalid_utf8_seen += 1
    return _surrogateescape(exc)


_surrogateescape = codecs.lookup_error("surrogateescape")
codecs.register_error(UTF8_ERRORS, _note_invalid_utf8)


def invalid_utf8_errors(fields: list[str], header: list[str]) -> dict[str, list[str]]:
    """The columns of a row holding a byte that is not UTF-8, each with the byte."""
    errors: dict[str, list[str]] = {}
    for index, value in enumerate(fields):
        if value.isascii():
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(value[exc.start]) - 0xDC00
            name = header[index] if index < len(header) else "row"
            errors[name] = [f"Holds a byte that is not valid UTF-8 text (0x{byte:02x} at character "
                            f"{exc.start + 1})."]
    return errors


# --- the writer thread ------------------------------------------------------------------------------

APPLICATION_NAME = "eventsapp import-csv"


@contextmanager
def _connect(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection that pg_stat_activity shows as the import's (for operators, and for tests that must
    know when a killed import's sessions are gone); the name is reset before it returns to the pool."""
    with engine.connect() as connection:
        connection.exec_driver_sql(f"SET application_name = '{APPLICATION_NAME}'")
        connection.commit()
        try:
            yield connection
        finally:
            try:
                connection.rollback()
                connection.exec_driver_sql("RESET application_name")
                connection.commit()
            except sa.exc.SQLAlchemyError:
                pass  # a broken connection is discarded by the pool anyway


def _find_rollups() -> Any:
    try:
        from ..stats import rollups
    except ImportError:
        return None
    return rollups


class _Folder(threading.Thread):
    """Folds the rollup outbox on its own connection while batches are still being written, so the
    rollup work runs beside the inserts (on another core) rather than after them. A failed fold only
    delays the rollups: the rows stay queued and the next read or import folds them."""

    def __init__(self, engine: sa.Engine, rollups: Any, project_tz: str | None) -> None:
        super().__init__(name="import-folder", daemon=True)
        self.engine = engine
        self.rollups = rollups
        self.project_tz = project_tz
        self.pending = threading.Event()
        self.done = False

    def run(self) -> None:
        try:
            with _connect(self.engine) as connection:
                while True:
                    self.pending.wait()
                    self.pending.clear()
                    finished = self.done
                    with connection.begin():
                        self.rollups.fold_outbox(connection, self.project_tz, analyze=False)
                    if finished:
                        return
        except Exception:  # noqa: BLE001
            log.warning("folding the rollup outbox failed; the next read will fold it", exc_info=True)

    def poke(self) -> None:
        self.pending.set()

    def finish(self, timeout: float | None = None, analyze: bool = False) -> None:
        """Fold what is left and stop. ``analyze``: refresh the rollups' planner statistics meanwhile,
        on another connection (once per import rather than after every big fold; the last fold's rows
        are a small part of them)."""
        self.done = True
        self.pending.set()
        if analyze:
            try:
                with _connect(self.engine) as connection, connection.begin():
                    self.rollups.analyze_rollups(connection)
            except Exception:  # noqa: BLE001
                log.warning("refreshing the rollups' statistics failed; autovacuum will", exc_info=True)
        self.join(timeout)


# Deadlocks can only come from another writer (HTTP, another import) storing some of the same event_ids
# in the same moments; PostgreSQL rolls one side back, and the batch is simply written again.
RETRY_PGCODES = {"40P01", "40001"}  # deadlock_detected, serialization_failure
WRITE_ATTEMPTS = 3


class _Writer:
    """Stores batches, one transaction each, on ``connections`` connections at once (so PostgreSQL's
    work on one batch overlaps another's and the parsing of the next); remembers the first failure and
    drains the rest. Batches may commit out of order: an interrupted import is finished by running it
    again, which skips what is stored."""

    def __init__(self, engine: sa.Engine, project_tz: str | None = None, connections: int = 2,
                 max_lag: int = 2) -> None:
        self.engine = engine
        self.batches: queue.Queue[tuple[int, list] | None] = queue.Queue(maxsize=connections)
        # Batch n starts only once every batch before n - max_lag has finished, so a batch never runs
        # beside one further back than the importer's window of recent ids: the first of two rows with
        # one event_id is the one stored, as with a single writer.
        self.max_lag = max_lag
        self._next_seq = 0
        self._done_below = 0
        self._done: set[int] = set()
        self._progress = threading.Condition()
        self.error: BaseException | None = None
        self.inserted = 0
        self.duplicates = 0
        self.repeats = 0  # rows repeating an event_id of a recent row, dropped before writing
        self.stop_requested = False
        # A plain INSERT is cheaper while events are new; after a batch meets stored ones (a re-run, a
        # resumed import), batches go the ON CONFLICT way until one is all new again.
        self.expect_new = True
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"import-writer-{n}", daemon=True)
                         for n in range(connections)]
        rollups = _find_rollups()
        self.folder = _Folder(engine, rollups, project_tz) if rollups is not None else None

    def start(self) -> None:
        if self.folder is not None:
            self.folder.start()
        for thread in self._threads:
            thread.start()

    def is_alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        from ..ingest.service import write_events

        try:
            with _connect(self.engine) as connection:
                while True:
                    item = self.batches.get()
                    if item is None:
                        break
                    seq, batch = item
                    try:
                        if self.error is not None or self.stop_requested:
                            continue
                        self._wait_for_older(seq)
                        result = self._write(connection, write_events, batch)
                    except BaseException as exc:  # noqa: BLE001 - reported by the importing thread
                        self._fail(exc)
                        continue
                    finally:
                        self._finished(seq)
                    with self._lock:
                        self.inserted += result.ingested
                        self.duplicates += result.duplicates
                        self.expect_new = result.duplicates == 0
                    if self.folder is not None and result.ingested:
                        self.folder.poke()
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
            while self.batches.get() is not None:  # let the producer finish putting
                pass

    def _wait_for_older(self, seq: int) -> None:
        with self._progress:
            while seq - self._done_below > self.max_lag and self.error is None and not self.stop_requested:
                self._progress.wait(0.5)

    def _finished(self, seq: int) -> None:
        with self._progress:
            self._done.add(seq)
            while self._done_below in self._done:
                self._done.remove(self._done_below)
                self._done_below += 1
            self._progress.notify_all()

    def _write(self, connection: sa.Connection, write_events: Callable, batch: list):
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with connection.begin():
                    return write_events(connection, batch, expect_new=self.expect_new)
            except sa.exc.DBAPIError as exc:
                if attempt == WRITE_ATTEMPTS or getattr(exc.orig, "pgcode", None) not in RETRY_PGCODES:
                    raise
                log.info("batch write met a concurrent writer (%s); writing it again", exc.orig.pgcode)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc

    def put(self, batch: list) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.batches.put((self._next_seq, batch), timeout=0.5)
                self._next_seq += 1
                return
            except queue.Full:
                if not self.is_alive():
                    raise RuntimeError("the import writer stopped unexpectedly") from self.error

    def _stop_threads(self, timeout: float | None) -> None:
        for _ in self._threads:
            try:
                self.batches.put(None, timeout=timeout)
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(timeout)
        if self.folder is not None:
            # One last fold for the last batches; the import ends when the rollups are current.
            complete = self.error is None and not self.stop_requested
            self.folder.finish(timeout=None if complete else 30,
                               analyze=complete and self.inserted >= self.folder.rollups.ANALYZE_AFTER_ROWS)

    def finish(self) -> None:
        self._stop_threads(None)
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Let the batches in flight finish, drop the queued ones, and stop."""
        self.stop_requested = True
        self._stop_threads(5)


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
            # surrogateescape: a row refused for a byte that is not UTF-8 keeps its bytes as they were.
            self._file = open(self.path, "w", encoding="utf-8", errors="surrogateescape", newline="")
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
    finally:
        if not totals.elapsed:  # a stopped import's summary shows the time it ran too
            totals.elapsed = round(time.perf_counter() - started, 3)


def _first_line(exc: sa.exc.DBAPIError) -> str:
    return (str(exc.orig or exc).strip().splitlines() or ["unknown"])[0]


def require_schema(connection: sa.Connection) -> None:
    """Refuse to start on a database whose schema is not at the migrations' head: the tables may be
    missing, and "run the same command again" would not help."""
    from ..database import MIGRATIONS_DIR, current_revision, head_revision
    from .bootstrap import head_revision_fast

    head = head_revision_fast(MIGRATIONS_DIR / "versions") or head_revision()
    current = current_revision(connection)
    if current != head:
        raise ImportError_(
            f"The database schema is at {current or 'no revision (an empty database)'}; this eventsapp needs "
            f"{head}. Nothing was imported: run `flask db upgrade`, then this command again."
        )


def _import_with_key(engine, sources, totals, started, idempotency_key, batch_size, skip_invalid,
                     rejects_path, on_progress, on_reject, project_tz) -> ImportResult:
    with _connect(engine) as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        require_schema(connection)
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
    window_of_time = rules.TimeWindow(now)
    digest = src.new_digest()
    # Event ids of the last ``id_window`` rows or more, in two generations: a repeat of a recent row (a
    # retried event, the usual kind) is counted as a duplicate here instead of sending its batch the
    # slower ON CONFLICT way, and batches written at the same time never share an id. Older repeats are
    # left to the database.
    recent, older = set(), set()
    id_window = min(max(3 * batch_size, 30_000), 300_000)
    writer = _Writer(engine, project_tz, max_lag=max(id_window // batch_size - 1, 1))
    rejects = _RejectSink(rejects_path, on_reject)
    done_bytes = 0
    writer.start()
    try:
        rejects.open()
        batch: list = []
        for source in sources:
            opened = src.OpenSource(source, digest, watch_digits=True)
            name = source.name
            try:
                invalid_bytes_before = _invalid_utf8_seen  # before the first decode
                text = io.TextIOWrapper(opened.stream, encoding="utf-8", errors=UTF8_ERRORS, newline="")
                text._CHUNK_SIZE = 1 << 18  # type: ignore[attr-defined]  # fewer, larger decode steps
                reader = csv.reader(text, strict=True)
                try:
                    header = next(reader, None)
                    if header is None:
                        raise ImportError_(f"{name}:1: the file is empty; expected a header line "
                                           f"({','.join(COLUMNS)}).")
                    indexes = _column_indexes(header, name)
                    width = len(header)
                    names = [c.strip().lstrip("\ufeff") for c in header]
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
                        elif (_invalid_utf8_seen != invalid_bytes_before
                              and (errors := invalid_utf8_errors(fields, names))):
                            row = None
                        else:
                            row, errors = validate_csv_row(
                                fields, indexes, now, window_of_time,
                                rules.loads_json if opened.long_digits else orjson.loads)
                        totals.rows += 1
                        if row is not None:
                            if row[0] in recent or row[0] in older:
                                writer.repeats += 1
                                continue
                            recent.add(row[0])
                            if len(recent) >= id_window:
                                recent, older = set(), recent
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
                            if batch:
                                writer.put(batch)
                                batch = []
                            _finish(writer, totals)
                            raise BadRow(row_error, totals)
                        totals.rejected += 1
                        rejects.add(fields, names, row_error)
                except csv.Error as exc:
                    raise ImportError_(f"{name}:{reader.line_num}: not valid CSV: {exc}.") from None
                except UnicodeDecodeError:  # only where no row holds it (an encoder's state at the end)
                    raise ImportError_(f"{name}:{reader.line_num + 1}: not valid UTF-8 text.") from None
                except gzip.BadGzipFile as exc:
                    # Python reads every gzip member; bytes after the last one that are not gzip are
                    # refused rather than dropped: the file is not what its writer meant it to be.
                    raise ImportError_(
                        f"{name}: cannot read after line {reader.line_num}: {exc} (bytes after the end of "
                        "the gzip data are not gzip; nothing of the file after them is imported).") from None
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
        totals.inserted, totals.duplicates = writer.inserted, writer.duplicates + writer.repeats


def _abandon(writer: _Writer, totals: ImportTotals) -> None:
    writer.abandon()
    totals.inserted, totals.duplicates = writer.inserted, writer.duplicates + writer.repeats
