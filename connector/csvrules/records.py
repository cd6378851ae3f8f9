"""Records → contacts, events and rejects (CONTRACT §4 rules 3–10), a batch at a time.

Each batch is checked column by column: every check adds ``row → reason`` to a fault table
with ``setdefault``, so a row with several faults is rejected once, for the first fault in
check order (fields, NUL, size, identifier, name, timestamp, key, reserved attributes).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from connector.csvrules.reader import RecordBatch, RecordReader, read_header
from connector.csvrules.rules import MAX_FIELD, MAX_HEADER, FileRules
from connector.csvrules.values import (
    RESERVED_CHECKS,
    STRING_ATTRIBUTES,
    check_column,
    key_column,
    timestamp_column,
    type_column,
)
from connector.errors import FileRejected

# (line, identifier, name, timestamp or None for "processing time", key or None, data JSON)
EventRow = tuple[int, str, str, int | None, str | None, bytes]
RESERVED_EVENT_HEADERS = ("name", "timestamp", "idempotencyKey")


@dataclass
class Batch:
    """What one batch of a file asks the store to do; ``records`` counts the records it
    consumed (stored or rejected), so a resumed file knows where to pick up."""

    records: int
    events: list[EventRow] = field(default_factory=list)
    contacts: list[tuple[str, bytes]] = field(default_factory=list)  # identifier, attributes
    rejects: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Layout:
    """Where each part of a record is, worked out once from the header."""

    width: int
    keep: list[int] | None  # columns left after mapping; None when all are kept
    identifier: int
    name: int | None
    timestamp: int | None
    key: int | None
    data: list[tuple[int, str]]  # event data: column, property name
    attributes: list[tuple[int, str]]  # contact attributes: column, attribute name


def _mapped_header(header: Sequence[str], rules: FileRules) -> tuple[list[str], list[int] | None]:
    names: list[str] = []
    keep: list[int] = []
    for index, raw in enumerate(header):
        name = raw.strip()
        name = rules.columns.get(name, name)
        if name == "" and raw.strip() in rules.columns:
            continue  # mapped to "": the column is skipped
        names.append(name)
        keep.append(index)
    for name in names:
        if not name:
            raise FileRejected("header: a column has an empty name")
        if len(name) > MAX_HEADER:
            raise FileRejected(f"header: column name over {MAX_HEADER} characters: {name[:40]}…")
    _no_duplicates(names, "")
    return names, (None if len(keep) == len(header) else keep)


def _no_duplicates(names: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FileRejected(f"header: duplicate column name {name!r}{what}")
        seen.add(name)


def _layout(header: Sequence[str], rules: FileRules) -> _Layout:
    names, keep = _mapped_header(header, rules)
    position = {name: i for i, name in enumerate(names)}
    if rules.identifier not in position:
        raise FileRejected(f"header: no identifier column {rules.identifier!r}")
    ident = position[rules.identifier]
    if rules.kind == "events":
        name = position.get("name")
        if name is None and not rules.event_name:
            raise FileRejected("no event name: the file has no 'name' column and no event_name")
        reserved = {ident, name, position.get("timestamp"), position.get("idempotencyKey")}
        data = [(i, n.removeprefix("data.")) for i, n in enumerate(names) if i not in reserved]
        _no_duplicates([n for _, n in data], " (after removing the 'data.' prefix)")
        return _Layout(
            len(header), keep, ident, name, position.get("timestamp"),
            position.get("idempotencyKey"), data, [],
        )  # fmt: skip
    listed = rules.event_columns or ()
    missing = [c for c in listed if c not in position]
    if missing:
        raise FileRejected(f"header: event_columns not in the file: {', '.join(missing)}")
    event_data = [(position[c], c) for c in listed if c not in ("timestamp", "idempotencyKey")]
    attributes = [(i, n) for i, n in enumerate(names) if i != ident and n not in listed]
    return _Layout(
        len(header), keep, ident, None,
        position["timestamp"] if "timestamp" in listed else None,
        position["idempotencyKey"] if "idempotencyKey" in listed else None,
        event_data, attributes,
    )  # fmt: skip


class FileParser:
    """One file through the shared CSV rules. Raises FileRejected from the constructor when
    the file is refused whole; afterwards every record becomes a stored row or a reject."""

    def __init__(self, raw: BinaryIO, rules: FileRules, *, has_nul: bool = True) -> None:
        self.rules = rules
        self._reader = RecordReader(raw, rules.encoding, rules.delimiter)
        self._has_nul = has_nul
        self.header_line, header = read_header(self._reader)
        self._layout = _layout(header, rules)
        self._event_name = rules.event_name or ""

    def batches(self, size: int, skip: int = 0) -> Iterator[Batch]:
        """Batches of at most ``size`` records, after skipping ``skip`` records (a resume)."""
        for records in self._reader.batches(size):
            if skip >= len(records.rows):
                skip -= len(records.rows)
                continue
            if skip:
                records = RecordBatch(
                    records.lines[skip:],
                    records.rows[skip:],
                    {i - skip: r for i, r in records.faults.items() if i >= skip},
                )
                skip = 0
            if records.rows:
                yield self._shape(records)

    def _shape(self, records: RecordBatch) -> Batch:
        layout = self._layout
        faults = records.faults
        rows = self._checked_rows(records.rows, faults)
        columns: list[Sequence[str]] = list(zip(*rows, strict=True)) if rows else []
        ident = columns[layout.identifier]
        check_column(self.rules.identifier, ident, faults, required=True)
        if layout.name is not None:
            names: Sequence[str] = columns[layout.name]
            _required(names, "name", faults)
        else:
            names = [self._event_name] * len(rows)
        stamps = (
            timestamp_column(columns[layout.timestamp], faults)
            if layout.timestamp is not None
            else [None] * len(rows)
        )
        keys = (
            key_column(columns[layout.key], faults)
            if layout.key is not None
            else [None] * len(rows)
        )
        attributes = self._attributes(columns, faults)
        data = _json_objects(
            [n for _, n in layout.data], [type_column(columns[i]) for i, _ in layout.data],
            len(rows),
        )  # fmt: skip
        good = [i for i in range(len(rows)) if i not in faults] if faults else range(len(rows))
        batch = Batch(records=len(rows))
        batch.rejects = sorted((records.lines[i], reason) for i, reason in faults.items())
        pick = _picker(good, len(rows))
        if self.rules.kind == "events" or layout.data or self.rules.event_columns is not None:
            batch.events = list(
                zip(pick(records.lines), pick(ident), pick(names), pick(stamps), pick(keys),
                    pick(data), strict=True)
            )  # fmt: skip
        batch.contacts = _merged(pick(ident), pick(attributes) if attributes else None)
        return batch

    def _checked_rows(self, rows: list[list[str]], faults: dict[int, str]) -> list[list[str]]:
        width = self._layout.width
        if set(map(len, rows)) != {width}:
            for i, row in enumerate(rows):
                if len(row) != width:
                    faults.setdefault(i, f"expected {width} fields, got {len(row)}")
                    rows[i] = [""] * width
        if self._has_nul:
            for i, row in enumerate(rows):
                if any("\x00" in cell for cell in row):
                    faults.setdefault(i, "a cell holds a NUL character")
        if max(map(len, itertools.chain.from_iterable(rows)), default=0) > MAX_FIELD:
            for i, row in enumerate(rows):
                if max(map(len, row)) > MAX_FIELD:
                    faults.setdefault(i, f"a field is over {MAX_FIELD:,} characters")
        keep = self._layout.keep
        if keep is not None:
            return [[row[i] for i in keep] for row in rows]
        return rows

    def _attributes(
        self, columns: list[Sequence[str]], faults: dict[int, str]
    ) -> list[dict[str, Any]]:
        """Contact attributes per row (typed, reserved ones checked); [] for events files."""
        spec = self._layout.attributes
        if not spec:
            return []
        typed: list[Sequence[Any]] = []
        for index, name in spec:
            cells = columns[index]
            values = [c or None for c in cells] if name in STRING_ATTRIBUTES else type_column(cells)
            if name in RESERVED_CHECKS:
                check_column(name, values, faults)
            typed.append(values)
        names = [n for _, n in spec]
        return [
            {k: v for k, v in zip(names, row, strict=True) if v is not None}
            for row in zip(*typed, strict=True)
        ]


def _required(cells: Sequence[str], what: str, faults: dict[int, str]) -> None:
    if "" in cells or any(map(str.isspace, cells)):
        for i, cell in enumerate(cells):
            if not cell or cell.isspace():
                faults.setdefault(i, f"{what} is empty")


def _picker(good: Sequence[int], total: int) -> Any:
    if len(good) == total:
        return lambda column: column
    return lambda column: [column[i] for i in good]


def _json_objects(names: list[str], columns: list[list[Any]], count: int) -> list[bytes]:
    """Per row, a JSON object of the non-empty values; dict(zip) when the row has no gaps."""
    dumps = orjson.dumps
    if not columns:
        return [b"{}"] * count
    return [
        dumps(dict(zip(names, row, strict=True)))
        if None not in row
        else dumps({k: v for k, v in zip(names, row, strict=True) if v is not None})
        for row in zip(*columns, strict=True)
    ]


def _merged(identifiers: Sequence[str], attributes: Sequence[dict[str, Any]] | None) -> list[
    tuple[str, bytes]
]:
    """One upsert per contact in the batch; later rows win."""
    if attributes is None:
        return [(i, b"{}") for i in dict.fromkeys(identifiers)]
    merged: dict[str, dict[str, Any]] = {}
    for ident, attrs in zip(identifiers, attributes, strict=True):
        if ident in merged:
            merged[ident].update(attrs)
        else:
            merged[ident] = attrs
    return [(i, orjson.dumps(a)) for i, a in merged.items()]
