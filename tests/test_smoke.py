from conftest import make_event, stored_count


def test_post_events_stores_batch_and_reports_duplicates_on_retry(client, engine):
    batch = [make_event(), make_event()]
    first = client.post("/events", json=batch)
    assert first.status_code == 201
    assert first.get_json() == {"ingested": 2, "duplicates": 0}
    again = client.post("/events", json=batch)
    assert again.status_code == 200
    assert again.get_json() == {"ingested": 0, "duplicates": 2}
    assert stored_count(engine) == 2
