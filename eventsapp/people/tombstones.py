"""Tombstones: what a deletion keeps so that late retries of a deleted user's events stay deleted.

Kept per deleted user: a SHA-256 of the user_id (not the id) and the time of the deletion. The write path
(``ingest.service.write_events``) drops every incoming event whose user hashes to a tombstone and that
occurred before it; events that occur after the deletion are new data and are stored.

Imported by the write path, which ``flask import-csv`` loads without Flask: keep this module plain.
"""
from __future__ import annotations

# The one definition of the hash, in SQL; ``user_hash`` (Python) must agree with it.
USER_HASH_SQL = "sha256(convert_to({column}, 'UTF8'))"

# A WHERE clause for ``SELECT ... FROM staging_events``. Its first test compares with one value PostgreSQL
# computes once per statement (an InitPlan, by index): with no tombstones at all, or for events newer
# than the latest deletion (live traffic), no row pays for a hash or an index probe.
NOT_TOMBSTONED = (
    "(staging_events.occurred_at >= (SELECT coalesce(max(deleted_at), '-infinity') FROM user_tombstones)"
    " OR NOT EXISTS (SELECT 1 FROM user_tombstones t WHERE t.user_hash = "
    + USER_HASH_SQL.format(column="staging_events.user_id")
    + " AND staging_events.occurred_at < t.deleted_at))"
)


def user_hash(user_id: str) -> bytes:
    """The tombstone key of ``user_id`` (as ``USER_HASH_SQL`` computes it)."""
    import hashlib

    return hashlib.sha256(user_id.encode("utf-8")).digest()
