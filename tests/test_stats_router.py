"""The one routing decision: which variant answers a question, as a user's request shapes it."""
from __future__ import annotations

from datetime import date

import pytest

from eventsapp.stats import queries, router
from eventsapp.stats.schemas import parse_segment

SPAN = {"from_": date(2025, 10, 1), "to": date(2025, 10, 31)}


@pytest.mark.parametrize(
    ("tz", "segments", "expected"),
    [
        ("Europe/Kyiv", (), "project_rollup"),  # the project timezone, no filter: local-day rollups
        ("America/New_York", (), "utc_day_rollup"),  # another zone: timezone-free rollups, exact there
        ("Asia/Kathmandu", (), "utc_day_rollup"),  # +05:45 midnights are still quarter hours
        ("Europe/Kyiv", ("event_type:purchase",), "scan"),  # a segment: only events have it
        ("Asia/Tokyo", ("properties.plan=pro",), "scan"),
    ],
)
def test_route_picks_the_cheapest_exact_variant(engine, tz, segments, expected):
    scope = router.Scope(tz=tz, rollup_tz="Europe/Kyiv", segments=tuple(parse_segment(s) for s in segments))
    with engine.connect() as connection:
        for question in queries.QUESTIONS.values():
            arguments = SPAN if question is not queries.RETENTION else {
                "start_date": date(2025, 10, 1), "windows": 3, "window_size": "weekly", "cohorts": 2}
            kind, routed = router.route(connection, question, scope, arguments)
            assert kind == expected, question.name
            assert (routed.calendar is not None) == (kind == "utc_day_rollup")


def test_every_question_has_every_variant_kind():
    for question in queries.QUESTIONS.values():
        for kind in router.KINDS:
            assert callable(getattr(question, kind)), (question.name, kind)
            assert getattr(question, kind).__name__ == f"{question.name}_from_{kind}"
