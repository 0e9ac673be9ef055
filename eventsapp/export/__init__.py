"""Export: every matching event, streamed in (occurred_at, event_id) order as NDJSON or import-format CSV."""
