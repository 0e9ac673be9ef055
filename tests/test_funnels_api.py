"""/stats/funnel refuses every bad parameter with a 400 naming it, writes nothing, and documents itself."""
from __future__ import annotations

import pytest

GOOD = [("from", "2025-08-01"), ("to", "2025-08-30"), ("step", "event_type:a"), ("step", "event_type:b")]


def _without(*names: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in GOOD if k not in names]


BAD = [
    ("step", _without("step") + [("step", "event_type:a")]),  # one step
    ("step", _without("step")),  # none
    ("step", _without("step") + [("step", f"event_type:s{i}") for i in range(11)]),  # more than 10
    ("step", GOOD + [("step", "event_type")]),  # malformed filter
    ("step", GOOD + [("step", "event_type:a;")]),  # an empty condition
    ("step", GOOD + [("step", "properties.=x")]),
    ("window", GOOD + [("window", "0")]),
    ("window", GOOD + [("window", str(90 * 86400 + 1))]),
    ("window", GOOD + [("window", "a day")]),
    ("order", GOOD + [("order", "sequential")]),
    ("exclude", GOOD + [("exclude", "event_type:x@1-3")]),  # step 3 of 2
    ("exclude", GOOD + [("exclude", "event_type:x@0-2")]),
    ("exclude", GOOD + [("exclude", "event_type:x@2-1")]),
    ("exclude", GOOD + [("exclude", "event_type:x")]),
    ("exclude", GOOD + [("exclude", "nonsense@1-2")]),
    ("breakdown", GOOD + [("breakdown", "event_type")]),
    ("limit", GOOD + [("limit", "0")]),
    ("limit", GOOD + [("limit", "101")]),
    ("tz", GOOD + [("tz", "Mars/Olympus")]),
    ("to", [("from", "2025-08-30"), ("to", "2025-08-01"), ("step", "event_type:a"), ("step", "event_type:b")]),
    ("from", _without("from")),
    ("segment", GOOD + [("segment", "plan=pro")]),
    ("mode", GOOD + [("mode", "on")]),  # unknown parameter
]


@pytest.mark.parametrize("name,params", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_parameters_are_400_naming_them(client, name, params):
    response = client.get("/stats/funnel", query_string=params)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert name in body["errors"]["query"], body
    assert name in body["message"]


def test_good_parameters_answer_on_an_empty_database(client):
    response = client.get("/stats/funnel", query_string=GOOD + [("window", str(90 * 86400)), ("order", "any"),
                                                                ("exclude", "event_type:x@1-2")])
    assert response.status_code == 200
    assert [(r["step"], r["users"], r["from_start"]) for r in response.get_json()] == [(1, 0, 0.0), (2, 0, 0.0)]
    with_breakdown = client.get("/stats/funnel", query_string=GOOD + [("breakdown", "properties.plan")])
    assert with_breakdown.status_code == 200 and with_breakdown.get_json() == []


def test_openapi_documents_the_funnel(client):
    spec = client.get("/openapi.json").get_json()
    operation = spec["paths"]["/stats/funnel"]["get"]
    assert operation["summary"] == "Count users through ordered steps within a conversion window."
    names = {p["name"] for p in operation["parameters"]}
    assert {"from", "to", "tz", "segment", "step", "window", "order", "exclude", "breakdown", "limit"} <= names
    assert {"200", "400", "503"} <= set(operation["responses"])
    assert "more than 10" in operation["responses"]["400"]["description"]
