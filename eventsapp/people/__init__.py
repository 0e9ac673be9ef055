"""People: a user's summary and timeline, and deletion on request (tombstones, audit)."""
