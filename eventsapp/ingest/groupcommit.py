"""Group commit: many small ingest requests share one transaction (one COPY, one INSERT, one WAL flush).

A browser sends one event per request; written one transaction each, the commit's WAL flush and the
write's round trips cost most of a request. Each request validates its own rows first (a bad one is that
request's 400 alone), then ``GroupCommitter.submit`` queues them and blocks; one committer thread per
process takes whatever requests are waiting (up to ``max_events`` events, after at most ``max_wait``
seconds of waiting for more) and stores them with one ``write_events_returning_ids`` call.

Guarantees, per request:
- answered only after the transaction holding its rows committed (durability as before);
- counts are truthful: an event is "ingested" for exactly one request (the first in the group that sent
  it), "duplicate" for every other request and for events stored before;
- on a failed group transaction nothing of it is stored, and each request is then written again alone,
  in its own transaction, so it gets exactly the answer it would have got without group commit (a
  database outage: the same error for all; a row the database refuses: an error for that request only).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Sequence

import sqlalchemy as sa
from prometheus_client import Histogram

from . import rules
from .write import WriteResult, first_of_each_id, write_events_returning_ids

log = logging.getLogger(__name__)

GROUP_SIZE = Histogram(
    "eventsapp_group_commit_requests",
    "Requests written per group-commit transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@dataclass
class _Pending:
    rows: Sequence[rules.EventRow]
    done: Future = field(default_factory=Future)


class GroupCommitter:
    """One committer thread (started on first use) writing queued requests in shared transactions."""

    def __init__(self, engine: sa.Engine, *, max_events: int = 1000, max_wait: float = 0.0) -> None:
        self.engine = engine
        self.max_events = max_events
        self.max_wait = max_wait
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, rows: Sequence[rules.EventRow]) -> WriteResult:
        """Store the rows exactly once; return once committed. Raises what the write raised."""
        if not rows:
            return WriteResult(0, 0)
        self._ensure_started()
        pending = _Pending(rows)
        self._queue.put(pending)
        return pending.done.result()

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="eventsapp-group-commit", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while True:
            group = self._collect()
            try:
                self._commit(group)
            except BaseException:  # never let the thread die: a dead committer would hang every request
                log.exception("group commit failed unexpectedly")
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(RuntimeError("group commit failed"))

    def _collect(self) -> list[_Pending]:
        """The first waiting request, and more while they fit and arrive within ``max_wait``."""
        group = [self._queue.get()]
        events = len(group[0].rows)
        deadline = time.monotonic() + self.max_wait
        while events < self.max_events:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    pending = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            group.append(pending)
            events += len(pending.rows)
        return group

    def _commit(self, group: list[_Pending]) -> None:
        GROUP_SIZE.observe(len(group))
        try:
            with self.engine.begin() as connection:
                inserted = write_events_returning_ids(connection, [row for p in group for row in p.rows])
        except Exception as exc:
            if len(group) == 1:
                group[0].done.set_exception(exc)
                return
            # Nothing of the group is stored: write each request alone, so a row the database refuses
            # fails only its own request and an outage fails each with the error it would have had.
            log.warning("group commit of %d requests failed (%s); writing them one by one",
                        len(group), type(exc).__name__)
            for pending in group:
                self._commit([pending])
            return
        for pending in group:
            unique = first_of_each_id(pending.rows)
            ingested = 0
            for row in unique:
                if row[0] in inserted:
                    inserted.discard(row[0])  # the first request claims it; later ones see a duplicate
                    ingested += 1
            pending.done.set_result(WriteResult(ingested=ingested, duplicates=len(pending.rows) - ingested))


_app_lock = threading.Lock()


def app_committer() -> GroupCommitter | None:
    """The current app's committer (created on first use), or None when EVENTSAPP_GROUP_COMMIT_EVENTS is 0."""
    from flask import current_app  # here: the write path must load without Flask (flask import-csv)

    from ..extensions import db

    max_events = current_app.config["EVENTSAPP_GROUP_COMMIT_EVENTS"]
    if max_events <= 0:
        return None
    committer = current_app.extensions.get("eventsapp_group_commit")
    if committer is None:
        with _app_lock:
            committer = current_app.extensions.get("eventsapp_group_commit")
            if committer is None:
                committer = GroupCommitter(db.engine, max_events=max_events,
                                           max_wait=current_app.config["EVENTSAPP_GROUP_COMMIT_WAIT_MS"] / 1000)
                current_app.extensions["eventsapp_group_commit"] = committer
    return committer
