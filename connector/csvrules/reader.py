"""Bytes → records with the physical line each starts on (CONTRACT §4 rules 1–2).

Two passes over a file, both streaming:

* ``Inspector`` is fed the raw bytes (while downloading, or from disk): SHA-256, size,
  strict decoding and NUL detection. A file that does not decode is rejected before any row
  is stored, which is only possible if the whole file is checked before the rows flow.
* ``RecordReader`` then parses with the C ``csv`` module over a text stream in universal-
  newline mode (so CR, LF and CRLF all end a line), in batches, with line numbers worked out
  per batch rather than per record.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from connector.csvrules.rules import MAX_FIELD
from connector.errors import FileRejected

BOM = codecs.BOM_UTF8
CHUNK = 1 << 20
# Fields past this many characters make csv raise instead of growing without bound; up to
# here the reader stays in step with the file and the row is rejected by the 1 MiB rule.
csv.field_size_limit(16 * MAX_FIELD)
# Fed after the file's last line: if the file ends inside a quoted field it lands in that
# field, otherwise it is a record of its own. Either way we learn how the file ended
# without a Python-level wrapper around every line.
_SENTINEL = "\x00\x00connector-end-of-file\x00\x00"


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


class Inspector:
    """Streams a file's bytes once: SHA-256, size, decodability and NUL characters."""

    def __init__(self, encoding: str) -> None:
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.has_nul = False
        self.error: str | None = None
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self._lines = 1
        self._last_cr = False
        self._pending: bytes | None = b""  # first bytes, held until we know if they are a BOM

    def feed(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        if self._pending is not None:
            self._pending += chunk
            if len(self._pending) < len(BOM):
                return
            chunk, self._pending = self._pending.removeprefix(BOM), None
        self._decode(chunk, final=False)

    def finish(self) -> None:
        """Call at end of input; afterwards ``error`` says why the file cannot be decoded."""
        if self._pending is not None:
            self._decode(self._pending.removeprefix(BOM), final=False)
            self._pending = None
        self._decode(b"", final=True)

    def _decode(self, chunk: bytes, *, final: bool) -> None:
        if self.error is not None:
            return
        try:
            text = self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            good = exc.object[: exc.start].decode(exc.encoding, errors="replace")
            line = self._lines + _line_breaks(good) - (self._last_cr and good.startswith("\n"))
            self.error = f"line {line}: bytes that are not valid {exc.encoding}: {exc.reason}"
            return
        if text:
            self.has_nul = self.has_nul or "\x00" in text
            self._lines += _line_breaks(text) - (self._last_cr and text[0] == "\n")
            self._last_cr = text[-1] == "\r"

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()


def inspect_file(path: Path, encoding: str) -> Inspector:
    inspector = Inspector(encoding)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            inspector.feed(chunk)
    inspector.finish()
    return inspector


def sniff_delimiter(header: str) -> str:
    """``,`` or ``;``: whichever occurs more often outside quotes; a tie or neither → ``,``."""
    counts = {",": 0, ";": 0}
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    return ";" if counts[";"] > counts[","] else ","


@dataclass
class RecordBatch:
    """Records in file order, each with the physical line it starts on."""

    lines: list[int]
    rows: list[list[str]]
    faults: dict[int, str]  # index in rows → reason, for records the reader itself refuses


class RecordReader:
    """The records of one decoded file, in batches. The first record is the header."""

    def __init__(self, raw: BinaryIO, encoding: str, delimiter: str | None) -> None:
        if raw.read(len(BOM)) != BOM:
            raw.seek(0)
        self._text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        head = self._head_lines()
        self.delimiter = delimiter or sniff_delimiter("".join(head))
        lines = itertools.chain(head, self._text, (_SENTINEL,))
        self._csv = csv.reader(lines, delimiter=self.delimiter, quotechar='"', strict=False)
        self._next_line = 1
        self.done = False

    def _head_lines(self) -> list[str]:
        """The lines up to the end of the first record, for sniffing; replayed to csv."""
        head: list[str] = []
        quotes = 0
        for line in self._text:
            head.append(line)
            quotes += line.count('"')
            if line.strip("\r\n") and quotes % 2 == 0:
                break
        return head

    def batches(self, size: int) -> Iterator[RecordBatch]:
        while not self.done:
            yield self._batch(size)

    def _batch(self, size: int) -> RecordBatch:
        rows: list[list[str]] = []
        append = rows.append
        first = self._next_line
        error = None
        try:
            for row in itertools.islice(self._csv, size):
                append(row)
            else:
                if len(rows) < size:
                    self.done = True
        except csv.Error as exc:
            error = str(exc)
        lines = self._lines_of(rows, first)
        faults: dict[int, str] = {}
        if error is not None:  # the failed record starts where the last good one ended
            faults[len(rows)] = f"unreadable record: {error}"
            lines.append(self._next_line)
            rows.append([])
            self._next_line += 1
        if rows and rows[-1] and _SENTINEL in rows[-1][-1]:
            self._take_sentinel(rows, lines, faults)
        return _without_blank_lines(lines, rows, faults)

    def _lines_of(self, rows: list[list[str]], first: int) -> list[int]:
        if self._csv.line_num - first + 1 == len(rows):  # one line each: the common case
            self._next_line = first + len(rows)
            return list(range(first, self._next_line))
        lines = []
        line = first
        for row in rows:
            lines.append(line)
            line += 1 + sum(_line_breaks(f) for f in row if "\n" in f or "\r" in f)
        self._next_line = line
        return lines

    def _take_sentinel(self, rows: list[list[str]], lines: list[int], faults: dict[int, str]) -> None:
        self.done = True
        last = rows[-1]
        if last == [_SENTINEL]:
            rows.pop()
            lines.pop()
        elif last[-1].endswith(_SENTINEL):
            last[-1] = last[-1].removesuffix(_SENTINEL)
            faults.setdefault(len(rows) - 1, "unterminated quote: a quoted field is still open")


def _without_blank_lines(
    lines: list[int], rows: list[list[str]], faults: dict[int, str]
) -> RecordBatch:
    if all(rows):
        return RecordBatch(lines, rows, faults)
    keep = [i for i, row in enumerate(rows) if row or i in faults]
    return RecordBatch(
        [lines[i] for i in keep],
        [rows[i] for i in keep],
        {new: faults[old] for new, old in enumerate(keep) if old in faults},
    )


def read_header(reader: RecordReader) -> tuple[int, list[str]]:
    """The header record (its line and names); FileRejected if the file has none."""
    for batch in reader.batches(1):
        if batch.rows:
            if batch.faults:
                raise FileRejected(f"line {batch.lines[0]}: header: {batch.faults[0]}")
            return batch.lines[0], batch.rows[0]
    raise FileRejected("no header: the file is empty or holds only blank lines")
