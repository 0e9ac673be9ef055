"""Drop-in target for the Segment and PostHog SDKs (issue 7)."""
