"""API keys: create, list, revoke, and look up by secret. Only a SHA-256 of each secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..models import api_keys

SCOPES = ("ingest", "read", "admin")
KEY_PREFIX = "ea_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeyManagementError(ValueError):
    """A key cannot be created or revoked as asked (bad name, bad scope, name taken, unknown name)."""


@dataclass(frozen=True)
class KeyIdentity:
    """Who a request is: the key's name and scopes (``anonymous`` when auth is off)."""

    name: str
    scopes: frozenset[str]
    anonymous: bool = False
    # Browser-safe (README "Keys in a web page"): readable by anyone who opens the page, so it may only
    # ingest, only on browser_ok endpoints, only from ``origins`` (empty: any), rate-limited per IP too.
    browser: bool = False
    origins: frozenset[str] = frozenset()

    def allows(self, scope: str) -> bool:
        # admin is a superset so one operator key can do everything.
        return self.anonymous or scope in self.scopes or "admin" in self.scopes


ANONYMOUS = KeyIdentity(name="anonymous", scopes=frozenset(SCOPES), anonymous=True)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    browser: bool = False
    origins: tuple[str, ...] = ()


def hash_secret(raw_key: str) -> str:
    """The stored form of a key. A fast hash is right here: the secret has 256 bits of entropy."""
    return hashlib.sha256(raw_key.encode("utf-8", "surrogatepass")).hexdigest()


ORIGIN_PATTERN = re.compile(r"^https?://[a-z0-9.-]+(:[0-9]{1,5})?$")


def normalize_origins(origins: list[str]) -> list[str]:
    """Web origins as browsers send them in ``Origin``: scheme://host[:port], lower case, no path."""
    result = []
    for origin in origins:
        value = origin.strip().rstrip("/").lower()
        if not ORIGIN_PATTERN.match(value):
            raise KeyManagementError(
                f"Origin {origin!r} is not scheme://host[:port] (e.g. https://app.example.com).")
        if value not in result:
            result.append(value)
    return result


def create_key(engine: sa.Engine, name: str, scopes: list[str], *, browser: bool = False,
               origins: list[str] | None = None) -> str:
    """Create a key and return its secret (shown once; only its hash is stored).

    ``browser``: a key for a web page, which anyone can read there: only the ``ingest`` scope, and only
    from ``origins`` when given.
    """
    if origins and not browser:
        raise KeyManagementError("--origin applies to browser keys only: add --browser.")
    if browser and sorted(set(scopes)) != ["ingest"]:
        raise KeyManagementError(
            "A browser key can only have the ingest scope (anyone can read it in the page).")
    allowed_origins = normalize_origins(origins or [])
    if not NAME_PATTERN.match(name or ""):
        raise KeyManagementError("Key name must be 1-64 characters: letters, digits, '_', '.', '-'.")
    wanted = sorted(set(scopes))
    unknown = [scope for scope in wanted if scope not in SCOPES]
    if not wanted or unknown:
        raise KeyManagementError(
            f"Scopes must be one or more of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}."
        )
    raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
    statement = (
        postgresql.insert(api_keys)
        .values(name=name, key_hash=hash_secret(raw_key), scopes=wanted, browser=browser,
                origins=allowed_origins)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    with engine.begin() as connection:
        if connection.execute(statement).rowcount != 1:
            raise KeyManagementError(
                f"A key named {name!r} already exists (names are never reused, even after revoke)."
            )
    return raw_key


def list_keys(engine: sa.Engine) -> list[KeyInfo]:
    """Every key, oldest first, without secrets."""
    query = sa.select(
        api_keys.c.name, api_keys.c.scopes, api_keys.c.created_at, api_keys.c.revoked_at,
        api_keys.c.browser, api_keys.c.origins,
    ).order_by(api_keys.c.created_at, api_keys.c.name)
    with engine.connect() as connection:
        return [
            KeyInfo(row.name, list(row.scopes), row.created_at, row.revoked_at, row.browser,
                    tuple(row.origins))
            for row in connection.execute(query)
        ]


def revoke_key(engine: sa.Engine, name: str) -> bool:
    """Revoke a key by name; return False if no such active key. Takes effect within the cache window."""
    statement = (
        api_keys.update()
        .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=sa.func.now())
    )
    with engine.begin() as connection:
        return connection.execute(statement).rowcount == 1


def find_key(engine: sa.Engine, raw_key: str) -> KeyIdentity | None:
    """The active key whose secret is ``raw_key``, or None."""
    wanted = hash_secret(raw_key)
    query = sa.select(api_keys.c.name, api_keys.c.key_hash, api_keys.c.scopes, api_keys.c.browser,
                      api_keys.c.origins).where(
        api_keys.c.key_hash == wanted, api_keys.c.revoked_at.is_(None)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    # The index lookup already matched; comparing again in constant time keeps the decision itself
    # independent of how many leading characters matched.
    if row is None or not hmac.compare_digest(row.key_hash, wanted):
        return None
    return KeyIdentity(name=row.name, scopes=frozenset(row.scopes), browser=row.browser,
                       origins=frozenset(row.origins))


class KeyCache:
    """Remembers lookups (hits and misses) for ``ttl`` seconds, so auth costs no query per request.

    A revoked key therefore keeps working for at most ``ttl`` seconds in each process.
    """

    max_entries = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, tuple[float, KeyIdentity | None]] = {}
        self._lock = threading.Lock()
        self.clock = clock  # tests move it forward instead of sleeping through the window

    def lookup(self, engine: sa.Engine, raw_key: str, ttl: float) -> KeyIdentity | None:
        if ttl <= 0:
            return find_key(engine, raw_key)
        cache_key = hash_secret(raw_key)
        now = self.clock()
        entry = self._entries.get(cache_key)
        if entry is not None and entry[0] > now:
            return entry[1]
        identity = find_key(engine, raw_key)
        with self._lock:
            # Random keys from a scanner must not grow memory without bound.
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[cache_key] = (now + ttl, identity)
        return identity

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
