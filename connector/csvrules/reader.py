"""Bytes → records with the physical line each starts on (CSV rules §1-§2).

Two passes over a file, both streaming:

* ``Inspector`` is fed the raw bytes (while downloading, or from disk): SHA-256, size and
  strict decoding. A file that does not decode is rejected before any row is stored, which
  is only possible if the whole file is checked before the rows flow.
* ``RecordReader`` then parses: the text is decoded a block at a time and cut into lines
  (CR, LF and CRLF all end one), which the C ``csv`` module reads in batches, with line
  numbers worked out per batch rather than per record. It reads through a ``ScannedFile``,
  which learns on the way which per-cell checks the bytes read so far make needless, and
  which can follow a file still being downloaded.

Memory is bounded whatever the file's shape: a batch holds at most ``BATCH_CHARS``
characters and ``BATCH_DELIMITERS`` delimiters (each may become a field object), and a
record over ``Limits.record_chars`` characters, or with too many delimiters for csv to
split safely, is measured as csv would read it without being kept (``_measure``).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import os
import re
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, repeat
from pathlib import Path
from typing import Any, BinaryIO

from connector.csvrules.rules import MAX_FIELD, Limits
from connector.errors import FileRejected

BOM = codecs.BOM_UTF8
CHUNK = 256 << 10
TEXT_BLOCK = 64 << 10  # bytes decoded at a time (16 to 256 KiB parse as fast)
# A batch's lines hold at most this many characters (a longer record is a batch of its
# own): 38,000 lines of 110 characters, so batch_records still sets the usual size.
BATCH_CHARS = 4 << 20
# ... and at most this many delimiters: csv makes a str object (about 60 bytes) per field.
BATCH_DELIMITERS = 500_000
# Records are bounded far below this; it only keeps csv's own limit out of the way.
CSV_FIELD_LIMIT = 64 << 20
# Fed after a batch's last line: if the batch ends inside a quoted field it lands in that
# field (the record goes on past the batch, or is unterminated at the end of the file),
# otherwise it is a record of its own.
_SENTINEL = "\x00\x00connector-end-of-batch\x00\x00"
_UNTERMINATED = "unterminated quote: a quoted field is still open"
_TAIL_LINES = 1024  # lines read at a time for a record that goes on past its batch
# Lines unlike the others of a batch that are read by csv one by one: a quarter of the
# batch (with more, csv reading it all is as fast), or this many.
_FEW_LINES = 16
# Characters str.splitlines also breaks at, which are not line ends for CSV.
_OTHER_BREAKS = "\v\f\x1c\x1d\x1e"
_OTHER_WIDE_BREAKS = "\x85\u2028\u2029"
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


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


@dataclass(frozen=True)
class Prefix:
    """A file's first ``size`` bytes, known by their SHA-256."""

    size: int
    sha256: str


def prefix_of(path: Path, size: int) -> Prefix | None:
    """The first ``size`` bytes of ``path``; None if it is shorter."""
    digest, left = hashlib.sha256(), size
    with path.open("rb") as f:
        while left and (chunk := f.read(min(CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    return None if left else Prefix(size, digest.hexdigest())


class Inspector:
    """Streams a file's bytes once, while downloading or from disk: SHA-256, size and
    decodability."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._fed = threading.Lock()  # (``prefix`` is asked from another thread)
        self.error: str | None = None
        self.error_offset = 0  # byte offset of the first undecodable byte
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self._pending: bytes | None = b""  # first bytes, held until we know if they are a BOM
        self._skipped = 0  # bytes of BOM not given to the decoder
        self._decoded = 0  # bytes given to the decoder

    def feed(self, chunk: bytes) -> None:
        with self._fed:
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

    def prefix(self) -> Prefix:
        """The bytes fed so far, while a download may be feeding more."""
        with self._fed:
            return Prefix(self.size, self.sha256.copy().hexdigest())

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
                try:
                    text = decoder.decode(chunk)
                except UnicodeError:  # UTF-16 without a BOM, refused in any error mode
                    break
                if text:  # a CRLF split across chunks is one line break
                    line += _line_breaks(text) - (last_cr and text[0] == "\n")
                    last_cr = text[-1] == "\r"
            f.seek(self.error_offset)
            bad = f.read(1)
        return f"line {line}: {self.error}; {self._hint(bad)}"

    def _hint(self, bad: bytes) -> str:
        """What to do about bytes that do not decode: name the file's encoding. Bytes that
        are not UTF-8 mostly come from Windows' cp1252 (Excel's "CSV" on a Western
        system): the first bad byte is shown as it reads there."""
        advice = "set the source's encoding (or import --encoding) to the file's"
        if codecs.lookup(self.encoding).name != "utf-8" or not bad:
            return advice
        shown = bad.decode("cp1252", "replace")
        return f'{advice}: byte 0x{bad.hex()} reads "{shown}" in cp1252, Excel\'s on Windows'


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
    outside = header.split('"')[::2]  # (every quote toggles, as in a record's own reading)
    commas = sum(map(str.count, outside, repeat(",")))
    return ";" if sum(map(str.count, outside, repeat(";"))) > commas else ","


def _other_breaks(text: str) -> bool:
    """Whether ``text`` holds a character str.splitlines breaks at that is no line end."""
    return any(c in text for c in _OTHER_BREAKS) or (
        not text.isascii() and any(c in text for c in _OTHER_WIDE_BREAKS)
    )


def _csv(lines: Iterable[str], delimiter: str) -> Any:
    """csv's reader of ``lines`` by the CSV rules: RFC 4180 quotes, lenient after them."""
    return csv.reader(lines, delimiter=delimiter, quotechar='"', strict=False)


def _split(text: str) -> list[str]:
    """``text`` cut after each line end (CR, LF or CRLF, kept); the last piece may have
    none. str.splitlines is fast but also breaks at a few other characters: then a regex."""
    if _other_breaks(text):
        return _LINE.findall(text)
    return text.splitlines(True)


class _Lines:
    """The decoded text of a file as whole lines, ends kept, a block at a time.

    A line never holds more than ``longest + 1`` characters: a longer one is given cut
    there (the record is over the limit whatever follows), and what follows the cut is
    then read as text (``text``), which the reader does at once."""

    def __init__(self, raw: io.BufferedReader, encoding: str, longest: int) -> None:
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self._longest = longest
        self._lines: list[str] = []  # whole lines, those from _at on not taken yet
        self._at = 0
        self._partial: list[str] = []  # the start of a line whose end is not read yet
        self._partial_size = 0
        self._cr = ""  # a CR that ended the last block read: a LF may begin the next one
        self._ended = False  # the raw bytes are all read

    def _read(self) -> str | None:
        """The next decoded text (a CR at its end held back), or None once all is read."""
        if self._ended:
            return None
        data = self._raw.read1(TEXT_BLOCK)
        text = self._cr + self._decoder.decode(data, final=not data)
        if not data:
            self._ended, self._cr = True, ""
            return text
        self._cr = "\r" if text.endswith("\r") else ""
        return text[:-1] if self._cr else text

    def _more(self) -> bool:
        """Read a block into lines (or a line's start); False at the end of the file."""
        text = self._read()
        if text is None:
            return False
        self._add(text)
        return True

    def _add(self, text: str) -> None:
        """Cut ``text``, which follows all the text added before, into lines."""
        if self._at == len(self._lines):
            self._lines, self._at = [], 0
        if "\n" in text or "\r" in text:
            pieces = _split(text)
            if self._partial:
                pieces[0] = "".join(self._partial) + pieces[0]
                self._partial, self._partial_size = [], 0
            rest = "" if pieces[-1].endswith(("\n", "\r")) else pieces.pop()
            self._lines += pieces
            if rest:
                self._grow(rest)
        elif text:
            self._grow(text)
        if self._ended and self._partial:  # the last line has no line end
            self._lines.append("".join(self._partial))
            self._partial, self._partial_size = [], 0

    def _grow(self, text: str) -> None:
        """``text`` goes on the line not ended yet; past ``longest`` it is cut."""
        self._partial.append(text)
        self._partial_size += len(text)
        if self._partial_size > self._longest:
            whole = "".join(self._partial)
            self._lines.append(whole[: self._longest + 1])
            rest = whole[self._longest + 1 :]
            self._partial, self._partial_size = ([rest], len(rest)) if rest else ([], 0)

    def take(self, count: int, budget: int) -> list[str]:
        """Up to ``count`` lines holding at most ``budget`` characters in all (a longer
        line comes alone); [] at the end of the file. Whole lists at a time: no Python
        step per line."""
        taken: list[str] = []
        while len(taken) < count:
            if self._at == len(self._lines):
                if taken and self._partial_size > budget:
                    break  # the next line cannot fit: it is not read whole meanwhile
                if not self._more():
                    break
                continue
            lines = self._lines[self._at : self._at + count - len(taken)]
            sizes = list(accumulate(map(len, lines)))
            fit = bisect_right(sizes, budget)
            if fit < len(lines):
                fit = fit or int(not taken)
                taken += lines[:fit]
                self._at += fit
                break
            taken += lines
            self._at += len(lines)
            budget -= sizes[-1]
        if self._at == len(self._lines):  # (not kept here while the caller uses them)
            self._lines, self._at = [], 0
        return taken

    def put_back(self, lines: list[str]) -> None:
        """Lines taken but not used: they are taken again first."""
        if lines:
            self._lines = lines + self._lines[self._at :]
            self._at = 0

    def text(self) -> str:
        """What follows the lines taken, as text (every CRLF whole); "" at the end."""
        if self._at < len(self._lines) or self._partial:
            parts = self._lines[self._at :] + self._partial
            self._lines, self._at, self._partial, self._partial_size = [], 0, [], 0
            return "".join(parts)
        while (text := self._read()) is not None:
            if text:
                return text
        return ""

    def unread(self, text: str) -> None:
        """Give back the end of the last ``text`` (or of the lines it was joined from): it
        is read again first, as lines, ahead of what is still buffered."""
        pieces = _split(text)
        rest = self._lines[self._at :]
        if pieces and not pieces[-1].endswith(("\n", "\r")):  # a line whose end is not read
            start = pieces.pop()
            if rest:
                rest[0] = start + rest[0]
            elif self._partial or not self._ended:
                self._partial.insert(0, start)
                self._partial_size += len(start)
            else:  # the file's last line, which has no line end
                rest = [start]
        self._lines, self._at = pieces + rest, 0


@dataclass(frozen=True)
class _Measured:
    """A record as csv would read it, measured without keeping it all."""

    text: str | None  # the record with its line end; None: over the limit, not kept
    fields: int
    lines: int  # physical lines it takes
    open_quote: bool  # the file ends inside one of its quoted fields


_START, _UNQUOTED, _QUOTED, _AFTER_QUOTE = range(4)


def _measure(text: str, source: _Lines, delimiter: str, longest: int) -> _Measured:
    """The record that ``text`` begins, then goes on in ``source``, read by csv's own rules
    (lenient, ``""`` for a quote) at the speed of ``str.find``: where it ends, its fields
    and lines, and its text if it holds at most ``longest`` characters. What follows it is
    given back to ``source``. Memory stays flat however long the record is."""
    kept: list[str] | None = []
    size = fields = breaks = 0
    state = _START
    opener = delimiter + '"'  # a quote opens a quoted field only where a field starts
    while text:
        length = len(text)
        end = -1  # where the record's line end is, once found
        i = 0
        line_end = opens = -2  # next ones at or after i, found lazily (-1: none left)
        while i < length:
            if state == _QUOTED:
                j = text.find('"', i)
                if j < 0:
                    break
                i, state = j + 1, _AFTER_QUOTE
                continue
            if state != _UNQUOTED:  # a field's start, or just after a quote in a quoted one
                if text[i] == '"':  # (after a quote: "" is a quote, and the field goes on)
                    i, state = i + 1, _QUOTED
                    continue
                state = _UNQUOTED  # ("ab"c reads as abc: text after the quote is plain)
            if -1 < line_end < i or line_end == -2:
                line_end = min(
                    (j for j in (text.find("\n", i), text.find("\r", i)) if j >= 0), default=-1
                )
            if -1 < opens < i or opens == -2:
                opens = text.find(opener, i)
            stop = length if line_end < 0 else line_end
            if 0 <= opens < stop:
                fields += text.count(delimiter, i, opens + 1)
                i, state = opens + 2, _QUOTED
                continue
            fields += text.count(delimiter, i, stop)
            if line_end >= 0:
                end = line_end
            elif text.endswith(delimiter):
                state = _START
            break
        cut = length if end < 0 else end + (2 if text.startswith("\r\n", end) else 1)
        part = text[:cut] if cut < length else text
        size += len(part)
        breaks += part.count("\n")
        if "\r" in part:  # (rare: a count is a full scan, the test is a memchr)
            breaks += part.count("\r") - part.count("\r\n")
        if kept is not None and size <= longest:
            kept.append(part)
        else:
            kept = None  # over the limit: only measured from here
        if end >= 0:
            if cut < length:
                source.unread(text[cut:])
            return _Measured(None if kept is None else "".join(kept), fields + 1, breaks, False)
        text = source.text()
    return _Measured(
        None if kept is None else "".join(kept), fields + 1, breaks + 1, state == _QUOTED
    )


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


def too_wide(columns: int, limits: Limits) -> str | None:
    """Why a header of ``columns`` columns is refused, if it is."""
    if columns > limits.columns:
        return f"{columns:,} columns, more than the {limits.columns:,} allowed"
    return None


class RecordReader:
    """The records of one decoded file, in batches. The first record is the header; once
    the caller sets ``width`` (the header's), plain batches take the fast path."""

    def __init__(
        self,
        raw: io.BufferedReader,
        encoding: str,
        delimiter: str | None,
        scan: ByteScan | None = None,
        limits: Limits | None = None,
    ) -> None:
        """``scan`` of the bytes read so far, if one is kept: without it, no fast path."""
        csv.field_size_limit(CSV_FIELD_LIMIT)  # (the csv module's, process-wide; set here)
        if raw.read(len(BOM)) != BOM:
            raw.seek(0)
        self._raw = raw
        self.limits = limits or Limits()
        self._source = _Lines(raw, encoding, self.limits.record_chars)
        if delimiter is None:  # the header is read for it, then read again from its start
            start = raw.tell()
            delimiter = self._sniff()
            raw.seek(start)
            self._source = _Lines(raw, encoding, self.limits.record_chars)
        self.delimiter = delimiter
        self._scan = scan
        self.width: int | None = None
        self._next_line = 1
        self.done = False

    def detach(self) -> None:
        """Give the byte stream back to its owner, e.g. when the file is refused whole."""
        self._raw.detach()

    def _sniff(self) -> str:
        """``sniff_delimiter`` of the lines up to the end of the first record (as far as a
        record may go), read a group of lines at a time and not kept."""
        longest = self.limits.record_chars
        counts = {",": 0, ";": 0}
        quoted = 0  # 1: the text so far ends inside quotes
        size = 0
        while group := self._source.take(_TAIL_LINES, longest - size):
            end: int | None = None  # lines of the group up to the record's end
            quotes = list(accumulate(map(str.count, group, repeat('"'))))
            if not quoted or quotes[-1]:  # (else every line is inside the quotes)
                for i, count in enumerate(quotes):
                    if (quoted + count) % 2 == 0 and group[i].strip("\r\n"):
                        end = i + 1
                        break
            text = "".join(group[:end])
            for at in range(0, len(text), TEXT_BLOCK):  # (split makes a str per quote)
                parts = text[at : at + TEXT_BLOCK].split('"')
                for delimiter in counts:
                    counts[delimiter] += sum(map(str.count, parts[quoted::2], repeat(delimiter)))
                quoted ^= (len(parts) - 1) % 2
            size += len(text)
            if end is not None or size > longest:
                break
        return ";" if counts[";"] > counts[","] else ","

    def batches(self, size: int) -> Iterator[RecordBatch]:
        while not self.done:
            yield self._batch(size)  # (no local keeps a batch's lines while it is used)

    def _batch(self, size: int) -> RecordBatch:
        longest = self.limits.record_chars
        chunk = self._source.take(size, min(BATCH_CHARS, longest))
        if not chunk:
            self.done = True
            return RecordBatch([], [], {})
        if len(chunk[0]) > max(longest, 2):  # (then alone; a blank line is no record)
            return self._one(*self._big(chunk[0]))
        text = "".join(chunk)
        if text.count(self.delimiter) > self._dense:
            del text
            counts = list(accumulate(map(str.count, chunk, repeat(self.delimiter))))
            fit = bisect_right(counts, self._dense)
            self._source.put_back(chunk[max(fit, 1) :])
            if fit == 0:
                return self._one(*self._big(chunk[0]))
            del chunk[fit:]
            text = "".join(chunk)
        batch = self._plain(chunk, text)
        del text  # (not kept while csv reads the chunk)
        return batch or self._parsed(chunk)

    @property
    def _dense(self) -> int:
        """The most delimiters csv is given at a time. A header is split by csv only if it
        cannot have more columns than allowed."""
        return BATCH_DELIMITERS if self.width is not None else self.limits.columns

    def _one(self, row: list[str], fault: str | None, lines: int) -> RecordBatch:
        """A batch of the one record starting at the next line, spanning ``lines``."""
        line = self._next_line
        self._next_line += lines
        return RecordBatch([line], [row], {} if fault is None else {0: fault}, multiline=True)

    def _big(self, text: str) -> tuple[list[str], str | None, int]:
        """The record that ``text`` begins (too long, or with too many delimiters, for csv to
        be given as is): its row, or the reason it is refused; and the lines it takes."""
        longest = self.limits.record_chars
        measured = _measure(text, self._source, self.delimiter, longest)
        if measured.text is None:
            fault: str | None = f"record over {longest:,} characters"
        elif measured.open_quote:
            fault = _UNTERMINATED
        elif self.width is None:
            fault = too_wide(measured.fields, self.limits)
        elif measured.fields != self.width:
            fault = f"expected {self.width} fields, got {measured.fields}"
        else:
            fault = None
        if fault is not None or measured.text is None:
            return [], fault, measured.lines
        # Within the limits, and as wide as allowed: csv may split it.
        reader = _csv(_split(measured.text), self.delimiter)
        return next(reader), None, measured.lines

    def _plain(self, chunk: list[str], text: str) -> RecordBatch | None:
        """The records of ``chunk`` (whose lines ``text`` joins) as columns, without
        csv.reader's rows, when that gives the same answer (else None): every line a whole
        record of width fields, none blank, none long enough to hold an oversized field
        (whose reject the csv path words). The chunk's text is split at once, which costs a
        third of what csv.reader and a transposition do: on the delimiter when it holds no
        quote; on the quotes when every field is quoted, as spreadsheets and pandas write
        (``_all_quoted``); a few lines unlike the others are read by csv on their own."""
        width = self.width
        if width is None or width < 2 or self._scan is None or self._scan.has_long_lines:
            return None
        count = len(chunk)
        columns: list[list[str]] | None
        if '"' not in text:
            if set(map(str.count, chunk, repeat(self.delimiter))) != {width - 1}:
                return None
            cells = _plain_cells(text, self.delimiter)
            columns = [cells[k : count * width : width] for k in range(width)]
        else:  # (all-quoted lines; else plain ones, a few with quotes, whichever comes first)
            columns = self._all_quoted(chunk, text, width) if text.startswith('"') else None
            if columns is None:
                columns = self._some_quoted(chunk, text, width)
        if columns is None:
            return None
        first = self._next_line
        self._next_line += count
        return RecordBatch(list(range(first, first + count)), [], {}, columns=columns)

    def _some_quoted(self, chunk: list[str], text: str, width: int) -> list[list[str]] | None:
        """The columns of ``chunk``, a few of whose lines hold quotes: those are read by csv
        (``_own_records``), the others split on the delimiter, a line of empty fields
        standing in for each line csv read."""
        count, delimiter = len(chunk), self.delimiter
        few = max(count // 4, _FEW_LINES)
        ends = list(accumulate(map(len, chunk)))
        quoted: list[int] = []
        at = text.find('"')
        while at >= 0:
            line = bisect_right(ends, at, quoted[-1] if quoted else 0)
            quoted.append(line)
            if len(quoted) > few:
                return None
            at = text.find('"', ends[line])
        lines = chunk.copy()
        empty = delimiter * (width - 1) + "\n"
        for line in quoted:
            lines[line] = empty
        if set(map(str.count, lines, repeat(delimiter))) != {width - 1}:
            return None  # (a ragged plain line: before csv reads the quoted ones)
        rows = self._own_records(chunk, quoted, width)
        if rows is None:
            return None
        cells = _plain_cells("".join(lines), delimiter)
        for line, row in zip(quoted, rows, strict=True):
            cells[line * width : (line + 1) * width] = row
        return [cells[k : count * width : width] for k in range(width)]

    def _all_quoted(self, chunk: list[str], text: str, width: int) -> list[list[str]] | None:
        """The columns of ``chunk``, whose text starts with a quote, if its lines are
        all-quoted (``"a","b"``: 2 * width quotes, none in a cell) but a few: those are
        read by csv (``_own_records``), an all-quoted line of empty cells standing in."""
        count, delimiter = len(chunk), self.delimiter
        if text.count('"') == 2 * width * count:
            pieces = _all_quoted_pieces(text, delimiter, width, count)
            if pieces is not None:
                return [pieces[1 + 2 * k :: 2 * width] for k in range(width)]
        quotes = map(str.count, chunk, repeat('"'))
        others = list(itertools.compress(range(count), map((2 * width).__ne__, quotes)))
        if not others or len(others) > max(count // 4, _FEW_LINES):
            return None
        rows = self._own_records(chunk, others, width)
        if rows is None:
            return None
        lines = chunk.copy()
        empty = delimiter.join(repeat('""', width)) + "\n"
        for line in others:
            lines[line] = empty
        pieces = _all_quoted_pieces("".join(lines), delimiter, width, count)
        if pieces is None:
            return None
        step = 2 * width
        for line, row in zip(others, rows, strict=True):
            pieces[1 + step * line : step * (line + 1) : 2] = row
        return [pieces[1 + 2 * k :: step] for k in range(width)]

    def _own_records(
        self, chunk: list[str], lines: list[int], width: int
    ) -> list[list[str]] | None:
        """The records csv reads from ``chunk``'s ``lines`` each on its own, if each is one
        whole record of width fields (else None): a line reads so in the file too, where a
        record starts at it, the line before it being a whole record. A line with an odd
        count of quotes mostly starts a record that goes on over several lines (else it
        is rare: ab"c): it is left to the csv path, not read twice."""
        picked = list(map(chunk.__getitem__, lines))
        if any(map((1).__and__, map(str.count, picked, repeat('"')))):
            return None
        reader = _csv(itertools.chain(picked, (_SENTINEL,)), self.delimiter)
        rows = list(reader)
        # A record per line, the sentinel's included: no quoted field was left open.
        if reader.line_num != len(rows):
            return None
        rows.pop()
        return rows if set(map(len, rows)) == {width} else None

    def _parsed(self, chunk: list[str]) -> RecordBatch:
        """The records that start in ``chunk``, by the csv module; the last one may go on
        past it (then read on from the file, as far as a record may go)."""
        reader = _csv(itertools.chain(chunk, (_SENTINEL,)), self.delimiter)
        rows = list(reader)
        first = self._next_line
        lines = self._lines_of(rows, first, reader.line_num)
        faults: dict[int, str] = {}
        last, start = rows.pop(), lines.pop()
        # (a last line of just '"' takes the sentinel in as all its field: it starts earlier)
        if last == [_SENTINEL] and start - first == len(chunk):  # it ends between records
            self._next_line = start
            multiline = start - first != len(rows)
        else:  # it ends inside a quoted field (which took the sentinel in)
            row, fault, taken = self._rest_of(chunk[start - first :])
            if fault is not None:
                faults[len(rows)] = fault
            rows.append(row)
            lines.append(start)
            self._next_line = start + taken
            multiline = True
        batch = _without_blank_lines(lines, rows, faults)
        batch.multiline = multiline
        return batch

    def _rest_of(self, head: list[str]) -> tuple[list[str], str | None, int]:
        """The record that ``head`` begins, read on from the file up to its end, or until
        it is too long or has too many delimiters for csv (then measured: see ``_big``)."""
        longest, dense = self.limits.record_chars, self._dense
        delimiter = self.delimiter
        # The record's text: head's lines, then one string per group of lines csv has read
        # (a str object per line costs some 50 bytes: 100 MB for 2 million short lines).
        record = list(head)
        group: list[str] = []  # the lines taken last, whole
        read = len(head)  # lines in record
        size = sum(map(len, head))
        delimiters = sum(map(str.count, head, repeat(delimiter)))
        over = False

        def more() -> Iterator[str]:
            nonlocal group, read, size, delimiters, over
            # Whole lists of lines at a time (what csv does not read is put back), so that
            # a record of a million short lines costs no Python step per line.
            while group := self._source.take(_TAIL_LINES, longest - size):
                size += sum(map(len, group))
                delimiters += sum(map(str.count, group, repeat(delimiter)))
                if size > longest or delimiters > dense:  # (maybe in records after it)
                    over = True  # csv is given no more: what it read is dropped
                    return
                yield from group
                record.append("".join(group))
                read += len(group)
            yield _SENTINEL  # the end of the file, inside a quoted field: it takes it in

        reader = _csv(itertools.chain(head, more()), delimiter)
        row = next(reader)
        if over:
            record += group
            return self._big("".join(record))
        self._source.put_back(group[reader.line_num - read :])
        if row and row[-1].endswith(_SENTINEL):
            row[-1] = row[-1].removesuffix(_SENTINEL)
            return row, _UNTERMINATED, reader.line_num
        return row, None, reader.line_num

    def _lines_of(self, rows: list[list[str]], first: int, consumed: int) -> list[int]:
        """The line each row starts on, given the lines read for them."""
        if consumed == len(rows):  # one line each: the common case
            return list(range(first, first + len(rows)))
        lines = []
        line = first
        for row in rows:
            lines.append(line)
            line += 1 + sum(_line_breaks(f) for f in row if "\n" in f or "\r" in f)
        return lines


def _plain_cells(text: str, delimiter: str) -> list[str]:
    """The cells of lines without quotes, in order (maybe a "" after the last)."""
    if "\r" in text:
        # splitlines breaks at CR, LF and CRLF alike, and at \x1e (which, unlike a CR,
        # makes no CRLF with an LF after it): no pass to make line ends one.
        if not _other_breaks(text):
            cells = text.replace(delimiter, "\x1e").splitlines()
            if text.endswith(delimiter):  # (no "" follows the last break)
                cells.append("")
            return cells
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # line ends: no quotes
    return text.replace(delimiter, "\n").split("\n")


_LINE_ENDS = frozenset(("\r\n", "\n", "\r"))
_LAST_ENDS = _LINE_ENDS | {""}  # (the file's last line may have none)


def _all_quoted_pieces(text: str, delimiter: str, width: int, count: int) -> list[str] | None:
    """``text`` split at its quotes, if it is ``count`` lines ``"cell","cell",…`` of width
    cells with no quote in a cell (as csv reads them: its cells are then every other
    piece from the second); else None.

    Such text alternates what follows a quote: nothing before the first; then a cell, and
    what follows it: the delimiter within a line, a line end after its last cell (the
    last line's maybe none). Those line ends being one per line, no cell holds one."""
    pieces = text.split('"')
    if pieces[0] or len(pieces) != 2 * width * count + 1:
        return None
    step = 2 * width
    if pieces[2::2].count(delimiter) != (width - 1) * count:
        return None  # (no line end is the delimiter: the others are line ends, or wrong)
    if not _LINE_ENDS.issuperset(pieces[step:-1:step]) or pieces[-1] not in _LAST_ENDS:
        return None
    return pieces


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
    """The header record (its line and names); FileRejected if the file has none, or if it
    is refused (too long, too wide)."""
    for batch in reader.batches(1):
        if batch.rows:
            fault = batch.faults.get(0) or too_wide(len(batch.rows[0]), reader.limits)
            if fault is not None:
                raise FileRejected(f"line {batch.lines[0]}: header: {fault}")
            return batch.lines[0], batch.rows[0]
    raise FileRejected("no header: the file is empty or holds only blank lines")
