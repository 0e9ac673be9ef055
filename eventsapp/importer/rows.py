"""CSV rows of an import: the header, each row's verdict by the rules of ``POST /events``, bytes that are
not UTF-8, and the rejects file that ``--skip-invalid --rejects FILE`` writes."""
from __future__ import annotations

import codecs
import csv
import gzip
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator

import orjson

from ..ingest import rules
from . import sources as src

COLUMNS = ("event_id", "occurred_at", "user_id", "event_type", "properties_json")
REQUIRED_COLUMNS = COLUMNS[:4]
REJECT_COLUMNS = COLUMNS + ("file", "line", "error")

ColumnIndexes = tuple[int, int, int, int, "int | None"]


@dataclass
class RowError:
    file: str
    line: int
    errors: dict[str, list[str]]

    def messages(self) -> list[str]:
        return [f"{self.file}:{self.line}: {name}: {message}"
                for name, messages in self.errors.items() for message in messages]


# --- the header -------------------------------------------------------------------------------------


def column_indexes(header: list[str], name: str) -> ColumnIndexes:
    """Where each column is; raise SourceError naming what is wrong with the header."""
    if header and header[0].startswith("\ufeff"):  # a byte-order mark from spreadsheet exports
        header[0] = header[0][1:]
    names = [column.strip() for column in header]
    problems = []
    unknown = [column for column in names if column not in COLUMNS]
    if unknown:
        problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
    repeated = sorted({column for column in names if names.count(column) > 1})
    if repeated:
        problems.append(f"repeated column(s) {', '.join(map(repr, repeated))}")
    missing = [column for column in REQUIRED_COLUMNS if column not in names]
    if missing:
        problems.append(f"missing column(s) {', '.join(map(repr, missing))}")
    if problems:
        raise src.SourceError(
            f"{name}:1: header: {'; '.join(problems)}. Expected the columns {', '.join(COLUMNS)} "
            "(any order; properties_json may be left out)."
        )
    props = names.index("properties_json") if "properties_json" in names else None
    return (names.index("event_id"), names.index("occurred_at"), names.index("user_id"),
            names.index("event_type"), props)


# --- one row ----------------------------------------------------------------------------------------

_JSONDecodeError = orjson.JSONDecodeError


def parse_properties(text: str) -> tuple[Any, str | None]:
    """The properties cell as a value for the rules (an empty cell means {}); or an error message."""
    try:
        # Exact: NaN/Infinity come back as markers, so the property rule reports them as over HTTP.
        return rules.loads_json(text), None
    except (ValueError, RecursionError) as exc:
        return None, f"Not valid JSON: {getattr(exc, 'msg', exc)} (character {getattr(exc, 'pos', 0) + 1})."


def validate_csv_row(fields: list[str], indexes: ColumnIndexes, now: datetime,
                     window: rules.TimeWindow | None = None,
                     loads: Callable[[str], Any] = orjson.loads) -> tuple[rules.EventRow | None, dict[str, list[str]]]:
    """Validate one CSV row as ``POST /events`` validates the same event; errors are keyed by CSV column.

    ``loads`` parses the properties cell: orjson, or ``rules.loads_json`` for a source that may hold
    integers beyond 64 bits or numbers below a double's range (which orjson would round).
    """
    i_id, i_at, i_user, i_type, i_props = indexes
    text = fields[i_props] if i_props is not None else ""
    try:
        properties = loads(text) if text else rules.NO_PROPERTIES
    except (_JSONDecodeError, ValueError, RecursionError):
        pass
    else:
        row = rules.plainly_valid_row(fields[i_id], fields[i_at], fields[i_user], fields[i_type], properties,
                                      window or rules.TimeWindow(now))
        if row is not None:
            return row, {}
    item: dict[str, Any] = {"event_id": fields[i_id], "occurred_at": fields[i_at],
                            "user_id": fields[i_user], "event_type": fields[i_type]}
    cell_error = None
    if text:
        item["properties"], cell_error = parse_properties(text)
    row, errors = rules.validate_event(item, now, window)
    if cell_error is not None:
        errors.pop("properties", None)
        errors["properties_json"] = [cell_error]
        return None, errors
    if errors and "properties" in errors:
        errors["properties_json"] = errors.pop("properties")
    return row, errors


# --- bytes that are not UTF-8 -----------------------------------------------------------------------
# The text layer decodes far ahead of the row being parsed, so a strict decoder fails thousands of lines
# early and takes the rows before it down too. Instead an invalid byte is kept as a lone surrogate
# (surrogateescape) and the row holding it is refused on its own line like any other bad row. Valid
# UTF-8 never decodes to a lone surrogate, so a surrogate in a row means a bad byte.
UTF8_ERRORS = "eventsapp-import-utf8"
_invalid_utf8_seen = 0  # bumped at every invalid byte decoded; rows are checked only once it moves
_surrogateescape = codecs.lookup_error("surrogateescape")


def _note_invalid_utf8(exc: UnicodeError) -> tuple[str, int]:
    global _invalid_utf8_seen
    _invalid_utf8_seen += 1
    return _surrogateescape(exc)


codecs.register_error(UTF8_ERRORS, _note_invalid_utf8)


def invalid_utf8_errors(fields: list[str], header: list[str]) -> dict[str, list[str]]:
    """The columns of a row holding a byte that is not UTF-8, each with the byte."""
    errors: dict[str, list[str]] = {}
    for index, value in enumerate(fields):
        if value.isascii():
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(value[exc.start]) - 0xDC00
            name = header[index] if index < len(header) else "row"
            errors[name] = [f"Holds a byte that is not valid UTF-8 text (0x{byte:02x} at character "
                            f"{exc.start + 1})."]
    return errors


# --- the rows of one source -------------------------------------------------------------------------


@dataclass
class CheckedRow:
    line: int  # where the row starts, as an editor counts lines
    fields: list[str]
    row: rules.EventRow | None  # None when the row breaks a rule
    errors: dict[str, list[str]]


class CsvRows:
    """The rows of one opened source with their verdicts; ``names`` are the header's column names.

    Raises ``SourceError`` (naming the file and line) when the source is not CSV, not UTF-8 where no row
    holds the byte, or cannot be read."""

    def __init__(self, opened: src.OpenSource, name: str, now: datetime, window: rules.TimeWindow) -> None:
        self.opened = opened
        self.name = name
        self.now = now
        self.window = window
        self.names: list[str] = []

    def __iter__(self) -> Iterator[CheckedRow]:
        invalid_bytes_before = _invalid_utf8_seen  # before the first decode
        text = io.TextIOWrapper(self.opened.stream, encoding="utf-8", errors=UTF8_ERRORS, newline="")
        text._CHUNK_SIZE = 1 << 18  # type: ignore[attr-defined]  # fewer, larger decode steps
        reader = csv.reader(text, strict=True)
        try:
            yield from self._checked(reader, invalid_bytes_before)
        except csv.Error as exc:
            raise src.SourceError(f"{self.name}:{reader.line_num}: not valid CSV: {exc}.") from None
        except UnicodeDecodeError:  # only where no row holds it (an encoder's state at the end)
            raise src.SourceError(f"{self.name}:{reader.line_num + 1}: not valid UTF-8 text.") from None
        except gzip.BadGzipFile as exc:
            # Python reads every gzip member; bytes after the last one that are not gzip are refused
            # rather than dropped: the file is not what its writer meant it to be.
            raise src.SourceError(
                f"{self.name}: cannot read after line {reader.line_num}: {exc} (bytes after the end of "
                "the gzip data are not gzip; nothing of the file after them is imported).") from None
        except (OSError, EOFError) as exc:
            raise src.SourceError(f"{self.name}: cannot read after line {reader.line_num}: {exc}") from None

    def _checked(self, reader: Any, invalid_bytes_before: int) -> Iterator[CheckedRow]:
        header = next(reader, None)
        if header is None:
            raise src.SourceError(f"{self.name}:1: the file is empty; expected a header line ({','.join(COLUMNS)}).")
        indexes = column_indexes(header, self.name)
        width = len(header)
        self.names = names = [column.strip().lstrip("\ufeff") for column in header]
        opened, now, window = self.opened, self.now, self.window
        line = reader.line_num
        for fields in reader:
            start_line = line + 1
            line = reader.line_num
            if len(fields) != width:
                if not fields:
                    continue  # a blank line
                yield CheckedRow(start_line, fields, None,
                                 {"row": [f"Expected {width} columns as in the header, got {len(fields)}."]})
                continue
            if _invalid_utf8_seen != invalid_bytes_before:
                errors = invalid_utf8_errors(fields, names)
                if errors:
                    yield CheckedRow(start_line, fields, None, errors)
                    continue
            row, errors = validate_csv_row(fields, indexes, now, window,
                                           rules.loads_json if opened.long_digits else orjson.loads)
            yield CheckedRow(start_line, fields, row, errors)


# --- the rejects file -------------------------------------------------------------------------------


@dataclass
class RejectsFile:
    """Where refused rows go with --skip-invalid: a CSV file (their columns + file, line, error) and/or a
    callback (the CLI prints the first ones)."""

    path: str | None
    on_reject: Callable[[RowError], None] | None
    _file: Any = field(default=None, init=False)
    _writer: Any = field(default=None, init=False)

    def open(self) -> None:
        if self.path:
            # surrogateescape: a row refused for a byte that is not UTF-8 keeps its bytes as they were.
            self._file = open(self.path, "w", encoding="utf-8", errors="surrogateescape", newline="")
            self._writer = csv.writer(self._file, lineterminator="\n")
            self._writer.writerow(REJECT_COLUMNS)

    def add(self, fields: list[str], header: list[str], row_error: RowError) -> None:
        if self._writer is not None:
            by_name = dict(zip(header, fields))
            message = "; ".join(f"{name}: {m}" for name, ms in row_error.errors.items() for m in ms)
            self._writer.writerow([by_name.get(column, "") for column in COLUMNS]
                                  + [row_error.file, row_error.line, message])
        if self.on_reject is not None:
            self.on_reject(row_error)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
