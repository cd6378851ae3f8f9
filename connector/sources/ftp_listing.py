"""Reading what an FTP server lists: MLSD entries (RFC 3659) and LIST's ``ls -l`` lines.

Servers send names raw, so a name may hold a line break. Listings end their lines with CRLF
(RFC 959 and 3659; every common server does): when a listing's last line ends so, only CRLF
ends a line, and a bare LF belongs to the name holding it. MLSD lists such a name whole,
for selection to refuse; a LIST line holding one is no ``ls -l`` line we read, and is left
out. An MLSD line that is not an entry (facts, one space, a name) is the rest of the name
before it.

A name holding CR LF, then text shaped as an entry (``x\\r\\ntype=file;size=1; a.csv``),
reads as two entries, on any client: nothing in the listing tells them apart (nor a bare LF
in a listing whose lines end with one, which no common server sends). Neither names a file,
unless one of that name exists too, which is then what is read: the download of a name
that does not exist fails with 550, as for a file removed since the listing, and fails
alone. FTP itself cannot make such a name (its commands end at CRLF): it takes another way
in, such as SFTP or a shell.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

from connector.sources.base import RemoteFile

_TIME_VAL = re.compile(r"[0-9]{14}(?:\.[0-9]+)?")  # RFC 3659: 14DIGIT [ "." 1*DIGIT ]
# RFC 3659's entry: *( factname "=" value ";" ) SP pathname. Neither a fact's name nor its
# value holds a space, ";" or a line break, nor does the name hold "=": each fact ends at
# its first ";", so the match takes time linear in the line.
_MLSD_ENTRY = re.compile(r"((?:[^ =;\r\n]+=[^ ;\r\n]*;)*) (.*)", re.DOTALL)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# An `ls -l` line, as nearly every server without MLSD answers LIST:
# -rw-r--r--   1 owner group   1234 Nov 14 22:13 name   (or "Nov 14  2023" when older)
_LS_LINE = re.compile(
    r"(?P<kind>[-dlbcps])\S{9}\S*\s+\d+\s+"
    r"(?:\S+\s+){1,2}"  # owner and group; some servers leave the group out
    r"(?P<size>\d{1,20})\s+"  # (a longer size is no file's, and int() refuses 4,300 digits)
    r"(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+(?P<when>\d{1,2}:\d{2}|\d{4}) "
    r"(?P<name>.+)"
)


def listing_lines(data: bytes, encoding: str) -> tuple[list[str], str]:
    """A listing's non-empty lines, decoded as names are (surrogateescape: bytes that are
    not text kept as they came), and the line break between them: CRLF when the listing
    ends with one, else LF."""
    if data.endswith(b"\r\n"):
        pieces, newline = data.split(b"\r\n"), "\r\n"
    else:
        pieces, newline = [raw.removesuffix(b"\r") for raw in data.split(b"\n")], "\n"
    return [piece.decode(encoding, "surrogateescape") for piece in pieces if piece], newline


def mlsd_entries(lines: list[str], newline: str) -> Iterator[tuple[dict[str, str], str]]:
    """(facts, name) for each MLSD entry, fact names lowercased. An entry may have no facts
    (``" name"``). A line that is not an entry continues the name before it, cut there by
    ``newline``; with nothing before it, it is no one's, and left out."""
    facts: str | None = None
    name: list[str] = []  # its lines, joined once whole (joining as they come is quadratic)
    for line in lines:
        match = _MLSD_ENTRY.fullmatch(line)
        if match is None:
            if facts is not None:
                name.append(line)
            continue
        if facts is not None:
            yield _facts(facts), newline.join(name)
        facts, name = match[1], [match[2]]
    if facts is not None:
        yield _facts(facts), newline.join(name)


def _facts(text: str) -> dict[str, str]:
    facts = {}
    for fact in text.split(";"):
        key, equals, value = fact.partition("=")
        if equals:
            facts[key.lower()] = value
    return facts


def utc(stamp: str) -> float:
    """MLSD's and MDTM's ``YYYYMMDDHHMMSS[.sss]`` (UTC) → Unix seconds."""
    if not _TIME_VAL.fullmatch(stamp):
        raise ValueError(f"not a time value: {stamp!r}")
    whole, _, fraction = stamp.partition(".")
    seconds = datetime.strptime(whole, "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()
    return seconds + (float(f"0.{fraction}") if fraction else 0.0)


def parse_ls_line(line: str, now: datetime) -> RemoteFile | None:
    """A regular file (or, with size -1, a link) from an ``ls -l`` line; None otherwise.
    The time is read as UTC: LIST says nothing of its time zone."""
    match = _LS_LINE.fullmatch(line)
    if match is None or match["kind"] not in "-l" or match["month"].lower() not in _MONTHS:
        return None
    name, size = match["name"], int(match["size"])
    if match["kind"] == "l":
        name, size = name.split(" -> ", 1)[0], -1
    month, day, when = _MONTHS.index(match["month"].lower()) + 1, int(match["day"]), match["when"]
    try:
        if ":" in when:
            # No year: ls shows the time for the last six months, so this year's date
            # unless that lies ahead (a day of slack for time zones).
            hour, minute = (int(part) for part in when.split(":"))
            stamp = datetime(now.year, month, day, hour, minute, tzinfo=UTC)
            if stamp.timestamp() > now.timestamp() + 86_400:
                stamp = datetime(now.year - 1, month, day, hour, minute, tzinfo=UTC)
        else:
            stamp = datetime(int(when), month, day, tzinfo=UTC)
    except ValueError:
        return None  # 29 February in a year without one: not a line we understand
    return RemoteFile(name, size, stamp.timestamp())
