"""The whole import path under fuzzing: CSV bytes of every sort (reserved headers, quoting,
delimiters, encodings and bytes that do not decode, huge digit runs, NUL, mixed line ends)
through the real Ingestor into a real SQLite store. Whatever the bytes, the file ends
`ingested` or `rejected` with its ledger entry, rows and rejects agreeing, and the dumps are
JSON; no exception escapes.

The fuzzing test is marked `slow` and runs for CONNECTOR_FUZZ_SECONDS seconds (default 30,
so the default run stays under about 40 s): ``CONNECTOR_FUZZ_SECONDS=600 pytest -m slow``
fuzzes for ten minutes. Each crash it found is a named test below it, run every time.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from connector.csvrules.reader import sniff_delimiter
from connector.csvrules.records import _any_text
from connector.csvrules.rules import MAX_FIELD, FileRules, Kind
from connector.dump import dump
from connector.ingest import Ingestor, Outcome
from connector.store.port import TABLES
from connector.store.sqlite import SQLiteStore
from tests.golden import DUMP_KEYS

BUDGET = float(os.environ.get("CONNECTOR_FUZZ_SECONDS", "30"))
KINDS: tuple[Kind, ...] = ("events", "contacts")
ROUND = 50  # examples per hypothesis run; runs follow each other until the budget is spent

HEADER_NAMES = [
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
    "data.name",
    "data.",
    "data.v",
    "Timestamp",
    "v",
    " identifier ",
    "E-mail",
    "note",
]
CELLS = [
    "",
    "1",
    "-0",
    "007",
    "1.50",
    "-0.0",
    "true",
    "FALSE",
    "u1",
    "u2",
    "a@b.co",
    "a@b",
    "not-an-address",
    "32478112233",
    "+32478112233",
    "en",
    "EN",
    "1696252121",
    "1696252121.9",
    "2023-10-02T13:08:41Z",
    "2023-10-02T15:08:41+02:00",
    "2023-10-02",
    "1696252121000",
    "k1",
    " ",
    "\t",
    "\x00",
    "é",
    "\u2028",
    "\ufeff",
    '"',
    '""',
    ",",
    ";",
    "\r",
    "\n",
    "\r\n",
    "1e3",
    "9" * 20,
    "9" * 5000,
    "-" + "9" * 5000,
    "9" * 309 + ".5",
    "1." + "0" * 400,
    "9" * 5000 + ".5",
    "x" * 129,
    "a@" + ".a" * 5000,
    "9" * (MAX_FIELD + 1),
]
# Raw bytes spliced into the encoded file: not UTF-8, a BOM, NUL, line ends, a quote, and
# "+2AA-", which the UTF-7 codec reads as a lone surrogate (U+D800).
SPLICES = [
    b"\xff",
    b"\xc3",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\r",
    b"\n",
    b'"',
    b"+2AA-",
    b"\xed\xa0\x80",
]
ENCODINGS = ["utf-8"] * 4 + ["latin-1", "cp1252", "utf-16", "utf-7"]

cell_text = st.one_of(st.sampled_from(CELLS), st.text(max_size=8))
FRIENDLY = {
    "identifier": ["u1", "u2", "a@b.co"],
    "email": ["a@b.co", "c@d.org"],
    "name": ["buy", "view"],
    "idempotencyKey": ["k1", "k2", ""],
    "phone": ["32478112233", ""],
    "externalId": ["ext-1", ""],
    "unsubscribed": ["true", "FALSE", ""],
    "smsCapable": ["false", ""],
    "language": ["en", ""],
    "createdAt": ["1696252121", ""],
}


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, FileRules, int]:
    """Bytes of a CSV-ish file, the rules to read it by, and the records per batch."""
    kind: Kind = draw(st.sampled_from(KINDS))
    odd_names = st.text(st.characters(blacklist_characters='\r\n",;'), min_size=1, max_size=5)
    names = st.one_of(st.sampled_from(HEADER_NAMES), odd_names)
    header = draw(st.lists(names, min_size=1, max_size=6, unique=draw(st.integers(0, 9)) < 9))
    identifier = draw(st.sampled_from(["identifier", "identifier", "email"]))
    # (hypothesis favours 0: the common case is drawn as 0, the odd one as 9)
    if identifier not in header and draw(st.integers(0, 9)) < 9:
        header.insert(draw(st.integers(0, len(header))), identifier)
    listed = None
    if kind == "contacts":
        listed = draw(st.sampled_from([None, None, ("v",), ("timestamp", "idempotencyKey")]))
    wanted = list(listed or ()) if kind == "contacts" else ["name", "timestamp", "idempotencyKey"]
    for name in wanted:  # the event columns, often (a listed one missing rejects the file)
        if name not in header and draw(st.integers(0, 9)) < 6:
            header.insert(draw(st.integers(0, len(header))), name)
    # Mostly usable identifiers, names and keys (keys that repeat), so that rows get stored.
    columns = [
        st.one_of(st.sampled_from(FRIENDLY.get(n.strip(), CELLS)), cell_text) for n in header
    ]
    rows = draw(st.lists(st.tuples(*columns).map(list), max_size=12))
    if draw(st.integers(0, 9)) == 9:  # ragged rows
        cuts = [draw(st.integers(0, len(row) + 1)) for row in rows]
        rows = [
            row[:cut] if cut <= len(row) else [*row, "x"]
            for row, cut in zip(rows, cuts, strict=True)
        ]
    delimiter = draw(st.sampled_from([None, None, ",", ";", "\t", "|"]))
    separator = delimiter or draw(st.sampled_from([",", ";"]))
    lines = []
    for n, record in enumerate([header, *rows]):
        fields = []
        for cell in record:
            # mostly plain, some quoted, now and then a quote left open (the header rarely:
            # a file refused whole tests little)
            quoting = draw(st.integers(0, 29))
            if quoting == 29 and (n or draw(st.booleans())):
                cell = '"' + cell
            elif quoting >= 20:
                cell = '"' + cell.replace('"', '""') + '"'
            fields.append(cell)
        lines.append(separator.join(fields))
        if draw(st.integers(0, 9)) == 9:
            lines.append("")  # a blank line
    ends = draw(
        st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(lines), max_size=len(lines))
    )
    text = "".join(line + end for line, end in zip(lines, ends, strict=True))
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no line end after the last record
    encoding = draw(st.sampled_from(ENCODINGS))
    data = bytearray(text.encode(encoding, "replace"))
    if draw(st.booleans()):
        data[:0] = codecs.BOM_UTF8
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from(SPLICES))
    rules = FileRules(
        kind=kind,
        identifier=identifier,
        delimiter=delimiter,
        encoding=encoding,
        columns=draw(st.sampled_from([{}, {}, {"E-mail": "email", "note": ""}])),
        event_name=draw(st.sampled_from(["e", "e", "e", None])),
        event_columns=listed,
    )
    return bytes(data), rules, draw(st.sampled_from([2, 5, 1000]))


def _records(data: bytes, rules: FileRules) -> tuple[int, int] | None:
    """The records of a file after its header, as the csv module reads them, and its
    physical lines; None if the bytes do not decode."""
    try:
        text = data.removeprefix(codecs.BOM_UTF8).decode(rules.encoding)
    except UnicodeError:
        return None
    lines = io.StringIO(text, newline="").readlines()
    head: list[str] = []
    quotes = 0
    for line in lines:  # the header record's lines, which the delimiter is sniffed from
        head.append(line)
        quotes += line.count('"')
        if line.strip("\r\n") and quotes % 2 == 0:
            break
    delimiter = rules.delimiter or sniff_delimiter("".join(head))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    breaks = sum(line.endswith(("\n", "\r")) for line in lines)
    return sum(1 for row in reader if row) - 1, breaks + 1


def _not_json(name: str) -> Any:
    raise AssertionError(f"{name} is not JSON")


def _dumps(db: SQLiteStore) -> dict[str, list[dict[str, Any]]]:
    """Each dump, written as `connector dump` writes it, read back as strict JSON."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in TABLES:
        out = io.BytesIO()
        dump(db, table, out)
        tables[table] = [
            json.loads(line, parse_constant=_not_json) for line in out.getvalue().splitlines()
        ]
        assert all(set(record) == DUMP_KEYS[table] for record in tables[table]), table
    return tables


def _check_value(value: Any) -> None:
    """A typed property value: a string, a boolean, a 64-bit integer or a finite float."""
    assert isinstance(value, str | bool | float | int), value
    if type(value) is int:
        assert -(2**63) <= value < 2**63


def _ingest(data: bytes, rules: FileRules, batch: int) -> None:
    """Ingests ``data`` into a new store and checks everything the store then shows."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_bytes(data)
        with SQLiteStore(Path(folder) / "store" / "c.db") as db, capture_logs():
            outcome = Ingestor(db, batch_records=batch).ingest(
                path, rules, source="s", name="f.csv"
            )
            _check(outcome, data, rules, _dumps(db))


def _check(outcome: Outcome, data: bytes, rules: FileRules, dumps: dict[str, Any]) -> None:
    entry = outcome.entry
    [record] = dumps["files"]
    assert record["status"] == entry.status in ("ingested", "rejected")
    assert (record["rows"], record["rejected"], record["duplicates"]) == (
        entry.rows,
        entry.rejected,
        entry.duplicates,
    )
    assert (record["sha256"], record["size"]) == (hashlib.sha256(data).hexdigest(), len(data))
    events, rejects = dumps["events"], dumps["rejects"]
    if entry.status == "rejected":
        assert (entry.rows, entry.rejected, entry.duplicates) == (0, 0, 0)
        assert isinstance(outcome.reason, str) and outcome.reason
        assert [(r["line"], r["reason"]) for r in rejects] == [(None, outcome.reason)]
        assert events == [] and dumps["contacts"] == []
        return
    counted = _records(data, rules)
    assert counted is not None, "bytes that do not decode were ingested"
    records, lines = counted
    if rules.kind == "events" or rules.event_columns is not None:
        assert len(events) == entry.rows - (entry.duplicates if rules.kind == "contacts" else 0)
    else:
        assert events == [] and entry.duplicates == 0
    if rules.kind == "events":
        assert entry.rows + entry.rejected + entry.duplicates == records
    else:
        assert entry.rows + entry.rejected == records
    assert len(rejects) == entry.rejected
    assert all(isinstance(r["reason"], str) and r["reason"] for r in rejects)
    at = [e["line"] for e in events] + [r["line"] for r in rejects]
    assert all(type(n) is int and 2 <= n <= lines for n in at), (at, lines)
    assert len(set(at)) == len(at)
    contacts = {c["identifier"]: c["attributes"] for c in dumps["contacts"]}
    for event in events:
        assert event["identifier"] in contacts
        assert type(event["timestamp"]) is int and event["timestamp"] >= 0
        assert isinstance(event["data"], dict)
        for value in event["data"].values():
            _check_value(value)
    for attributes in contacts.values():
        assert isinstance(attributes, dict)
        for value in attributes.values():
            _check_value(value)


@settings(
    max_examples=ROUND,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=csv_files())
def _fuzz_round(case: tuple[bytes, FileRules, int]) -> None:
    _ingest(*case)


@pytest.mark.slow
def test_any_bytes_go_through_the_whole_import_path() -> None:
    """For CONNECTOR_FUZZ_SECONDS, generated files go through the rules and the store:
    each is ingested or rejected whole, never raises, and what is stored adds up."""
    deadline = time.monotonic() + BUDGET
    while True:
        _fuzz_round()
        if time.monotonic() >= deadline:
            break


# --- what the fuzzing found, and the reported cases -----------------------------------


def _rejects(data: bytes, rules: FileRules) -> tuple[str, list[tuple[int | None, str]]]:
    """Ingests ``data`` (checked as the fuzzer checks), then its status and its rejects."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_bytes(data)
        with SQLiteStore(Path(folder) / "store" / "c.db") as db, capture_logs():
            outcome = Ingestor(db, batch_records=2).ingest(path, rules, source="s", name="f")
            dumps = _dumps(db)
            _check(outcome, data, rules, dumps)
    return outcome.entry.status, [(r["line"], r["reason"]) for r in dumps["rejects"]]


def test_thousands_of_digits_in_any_column() -> None:
    """A cell of 5,000 digits is a string as a data property, and rejects its row with our
    reason as a timestamp or a createdAt, instead of stopping the file."""
    digits = "9" * 5000
    events = f"identifier,n,timestamp\nu1,{digits},1\nu2,1,{digits}\n".encode()
    status, rejects = _rejects(events, FileRules(kind="events", event_name="e"))
    assert status == "ingested"
    assert rejects == [
        (3, f"timestamp {digits[:40]}… (5,000 characters) is out of range 0..4102444800")
    ]
    contacts = f"identifier,createdAt,n\nu1,{digits},1\nu2,1,{digits}\n".encode()
    status, rejects = _rejects(contacts, FileRules(kind="contacts"))
    assert (status, rejects) == (
        "ingested",
        [
            (
                2,
                f'createdAt must be an integer from 0 to 4102444800: "{digits[:40]}… (5,000'
                ' characters)"',
            )
        ],
    )


def test_utf16_without_a_bom_and_with_a_lone_surrogate_is_rejected_whole() -> None:
    """UTF-16 bytes without a BOM whose first fault is a lone surrogate: the file is
    rejected whole (finding the line for the reason once raised instead)."""
    data = b"\xff\xff" + "identifier,v\nu1,".encode("utf-16-le") + b"\x00\xd8\n\x00"
    rules = FileRules(kind="events", event_name="e", encoding="utf-16")
    assert _rejects(data, rules) == (
        "rejected",
        [
            (
                None,
                "line 1: bytes that are not valid utf-16-le: illegal UTF-16 surrogate;"
                " set the source's encoding (or import --encoding) to the file's",
            )
        ],
    )


def test_utf7_text_that_no_store_can_hold_rejects_its_row() -> None:
    """UTF-7 decodes "+2AA-" to a lone surrogate and "+AAA-" to NUL, with no NUL byte: each
    rejects its row (they once stopped the file at the store), and in the header the file."""
    rules = FileRules(kind="events", event_name="e", encoding="utf-7")
    data = b"identifier,name,v\nu1,buy,+2AA-\nu2,+AAA-,1\n+AAA-,buy,1\nu4,buy,1\n"
    assert _rejects(data, rules) == (
        "ingested",
        [
            (2, "a cell is not valid utf-7 text"),
            (3, "a cell holds a NUL character"),
            (4, "a cell holds a NUL character"),
        ],
    )
    contacts = FileRules(kind="contacts", encoding="utf-7")
    assert _rejects(b"identifier,v\n+2AA-,1\nu2,+2AA-\n", contacts) == (
        "ingested",
        [
            (2, "a cell is not valid utf-7 text"),
            (3, "a cell is not valid utf-7 text"),
        ],
    )
    status, rejects = _rejects(b"identifier,+2AA-\nu1,1\n", rules)
    assert (status, rejects) == (
        "rejected",
        [(None, "header: column name '\\ud800' is not valid utf-7 text")],
    )


@pytest.mark.parametrize(
    ("encoding", "checked"),
    [
        ("utf-8", False),
        ("latin-1", False),
        ("cp1252", False),
        ("utf-7", True),
        ("utf-16", True),
        ("shift_jis", True),
        ("unicode_escape", True),
    ],
)
def test_cells_are_checked_one_by_one_only_where_the_codec_needs_it(
    encoding: str, checked: bool
) -> None:
    """Only codecs that can decode to a NUL without a NUL byte, or to a lone surrogate,
    have every cell searched for them."""
    assert _any_text(encoding) is checked


@pytest.mark.parametrize("before", ["u1,buy\n", "u1,buy\r", 'u1,"buy"\r\n', "u1,buy\n\n"])
def test_a_last_line_of_one_quote_is_rejected_not_lost(before: str) -> None:
    """A file whose last line is a lone '"' (no line end) ends inside a quoted field: that
    record is rejected as unterminated, as any other, rather than dropped unseen."""
    data = f'identifier,name\n{before}"'.encode()
    status, rejects = _rejects(data, FileRules(kind="events"))
    line = 3 + before.endswith("\n\n")
    assert (status, rejects) == (
        "ingested",
        [(line, "unterminated quote: a quoted field is still open")],
    )
