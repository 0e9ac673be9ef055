"""The API describes itself offline, and /metrics counts what the write path did."""
from __future__ import annotations

from conftest import make_event


def test_openapi_documents_post_events_with_every_error(client):
    spec = client.get("/openapi.json").get_json()
    operation = spec["paths"]["/events"]["post"]
    assert operation["summary"] == "Store a batch of events exactly once."
    assert {"200", "201", "400", "409", "413", "415", "422", "503"} <= set(operation["responses"])
    body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["type"] == "array"
    assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"])


def test_swagger_ui_is_served_with_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/docs-assets/swagger-ui-bundle.js" in html
    assert "http" not in html.split("<body>")[1].split("url:")[0]  # no CDN before the spec URL
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        response = client.get(f"/docs-assets/{asset}")
        assert response.status_code == 200 and len(response.data) > 1000
        response.close()


def test_health_and_ready(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    assert client.get("/ready").get_json() == {"status": "ok"}


def _metric(client, name: str, label: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for line in text.splitlines():
        if line.startswith(f'{name}{{result="{label}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_ingested_duplicate_and_rejected_events(client):
    before = {r: _metric(client, "eventsapp_events_total", r) for r in ("ingested", "duplicate", "rejected")}
    batch = [make_event(), make_event()]
    client.post("/events", json=batch)
    client.post("/events", json=batch)
    client.post("/events", json=[make_event(), make_event(user_id="")])
    after = {r: _metric(client, "eventsapp_events_total", r) for r in ("ingested", "duplicate", "rejected")}
    assert after["ingested"] - before["ingested"] == 2
    assert after["duplicate"] - before["duplicate"] == 2
    assert after["rejected"] - before["rejected"] == 2
    text = client.get("/metrics").get_data(as_text=True)
    assert 'flask_http_request_duration_seconds_count{endpoint="ingest.post_events",method="POST",status="201"}' in text
    assert 'flask_http_request_duration_seconds_count{endpoint="ingest.post_events",method="POST",status="422"}' in text
