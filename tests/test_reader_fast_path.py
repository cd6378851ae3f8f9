"""The reader's fast paths (``RecordReader._plain``) against its csv path.

A batch of lines may be split without csv.reader's rows: lines without quotes, all-quoted
lines (``"a","b"``, as spreadsheets export) and, among plain lines, lines with quoted cells
read by csv one by one. Whatever the lines, every batch must come out as the csv path
gives it: the same records at the same lines, the same faults and flags.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from connector.csvrules.reader import ByteScan, RecordBatch, RecordReader, _all_quoted_pieces

Batches = list[tuple[list[int], list[list[str]], dict[int, str], bool]]


class _CsvOnly(RecordReader):
    """The reader with no fast path: every batch through csv.reader."""

    def _plain(self, chunk: list[str], text: str) -> RecordBatch | None:
        return None


def _read(data: bytes, delimiter: str, size: int, reader_class: type[RecordReader]) -> Any:
    """Every batch (lines, rows, faults, multiline) of ``data``, read as FileParser reads:
    the header alone, then batches of ``size`` as wide as the header; and how many batches
    took a fast path."""
    scan = ByteScan()
    scan.feed(data)
    scan.finish()
    reader = reader_class(io.BufferedReader(io.BytesIO(data)), "utf-8", delimiter, scan)
    batches: Batches = []
    fast = 0
    for got in reader.batches(1):
        if got.rows:
            reader.width = len(got.rows[0])
            break
    for got in reader.batches(size):
        if got.columns is not None:
            fast += 1
            assert (got.rows, got.faults, got.multiline) == ([], {}, False)
            assert {len(column) for column in got.columns} == {len(got.lines)}
            rows = [list(row) for row in zip(*got.columns, strict=True)]
        else:
            rows = got.rows
        batches.append((got.lines, rows, got.faults, got.multiline))
    return batches, fast


def _agree(data: bytes, delimiter: str, size: int) -> int:
    """Asserts the fast paths read ``data`` as csv does; how many batches took one."""
    fast, taken = _read(data, delimiter, size, RecordReader)
    slow, none = _read(data, delimiter, size, _CsvOnly)
    assert none == 0
    assert fast == slow
    return int(taken)


# --- generated files -------------------------------------------------------------------

DELIMITERS = [",", ";", "\t"]
ENDS = ["\n", "\r\n", "\r"]
# Empty cells often (a line may then end in the delimiter); \v, \x1c, \x85 and \u2028 are
# no line ends, though str.splitlines breaks at them.
plain_cell = st.one_of(
    st.just(""),
    st.sampled_from(["a", "1", " x", "é", "\x00", "true", "a b", "\v", "\x1c", "\x85\u2028"]),
)
# What a quoted cell may hold: the delimiter, quotes (written doubled), line breaks.
content = st.lists(
    st.sampled_from(["a", "1", " ", ",", ";", "\t", '"', "\n", "\r\n", "\r", "é", "\x00"]),
    max_size=4,
).map("".join)
# Cells as written that csv reads leniently: text after a closing quote, a quote inside an
# unquoted field, a field of just a quote, quotes left open.
lenient_cell = st.sampled_from(
    ['"ab"c', 'ab"c', '"q"x"', '""', '"', 'a""', '"a""b"', '"a"""', '"""', '" "x', 'x"\n"', '"c']
)


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _quote_free(delimiter: str) -> st.SearchStrategy[str]:
    """A cell's text for an all-quoted line: anything but a quote or a line break."""
    return st.lists(
        st.sampled_from(["a", "1", " ", delimiter, ",", "é", "\x00", "\v"]), max_size=4
    ).map("".join)


@st.composite
def lines_of(draw: st.DrawFn, delimiter: str, width: int, kind: str) -> str:
    """One line (or record, if a quoted cell holds a line break) of ``kind``, no end."""
    if kind == "blank":
        return ""
    if kind in ("ragged", "ragged all-quoted"):
        width = draw(st.sampled_from([max(1, width - 1), width + 1]))
    if kind in ("plain", "ragged"):
        cells = draw(st.lists(plain_cell, min_size=width, max_size=width))
    elif kind in ("all-quoted", "ragged all-quoted", "near all-quoted"):
        texts = draw(st.lists(_quote_free(delimiter), min_size=width, max_size=width))
        cells = [_quoted(t) for t in texts]
    elif kind == "quoted":  # some cells quoted, any content
        cells = draw(
            st.lists(st.one_of(plain_cell, content.map(_quoted)), min_size=width, max_size=width)
        )
    elif kind == "open":  # an even count of quotes, one left open: ab"c,"d
        cells = draw(st.lists(plain_cell, min_size=width, max_size=width))
        first, second = sorted(draw(st.sets(st.integers(0, width - 1), min_size=2, max_size=2)))
        cells[first] += 'a"b'
        cells[second] = '"' + cells[second]
    else:  # lenient
        cells = draw(st.lists(st.one_of(plain_cell, lenient_cell), min_size=width, max_size=width))
    line = delimiter.join(cells)
    if kind == "near all-quoted":  # a quote moved; a character added or taken anywhere
        if draw(st.booleans()):  # (as many quotes as an all-quoted line: a?"b","c")
            quotes = [i for i, c in enumerate(line) if c == '"']
            at = draw(st.sampled_from(quotes))
            line = line[:at] + line[at + 1 :]
            at = draw(st.integers(min_value=0, max_value=len(line)))
            line = line[:at] + '"' + line[at:]
        if draw(st.booleans()):
            at = draw(st.integers(min_value=0, max_value=len(line)))
            line = line[:at] + draw(st.sampled_from(['"', delimiter, "a"])) + line[at:]
        if line and draw(st.booleans()):
            at = draw(st.integers(min_value=0, max_value=len(line) - 1))
            line = line[:at] + line[at + 1 :]
    return line


# Kinds of lines by file: mostly plain with some quoted cells; all-quoted (with now and
# then another kind); anything.
STYLES = {
    "mixed": ["plain"] * 6 + ["quoted", "all-quoted", "lenient", "open"],
    "all-quoted": ["all-quoted"] * 8
    + ["near all-quoted"] * 2
    + ["ragged all-quoted", "quoted", "plain", "blank", "ragged", "lenient"],
    # (lines one cell short and one over hold as many quotes as two all-quoted lines)
    "ragged all-quoted": ["all-quoted", "ragged all-quoted"],
    "any": [
        "plain",
        "quoted",
        "all-quoted",
        "near all-quoted",
        "lenient",
        "open",
        "blank",
        "ragged",
        "ragged all-quoted",
    ],
}


@st.composite
def files(draw: st.DrawFn) -> tuple[bytes, str]:
    """A header and lines of one style, each with a line end of the file's or its own;
    the last line maybe without one. Returns the bytes and the delimiter."""
    delimiter = draw(st.sampled_from(DELIMITERS))
    width = draw(st.integers(min_value=2, max_value=4))
    style = draw(st.sampled_from(sorted(STYLES)))
    count = draw(st.integers(min_value=0, max_value=20))
    kinds = draw(st.lists(st.sampled_from(STYLES[style]), min_size=count, max_size=count))
    header = delimiter.join(f"c{i}" for i in range(width))
    if draw(st.booleans()):
        header = delimiter.join(map(_quoted, header.split(delimiter)))
    lines = [header, *(draw(lines_of(delimiter, width, kind)) for kind in kinds)]
    end = draw(st.sampled_from(ENDS))
    ends = [draw(st.sampled_from(ENDS)) if draw(st.booleans()) else end for _ in lines]
    text = "".join(line + e for line, e in zip(lines, ends, strict=True))
    if not draw(st.booleans()):
        text = text[: -len(ends[-1])]
    event(f"style {style}")
    return text.encode(), delimiter


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=files(), size=st.sampled_from([1, 2, 3, 5, 1000]))
def test_the_fast_paths_read_as_the_csv_path_does(file: tuple[bytes, str], size: int) -> None:
    """Plain, quoted, all-quoted, lenient, blank and ragged lines, any line ends, any
    batch size: every batch is the csv path's, whether or not a fast path reads it."""
    data, delimiter = file
    taken = _agree(data, delimiter, size)
    event("a fast path taken" if taken else "no fast path")


# Pieces of any CSV-ish text: quotes alone and doubled, delimiters, every line end.
TOKENS = ['"', '""', ",", ";", "\n", "\r\n", "\r", "a", " ", "é", '","', '"\n"', '"\r\n"']


@settings(max_examples=300, deadline=None)
@given(
    header=st.sampled_from(["a,b", '"a","b"', "a,b,c", '"a","b","c"']),
    body=st.lists(st.sampled_from(TOKENS), max_size=40).map("".join),
    size=st.sampled_from([1, 2, 4, 1000]),
)
def test_any_tokens_read_as_the_csv_path_does(header: str, body: str, size: int) -> None:
    """Token soup after a header: the fast paths still agree with csv."""
    _agree(f"{header}\r\n{body}".encode(), ",", size)


# --- the real-world shapes take a fast path --------------------------------------------


def _events(
    rows: int, quoting: int, terminator: str, every: int = 0, *, coupon_first: bool = False
) -> str:
    """An events file as csv.writer writes it; with ``every``, one row in that many has a
    coupon holding the delimiter (and quotes: six quote characters once quoted), so
    quoted; ``coupon_first``: the coupon is the first column."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=quoting, lineterminator=terminator)

    def row(*cells: object) -> None:
        writer.writerow([cells[-1], *cells[:-1]] if coupon_first else cells)

    row("identifier", "name", "timestamp", "plan", "total", "coupon")
    for i in range(rows):
        coupon = 'Smith, John "J"' if every and i % every == every // 2 else f"C{i % 7}"
        row(f"u{i}@example.com", "purchase", 1696252121 + i, "pro", i / 4, coupon)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (_events(500, csv.QUOTE_MINIMAL, "\n", every=100), "1 row in 100 quoted"),
        (_events(500, csv.QUOTE_MINIMAL, "\r\n", every=20), "1 row in 20 quoted"),
        (_events(500, csv.QUOTE_MINIMAL, "\n", every=10), "1 row in 10 quoted"),
        (_events(500, csv.QUOTE_ALL, "\r\n"), "all quoted, CRLF"),
        (_events(500, csv.QUOTE_ALL, "\n"), "all quoted, LF"),
        (_events(500, csv.QUOTE_ALL, "\r\n", every=50), "all quoted, some quotes in cells"),
        (_events(500, csv.QUOTE_ALL, "\r\n").rstrip("\r\n"), "all quoted, no last line end"),
    ],
)
def test_real_world_shapes_take_a_fast_path(text: str, what: str) -> None:
    """Files with a quoted cell now and then, or with every field quoted, are read
    without csv.reader's rows: every batch on a fast path, as csv reads them."""
    for size in (100, 7):
        batches = -(-500 // size)
        assert _agree(text.encode(), ",", size) == batches, what


def test_a_batch_whose_first_line_quotes_its_first_cell_takes_a_fast_path() -> None:
    """A quoted first cell on a batch's first line (rows 50, 150, ... begin batches of 50
    and of 10) does not make the batch look all-quoted: its other lines stay plain."""
    text = _events(500, csv.QUOTE_MINIMAL, "\n", every=100, coupon_first=True)
    for size in (50, 10):
        assert _agree(text.encode(), ",", size) == 500 // size


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (_events(500, csv.QUOTE_MINIMAL, "\r\n", every=3), "1 row in 3 quoted"),
        (_events(500, csv.QUOTE_NONNUMERIC, "\r\n"), "strings quoted"),
        (_events(500, csv.QUOTE_ALL, "\r\n", every=3), "all quoted, 1 row in 3 not so"),
    ],
)
def test_many_lines_unlike_the_others_are_left_to_csv(text: str, what: str) -> None:
    """Over a quarter of a batch's lines needing csv (a quoted cell in a plain line, a
    quote in an all-quoted one), csv reads the batch: as fast, and read as it always was."""
    assert _agree(text.encode(), ",", 100) == 0, what
    _agree(text.encode(), ",", 7)


@pytest.mark.parametrize(
    "body",
    [
        'u1,"a\nb"\r\nu2,c\r\n',  # a quoted line break: a record over two lines
        'u1,"a""\nb"\nu2,c\n',  # ... after a doubled quote
        '"u1","a\r\nb"\r\n"u2","c"\r\n',  # all quoted, one record over two lines
        "u1,a\n\nu2,c\n",  # a blank line
        "u1,a\nu2,c,d\n",  # ragged
        'u1,a\n"u2","c","d"\n',  # ragged, all quoted
        'u1,"a\n',  # open to the end of the file
        '"u1","a"\n"u2","b\n',  # quoted lines, the last open to the end
        'u1,a\n"u2",b"c\n',  # a quote in an unquoted field: odd, as a record going on
    ],
)
def test_lines_the_fast_paths_leave_to_csv(body: str) -> None:
    """A record over several lines, a blank or ragged line, a quote left open: the batch
    is csv's, and reads as it always did."""
    assert _agree(("identifier,v\n" + body).encode(), ",", 10) == 0


@pytest.mark.parametrize(
    "body",
    [
        '"u1","a"\na"b","c"\n',  # four quotes, the first not at the line's start
        '"u1","a"\n"b","c"x\n',  # ... the last not at its end
        '"u1","a","b"\n"c"\n',  # a cell over, a cell short: as many quotes as two lines
        '"u1",""""\n"a""","b"\n',  # quotes in cells
        '"u1",","\n",",",,"\n',  # delimiters in cells
        '"u1","a\n","b"\n',  # a cell over two lines
        'u1,a"b,"c\nu2,d\n"u3","e"\n',  # quotes even, a field left open to the next line
        'u1,a\nu2,"b"\nu3,c"d,"e\n',  # ... to the end of the file
        'u1,a\nu2,"b"\nu3,c"d,"e',  # ... with no line end
        'u1,a\r"u2","b"\ru3,c\r',  # CR line ends
        "u1,a\r\nu2,\r\nu3,",  # CRLF, the last line's last cell empty and no line end
        '"u1","a"\r\n"u2",""\r\n"u3",""',  # ... all quoted
        '"u1","""\n",""\n',  # two lines of all-quoted cells, a line end in a cell
        '"u1","""\n",""',  # ... as the file's end
    ],
)
def test_near_miss_lines_read_as_csv(body: str) -> None:
    """Lines that nearly fit a fast path, in batches of every size: read as csv reads them."""
    for size in (1, 2, 3, 10):
        _agree(("identifier,v\n" + body).encode(), ",", size)


def test_all_quoted_lines_are_split_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """All-quoted lines, with any line ends, take no csv.reader: only the header does."""
    calls = []
    reader = csv.reader

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return reader(*args, **kwargs)

    monkeypatch.setattr(csv, "reader", counted)
    for terminator in ("\r\n", "\n", "\r"):
        text = _events(300, csv.QUOTE_ALL, terminator)
        for data in (text, text.removesuffix(terminator)):
            calls.clear()
            _, taken = _read(data.encode(), ",", 100, RecordReader)
            assert (taken, len(calls)) == (3, 1)


def _lines(length: int) -> list[str]:
    """Every line of ``length`` characters of ``"``, ``,`` and ``a``."""
    return list(map("".join, itertools.product('",a', repeat=length)))


def test_every_short_pair_of_lines_reads_as_csv() -> None:
    """Two lines of up to 4 characters, or up to 7 with the 4 quotes of two all-quoted
    cells, with any line ends: wherever the quotes are, the split at quotes gives csv's
    cells if both lines are ``"…","…"`` with no quote in a cell, and declines otherwise."""
    lines = [line for length in range(5) for line in _lines(length)]
    lines += [line for n in range(5, 8) for line in _lines(n) if line.count('"') == 4]
    all_quoted = {line for line in lines if re.fullmatch(r'"[^"]*","[^"]*"', line)}
    for first, second in itertools.product(lines, repeat=2):
        for text in (f"{first}\n{second}\r\n", f"{first}\r{second}"):
            pieces = _all_quoted_pieces(text, ",", 2, 2)
            assert (pieces is not None) == (first in all_quoted and second in all_quoted)
            if pieces is not None:
                rows = list(csv.reader(text.splitlines(True), strict=False))
                assert pieces[1::2] == rows[0] + rows[1], text
