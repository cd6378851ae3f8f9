"""Bounded memory and work whatever a file's shape (`[ingest]` max_record_chars, max_columns,
max_rejects): a record over the limit is rejected at its line and the records after it are
read as usual, a header too wide rejects the file, and a file with too many rejected rows is
rejected whole with nothing of it left stored.

Peak memory is that of real `connector` processes, the parser child included, measured by a
small process of their own: a child's peak counts the memory of the process it was forked
from until it execs, which for pytest would be most of the figure."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from connector.arriving import ingest_arriving
from connector.cli import main
from connector.csvrules import reader as reader_module
from connector.csvrules.reader import (
    _LINE,
    _SENTINEL,
    _UNTERMINATED,
    ByteScan,
    Inspector,
    Prefix,
    RecordReader,
    _Lines,
    _measure,
    open_scanned,
    sniff_delimiter,
)
from connector.csvrules.records import FileParser
from connector.csvrules.rules import MAX_RECORD, FileRules, Limits
from connector.download import Staged
from connector.errors import FileRejected
from connector.ingest import Ingestor
from connector.parsing import PARALLEL_MIN_BYTES
from connector.store.ledger import Arrival
from connector.store.sqlite import SQLiteStore
from tests.helpers import drop_config, write_config
from tests.procs import children

BOUND_MB = 200  # the peak allowed to each process, whatever the file
OVER = f"record over {MAX_RECORD:,} characters"
MiB = 1 << 20
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB")

_PEAK = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(done.stdout + done.stderr[-2000:], end="")
"""


def _peak(*argv: str) -> tuple[int, str, float]:
    """Run ``python -m connector ARGV``: its exit status, its output, and the peak RSS in MB
    of the process and of its parser child, whichever is larger."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, sys.executable, "-m", "connector", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    first, output = done.stdout.split("\n", 1)
    code, kib = map(int, first.split())
    return code, output, kib * 1024 / 1e6


def _import_peak(root: Path, path: Path, kind: str = "contacts") -> tuple[int, str, float]:
    extra = ["--event-name", "e"] if kind == "events" else []
    return _peak("--config", str(write_config(root)), "import", str(path), "--kind", kind, *extra)


def _write(path: Path, parts: Iterable[bytes]) -> Path:
    """``path`` written from ``parts`` as they come (the test never holds a large file)."""
    with path.open("wb") as out:
        for part in parts:
            out.write(part)
    return path


def _rejects(root: Path) -> list[tuple[int | None, str]]:
    with SQLiteStore(root / "store" / "c.db") as db:
        return [(r["line"], r["reason"]) for r in db.records("rejects")]


def _count(root: Path, table: str) -> int:
    with SQLiteStore(root / "store" / "c.db") as db:
        count: int = db.query(f"SELECT count(*) FROM {table}")[0][0]
        return count


def _hundred_fields_rows(end: bytes) -> Iterator[bytes]:
    yield b"identifier," + b",".join(b"c%d" % i for i in range(1, 100)) + end
    cell = b"," + b"x" * MiB
    for row in range(3):
        yield b"u%d" % row
        yield from [cell] * 99
        yield end


@pytest.mark.slow
@linux
@pytest.mark.parametrize("end", [b"\n", b"\r"], ids=["LF", "CR"])
def test_rows_of_a_hundred_one_mib_fields_are_rejected_in_bounded_memory(
    tmp_path: Path, end: bytes
) -> None:
    """Three rows of 100 fields of 1 MiB (each field within its own limit) are each over
    the record limit: rejected at their lines, in bounded memory (csv would need 1.5 GB)."""
    path = _write(tmp_path / "wide.csv", _hundred_fields_rows(end))
    code, output, peak = _import_peak(tmp_path, path)
    assert code == 0, output
    assert "0 rows stored, 3 rejected" in output
    assert _rejects(tmp_path) == [(2, OVER), (3, OVER), (4, OVER)]
    assert peak < BOUND_MB


@pytest.mark.slow
@linux
def test_a_header_of_a_million_columns_rejects_the_file_in_bounded_memory(tmp_path: Path) -> None:
    """A 9.7 MB header of 1.2 million names rejects the file, read in bounded memory."""
    names = (
        b",".join(b"c%d" % i for i in range(start, start + 100_000)) + b","
        for start in range(0, 1_200_000, 100_000)
    )
    path = _write(tmp_path / "header.csv", [b"identifier,", *names, b"last\nu1,1\n"])
    code, output, peak = _import_peak(tmp_path, path)
    assert code == 2, output
    assert _rejects(tmp_path) == [(None, f"line 1: header: {OVER}")]
    assert peak < BOUND_MB


@pytest.mark.slow
@linux
def test_an_unterminated_quoted_field_is_one_reject_in_bounded_memory(tmp_path: Path) -> None:
    """A quoted field opened on line 2 and never closed (200 MB of lines to the end of the
    file) is one record: one reject, found in bounded memory."""
    lines = b"zzzzzzzzzz\n" * 100_000
    path = _write(tmp_path / "open.csv", [b'identifier,a\nu1,1\nu2,"', *[lines] * 180])
    code, output, peak = _import_peak(tmp_path, path)
    assert code == 0, output
    assert "1 rows stored, 1 rejected" in output
    assert _rejects(tmp_path) == [(3, OVER)]
    assert peak < BOUND_MB


# Records of millions of short lines: csv reads them a line at a time, a str object each.
_SHORT_LINES = {
    "rows": (b'identifier,a\nu1,"', "\U0001f600\n".encode(), 0),
    "header": (b'identifier,"', "\U0001f600\n".encode(), 2),
    "ascii": (b'identifier,a\nu1,"', b"a\n", 0),
}


@pytest.mark.slow
@linux
@pytest.mark.parametrize("shape", _SHORT_LINES)
def test_a_record_of_millions_of_short_lines_is_rejected_in_bounded_memory(
    tmp_path: Path, shape: str
) -> None:
    """A quoted field of 2.1 million 2-character lines, left open: over the limit, it is
    rejected (a row, or the file if it is the header) in bounded memory, in the parser
    child (4-byte characters, 10.5 MB) as in-process (ASCII, 4.2 MB)."""
    head, line, code_wanted = _SHORT_LINES[shape]
    path = _write(tmp_path / "lines.csv", [head, *[line * 100_000] * 21])
    assert (path.stat().st_size >= PARALLEL_MIN_BYTES) == (shape != "ascii")
    code, output, peak = _import_peak(tmp_path, path)
    assert code == code_wanted, output
    wanted = [(2, OVER)] if code_wanted == 0 else [(None, f"line 1: header: {OVER}")]
    assert _rejects(tmp_path) == wanted
    assert peak < BOUND_MB


def _largest_rows(count: int) -> Iterator[bytes]:
    """Rows just within the record limit, of 4-byte characters: the most memory a record
    allowed can take (4 fields of 1,048,000 characters)."""
    cell = b"," + "\U0001f600".encode() * 1_048_000
    yield b"identifier,a,b,c,d\n"
    for row in range(count):
        yield b"u%d" % row
        yield from [cell] * 4
        yield b"\n"


@pytest.mark.slow
@linux
@pytest.mark.parametrize("kind", ["contacts", "events"])
def test_the_largest_records_allowed_are_stored_in_bounded_memory(
    tmp_path: Path, kind: str
) -> None:
    """Records just within the limit, of 4-byte characters, are stored in bounded memory
    in the parser child and in the writer."""
    path = _write(tmp_path / "large.csv", _largest_rows(8))
    code, output, peak = _import_peak(tmp_path, path, kind)
    assert code == 0, output
    assert "8 rows stored, 0 rejected" in output
    assert peak < BOUND_MB


@pytest.mark.slow
@linux
def test_rows_of_many_short_fields_are_rejected_in_bounded_memory(tmp_path: Path) -> None:
    """Rows of hundreds of thousands of 2-character fields (a str object each, were they
    all split), and one of 100 MB of them, are rejected in bounded memory."""
    path = _write(
        tmp_path / "dense.csv",
        [
            b"identifier,a\n",
            b"u" + b",ab" * 400_000 + b"\n",
            b"u" + b",ab" * 600_000 + b"\n",
            b"u",
            *[b",ab" * MiB] * 33,
            b"\n",
            b"u,1\n",
        ],
    )
    code, output, peak = _import_peak(tmp_path, path)
    assert code == 0, output
    assert _rejects(tmp_path) == [
        (2, "expected 2 fields, got 400001"),
        (3, "expected 2 fields, got 600001"),
        (4, OVER),
    ]
    assert "1 rows stored, 3 rejected" in output
    assert peak < BOUND_MB


@pytest.mark.slow
@linux
def test_a_download_followed_by_its_parser_stays_in_bounded_memory(tmp_path: Path) -> None:
    """The daemon's path (`once` here): the parser child follows the download; a row over
    the limit and rows just within it stay in bounded memory all the same."""
    config = drop_config(tmp_path, files=[{"kind": "contacts", "pattern": "*.csv"}], min_age="0s")
    big = [b"u", *[b"," + b"x" * MiB] * 100, b"\n"]
    rows = _largest_rows(3)
    _write(tmp_path / "inbox" / "big.csv", [next(rows), *big, *rows])
    code, output, peak = _peak("--config", str(config), "once")
    assert code == 0, output
    assert "drop: 1 ingested" in output
    assert _rejects(tmp_path) == [(2, OVER)]
    assert _count(tmp_path, "contacts") == 3
    assert peak < BOUND_MB


# --- what the limits do, in-process, with small limits ------------------------------------


def _parsed(path: Path, rules: FileRules, limits: Limits) -> list[tuple[Any, ...]]:
    """(line, identifier or reason) per record, in file order."""
    with open_scanned(path) as raw:
        seen: list[tuple[Any, ...]] = []
        for batch in FileParser(raw, rules, limits).batches(3):
            seen += [(line, reason) for line, reason, _ in batch.rejects]
            if batch.events:
                seen += zip(batch.lines, batch.identifiers.split("\0"), strict=True)
        return sorted(seen)


def test_a_record_over_the_limit_is_rejected_and_the_records_after_it_read(
    tmp_path: Path,
) -> None:
    """Over 64 characters, a record is rejected at its line, however it is long (one line,
    quoted lines, CR or CRLF ends), and the next records are read at their lines."""
    long = "x" * 70
    path = tmp_path / "e.csv"
    path.write_bytes(
        f'identifier,a\r\nu1,1\r\nu2,{long}\r\nu3,3\nu4,"a\nb\r\n{long}\r\nc"\nu5,5\r'
        f'u6,"{long}"\ru7,7\n\nu8,"short\nquote"\nu9,"{long}'.encode()
    )
    limits = Limits(record_chars=64)
    over = "record over 64 characters"
    assert _parsed(path, FileRules(kind="events", event_name="e"), limits) == [
        (2, "u1"),
        (3, over),
        (4, "u3"),
        (5, over),
        (9, "u5"),
        (10, over),
        (11, "u7"),
        (13, "u8"),
        (15, over),
    ]


def test_an_unterminated_quote_within_the_limit_says_so(tmp_path: Path) -> None:
    """A quoted field still open at the end of the file, the record within the limit: the
    reason is the open quote, after the records before it."""
    path = tmp_path / "e.csv"
    path.write_text('identifier,a\nu1,1\nu2,"open\nstill\n')
    assert _parsed(path, FileRules(kind="events", event_name="e"), Limits(record_chars=64)) == [
        (2, "u1"),
        (3, "unterminated quote: a quoted field is still open"),
    ]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (",".join(f"c{i}" for i in range(10)), "11 columns, more than the 5 allowed"),
        ("a,b,c,d,e", "6 columns, more than the 5 allowed"),
        ('a,"b\n' + "c," * 40 + '"', "record over 64 characters"),
    ],
    ids=["measured", "split", "long"],
)
def test_a_header_wider_than_allowed_rejects_the_file(
    tmp_path: Path, header: str, reason: str
) -> None:
    """More columns than allowed reject the file, whether the header had more delimiters
    than allowed (measured, never split) or not (split, then counted); so does a header
    over the record limit."""
    path = tmp_path / "c.csv"
    path.write_text(f"identifier,{header}\nu1\n")
    with open_scanned(path) as raw, pytest.raises(FileRejected) as refused:
        FileParser(raw, FileRules(kind="contacts"), Limits(record_chars=64, columns=5))
    assert refused.value.reason == f"line 1: header: {reason}"


def test_a_header_as_wide_as_allowed_is_read_whatever_its_quoted_delimiters(
    tmp_path: Path,
) -> None:
    """Delimiters inside quoted names are no columns: a header of 5 columns whose names
    hold more delimiters than that is read, its names kept."""
    path = tmp_path / "c.csv"
    path.write_text('identifier,"a,b,c",d,"e,f,g,h",i\nu1,1,2,3,4\n')
    with open_scanned(path) as raw:
        parser = FileParser(raw, FileRules(kind="contacts"), Limits(record_chars=64, columns=5))
        [batch] = list(parser.batches(10))
    assert batch.contacts == [("u1", '{"a,b,c":1,"d":2,"e,f,g,h":3,"i":4}')]


def test_the_ingest_settings_reach_the_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`[ingest] max_record_chars` and `max_columns` set the limits `import` parses with."""
    config = write_config(tmp_path, ingest={"max_record_chars": 2 * MiB, "max_columns": 3})
    rows = tmp_path / "rows.csv"  # (two fields of the largest size a field may have)
    rows.write_text("identifier,a,b\nu1," + "x" * MiB + "," + "y" * MiB + "\nu2,2,3\n")
    wide = tmp_path / "wide.csv"
    wide.write_text("identifier,a,b,c\nu1,1,2,3\n")
    assert main(["--config", str(config), "import", str(rows), "--kind", "contacts"]) == 0
    assert main(["--config", str(config), "import", str(wide), "--kind", "contacts"]) == 2
    assert "4 columns, more than the 3 allowed" in capsys.readouterr().out
    assert _rejects(tmp_path) == [
        (2, f"record over {2 * MiB:,} characters"),
        (None, "line 1: header: 4 columns, more than the 3 allowed"),
    ]


# Records of quotes, delimiters and line ends in every order, for the properties below.
_csv_text = st.text(alphabet='a,"\n\r', max_size=60)


@settings(max_examples=500, deadline=None)
@given(text=_csv_text, cut=st.integers(min_value=1), longest=st.integers(1, 30))
def test_a_record_is_measured_as_csv_reads_it(text: str, cut: int, longest: int) -> None:
    """Measured without being kept (given in two parts, the second read from the file),
    a record has the fields and lines csv reads, its text if short enough, and the text
    after it is read next; or it is found open at the end of the file."""
    lines = _LINE.findall(text)
    assume(lines and lines[0].strip("\r\n"))  # a record starts here (blank lines are not)
    cut = 1 + cut % len(text)
    assume(text[cut - 1 : cut + 1] != "\r\n")  # (a CRLF is never given in two parts)
    reader = csv.reader([*lines, _SENTINEL], strict=False)
    row = next(reader)
    source = _Lines(io.BufferedReader(io.BytesIO(text[cut:].encode())), "utf-8", 1000)

    measured = _measure(text[:cut], source, ",", longest)

    assert measured.fields == len(row)
    assert measured.open_quote == row[-1].endswith(_SENTINEL)
    record = "".join(lines[: reader.line_num])
    if not measured.open_quote:
        assert measured.lines == reader.line_num
        assert measured.text == (record if len(record) <= longest else None)
        assert "".join(iter(source.text, "")) == "".join(lines[reader.line_num :])


@settings(max_examples=300, deadline=None)
@given(text=_csv_text, longest=st.integers(2, 20), batch=st.integers(1, 4))
def test_a_record_limit_rejects_exactly_the_records_over_it(
    text: str, longest: int, batch: int
) -> None:
    """With a record limit, each record is read as without one, or rejected at its line
    if its text (its line ends included) is longer than the limit."""

    def read(limits: Limits) -> list[tuple[int, list[str], str | None]]:
        raw = io.BufferedReader(io.BytesIO(text.encode()))
        reader = RecordReader(raw, "utf-8", ",", None, limits)
        return [
            (line, row, records.faults.get(i))
            for records in reader.batches(batch)
            for i, (line, row) in enumerate(zip(records.lines, records.rows, strict=True))
        ]

    unlimited = read(Limits(record_chars=10_000, columns=10_000))
    lines = _LINE.findall(text)
    expected = []
    for line, row, fault in unlimited:
        spans = 1 + sum(f.count("\n") + f.count("\r") - f.count("\r\n") for f in row)
        size = len("".join(lines[line - 1 : line - 1 + spans]))
        if fault is not None:  # open to the end of the file
            size = len("".join(lines[line - 1 :]))
        over = size > longest
        expected.append(
            (line, [] if over else row, f"record over {longest} characters" if over else fault)
        )
    assert [(line, row) for line, row, _ in unlimited] == [
        (line, row) for line, row in zip(*_csv_lines(lines), strict=True)
    ]
    assert read(Limits(record_chars=longest, columns=10_000)) == expected


def _read_all(
    text: str, delimiter: str | None, limits: Limits, batch: int
) -> tuple[str, list[tuple[int, list[str], str | None]]]:
    """The reader's delimiter, and (line, row, fault) per record, read as FileParser reads:
    the header alone, then batches of ``batch`` as wide as the header."""
    data = text.encode()
    scan = ByteScan()
    scan.feed(data)
    scan.finish()
    reader = RecordReader(io.BufferedReader(io.BytesIO(data)), "utf-8", delimiter, scan, limits)
    seen: list[tuple[int, list[str], str | None]] = []
    for size in (1, batch):
        for got in reader.batches(size):
            rows = got.rows if got.columns is None else map(list, zip(*got.columns, strict=True))
            seen += [
                (line, row, got.faults.get(i))
                for i, (line, row) in enumerate(zip(got.lines, rows, strict=True))
            ]
            if seen and reader.width is None:
                if seen[0][2] is not None:  # the header refused: so is the file
                    return reader.delimiter, seen
                reader.width = len(seen[0][1])
                break
    return reader.delimiter, seen


def _agrees_with_csv(
    text: str, delimiter: str, read: list[tuple[int, list[str], str | None]], columns: int
) -> None:
    """``read`` holds the records csv reads from ``text``, at their lines; a record the
    reader refuses is one csv reads open to the end, too wide for a header, or (a row) not
    as wide as the header."""
    lines = _LINE.findall(text)
    reader = csv.reader([*lines, _SENTINEL], delimiter=delimiter, strict=False)
    expected: list[tuple[int, list[str]]] = []
    line = 1
    for row in reader:
        if row and line <= len(lines):  # (not the sentinel's own record)
            expected.append((line, row))
        line = reader.line_num + 1
    if read and read[0][2] is not None:  # the header refused: nothing after it is read
        expected = expected[:1]
    assert [line for line, _, _ in read] == [line for line, _ in expected]
    width = len(expected[0][1]) if expected else 0
    for index, ((_, row, fault), (_, want)) in enumerate(zip(read, expected, strict=True)):
        if want[-1].endswith(_SENTINEL):
            assert (index, fault) == (len(expected) - 1, _UNTERMINATED)
        elif fault is None:
            assert row == want
        elif index == 0:
            assert fault == f"{len(want)} columns, more than the {columns} allowed"
        else:
            assert fault == f"expected {width} fields, got {len(want)}"


@settings(max_examples=1500, deadline=None)
@given(
    text=st.lists(
        st.sampled_from(["a", ",", ",,,", ";", '"', "\n", "\r", "\r\n"]), max_size=60
    ).map("".join),
    sniff=st.booleans(),
    columns=st.integers(1, 6),
    batch=st.integers(1, 5),
)
def test_records_and_lines_are_csvs_whatever_the_reader_cuts(
    text: str, sniff: bool, columns: int, batch: int
) -> None:
    """With the reader's batches, blocks and groups of lines made tiny, so that records
    with too many delimiters, records going on past their batch and records given back
    to be read again meet in every order, the records and lines are csv's own."""
    limits = Limits(record_chars=10_000, columns=columns)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reader_module, "BATCH_DELIMITERS", 3)
        patch.setattr(reader_module, "BATCH_CHARS", 16)
        patch.setattr(reader_module, "TEXT_BLOCK", 7)
        patch.setattr(reader_module, "_TAIL_LINES", 2)
        delimiter, read = _read_all(text, None if sniff else ",", limits, batch)
    head = ""  # what is sniffed: up to a line not blank after which every quote is closed
    for line in _LINE.findall(text):
        head += line
        if line.strip("\r\n") and head.count('"') % 2 == 0:
            break
    assert delimiter == (sniff_delimiter(head) if sniff else ",")
    _agrees_with_csv(text, delimiter, read, columns)


def _written(header: list[str], rows: Iterable[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def test_an_events_file_with_a_line_break_in_a_header_name_is_read_as_csv_reads_it() -> None:
    """A csv-written file whose header name holds a line break, and 3,000 rows of 12
    columns: the header goes on past its first batch among rows with more delimiters
    than a header may have; every row is read whole, at its line."""
    header = ["identifier", "name", "timestamp", "Note\n(free text)"] + [f"c{i}" for i in range(8)]
    rows = [[f"u{i}", "buy", str(1_700_000_000 + i), f"n{i}", *"abcdefgh"] for i in range(3000)]
    text = _written(header, rows)
    delimiter, read = _read_all(text, None, Limits(), 1_000)
    assert delimiter == ","
    assert read == [(1, header, None)] + [(i + 3, row, None) for i, row in enumerate(rows)]


def test_wide_rows_with_quoted_line_breaks_are_read_as_csv_reads_them() -> None:
    """5,000 rows of 600 columns, a line break quoted in every 7th: a row going on past its
    batch among rows with more delimiters than a batch may hold is read whole, at its
    line, and so is every row after it. (Batches of 777 lines, 1 modulo the rows' 8-line
    pattern: batches end on each of its lines.)"""
    header = ["identifier", *(f"c{i}" for i in range(599))]
    rows = [[f"u{i}", *(["x\ny"] if i % 7 == 0 else ["x"]), *["1"] * 598] for i in range(5000)]
    lines = list(accumulate((2 if i % 7 == 0 else 1 for i in range(5000)), initial=2))
    _, read = _read_all(_written(header, rows), ",", Limits(), 777)
    assert read == [(1, header, None)] + [
        (line, row, None) for line, row in zip(lines, rows, strict=False)
    ]


def _csv_lines(lines: list[str]) -> tuple[list[int], list[list[str]]]:
    """What csv itself reads from these lines: the start line and fields of each record
    (blank lines skipped), an open quote's sentinel taken off."""
    reader = csv.reader([*lines, _SENTINEL], strict=False)
    starts: list[int] = []
    rows: list[list[str]] = []
    line = 1
    for row in reader:
        if row and line <= len(lines):  # (not the sentinel's own record)
            starts.append(line)
            rows.append([f.removesuffix(_SENTINEL) for f in row])
        line = reader.line_num + 1
    return starts, rows


# --- max_rejects -------------------------------------------------------------------------


LATER = "timestamp 'later' is neither Unix seconds nor an ISO 8601 date-time with offset"


def _bad_rows(count: int, first: int = 0) -> str:
    """Events rows with a key, each rejected for its timestamp."""
    return "".join(f"u{i},buy,later,k{i}\n" for i in range(first, first + count))


def test_too_many_rejects_reject_the_file_whole_and_take_back_what_was_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past max_rejects, the file is rejected whole (`import` exits 2) with the count and
    the first reject; its batches already committed are taken back, its keys given back:
    the same keys are then accepted from another file."""
    config = write_config(
        tmp_path, ingest={"max_rejects": 5, "batch_records": 2, "commit_interval": "0s"}
    )
    good = "".join(f"u{i},buy,{1_700_000_000 + i},k{i}\n" for i in range(4))
    path = tmp_path / "e.csv"
    path.write_text("identifier,name,timestamp,idempotencyKey\n" + good + _bad_rows(6, 100))

    assert main(["--config", str(config), "import", str(path), "--kind", "events"]) == 2
    reason = f"more than 5 rows rejected; first at line 6: {LATER}"
    output = capsys.readouterr().out
    assert "e.csv: rejected — 0 rows stored, 0 rejected" in output
    assert _rejects(tmp_path) == [(None, reason)]
    for table in ("events", "pending_contacts", "idempotency_keys", "contacts"):
        assert _count(tmp_path, table) == 0, table

    again = tmp_path / "again.csv"
    again.write_text("identifier,name,timestamp,idempotencyKey\n" + good)
    assert main(["--config", str(config), "import", str(again), "--kind", "events"]) == 0
    assert "4 rows stored, 0 rejected, 0 duplicates" in capsys.readouterr().out


def test_a_large_file_of_bad_rows_is_rejected_once_past_the_default_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A large file (parsed in a child) of short bad lines: rejected past 100,000 rejects,
    with nothing of it stored, not one of its 2 million rejects included."""
    config = write_config(tmp_path)
    path = _write(tmp_path / "bad.csv", [b"identifier,email\n", *[b"u,bad\n" * 500_000] * 4])
    assert path.stat().st_size >= PARALLEL_MIN_BYTES
    assert main(["--config", str(config), "import", str(path), "--kind", "contacts"]) == 2
    assert _rejects(tmp_path) == [
        (
            None,
            "more than 100,000 rows rejected; first at line 2: email is not an address:"
            ' "bad" (expected local@domain.tld)',
        )
    ]
    assert _count(tmp_path, "pending_contacts") == 0
    assert "bad.csv: rejected" in capsys.readouterr().out


@pytest.mark.slow
@linux
def test_a_download_with_too_many_rejects_stops_its_parse_before_it_ends(tmp_path: Path) -> None:
    """Parsed as it downloads: past max_rejects the parser child is stopped while the bytes
    still arrive, and once they have, the file is rejected whole with nothing stored."""
    rows = "".join(f"u{i},buy,later,k{i},{'x' * 80}\n" for i in range(90_000))
    data = ("identifier,name,timestamp,idempotencyKey,pad\n" + rows).encode()
    assert len(data) >= PARALLEL_MIN_BYTES
    part = tmp_path / "staging" / "big.part"
    part.parent.mkdir()
    part.write_bytes(data[:100])
    stopped = threading.Event()

    def download() -> Staged:  # all but the last byte, the rest once the parse has stopped
        with part.open("ab") as out:
            out.write(data[100:-1])
            out.flush()
            deadline = time.monotonic() + 30
            while children(os.getpid(), b"connector.parsing"):
                assert time.monotonic() < deadline, "the parse was never stopped"
                time.sleep(0.01)
            stopped.set()
            out.write(data[-1:])
        inspector = Inspector("utf-8")
        inspector.feed(data)
        inspector.finish()
        return Staged(part, inspector)

    rules = FileRules(kind="events", event_name="e")
    with SQLiteStore(tmp_path / "store" / "c.db") as db:
        ingestor = Ingestor(db, batch_records=1_000, commit_seconds=0, max_rejects=1_000)
        arrival = Arrival("src", "big.csv", None, len(data), "events", 1.0)
        with (
            ThreadPoolExecutor(1) as pool,
            ingestor.parse_job(part, rules, growing_to=len(data)) as job,
        ):
            fetched: Future[Staged] = pool.submit(download)
            with ingestor.store.claim_place(arrival.source, arrival.path):
                outcome = ingest_arriving(
                    ingestor,
                    rules,
                    arrival=arrival,
                    job=job,
                    fetched=fetched,
                    resumed=False,
                    arrived=lambda: Prefix(len(data), hashlib.sha256(data).hexdigest()),
                )
        assert stopped.is_set()
        assert outcome.entry.status == "rejected"
        assert outcome.reason == f"more than 1,000 rows rejected; first at line 2: {LATER}"
        assert db.query("SELECT count(*) FROM events") == [(0,)]
        assert db.query("SELECT count(*) FROM rejects") == [(1,)]  # the file's reason only
        assert db.query("SELECT count(*) FROM files") == [(1,)]


def test_the_daemon_rejects_a_file_with_too_many_rejects_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`once`: a large file whose good rows come first and too many bad ones last is
    rejected whole, its stored rows and claimed keys taken back, the file moved to the
    error folder."""
    config = drop_config(
        tmp_path,
        files=[{"kind": "events", "pattern": "*.csv", "event_name": "e"}],
        min_age="0s",
        ingest={"max_rejects": 1_000, "batch_records": 5_000},
    )
    good = "".join(f"u{i},{1_700_000_000 + i},k{i},{'x' * 80}\n" for i in range(90_000))
    text = "identifier,timestamp,idempotencyKey,pad\n" + good + "u,later,z,\n" * 1_001
    assert len(text) >= PARALLEL_MIN_BYTES
    (tmp_path / "inbox" / "big.csv").write_text(text)
    assert main(["--config", str(config), "once"]) == 0
    assert "drop: 1 rejected" in capsys.readouterr().out
    assert _rejects(tmp_path) == [
        (None, f"more than 1,000 rows rejected; first at line 90002: {LATER}")
    ]
    for table in ("events", "idempotency_keys", "pending_contacts"):
        assert _count(tmp_path, table) == 0, table
    assert (tmp_path / "inbox" / "rejected" / "big.csv").exists()
