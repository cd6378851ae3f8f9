"""Records → contacts, events and rejects (CSV rules §3-§10), a batch at a time.

Each batch is checked column by column: every check adds ``row → (reason, value)`` to a fault table
with ``setdefault``, so a row with several faults is rejected once, for the first fault in
check order (fields, NUL, size, identifier: empty, long, reserved check; name, timestamp,
key, reserved attributes).
"""

from __future__ import annotations

import codecs
import functools
import io
import itertools
import operator
import re
import time
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import orjson

from connector.csvrules.reader import (
    CHUNK,
    RecordBatch,
    RecordReader,
    ScannedFile,
    read_header,
)
from connector.csvrules.rules import (
    MAX_FIELD,
    MAX_HEADER,
    MAX_REJECT_VALUE,
    NO_TIMESTAMP,
    TOO_OLD,
    FileRules,
    Limits,
)
from connector.csvrules.values import (
    RESERVED_CHECKS,
    STRING_ATTRIBUTES,
    Faults,
    LocalTimes,
    bound_identifiers,
    check_column,
    json_members,
    key_column,
    quoted,
    require_present,
    timestamp_column,
    type_column,
    with_decimal_points,
)
from connector.errors import FileRejected


@dataclass
class Batch:
    """What one batch of a file asks the store to do.

    Built to cross a process boundary cheaply: the stored events are columns, text columns
    joined with NUL (a row holding a NUL is rejected, so none is ever stored). ``records``
    counts every record consumed, stored or rejected, so a resumed file knows where it was.
    """

    records: int
    rejects: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, value)
    events: int = 0
    lines: array[int] = field(default_factory=lambda: array("q"))
    identifiers: str = ""
    # Identifiers of events no earlier batch of this parse had: the contacts the store may
    # still lack (an events file creates them).
    new_identifiers: tuple[str, ...] = ()
    names: str = ""
    timestamps: array[int] | None = None  # None: every event takes the processing time
    keys: str | None = None  # "" in a slot: no key; None: the file has no key column
    data: str = ""  # JSON objects
    contacts: list[tuple[str, str]] | None = None  # contacts files: (identifier, attributes)

    def event_rows(self) -> Iterator[tuple[Any, ...]]:
        """(line, identifier, name, timestamp, key, data) per event, keys "" for none: the
        batch as the rules made it, for reading (the sink stores ``stored_rows``)."""
        return zip(*self._event_columns(), strict=True)

    def stored_rows(self, file_id: int, now: int) -> Iterator[tuple[Any, ...]]:
        """(file_id, line, identifier, name, timestamp, now, key, data) per event: the
        store binds the file and the time too, to keep one SQL text for every file."""
        line, identifier, name, stamp, key, data = self._event_columns()
        count = self.events
        return zip(
            repeat(file_id, count),
            line,
            identifier,
            name,
            stamp,
            repeat(now, count),
            key,
            data,
            strict=True,
        )

    def _event_columns(self) -> tuple[Iterable[Any], ...]:
        count = self.events
        if not count:
            return ((),) * 6
        return (
            self.lines,
            self.identifiers.split("\0"),
            self.names.split("\0"),
            self.timestamps if self.timestamps is not None else repeat(NO_TIMESTAMP, count),
            self.keys.split("\0") if self.keys is not None else repeat("", count),
            self.data.split("\0"),
        )


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
        if "\0" in name:  # (a cell with NUL rejects its row; a name with one, the file)
            raise FileRejected(f"header: column name {name[:40]!r} holds a NUL character")
        if _SURROGATE.search(name):  # (repr shows it as an escape, which a store can hold)
            raise FileRejected(
                f"header: column name {name[:40]!r} is not valid {rules.encoding} text"
            )
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


# Delimiters a header may have been written with: one that would have split it shows
# the file is delimited otherwise than read.
_OTHER_DELIMITERS = (",", ";", "\t", "|")
_NAMES_SHOWN = 10


def toml(text: str) -> str:
    """``text`` as a TOML basic string, to paste into the config (JSON's escapes are
    TOML's)."""
    return orjson.dumps(text).decode()


def _no_identifier(names: list[str], rules: FileRules, delimiter: str) -> str:
    """Why a header without the identifier column is refused, with what was found and,
    when it is likely, what to change: the name in another case, or another delimiter."""
    wanted = rules.identifier
    found = ", ".join(repr(n[:40]) for n in names[:_NAMES_SHOWN])
    more = f" and {len(names) - _NAMES_SHOWN:,} more" if len(names) > _NAMES_SHOWN else ""
    text = (
        f"header: no identifier column {wanted!r}; found {len(names):,} column(s), split on"
        f" {delimiter!r}: {found}{more}"
    )
    cased = [n for n in names if n.casefold() == wanted.casefold()]
    if cased:
        return (
            f"{text}; {cased[0]!r} differs only in case (names are case-sensitive): rename it,"
            f" or set identifier = {toml(cased[0])}"
        )
    line = delimiter.join(names)
    for other in _OTHER_DELIMITERS:
        if other != delimiter and wanted in (part.strip() for part in line.split(other)):
            hint = f"split on {other!r} the header has {wanted!r}: set delimiter = {toml(other)}"
            return f"{text}; {hint}"
    return text


def _layout(header: Sequence[str], rules: FileRules, delimiter: str) -> _Layout:
    names, keep = _mapped_header(header, rules)
    position = {name: i for i, name in enumerate(names)}
    if rules.identifier not in position:
        raise FileRejected(_no_identifier(names, rules, delimiter))
    ident = position[rules.identifier]
    if rules.kind == "events":
        name = position.get("name")
        if name is None and not rules.event_name:
            raise FileRejected("no event name: the file has no 'name' column and no event_name")
        reserved = {ident, name, position.get("timestamp"), position.get("idempotencyKey")}
        data = [(i, n.removeprefix("data.")) for i, n in enumerate(names) if i not in reserved]
        if any(not name for _, name in data):
            raise FileRejected("header: a column named 'data.' leaves an empty property name")
        _no_duplicates([n for _, n in data], " (after removing the 'data.' prefix)")
        return _Layout(
            len(header),
            keep,
            ident,
            name,
            position.get("timestamp"),
            position.get("idempotencyKey"),
            data,
            [],
        )
    listed = rules.event_columns or ()
    missing = [c for c in listed if c not in position]
    if missing:
        raise FileRejected(f"header: event_columns not in the file: {', '.join(missing)}")
    event_data = [(position[c], c) for c in listed if c not in ("timestamp", "idempotencyKey")]
    attributes = [(i, n) for i, n in enumerate(names) if i != ident and n not in listed]
    return _Layout(
        len(header),
        keep,
        ident,
        None,
        position["timestamp"] if "timestamp" in listed else None,
        position["idempotencyKey"] if "idempotencyKey" in listed else None,
        event_data,
        attributes,
    )


class FileParser:
    """One file through the shared CSV rules. Raises FileRejected from the constructor when
    the file is refused whole; afterwards every record becomes a stored row or a reject."""

    def __init__(self, raw: ScannedFile, rules: FileRules, limits: Limits | None = None) -> None:
        """The scan of ``raw`` lets per-cell checks it rules out be skipped; its owner
        closes it."""
        self.rules = rules
        self._scan = raw.scan
        self._reader = RecordReader(
            io.BufferedReader(raw, CHUNK), rules.encoding, rules.delimiter, raw.scan, limits
        )
        self._any_text = _any_text(rules.encoding)
        try:
            self.header_line, header = read_header(self._reader)
            self._layout = _layout(header, rules, self._reader.delimiter)
        except BaseException:
            self._reader.detach()  # the traceback must not keep a wrapper over `raw` alive
            raise
        self._reader.width = len(header)
        self._event_name = rules.event_name or ""
        self._mentioned: set[str] = set()  # identifiers given to earlier batches
        self._local = (
            LocalTimes(
                ZoneInfo(rules.timezone) if rules.timezone else None,
                rules.timestamp_formats,
                decimal_comma=rules.decimal == ",",
            )
            if rules.timezone or rules.timestamp_formats or rules.decimal == ","
            else None
        )
        # Events older than this (Unix seconds) are rejected: the file's processing time
        # less the source's max_event_age (``FileRules.not_before``).
        counted = (
            rules if rules.not_before is not None else rules.with_age_counted_from(time.time())
        )
        self._not_before = counted.not_before
        self._numbers: Callable[[Sequence[str]], Sequence[str]] = (
            with_decimal_points if rules.decimal == "," else _as_written
        )

    def batches(self, size: int, skip: int = 0) -> Iterator[Batch]:
        """Batches of at most ``size`` records, after skipping ``skip`` records (a resume)."""
        for records in self._reader.batches(size):
            if skip >= len(records.lines):
                skip -= len(records.lines)
                continue
            if skip:
                records, skip = records.after(skip), 0
            if records.lines:
                # Neither the cells nor the batch stay referenced here while the next batch
                # is made: one record may be megabytes.
                batch = self._shape(records)
                del records
                yield batch
                del batch

    def _shape(self, records: RecordBatch) -> Batch:
        layout = self._layout
        # (the reader's own faults are of whole records: their value is the record's text)
        faults: Faults = {i: (r, self._text(records.rows[i])) for i, r in records.faults.items()}
        columns = self._checked_columns(records, faults)
        count = len(records.lines)
        ident = columns[layout.identifier]
        what = f"{self.rules.identifier} (the identifier)"
        require_present(what, ident, faults)
        bound_identifiers(what, ident, faults)
        check_column(self.rules.identifier, ident, ident, faults)
        if layout.name is not None:
            names: Sequence[str] = columns[layout.name]
            require_present("name", names, faults)
        else:
            names = [self._event_name] * count
        stamps = None
        if layout.timestamp is not None:
            written = columns[layout.timestamp]
            stamps = timestamp_column(written, faults, self._local)
            if self._not_before is not None:
                self._too_old(stamps, written, faults)
        keys = key_column(columns[layout.key], faults) if layout.key is not None else None
        attributes = self._attributes(columns, faults)
        members = [json_members(name, self._numbers(columns[i])) for i, name in layout.data]
        batch = Batch(records=count)
        batch.rejects = sorted(
            (records.lines[i], reason, _storable(value[:MAX_REJECT_VALUE]))
            for i, (reason, value) in faults.items()
        )
        keep = _keeper([i not in faults for i in range(count)] if faults else None)
        if self.rules.kind == "contacts":
            batch.contacts = _merged(keep(ident), keep(attributes))
            if self.rules.event_columns is None:
                return batch
        batch.events = count - len(faults)
        batch.lines = array("q", keep(records.lines))
        identifiers = keep(ident)
        batch.identifiers = "\0".join(identifiers)
        if batch.contacts is None:
            batch.new_identifiers = tuple(set(identifiers) - self._mentioned)
            self._mentioned.update(batch.new_identifiers)
            if len(self._mentioned) > _MENTIONED_CAP:
                self._mentioned.clear()
        batch.names = "\0".join(keep(names))
        if stamps is not None:
            batch.timestamps = array("q", keep(stamps))
        if keys is not None:
            batch.keys = "\0".join(keep(keys))
        if members:  # each member starts with ",": drop the first one of every object
            inner = map(_AFTER_FIRST, map("".join, zip(*members, strict=True)))
            batch.data = "{" + "}\0{".join(keep(list(inner))) + "}"
        else:
            batch.data = "\0".join(repeat("{}", batch.events))
        return batch

    def _text(self, row: list[str]) -> str:
        """A record's text, near enough for a reject's value: its cells, delimited."""
        return self._reader.delimiter.join(row)[:MAX_REJECT_VALUE]

    def _checked_columns(self, records: RecordBatch, faults: Faults) -> list[Sequence[str]]:
        """The records' kept columns; ragged rows, NULs and oversized fields faulted."""
        width = self._layout.width
        columns: list[Sequence[str]]
        if records.columns is not None:  # the reader saw every record complete
            columns = list(records.columns)
        else:
            rows = records.rows
            if set(map(len, rows)) != {width}:
                for i, row in enumerate(rows):
                    if len(row) != width:
                        fault = f"expected {width} fields, got {len(row)}"
                        faults.setdefault(i, (fault, self._text(row)))
                        rows[i] = [""] * width
            columns = list(zip(*rows, strict=True))
        # The scan has seen every byte of these records: its answers hold for them.
        if self._scan.has_nul or self._any_text:
            for column in columns:
                for i, cell in enumerate(column):
                    if "\x00" in cell:
                        faults.setdefault(i, ("a cell holds a NUL character", cell))
        if self._any_text and _SURROGATE.search("".join(itertools.chain(*columns))):
            for column in columns:
                for i, cell in enumerate(column):
                    if _SURROGATE.search(cell):
                        fault = f"a cell is not valid {self.rules.encoding} text"
                        faults.setdefault(i, (fault, cell))
        if (self._scan.has_long_lines or records.multiline) and max(
            map(len, itertools.chain.from_iterable(columns)), default=0
        ) > MAX_FIELD:
            for column in columns:
                for i, cell in enumerate(column):
                    if len(cell) > MAX_FIELD:
                        fault = f"a field is over {MAX_FIELD:,} characters"
                        faults.setdefault(i, (fault, cell[:MAX_REJECT_VALUE]))
        keep = self._layout.keep
        return columns if keep is None else [columns[i] for i in keep]

    def _too_old(self, stamps: list[int], written: Sequence[str], faults: Faults) -> None:
        """Events from before ``_not_before`` rejected (`max_event_age`): an event that old
        could set off a campaign meant for its time."""
        oldest = self._not_before
        if oldest is None or min(stamps, default=oldest) >= oldest:
            return
        age = self.rules.max_event_age_text
        for row, stamp in enumerate(stamps):
            if stamp != NO_TIMESTAMP and stamp < oldest:
                reason = f"timestamp {quoted(written[row])} is {TOO_OLD} ({age})"
                faults.setdefault(row, (reason, written[row]))

    def _attributes(self, columns: list[Sequence[str]], faults: Faults) -> list[dict[str, Any]]:
        """Contact attributes per row (typed, reserved ones checked); [] for events files."""
        spec = self._layout.attributes
        if not spec:
            return []
        typed: list[Sequence[Any]] = []
        for index, name in spec:
            cells = columns[index]
            if name in STRING_ATTRIBUTES:
                values: Sequence[Any] = [c or None for c in cells]
            else:
                values = type_column(self._numbers(cells))
            if name in RESERVED_CHECKS:
                check_column(name, values, cells, faults)
            typed.append(values)
        names = [n for _, n in spec]
        return [
            {k: v for k, v in zip(names, row, strict=True) if v is not None}
            for row in zip(*typed, strict=True)
        ]


_T = TypeVar("_T")
# A lone surrogate (UTF-7's "+2AA-", say) is text no store can hold, not being UTF-8: its
# cell is refused as text that does not decode.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Past this many identifiers the memory of those already given is dropped, to keep memory
# flat on huge files; the store then merely hears of some contacts again.
_MENTIONED_CAP = 200_000
_AFTER_FIRST = operator.itemgetter(slice(1, None))


@functools.cache
def _any_text(encoding: str) -> bool:
    """Whether the codec may decode to a NUL without a NUL byte (which the scan sees), or to
    a lone surrogate: UTF-7 reads "+AAA-" as a NUL and "+2AA-" as U+D800, "unicode_escape"
    reads "\\0" as a NUL. Such codecs have their cells checked one by one.

    UTF-8 cannot. Nor can a codec that maps each byte to one character on its own (latin-1,
    cp1252, ...): probed by decoding every pair of bytes at once, which must read as the
    bytes read one at a time, none but 0x00 giving a NUL and none a surrogate."""
    if codecs.lookup(encoding).name == "utf-8":
        return False
    pairs = bytes(itertools.chain.from_iterable(itertools.product(range(256), repeat=2)))
    with warnings.catch_warnings():  # ("unicode_escape" warns of its unknown escapes)
        warnings.simplefilter("ignore")
        alone = [bytes([b]).decode(encoding, "replace") for b in range(256)]
        if any(len(c) != 1 or _SURROGATE.match(c) for c in alone) or "\0" in alone[1:]:
            return True
        return pairs.decode(encoding, "replace") != "".join(alone[b] for b in pairs)


def _storable(value: str) -> str:
    """A rejected cell as every store can keep it: a NUL, or a lone surrogate (bytes that
    did not decode), made U+FFFD, as a decoder replaces what it cannot read."""
    if "\0" in value or _SURROGATE.search(value):
        return _SURROGATE.sub("\ufffd", value.replace("\0", "\ufffd"))
    return value


def _as_written(cells: Sequence[str]) -> Sequence[str]:
    return cells


def _keeper(mask: list[bool] | None) -> Callable[[Sequence[_T]], Sequence[_T]]:
    """Selects the valid rows of a column; the identity when every row is valid."""
    if mask is None:
        return lambda column: column
    return lambda column: list(compress(column, mask))


def _merged(
    identifiers: Sequence[str], attributes: Sequence[dict[str, Any]]
) -> list[tuple[str, str]]:
    """One upsert per contact in the batch; later rows win."""
    if not attributes:
        return [(i, "{}") for i in dict.fromkeys(identifiers)]
    merged: dict[str, dict[str, Any]] = {}
    for ident, attrs in zip(identifiers, attributes, strict=True):
        if ident in merged:
            merged[ident].update(attrs)
        else:
            merged[ident] = attrs
    return [(i, orjson.dumps(a).decode()) for i, a in merged.items()]
