#!/usr/bin/env python3
"""Write a realistic, seeded events CSV in the import format.

    python data/generate_events.py --rows 100000 --seed 1 --out /tmp/events-100k.csv
    python data/generate_events.py --rows 1000000 --seed 1 --out /tmp/events-1m.csv.gz   # gzip by extension

Header: ``event_id,occurred_at,user_id,event_type,properties_json``. The data looks like an export from
another tool: a few heavy users and many light ones (Zipf-like), rows in time order within each day with
a daily rhythm, timestamps in mixed UTC offsets (Z, +03:00, -05:00, +05:30, ...), properties with
unicode text, integers, floats and booleans, and about 1% of rows repeating an earlier row's event_id
(exports that overlap). The same arguments always give the same bytes.

Importable: ``from data.generate_events import generate_rows`` yields the rows as 5-tuples of strings.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import random
import sys
from datetime import date, timedelta
from typing import Iterator

HEADER = ("event_id", "occurred_at", "user_id", "event_type", "properties_json")

# (event type, relative frequency)
EVENT_TYPES = (
    ("app_open", 24), ("view_item", 30), ("message_sent", 14), ("add_to_cart", 9),
    ("login", 10), ("purchase", 4), ("logout", 9),
)
# How timestamps are written: mostly one offset per user's locale, some exporters say Z.
OFFSETS = (
    ("Z", 0), ("+00:00", 0), ("+03:00", 180), ("+02:00", 120), ("+01:00", 60), ("-05:00", -300),
    ("-08:00", -480), ("+05:30", 330), ("+09:00", 540), ("-03:00", -180), ("+10:00", 600),
)
ITEMS = ("book", "lamp", "chair", "phone case", "kettle", "headphones", "desk", "mug", "backpack", "shoes")
CITIES = ("Kyiv", "Київ", "Lviv", "München", "São Paulo", "Zürich", "東京", "Istanbul", "Kraków", "Montréal",
          "New York", "Δελφοί", "Besançon", "Reykjavík", "मुंबई")
PLATFORMS = ("ios", "android", "web")
CURRENCIES = ("UAH", "EUR", "USD", "PLN", "GBP")
MESSAGES = ("привіт 👋", "ok", "on my way 🚲", "dziękuję", "¿dónde estás?", "see you at 7",
            "größer ist besser", "naïve café", "thanks!", "😀😀")


def _weighted(choices: tuple, weights: list[float], rng: random.Random, k: int) -> list:
    return rng.choices(choices, weights=weights, k=k)


def _properties(event_type: str, rng: random.Random) -> dict:
    r = rng.random
    props: dict = {"platform": PLATFORMS[int(r() * 3)]}
    if event_type == "view_item":
        props["item"] = ITEMS[int(r() * len(ITEMS))]
        props["price"] = round(2 + r() * 300, 2)
        props["in_stock"] = r() < 0.9
    elif event_type == "add_to_cart":
        props["item"] = ITEMS[int(r() * len(ITEMS))]
        props["quantity"] = 1 + int(r() * r() * 5)
    elif event_type == "purchase":
        props["amount"] = round(5 + r() * r() * 900, 2)
        props["currency"] = CURRENCIES[int(r() * len(CURRENCIES))]
        props["items"] = 1 + int(r() * 4)
        props["first_purchase"] = r() < 0.2
    elif event_type == "message_sent":
        props["text"] = MESSAGES[int(r() * len(MESSAGES))]
        props["length"] = int(r() * 280)
    elif event_type == "app_open":
        props["city"] = CITIES[int(r() * len(CITIES))]
        props["version"] = f"3.{int(r() * 12)}.{int(r() * 5)}"
        props["cold_start"] = r() < 0.3
    elif event_type == "login":
        props["method"] = "password" if r() < 0.6 else "google"
    else:
        props["session_seconds"] = int(r() * 3600)
        props["score"] = round(r(), 4)
    return props


def _uuid4(rng: random.Random) -> str:
    bits = rng.getrandbits(128)
    # Set the version (4) and variant (10xx) bits so every id is a proper random UUID.
    bits = (bits & ~(0xF << 76)) | (0x4 << 76)
    bits = (bits & ~(0x3 << 62)) | (0x2 << 62)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def generate_rows(rows: int, seed: int = 1, start: date | str = "2025-08-01", days: int = 30,
                  users: int | None = None) -> Iterator[tuple[str, str, str, str, str]]:
    """Yield ``rows`` CSV rows (event_id, occurred_at, user_id, event_type, properties_json)."""
    rng = random.Random(seed)
    if isinstance(start, str):
        start = date.fromisoformat(start)
    users = users or max(50, rows // 25)
    type_names = tuple(name for name, _ in EVENT_TYPES)
    type_weights = [float(w) for _, w in EVENT_TYPES]
    # Each user writes timestamps in one offset, fixed by their id.
    user_offset = [OFFSETS[(i * 7919) % len(OFFSETS)] for i in range(users)]
    # Local dates from the day before the first to the day after the last (offsets cross midnight).
    day_text = [(start + timedelta(days=d)).isoformat() for d in range(-1, days + 1)]
    # Daily rhythm: busier in the (UTC) afternoon and evening.
    hour_weights = [1, 0.6, 0.4, 0.3, 0.3, 0.4, 0.7, 1.2, 1.8, 2.2, 2.4, 2.5,
                    2.6, 2.6, 2.5, 2.5, 2.6, 2.9, 3.2, 3.3, 3.0, 2.5, 1.8, 1.3]
    hours = tuple(range(24))
    # Uneven traffic between days (weekends quieter), fixed by the seed.
    day_weights = [(0.75 if (start + timedelta(days=d)).weekday() >= 5 else 1.0) * (0.85 + 0.3 * rng.random())
                   for d in range(days)]
    total_weight = sum(day_weights)
    recent: list[tuple[str, str, str, str, str]] = []
    emitted = 0
    try:  # orjson (a dependency of the app) is 3x faster; json gives the same text.
        import orjson

        def dumps(value: dict) -> str:
            return orjson.dumps(value).decode()
    except ImportError:  # pragma: no cover - the script also runs without the app installed
        def dumps(value: dict) -> str:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for day in range(days):
        remaining_days = days - day
        if remaining_days == 1:
            count = rows - emitted
        else:
            count = min(rows - emitted, round(rows * day_weights[day] / total_weight))
        if count <= 0:
            continue
        picked_hours = _weighted(hours, hour_weights, rng, count)
        seconds = sorted(h * 3600 + int(rng.random() * 3600) for h in picked_hours)
        types = _weighted(type_names, type_weights, rng, count)
        for second, event_type in zip(seconds, types):
            if recent and rng.random() < 0.01:
                # An overlapping export: the same event again, byte for byte.
                row = recent[int(rng.random() * len(recent))]
            else:
                # Zipf-like activity: a few users produce most events.
                user = min(users - 1, int(users * rng.random() ** 3.2))
                suffix, minutes = user_offset[user]
                # The local wall-clock time, by arithmetic: datetime objects cost half the run time.
                day_shift, local_second = divmod(second + minutes * 60, 86400)
                hh, rest = divmod(local_second, 3600)
                mm, ss = divmod(rest, 60)
                text = (f"{day_text[day + day_shift + 1]}T{hh:02d}:{mm:02d}:{ss:02d}"
                        f".{int(rng.random() * 1000):03d}{suffix}")
                props = _properties(event_type, rng)
                row = (_uuid4(rng), text, str(100000 + user), event_type,
                       dumps(props))
                if len(recent) < 2000:
                    recent.append(row)
                else:
                    recent[int(rng.random() * 2000)] = row
            yield row
        emitted += count


def write_csv(out: io.TextIOBase, rows: Iterator[tuple[str, ...]]) -> int:
    """Write the header and rows; return the number of rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    written = 0
    chunk: list[tuple[str, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == 10000:
            writer.writerows(chunk)
            written += len(chunk)
            chunk.clear()
    writer.writerows(chunk)
    return written + len(chunk)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, required=True, help="number of data rows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True, help="output file ('-' for stdout; a .gz name is gzipped)")
    parser.add_argument("--start", default="2025-08-01", help="first day (UTC), YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=None,
                        help="distinct users (default rows/25, at least 50)")
    args = parser.parse_args(argv)
    rows = generate_rows(args.rows, args.seed, args.start, args.days, args.users)
    if args.out == "-":
        write_csv(sys.stdout, rows)
        return 0
    if args.out.endswith(".gz"):
        # mtime=0 so the same arguments give the same bytes.
        with open(args.out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
                io.TextIOWrapper(gz, encoding="utf-8", newline="") as out:
            write_csv(out, rows)
    else:
        with open(args.out, "w", encoding="utf-8", newline="") as out:
            write_csv(out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
