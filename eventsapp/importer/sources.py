"""Where import rows come from: files, directories, stdin and http(s) URLs, any of them gzipped.

Everything is streamed: a source is opened as a binary stream of its decompressed bytes, read in
chunks, so memory stays flat whatever the size. Each stream counts the raw bytes consumed (for the
progress bar) and hashes the decompressed bytes (the content checksum behind idempotency keys).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..ingest import rules

GZIP_MAGIC = b"\x1f\x8b"
# Large reads: every read and hash update releases the GIL, and getting it back from the busy writer
# thread can cost a switch interval (5 ms) each time.
CHUNK = 1 << 20
# Sources are hashed as one sequence; a separator keeps "ab"+"c" different from "a"+"bc".
SOURCE_SEPARATOR = b"\x00--eventsapp-source-end--\x00"
URL_TIMEOUT_SECONDS = 60


class SourceError(Exception):
    """A source cannot be found, opened or decompressed; the message names it."""


@dataclass
class Source:
    """One input: ``name`` as shown in messages, ``size`` in raw bytes when known."""

    name: str
    kind: str  # "file", "stdin" or "url"
    location: str
    size: int | None = None

    def open_raw(self) -> BinaryIO:
        if self.kind == "stdin":
            return sys.stdin.buffer
        if self.kind == "url":
            import urllib.error
            import urllib.request

            try:
                response = urllib.request.urlopen(self.location, timeout=URL_TIMEOUT_SECONDS)  # noqa: S310
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise SourceError(f"{self.name}: cannot fetch: {getattr(exc, 'reason', exc)}") from None
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and "gzip" not in (response.headers.get("Content-Encoding") or ""):
                self.size = int(length)
            return response
        try:
            return open(self.location, "rb")
        except OSError as exc:
            raise SourceError(f"{self.name}: cannot open: {exc.strerror}") from None


class _Counting(io.RawIOBase):
    """Counts the raw (possibly compressed) bytes read, for progress."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.consumed += n
        return n


class _Hashing(io.RawIOBase):
    """Hashes the decompressed bytes as they are read, and notes whether they hold a run of 19 digits
    or a tiny exponent (numbers orjson would round: see ``rules.loads_json``)."""

    def __init__(self, inner: BinaryIO, digest, watch_digits: bool) -> None:
        self._inner = inner
        self._digest = digest
        self.long_digits = False
        self._watch_digits = watch_digits
        self._tail = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._digest.update(data)
        if self._watch_digits and not self.long_digits:
            # The bytes are read before the rows in them are parsed, so the flag is up in time. A tiny
            # exponent (1e-400) also needs the exact parser, which refuses it instead of storing 0.
            window = self._tail + data
            self.long_digits = rules.has_long_digits(window) or rules.has_tiny_exponent(window)
            self._tail = data[-(rules.LONG_DIGIT_RUN - 1):]
        return n


class OpenSource:
    """An opened source: ``stream`` yields decompressed bytes; ``consumed()`` counts raw bytes read."""

    def __init__(self, source: Source, digest, watch_digits: bool = False) -> None:
        self.source = source
        self._raw = source.open_raw()
        counting = _Counting(self._raw)
        self._counting = counting
        buffered = io.BufferedReader(counting, CHUNK)
        head = buffered.peek(2)[:2]
        compressed = head == GZIP_MAGIC
        if not compressed and source.location.endswith(".gz") and head:
            raise SourceError(f"{source.name}: named .gz but is not gzip data")
        inner: BinaryIO = (gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[assignment]
                           if compressed else buffered)
        self.compressed = compressed
        self._decompressed = inner
        self._hashing = _Hashing(inner, digest, watch_digits)
        self.stream = io.BufferedReader(self._hashing, CHUNK)

    @property
    def long_digits(self) -> bool:
        """Whether the bytes read so far hold a run of 19 digits (maybe a big integer)."""
        return self._hashing.long_digits

    def consumed(self) -> int:
        return self._counting.consumed

    def hash_all(self, digest) -> None:
        """Feed every decompressed byte of this source (not read from yet) to ``digest``, nothing else."""
        if self.source.kind == "file" and not self.compressed:
            # A plain file is hashed in C, at disk speed (0.09 vs 0.15 s per 160 MB).
            with open(self.source.location, "rb", buffering=0) as raw:
                hashlib.file_digest(raw, lambda: digest)  # type: ignore[arg-type]
            return
        read = self._decompressed.read
        while chunk := read(1 << 20):
            digest.update(chunk)

    def close(self) -> None:
        if self.source.kind != "stdin":
            self._raw.close()


def expand(arguments: tuple[str, ...] | list[str], pattern: str = "*.csv") -> list[Source]:
    """Turn SOURCE arguments into sources; a directory gives its files matching ``pattern``, sorted."""
    sources: list[Source] = []
    for argument in arguments:
        if argument == "-":
            sources.append(Source("<stdin>", "stdin", "-"))
        elif argument.startswith(("http://", "https://")):
            sources.append(Source(argument, "url", argument))
        else:
            path = Path(argument)
            if path.is_dir():
                matches = sorted(p for p in path.glob(pattern) if p.is_file())
                if not matches:
                    raise SourceError(f"{argument}: no files match {pattern!r} in this directory")
                sources.extend(Source(str(p), "file", str(p), p.stat().st_size) for p in matches)
            elif path.is_file():
                sources.append(Source(argument, "file", argument, path.stat().st_size))
            elif not path.exists():
                raise SourceError(f"{argument}: no such file or directory")
            else:
                raise SourceError(f"{argument}: not a regular file")
    if sum(1 for s in sources if s.kind == "stdin") > 1:
        raise SourceError("-: stdin can be given only once")
    return sources


def new_digest():
    return hashlib.sha256()


def checksum(sources: list[Source]) -> str:
    """Content checksum of all sources in order (decompressed bytes), without parsing them."""
    digest = new_digest()
    for source in sources:
        opened = OpenSource(source, digest)
        try:
            opened.hash_all(digest)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise SourceError(f"{source.name}: cannot read: {exc}") from None
        finally:
            opened.close()
        digest.update(SOURCE_SEPARATOR)
    return digest.hexdigest()


def total_size(sources: list[Source]) -> int | None:
    """The raw size of all sources, or None when one of them (stdin, a chunked URL) has no known size."""
    sizes = [s.size for s in sources]
    if any(size is None for size in sizes):
        return None
    return sum(sizes)  # type: ignore[arg-type]
