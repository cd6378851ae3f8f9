"""Bytes → records with the physical line each starts on (CONTRACT §4 rules 1-2).

Two passes over a file, both streaming:

* ``Inspector`` is fed the raw bytes (while downloading, or from disk): SHA-256, size and
  strict decoding. A file that does not decode is rejected before any row is stored, which
  is only possible if the whole file is checked before the rows flow.
* ``RecordReader`` then parses with the C ``csv`` module over a text stream in universal-
  newline mode (so CR, LF and CRLF all end a line), in batches, with line numbers worked out
  per batch rather than per record. It reads through a ``ScannedFile``, which learns on
  the way which per-cell checks the bytes read so far make needless, and which can follow a
  file still being downloaded.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import BinaryIO

from connector.csvrules.rules import MAX_FIELD
from connector.errors import FileRejected

BOM = codecs.BOM_UTF8
CHUNK = 256 << 10
# Fields past this many characters make csv raise instead of growing without bound; up to
# here the reader stays in step with the file and the row is rejected by the 1 MiB rule.
csv.field_size_limit(16 * MAX_FIELD)
# Fed after the file's last line: if the file ends inside a quoted field it lands in that
# field, otherwise it is a record of its own. Either way we learn how the file ended
# without a Python-level wrapper around every line.
_SENTINEL = "\x00\x00connector-end-of-file\x00\x00"


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


class ByteScan:
    """What the parser may skip checking, learnt from the raw bytes at memchr speed:
    whether any NUL byte exists (a NUL character needs one in the codecs people use; in
    UTF-16 there are many, so such files simply get every check), and whether any physical
    line is long enough to hold a field over MAX_FIELD characters (a record over several
    lines is noticed by the reader itself). Both only ever turn true, so a scan of the bytes
    read so far answers for every record already read."""

    def __init__(self) -> None:
        self.size = 0
        self.has_nul = False
        self.has_long_lines = False
        self._line_start = 0  # offset just after the last line break seen

    def feed(self, chunk: bytes) -> None:
        if not self.has_nul and b"\x00" in chunk:
            self.has_nul = True
        if not self.has_long_lines:
            self._measure_lines(chunk)
        self.size += len(chunk)

    def finish(self) -> None:
        if self.size - self._line_start > MAX_FIELD:
            self.has_long_lines = True

    def _measure_lines(self, chunk: bytes) -> None:
        if len(chunk) > MAX_FIELD:
            self.has_long_lines = True  # a line inside a chunk this big could be too long
            return
        firsts = [i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0]
        if not firsts:
            if self.size + len(chunk) - self._line_start > MAX_FIELD:
                self.has_long_lines = True
            return
        if self.size + min(firsts) - self._line_start > MAX_FIELD:
            self.has_long_lines = True
        self._line_start = self.size + max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1


class Inspector:
    """Streams a file's bytes once, while downloading or from disk: SHA-256, size and
    decodability."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.error: str | None = None
        self.error_offset = 0  # byte offset of the first undecodable byte
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self._pending: bytes | None = b""  # first bytes, held until we know if they are a BOM
        self._skipped = 0  # bytes of BOM not given to the decoder
        self._decoded = 0  # bytes given to the decoder

    def feed(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        if self._pending is not None:
            self._pending += chunk
            if len(self._pending) < len(BOM):
                return
            chunk, self._pending = self._strip_bom(self._pending), None
        self._decode(chunk, final=False)

    def feed_from(self, stream: BinaryIO) -> None:
        """``feed`` the rest of an open file."""
        while chunk := stream.read(CHUNK):
            self.feed(chunk)

    def finish(self) -> None:
        """Call at end of input; afterwards ``error`` says why the file cannot be decoded."""
        if self._pending is not None:
            self._decode(self._strip_bom(self._pending), final=False)
            self._pending = None
        self._decode(b"", final=True)

    def _strip_bom(self, head: bytes) -> bytes:
        rest = head.removeprefix(BOM)
        self._skipped = len(head) - len(rest)
        return rest

    def _decode(self, chunk: bytes, *, final: bool) -> None:
        if self.error is not None:
            return
        try:
            self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            buffered = len(exc.object) - len(chunk)  # held back from the previous chunk
            self.error_offset = self._skipped + self._decoded - buffered + exc.start
            self.error = f"bytes that are not valid {exc.encoding}: {exc.reason}"
            return
        except UnicodeError as exc:  # e.g. UTF-16 without a BOM: no offset to report
            self.error_offset = self._skipped + self._decoded
            self.error = f"not valid {self.encoding}: {exc}"
            return
        self._decoded += len(chunk)

    def hexdigest(self) -> str:
        return self.sha256.hexdigest()

    def rejection(self, path: Path) -> str | None:
        """Why the file cannot be decoded, naming the line, or None if it can."""
        if self.error is None:
            return None
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
        line, last_cr = 1, False
        with path.open("rb") as f:
            f.seek(self._skipped)
            remaining = self.error_offset - self._skipped
            while remaining > 0 and (chunk := f.read(min(CHUNK, remaining))):
                remaining -= len(chunk)
                text = decoder.decode(chunk)
                if text:  # a CRLF split across chunks is one line break
                    line += _line_breaks(text) - (last_cr and text[0] == "\n")
                    last_cr = text[-1] == "\r"
        return f"line {line}: {self.error}"


def inspect_file(path: Path, encoding: str) -> Inspector:
    inspector = Inspector(encoding)
    with path.open("rb") as f:
        inspector.feed_from(f)
    inspector.finish()
    return inspector


class ScannedFile(io.RawIOBase):
    """The first ``size`` bytes of an open file, fed to ``scan`` as they are first read.

    ``growing``: the file is still being written (a download in progress) and will reach
    ``size``; a read at its current end waits for more rather than ending the file, as
    long as ``alive()`` says the writer is still there. Otherwise an early end is the end.
    """

    _WAIT = 0.002  # a 100 MB/s download appends a chunk about every 2.5 ms

    def __init__(
        self,
        fd: int,
        size: int,
        *,
        growing: bool = False,
        alive: Callable[[], bool] = lambda: True,
        closefd: bool = False,
    ) -> None:
        super().__init__()
        self.scan = ByteScan()
        self._fd, self._size, self._growing, self._alive = fd, size, growing, alive
        self._closefd = closefd
        self._position = 0

    def close(self) -> None:
        if self._closefd and not self.closed:
            os.close(self._fd)
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._position)
        count = 0
        while want > 0:
            count = os.preadv(self._fd, [memoryview(buffer)[:want]], self._position)
            if count or not self._growing:
                break
            if not self._alive():
                raise OSError(f"the file stopped growing at {self._position:,} bytes")
            time.sleep(self._WAIT)
        if count == 0:
            self.scan.finish()
            return 0
        fresh = self._position + count - self.scan.size  # bytes read for the first time
        if fresh > 0:  # (a seek back re-reads some: the scan sees each byte once)
            self.scan.feed(bytes(memoryview(buffer)[count - fresh : count]))
        self._position += count
        return count


def open_scanned(path: Path) -> ScannedFile:
    """A complete file on disk, for the parser; the caller closes it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return ScannedFile(fd, os.fstat(fd).st_size, closefd=True)
    except BaseException:
        os.close(fd)
        raise


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
    """Records in file order, each with the physical line it starts on; as rows, or (read
    on the fast path) as ``columns``, every record then complete and unfaulted."""

    lines: list[int]
    rows: list[list[str]]
    faults: dict[int, str]  # index in rows → reason, for records the reader itself refuses
    multiline: bool = False  # some record spans several lines (quoted line breaks)
    columns: list[list[str]] | None = None

    def after(self, skip: int) -> RecordBatch:
        """The records past the first ``skip``."""
        return RecordBatch(
            self.lines[skip:],
            self.rows[skip:],
            {i - skip: r for i, r in self.faults.items() if i >= skip},
            self.multiline,
            None if self.columns is None else [column[skip:] for column in self.columns],
        )


class RecordReader:
    """The records of one decoded file, in batches. The first record is the header; once
    the caller sets ``width`` (the header's), plain batches take the fast path."""

    def __init__(
        self, raw: BinaryIO, encoding: str, delimiter: str | None, scan: ByteScan | None = None
    ) -> None:
        """``scan`` of the bytes read so far, if one is kept: without it, no fast path."""
        if raw.read(len(BOM)) != BOM:
            raw.seek(0)
        self._text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        # Decode larger pieces than the default 8 KiB: fewer reads and calls (measured best
        # at 64 KiB; 256 KiB was slower).
        self._text._CHUNK_SIZE = 64 << 10  # type: ignore[attr-defined]
        head = self._head_lines()
        self.delimiter = delimiter or sniff_delimiter("".join(head))
        self._lines = itertools.chain(head, self._text, (_SENTINEL,))
        self._scan = scan
        self.width: int | None = None
        self._next_line = 1
        self.done = False

    def detach(self) -> None:
        """Give the byte stream back to its owner, e.g. when the file is refused whole."""
        self._text.detach()

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
            chunk = list(itertools.islice(self._lines, size))
            yield self._plain(chunk) or self._parsed(chunk, size)

    def _plain(self, chunk: list[str]) -> RecordBatch | None:
        """The records of ``chunk`` without the csv module, when that gives the same answer
        (else None): no quote, so a line is a record and a delimiter ends a field; every
        line holding width - 1 delimiters, so none is blank or ragged; no line long enough
        to hold an oversized field (whose reject the csv path words). Splitting the whole
        chunk's text at once costs a third of what csv.reader and a transposition do."""
        width = self.width
        if width is None or width < 2 or self._scan is None or self._scan.has_long_lines:
            return None
        ends = bool(chunk) and chunk[-1] is _SENTINEL
        lines = chunk[:-1] if ends else chunk
        text = "".join(lines)
        delimiter = self.delimiter
        if not lines or '"' in text or set(map(str.count, lines, repeat(delimiter))) != {width - 1}:
            return None
        if "\r" in text:  # CR LF or CR alone: at line ends only, there being no quotes
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        cells = text.replace(delimiter, "\n").split("\n")
        count = len(lines)
        first = self._next_line
        self._next_line += count
        self.done = ends
        columns = [cells[k : count * width : width] for k in range(width)]
        return RecordBatch(list(range(first, first + count)), [], {}, columns=columns)

    def _parsed(self, chunk: list[str], size: int) -> RecordBatch:
        """Up to ``size`` records by the csv module, from ``chunk`` on (a record may go on
        past it)."""
        reader = csv.reader(itertools.chain(chunk, self._lines), delimiter=self.delimiter,
                            quotechar='"', strict=False)  # fmt: skip
        rows: list[list[str]] = []
        append = rows.append
        first = self._next_line
        error = None
        try:
            for row in itertools.islice(reader, size):
                append(row)
            else:
                if len(rows) < size:
                    self.done = True
        except csv.Error as exc:
            error = str(exc)
        lines = self._lines_of(rows, first, reader.line_num)
        multiline = self._next_line - first != len(rows)
        faults: dict[int, str] = {}
        if error is not None:  # the failed record starts where the last good one ended
            faults[len(rows)] = f"unreadable record: {error}"
            lines.append(self._next_line)
            rows.append([])
            # The next record starts after the lines the failed one took; the chunk's
            # lines csv has not reached are read again by the next batch.
            self._next_line = first + reader.line_num
            self._lines = itertools.chain(chunk[reader.line_num :], self._lines)
        if rows and rows[-1] and _SENTINEL in rows[-1][-1]:
            self._take_sentinel(rows, lines, faults)
        batch = _without_blank_lines(lines, rows, faults)
        batch.multiline = multiline
        return batch

    def _lines_of(self, rows: list[list[str]], first: int, consumed: int) -> list[int]:
        """The line each row starts on, given the lines read for them."""
        if consumed == len(rows):  # one line each: the common case
            self._next_line = first + len(rows)
            return list(range(first, self._next_line))
        lines = []
        line = first
        for row in rows:
            lines.append(line)
            line += 1 + sum(_line_breaks(f) for f in row if "\n" in f or "\r" in f)
        self._next_line = line
        return lines

    def _take_sentinel(
        self, rows: list[list[str]], lines: list[int], faults: dict[int, str]
    ) -> None:
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
