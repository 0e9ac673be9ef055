"""The README's Segment and PostHog curl examples store what they claim (issue 12 item 6): their 2025
timestamps land on 2025-08-01, among the sample data, not at the time received."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from conftest import stored

README = Path(__file__).resolve().parent.parent / "README.md"


def curl_example(path: str) -> dict:
    """The JSON body of the README's curl example posting to ``path``."""
    match = re.search(r"curl -i http://127\.0\.0\.1:8000%s (?:.*?)-d '(.*?)'\n" % re.escape(path),
                      README.read_text(encoding="utf-8"), re.S)
    assert match, f"no curl example for {path} in README.md"
    return orjson.loads(match.group(1))


@pytest.mark.parametrize("path, timestamps", [
    ("/v1/batch", lambda body: [message["timestamp"] for message in body["batch"]]),
    ("/capture/", lambda body: [body["timestamp"]]),
])
def test_sdk_curl_examples_store_their_timestamps(client, engine, path, timestamps):
    body = curl_example(path)
    response = client.post(path, json=body)
    assert response.status_code == 200, response.json
    assert response.json["ingested"] == 1
    expected = [datetime.fromisoformat(text.replace("Z", "+00:00")) for text in timestamps(body)]
    assert [row["occurred_at"] for row in stored(engine)] == expected
