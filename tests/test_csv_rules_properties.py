"""Properties of the shared CSV rules (docs/csv-rules.md), through the CLI in-process.

Each hypothesis example gets a fresh store in its own temp folder (function-scoped
pytest fixtures are not reset between examples).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

try:
    import golden
except ImportError:  # tests/ became a package
    from tests import golden

# Slow (pyproject's `slow` marker): thousands of generated files through the CLI (~20 s).
pytestmark = pytest.mark.slow

EVENTS_NAMED = [{"kind": "events", "pattern": "*", "event_name": "e"}]

# Pieces that make CSV-ish bytes interesting: delimiters, quotes, every line end, NUL,
# a BOM, bytes that are not UTF-8, reserved headers and values near the typing rules.
TOKENS = [
    b",",
    b";",
    b'"',
    b"\n",
    b"\r",
    b"\r\n",
    b"\t",
    b" ",
    b"a",
    b"1",
    b"-",
    b".",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xc3\xa9",
    b"\xe2\x80\xa8",
    b"\xef\xbb\xbf",
    b"identifier",
    b"name",
    b"timestamp",
    b"idempotencyKey",
    b"data.",
    b"true",
    b"1696252121",
    b"2023-10-02T13:08:41Z",
]
HEADERS = [
    b"",
    b"identifier,v\n",
    b"identifier;name;timestamp;idempotencyKey\r\n",
    b"\xef\xbb\xbfidentifier,data.v,v\r",
]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join)
csv_like_bytes = st.one_of(
    st.binary(max_size=300),
    token_soup,
    st.tuples(st.sampled_from(HEADERS), token_soup).map(b"".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csv_like_bytes)
def test_any_bytes_are_ingested_or_rejected_whole(data: bytes) -> None:
    """Any bytes as an events file exit 0 (ingested, counts consistent with the dumps) or
    2 (rejected whole, nothing stored), never anything else."""
    with tempfile.TemporaryDirectory() as folder:
        h = golden.Harness(Path(folder))
        h.configure(files=EVENTS_NAMED)
        p = h.stage("events_fuzz.csv", data)
        rc = h.import_(p)
        assert rc in (0, 2), h.last_output
        record = h.file_record(p)
        events = h.events()
        rejects = h.rejects()
        if rc == 2:
            assert h.assert_file_rejected(p)
            assert events == []
            assert h.contacts() == {}
            return
        assert record["status"] == "ingested"
        assert record["rows"] == len(events)
        assert record["rejected"] == len(rejects)
        physical_lines = golden.count_line_breaks(data.decode("utf-8", "replace")) + 1
        lines = [e["line"] for e in events] + [r["line"] for r in rejects]
        assert all(isinstance(n, int) and 2 <= n <= physical_lines for n in lines), lines
        assert len(set(lines)) == len(lines), lines


# --- round trip -------------------------------------------------------------------------

# Text of any kind but surrogates (not encodable) and NUL (rejects its row), with extra
# weight on what CSV and line counting must get right.
SPECIALS = [",", ";", '"', "\n", "\r", "\r\n", " ", "\t", "\u2028", "\x85", "\x0b", "\x1c"]
any_text = st.lists(
    st.one_of(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        st.sampled_from(SPECIALS),
    ),
    max_size=12,
).map("".join)
int_text = st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str)
out_of_range_text = st.integers(min_value=2**63, max_value=2**70).flatmap(
    lambda i: st.sampled_from([str(i), str(-i - 1)])
)
dec_text = st.tuples(
    st.sampled_from(["", "-"]),
    st.integers(min_value=0, max_value=10**12),
    st.text(alphabet="0123456789", min_size=1, max_size=6),
).map(lambda t: f"{t[0]}{t[1]}.{t[2]}")
bool_text = st.sampled_from(["true", "false"]).flatmap(
    lambda word: st.tuples(*(st.sampled_from([c, c.upper()]) for c in word)).map("".join)
)
lookalike_text = st.sampled_from(
    ["007", "+32478112233", "1e3", "1,5", " 12", "NaN", "null", "[1,2]", '{"a":1}', "-0", ""]
)
cell_text = st.one_of(any_text, int_text, out_of_range_text, dec_text, bool_text, lookalike_text)
identifier_text = (
    st.lists(
        st.one_of(
            st.characters(whitelist_categories=("L", "N", "P", "S")),
            st.sampled_from([",", ";", '"', " ", "\n", "\r\n"]),
        ),
        min_size=1,
        max_size=10,
    )
    .map("".join)
    .filter(lambda s: s.strip() != "")
)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, list[list[str]], list[int]]:
    """A CSV written by csv.writer: its text, its records (header first) and each data
    record's physical start line."""
    width = draw(st.integers(min_value=1, max_value=4))
    header = ["identifier", *(f"c{i}" for i in range(1, width + 1))]
    rows = draw(
        st.lists(
            st.tuples(identifier_text, st.lists(cell_text, min_size=width, max_size=width)),
            min_size=1,
            max_size=8,
        )
    )
    delimiter = draw(st.sampled_from([",", ";"]))  # sniffed from the header
    # QUOTE_MINIMAL quotes CR and LF only when both are in the line terminator; QUOTE_ALL
    # quotes everything, so any line end is safe with it (and quoted numbers stay numbers).
    quoting, terminator = draw(
        st.sampled_from(
            [
                (csv.QUOTE_MINIMAL, "\r\n"),
                (csv.QUOTE_ALL, "\r\n"),
                (csv.QUOTE_ALL, "\n"),
                (csv.QUOTE_ALL, "\r"),
            ]
        )
    )
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator=terminator)
    writer.writerow(header)
    records = [[identifier, *cells] for identifier, cells in rows]
    starts = []
    for record in records:
        starts.append(golden.count_line_breaks(buffer.getvalue()) + 1)
        writer.writerow(record)
    return buffer.getvalue(), [header, *records], starts


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_file=csv_files())
def test_round_trip_of_written_records(csv_file: tuple[str, list[list[str]], list[int]]) -> None:
    """Records written by csv.writer come back from `dump events` with their typed values,
    their identifiers verbatim and their physical start lines."""
    text, (header, *records), starts = csv_file
    with tempfile.TemporaryDirectory() as folder:
        h = golden.Harness(Path(folder))
        h.configure(files=EVENTS_NAMED)
        p = h.stage("events_round_trip.csv", text.encode("utf-8"))
        before = math.floor(time.time())
        assert h.import_(p) == 0, h.last_output
        after = math.ceil(time.time())
        expected = []
        for record, line in zip(records, starts, strict=True):
            data: dict[str, Any] = {}
            for name, cell in zip(header[1:], record[1:], strict=True):
                value = golden.typed(cell)
                if value is not golden.ABSENT:
                    data[name] = value
            expected.append(h.event(p, line, record[0], data, name="e"))
        events = h.events()
        assert h.rejects() == []
        for event in events:
            assert before <= event["timestamp"] <= after
            event["timestamp"] = golden.PROCESSING
        assert golden.strict(events) == golden.strict(expected)
        h.assert_file(p, "ingested", rows=len(records), rejected=0, duplicates=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_file=csv_files())
def test_round_trip_of_written_contacts(csv_file: tuple[str, list[list[str]], list[int]]) -> None:
    """Contacts written by csv.writer come back from `dump contacts` typed and merged: later
    rows win and an empty cell leaves the attribute as it was."""
    text, (header, *records), _ = csv_file
    with tempfile.TemporaryDirectory() as folder:
        h = golden.Harness(Path(folder))
        h.configure(files=[{"kind": "contacts", "pattern": "*"}])
        p = h.stage("contacts_round_trip.csv", text.encode("utf-8"))
        assert h.import_(p, kind="contacts") == 0, h.last_output
        expected: dict[str, dict[str, Any]] = {}
        for identifier, *cells in records:
            attributes = expected.setdefault(identifier, {})
            for name, cell in zip(header[1:], cells, strict=True):
                value = golden.typed(cell)
                if value is not golden.ABSENT:
                    attributes[name] = value
        assert h.rejects() == []
        assert h.events() == []
        h.assert_contacts(expected)


def _parsed(data: bytes, rules: Any, *, plain: bool) -> list[tuple[Any, ...]]:
    """Every batch of ``data`` (small batches: many boundaries), with or without the reader's
    plain path, as comparable tuples; or the reason the file is refused."""
    from connector.csvrules.reader import RecordReader, open_scanned
    from connector.csvrules.records import FileParser
    from connector.errors import FileRejected

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_bytes(data)
        saved = RecordReader._plain
        if not plain:
            RecordReader._plain = lambda self, *args: None  # type: ignore[method-assign]
        try:
            with open_scanned(path) as raw:
                try:
                    parser = FileParser(raw, rules)
                except FileRejected as exc:
                    return [("rejected", exc.reason)]
                return [
                    (b.records, b.rejects, list(b.event_rows()), b.new_identifiers)
                    for b in parser.batches(3)
                ]
        finally:
            RecordReader._plain = saved  # type: ignore[method-assign]


PLAIN_CELLS = ["", "a", "1", "u1", " x", "é", "\x00", "true"]
plain_cell = st.sampled_from(PLAIN_CELLS)
# Cells as a writer quotes them (holding the delimiter, a quote, a line break, nothing),
# and as csv reads them leniently: text after a closing quote, a quote in a plain field.
quoted_cell = st.sampled_from(
    ['"a,b"', '"x""y"', '""', '"1"', '"u1"', '"a\nb"', '"a\r\nb"', '"ab"c', 'ab"c', '"q"x"']
)
plain_lines = st.lists(
    st.one_of(
        st.lists(plain_cell, min_size=1, max_size=4).map(",".join),
        st.lists(st.one_of(plain_cell, quoted_cell), min_size=1, max_size=4).map(",".join),
        # all quoted, as spreadsheets write: "a","b","c"
        st.lists(st.sampled_from([*PLAIN_CELLS, "a,b"]), min_size=3, max_size=3).map(
            lambda cells: ",".join(f'"{cell}"' for cell in cells)
        ),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    lines=plain_lines,
    ends=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=13, max_size=13),
    last=st.booleans(),
    extra=st.sampled_from(["", '"', '"q"', "a\nb"]),
)
def test_the_plain_path_reads_as_the_csv_module_does(
    lines: list[str], ends: list[str], last: bool, extra: str
) -> None:
    """Lines without quotes, all-quoted lines and lines with a few quoted cells are split
    without csv.reader's rows, a batch at a time: every record, line number, reject and
    value must come out as through csv.reader (ragged, blank and multi-line records
    included, which send their batch down the csv path)."""
    from connector.csvrules.rules import FileRules

    body = [line + end for line, end in zip(["identifier,v,w", *lines], ends, strict=False)]
    text = "".join(body) + extra
    if not last:
        text = text.rstrip("\r\n")
    rules = FileRules(kind="events", event_name="e")
    data = text.encode()
    assert _parsed(data, rules, plain=True) == _parsed(data, rules, plain=False)


# --- any cell in any column: stored as the rules type it, or rejected with a reason -------

ROLES = [
    "identifier",
    "name",
    "timestamp",
    "idempotencyKey",
    "email",
    "phone",
    "externalId",
    "unsubscribed",
    "smsCapable",
    "language",
    "createdAt",
    "v",
]
# Cells at the rules' edges: digit runs past 64 bits, a float's range and int()'s 4,300
# digits; near-miss addresses; date-times; long keys and identifiers; NUL.
edge_text = st.one_of(
    st.builds(
        lambda sign, length, end: sign + "9" * length + end,
        st.sampled_from(["", "-"]),
        st.sampled_from([1, 10, 13, 19, 20, 309, 4301, 5000]),
        st.sampled_from(["", ".5", "." + "0" * 400]),
    ),
    st.sampled_from(
        [
            "a@b.co",
            "a@b",
            "a@" + ".a" * 3000,
            "a b@c.d",
            "32478112233",
            "0478112233",
            "ext-1/a_b.c",
            "x" * 65,
            "en",
            "EN",
            "2023-10-02T13:08:41Z",
            "2023-10-02T13:08:41.9999999+02:00",
            "2023-10-02",
            "k" * 129,
            "a\x00b",
            "1696252121000",
            "-0",
            "TRUE",
        ]
    ),
    # identifiers about their bound, in characters of one to four bytes of UTF-8
    st.builds(
        lambda char, length: char * length,
        st.sampled_from(["i", "é", "\U0001d11e"]),
        st.sampled_from([512, 513, 3000]),
    ),
)
any_cell = st.one_of(cell_text, edge_text)


def _expected(kind: str, role: str, cell: str) -> tuple[bool, Any]:
    """Whether the row holding ``cell`` is stored, and the value then stored, by the
    per-cell rules (themselves held to the contract's words in test_values.py)."""
    from connector.csvrules.rules import MAX_IDENTIFIER, MAX_KEY, NO_TIMESTAMP
    from connector.csvrules.values import (
        RESERVED_CHECKS,
        STRING_ATTRIBUTES,
        parse_timestamp,
        type_cell,
    )

    if "\x00" in cell:
        return False, None
    if role == "identifier":
        return cell.strip() != "" and len(cell) <= MAX_IDENTIFIER, cell
    if kind == "events" and role == "name":
        return cell.strip() != "", cell
    if kind == "events" and role == "timestamp":
        try:
            return True, parse_timestamp(cell) if cell else NO_TIMESTAMP
        except ValueError:
            return False, None
    if kind == "events" and role == "idempotencyKey":
        return len(cell) <= MAX_KEY, cell
    if cell == "":
        return True, golden.ABSENT
    value = cell if kind == "contacts" and role in STRING_ATTRIBUTES else type_cell(cell)
    if kind == "contacts" and role in RESERVED_CHECKS:
        return RESERVED_CHECKS[role](value) is None, value  # type: ignore[arg-type]
    return True, value


def _stored(kind: str, batches: list[Any]) -> dict[str, dict[str, Any]]:
    """What the batches store, by identifier: an event's fields and data, or a contact's
    attributes."""
    stored = {}
    for batch in batches:
        if kind == "events":
            for _, identifier, name, stamp, key, data in batch.event_rows():
                fields = {"name": name, "timestamp": stamp, "idempotencyKey": key}
                stored[identifier] = {**fields, **json.loads(data)}
        else:
            stored.update((i, json.loads(a)) for i, a in batch.contacts or [])
    return stored


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["events", "contacts"]),
    role=st.sampled_from(ROLES),
    cells=st.lists(any_cell, min_size=1, max_size=6),
)
def test_any_cell_in_any_column_is_stored_typed_or_rejected(
    kind: str, role: str, cells: list[str]
) -> None:
    """Any text, in any column of a contacts or events file, is stored as the rules type
    it or rejects its row with a reason; the file is never refused for it, nothing raises."""
    from connector.csvrules.reader import open_scanned
    from connector.csvrules.records import FileParser
    from connector.csvrules.rules import FileRules

    header = ["identifier", "name"] + ([role] if role not in ("identifier", "name") else [])
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(header)
    starts = []
    for i, cell in enumerate(cells):
        row = {"identifier": f"u{i}", "name": "buy", role: cell}
        starts.append(golden.count_line_breaks(buffer.getvalue()) + 1)
        writer.writerow([row[name] for name in header])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_bytes(buffer.getvalue().encode())
        with open_scanned(path) as raw:
            batches = list(FileParser(raw, FileRules(kind=kind)).batches(4))  # type: ignore[arg-type]
    rejects = {line: reason for b in batches for line, reason, _ in b.rejects}
    assert all(isinstance(reason, str) and reason for reason in rejects.values())
    stored = _stored(kind, batches)
    for i, (cell, line) in enumerate(zip(cells, starts, strict=True)):
        keep, value = _expected(kind, role, cell)
        assert (line not in rejects) == keep, (cell[:80], rejects.get(line))
        if role == "identifier":
            continue  # (rows may share an identifier: checked as a whole below)
        if keep:
            got = stored[f"u{i}"].get(role, golden.ABSENT)
            assert golden.strict(got) == golden.strict(value), (cell[:80], got)
        else:
            assert f"u{i}" not in stored
    if role == "identifier":
        assert set(stored) == {c for c in cells if _expected(kind, role, c)[0]}
