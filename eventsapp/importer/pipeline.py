"""The import's threads: writers that store batches through the write core, one transaction each, on
their own connections (so PostgreSQL's work on one batch overlaps another's and the parsing of the
next), and a thread that folds the rollup outbox while batches still arrive."""
from __future__ import annotations

import logging
import queue
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import sqlalchemy as sa

from ..ingest.write import WriteResult, write_events
from ..stats import rollups

log = logging.getLogger(__name__)

APPLICATION_NAME = "eventsapp import-csv"

# Deadlocks can only come from another writer (HTTP, another import) storing some of the same event_ids
# in the same moments; PostgreSQL rolls one side back, and the batch is simply written again.
RETRY_PGCODES = {"40P01", "40001"}  # deadlock_detected, serialization_failure
WRITE_ATTEMPTS = 3


@contextmanager
def import_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
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


class FoldBacklog:
    """Holds writers back while the rollup fold is more than ``limit`` rows behind them.

    The fold is one connection's work and about 60% of the database's work of an import (measured at 1M
    events of 100k users: 15 of 25 CPU-s). Left to itself it falls behind two writers, and the rows it
    has not folded when the last batch commits are folded at the end on one core while the other idles.
    Kept close behind, the fold shares both cores while they are busy, and the import ends soon after its
    last batch. Each fold moves every row committed before it started (whoever queued them; a stats read
    may fold some too), so what is behind is what was committed since the last fold began.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.committed = 0  # rows this import has committed
        self.unfolded = 0
        self.fold_stopped = False
        self._changed = threading.Condition()

    def added(self, rows: int) -> None:
        with self._changed:
            self.committed += rows
            self.unfolded += rows

    def fold_starting(self) -> int:
        with self._changed:
            return self.committed

    def folded(self, committed_at_start: int) -> None:
        with self._changed:
            self.unfolded = self.committed - committed_at_start
            self._changed.notify_all()

    def stop(self) -> None:
        """Nothing more will be folded by this import: writers must not wait for it."""
        with self._changed:
            self.fold_stopped = True
            self._changed.notify_all()

    def wait_for_room(self, stopped: Callable[[], bool]) -> None:
        with self._changed:
            while self.unfolded > self.limit and not self.fold_stopped and not stopped():
                self._changed.wait(0.5)


class RollupFoldThread(threading.Thread):
    """Folds the rollup outbox on its own connection while batches are still being written, so the
    rollup work runs beside the inserts (on another core) rather than after them. A failed fold only
    delays the rollups: the rows stay queued and the next read or import folds them."""

    def __init__(self, engine: sa.Engine, project_tz: str | None, backlog: FoldBacklog) -> None:
        super().__init__(name="import-rollup-fold", daemon=True)
        self.engine = engine
        self.project_tz = project_tz
        self.backlog = backlog
        self.pending = threading.Event()
        self.done = False

    def run(self) -> None:
        try:
            with import_connection(self.engine) as connection:
                while True:
                    self.pending.wait()
                    self.pending.clear()
                    finished = self.done
                    committed = self.backlog.fold_starting()
                    with connection.begin():
                        rollups.fold_outbox(connection, self.project_tz, analyze=False)
                    self.backlog.folded(committed)
                    if finished:
                        return
        except Exception:  # noqa: BLE001
            log.warning("folding the rollup outbox failed; the next read will fold it", exc_info=True)
        finally:
            self.backlog.stop()

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
                with import_connection(self.engine) as connection, connection.begin():
                    rollups.analyze_rollups(connection)
            except Exception:  # noqa: BLE001
                log.warning("refreshing the rollups' statistics failed; autovacuum will", exc_info=True)
        self.join(timeout)


class _BatchOrder:
    """Batch n starts only once every batch before n - max_lag has finished, so a batch never runs beside
    one further back than the importer's window of recent ids: the first of two rows with one event_id
    is the one stored, as with a single writer."""

    def __init__(self, max_lag: int) -> None:
        self.max_lag = max_lag
        self._done_below = 0
        self._done: set[int] = set()
        self._progress = threading.Condition()

    def wait_for_older(self, seq: int, stopped: Callable[[], bool]) -> None:
        with self._progress:
            while seq - self._done_below > self.max_lag and not stopped():
                self._progress.wait(0.5)

    def finished(self, seq: int) -> None:
        with self._progress:
            self._done.add(seq)
            while self._done_below in self._done:
                self._done.remove(self._done_below)
                self._done_below += 1
            self._progress.notify_all()


class BatchWriter:
    """Stores batches, one transaction each, on ``connections`` connections at once; remembers the first
    failure and drains the rest. Batches may commit out of order: an interrupted import is finished by
    running it again, which skips what is stored."""

    def __init__(self, engine: sa.Engine, project_tz: str | None = None, connections: int = 2,
                 max_lag: int = 2, fold_backlog: int = 50_000) -> None:
        self.engine = engine
        self.batches: queue.Queue[tuple[int, list] | None] = queue.Queue(maxsize=connections)
        self.order = _BatchOrder(max_lag)
        self._next_seq = 0
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
        self.backlog = FoldBacklog(fold_backlog)
        self.fold = RollupFoldThread(engine, project_tz, self.backlog)

    def start(self) -> None:
        self.fold.start()
        for thread in self._threads:
            thread.start()

    def is_alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _stopped(self) -> bool:
        return self.error is not None or self.stop_requested

    def _run(self) -> None:
        try:
            with import_connection(self.engine) as connection:
                while (item := self.batches.get()) is not None:
                    self._store(connection, *item)
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)
            while self.batches.get() is not None:  # let the producer finish putting
                pass

    def _store(self, connection: sa.Connection, seq: int, batch: list) -> None:
        try:
            if self._stopped():
                return
            self.order.wait_for_older(seq, self._stopped)
            self.backlog.wait_for_room(self._stopped)
            result = self._write(connection, batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the importing thread
            self._fail(exc)
            return
        finally:
            self.order.finished(seq)
        with self._lock:
            self.inserted += result.ingested
            self.duplicates += result.duplicates
            self.expect_new = result.duplicates == 0
        if result.ingested:
            self.backlog.added(result.ingested)
            self.fold.poke()

    def _write(self, connection: sa.Connection, batch: list) -> WriteResult:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with connection.begin():
                    return write_events(connection, batch, expect_new=self.expect_new)
            except sa.exc.DBAPIError as exc:
                if attempt == WRITE_ATTEMPTS or getattr(exc.orig, "pgcode", None) not in RETRY_PGCODES:
                    raise
                log.info("batch write met a concurrent writer (%s); writing it again", exc.orig.pgcode)
        raise AssertionError("unreachable")

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
        # One last fold for the last batches; the import ends when the rollups are current.
        complete = self.error is None and not self.stop_requested
        self.fold.finish(timeout=None if complete else 30,
                         analyze=complete and self.inserted >= rollups.ANALYZE_AFTER_ROWS)

    def finish(self) -> None:
        self._stop_threads(None)
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Let the batches in flight finish, drop the queued ones, and stop."""
        self.stop_requested = True
        self._stop_threads(5)
