"""Issue 18.5: an EVENTSAPP_TIMEZONE the database does not read as a zone makes the service unready."""
from __future__ import annotations

import pytest

from conftest import make_event


@pytest.mark.parametrize("name", ["Mars/Base", "CET", "localtime"])
def test_an_unusable_project_timezone_is_a_503_naming_the_setting(app, client, monkeypatch, name):
    assert client.get("/ready").status_code == 200
    monkeypatch.setitem(app.config, "EVENTSAPP_TIMEZONE", name)
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert "EVENTSAPP_TIMEZONE" in ready.get_json()["reason"] and name in ready.get_json()["reason"]
    for url in ("/stats/dau?from=2025-10-01&to=2025-10-02", "/stats/summary?from=2025-10-01&to=2025-10-02&tz=UTC",
                "/stats/retention?start_date=2025-10-01&segment=event_type:x"):
        response = client.get(url)
        assert response.status_code == 503, url
        assert "EVENTSAPP_TIMEZONE" in response.get_json()["message"]
        assert response.headers["Retry-After"].isdigit()
    # Writes do not depend on it: nothing is lost while the setting is being fixed.
    assert client.post("/events", json=[make_event(occurred_at="2025-10-01T12:00:00Z")]).status_code == 201
    monkeypatch.setitem(app.config, "EVENTSAPP_TIMEZONE", "Europe/Kyiv")
    assert client.get("/ready").status_code == 200
    assert client.get("/stats/dau?from=2025-10-01&to=2025-10-01").get_json() == [{"date": "2025-10-01", "dau": 1}]
