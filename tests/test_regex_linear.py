"""Every regular expression that sees what customers send (cells, headers, remote names and
listings) runs in time linear in its input: near misses a megabyte long, and columns of
200,000 rows with one bad value, finish well within a bound that backtracking would blow.

Not covered here, on purpose: config.py's durations and known_hosts.py's host patterns (both
sides come from the operator's own files), and connector/testing (the test servers).
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType, ModuleType

import pytest
from structlog.testing import capture_logs

from connector import housekeeping, logs
from connector.csvrules import reader, records, values
from connector.csvrules.values import (
    Faults,
    check_column,
    json_members,
    timestamp_column,
    type_column,
)
from connector.selection import select
from connector.sources import ftp_listing
from connector.sources.base import RemoteFile
from tests.helpers import source_config

MB = 1 << 20  # the longest field the rules accept is 1 MiB
ROWS = 200_000
# CPU seconds, not wall seconds: other work on a busy machine stretches wall time but not
# the work done here. Linear work below takes 0.01-0.7 s; the backtracking these tests
# guard against took over 30 s for 26 rows, and hours for one long cell.
LIMIT = 1.5
HARD_STOP = 30  # wall seconds: a regression fails here rather than hanging the run


class _TookTooLong(Exception):
    pass


@contextmanager
def _untraced() -> Iterator[None]:
    """The block without the coverage tracer of `make test`, where one runs: the bound is
    on this code's time, and tracing multiplies that of Python code (selection's 0.7 s
    took 3.8 s of CPU under it)."""
    try:
        from coverage import Coverage
    except ImportError:  # (plain pytest: not installed, nothing to pause)
        yield
        return
    measuring = Coverage.current()
    if measuring is None:
        yield
        return
    measuring.stop()
    try:
        yield
    finally:
        with warnings.catch_warnings():  # (restarted, it finds the package imported: it is)
            warnings.filterwarnings("ignore", "Already imported a file that will be measured")
            measuring.start()


@contextmanager
def _bounded(what: str) -> Iterator[None]:
    """Fails when the block takes LIMIT CPU seconds or more (or HARD_STOP wall seconds:
    the regular-expression engine checks for signals, so a runaway match is stopped)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _TookTooLong(f"{what}: still running after {HARD_STOP} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, HARD_STOP)
    started = time.process_time()
    try:
        with _untraced():
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    spent = time.process_time() - started
    assert spent < LIMIT, f"{what}: {spent:.2f} s of CPU"


def _column(cells: list[str]) -> str:
    """Cells as the whole-column patterns see them: one a line."""
    return "\n".join(cells) + "\n"


def _with_bad(valid: Callable[[int], str], bad: str, at: float, rows: int = ROWS) -> list[str]:
    """``rows`` valid cells and one bad one at a fraction ``at`` of the way through."""
    cells = [valid(i) for i in range(rows)]
    cells.insert(int(at * rows), bad)
    return cells


def _ints(i: int) -> str:
    return str(i * 7919 - 10**8)


def _decimals(i: int) -> str:
    return f"{i * 7919}.{i % 97}"


def _emails(i: int) -> str:
    return f"u{i}@mail.example.org"


# Per pattern, texts built to make a backtracking engine retry: long runs its repeats can
# split in many ways, ended by a character that fails the match.
_CASES: dict[re.Pattern[str], list[Callable[[], str]]] = {
    values._INT: [lambda: "1" * MB + "x", lambda: "-" + "0" * MB],
    values._DECIMAL: [lambda: "1" * MB + "x", lambda: "1." + "1" * MB + "x", lambda: "1." * MB],
    values._INT_COLUMN: [
        lambda: _column(_with_bad(_ints, "x", 1.0)),
        lambda: _column(_with_bad(_ints, "1" * 19, 0.5)),
        lambda: _column(["1" * 18] * ROWS + ["1" * 19]),
    ],
    values._DECIMAL_COLUMN: [
        lambda: _column(_with_bad(_decimals, "1.x", 1.0)),
        lambda: _column(["9" * 299 + ".9"] * (ROWS // 10) + ["9" * 300 + ".x"]),
        lambda: _column(["1." + "1" * MB + "x"]),
    ],
    values._NUMBER_COLUMN: [
        lambda: _column(_with_bad(lambda i: _ints(i) if i % 2 else _decimals(i), "-", 1.0)),
        lambda: _column(["9" * 299 + ".9", "9" * 18] * (ROWS // 20) + ["9" * 300]),
    ],
    values._SHORT_NUMBER_COLUMN: [
        lambda: _column(_with_bad(_decimals, "1.12345", 1.0)),
        lambda: _column(["1" * 18, "1" * 8 + ".1234"] * (ROWS // 2) + ["1" * 9 + ".1"]),
    ],
    values._MAYBE_TYPED: [lambda: "x" * MB, lambda: "\nx" * (MB // 2)],
    values._EMAIL: [
        lambda: "a@" + ".a" * (MB // 2) + " ",
        lambda: "a@a" + "." * MB,
        lambda: "a" * MB + "@",
        lambda: "a@" * (MB // 2),
        lambda: "a@b" + ".b" * (MB // 2) + "@",
    ],
    values._PHONE: [lambda: "1" * MB],
    values._EXTERNAL_ID: [lambda: "a" * MB],
    values._LANGUAGE: [lambda: "a" * MB],
    values._STRING_COLUMN_CHECKS["email"]: [
        lambda: _column([_emails(i) for i in range(25)] + ["not-an-address"]),  # as reported
        lambda: _column(_with_bad(_emails, "not-an-address", 1.0)),
        lambda: _column(_with_bad(_emails, "a@b", 0.5)),
        lambda: _column([f"a@{'b.' * 50}c"] * (ROWS // 10) + ["a@b..."]),
    ],
    values._STRING_COLUMN_CHECKS["phone"]: [
        lambda: _column(_with_bad(lambda i: str(10**9 + i), "0123", 1.0))
    ],
    values._STRING_COLUMN_CHECKS["externalId"]: [
        lambda: _column(_with_bad(lambda i: f"ext-{i}/a_b.c", "a b", 1.0))
    ],
    values._STRING_COLUMN_CHECKS["language"]: [
        lambda: _column(_with_bad(lambda i: ("en", "fr")[i % 2], "EN", 1.0))
    ],
    values._ISO: [
        lambda: "2023-10-02T13:08:41." + "1" * MB + "x",
        lambda: "2023-10-02T13:08:41," + "1" * MB + "+0",
    ],
    values._SECONDS_COLUMN: [
        lambda: _column(_with_bad(lambda i: str(1_696_252_121 + i), "x", 1.0)),
        lambda: _column([str(1_696_252_121)] * ROWS + ["1" * 11]),
    ],
    values._DATE_FIRST: [lambda: "2023-10-02T" + "a" * MB + "\na"],
    values._ISO_LOCAL: [
        lambda: "2023-10-02T13:08:41." + "1" * MB + "x",
        lambda: "2023-10-02 13:08:41," + "1" * MB + "Z",
    ],
    values._COMMA_DECIMAL: [
        lambda: "1" * MB + ",x",
        lambda: "1," + "1" * MB + "x",
        lambda: "1," * MB,
    ],
    records._SURROGATE: [lambda: "a" * MB, lambda: "\ud7ff\ue000" * (MB // 2)],
    reader._LINE: [
        lambda: "a" * MB,
        lambda: "a\r" * (MB // 2),
        lambda: "\r\n" * (MB // 2) + "a" * MB,
        lambda: "\n" * MB,
    ],
    logs._CONTROL: [lambda: "a" * MB, lambda: "\x00" * MB],
    logs._CONTROL_BUT_NEWLINE: [lambda: "a" * MB, lambda: "\x00\n" * (MB // 2)],
    ftp_listing._TIME_VAL: [lambda: "2" * 14 + "." + "1" * MB + "x"],
    ftp_listing._MLSD_ENTRY: [
        lambda: "a=b;" * (MB // 4) + "x",
        lambda: "a=" * (MB // 2),
        lambda: "type=file;" + "=;" * (MB // 2) + "\r\n",
    ],
    ftp_listing._LS_LINE: [
        lambda: "-rw-r--r--" + " " * MB + "1" + " " * MB + "x",
        lambda: "-rw-r--r-- 1 a" + " " * MB + "b" + " " * MB + "1" + " " * MB + "x",
        lambda: "-rw-r--r-- 1 " + "1 " * MB + "Nov 14 22:13",
        lambda: "-" + "r" * MB + " x",
        lambda: "-rw-r--r-- 1 o g 12 Nov 14 22:13 " + "a" * MB + "\n",
    ],
    housekeeping._STAGED: [lambda: "a" * MB],
    housekeeping._ARCHIVING: [lambda: "." + "a" * 64 + "." + ".part" * (MB // 5) + "x"],
}
_MODULES: list[ModuleType] = [values, records, reader, ftp_listing, housekeeping, logs]
# How the code uses each pattern that it does not match whole (fullmatch): a search or a
# findall tries every starting point, so only a pattern written for that may be used so.
_USES: dict[re.Pattern[str], str] = {
    values._MAYBE_TYPED: "search",
    records._SURROGATE: "search",
    reader._LINE: "findall",
    logs._CONTROL: "sub",
    logs._CONTROL_BUT_NEWLINE: "sub",
}


def _patterns(module: ModuleType) -> set[re.Pattern[str]]:
    """The module's compiled patterns, those kept in a dict included."""
    found: set[re.Pattern[str]] = set()
    for value in vars(module).values():
        if isinstance(value, re.Pattern):
            found.add(value)
        elif isinstance(value, dict):
            found.update(v for v in value.values() if isinstance(v, re.Pattern))
    return found


def test_every_pattern_has_adversarial_cases() -> None:
    """A new regular expression in the modules that read customer text or remote listings
    must come with its adversarial inputs below."""
    everywhere = set().union(*map(_patterns, _MODULES))
    assert everywhere - set(_CASES) == set()


@pytest.mark.parametrize(
    ("pattern", "build"),
    [(pattern, build) for pattern, builds in _CASES.items() for build in builds],
)
def test_pattern_runs_in_linear_time(pattern: re.Pattern[str], build: Callable[[], str]) -> None:
    """Each pattern, used as the code uses it (searched or matched whole), fails or
    succeeds on its adversarial input within the bound."""
    text = build()
    use = _USES.get(pattern, "fullmatch")
    with _bounded(f"{pattern.pattern[:60]!r} over {len(text):,} characters"):
        if use == "sub":
            pattern.sub("?", text)
        else:
            getattr(pattern, use)(text)


# --- the same inputs through the functions that use the patterns ---------------------


def test_the_reported_address_column() -> None:
    """25 addresses and one that is not: the bad row is faulted at once."""
    cells = [_emails(i) for i in range(25)] + ["not-an-address"]
    faults: Faults = {}
    with _bounded("26 addresses"):
        check_column("email", cells, cells, faults)
    reason = 'email is not an address: "not-an-address" (expected local@domain.tld)'
    assert faults == {25: (reason, "not-an-address")}


@pytest.mark.parametrize("at", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(
    ("name", "valid", "bad"),
    [
        ("email", _emails, "not-an-address"),
        ("phone", lambda i: str(10**9 + i), "+32478112233"),
        ("externalId", lambda i: f"ext-{i}", "a b"),
        ("language", lambda i: ("en", "fr", "de")[i % 3], "eng"),
    ],
)
def test_reserved_columns_with_one_bad_value(
    name: str, valid: Callable[[int], str], bad: str, at: float
) -> None:
    """200,000 valid values and one bad one, anywhere: only that row is faulted, quickly."""
    cells = _with_bad(valid, bad, at)
    faults: Faults = {}
    with _bounded(f"{name} column"):
        check_column(name, cells, cells, faults)
    assert list(faults) == [int(at * ROWS)]


@pytest.mark.parametrize(
    "bad", ["x", "1" * 19, "9" * 300 + ".x", "1." + "1" * 1000 + "x", "-", "9" * 5000]
)
@pytest.mark.parametrize("valid", [_ints, _decimals])
def test_number_columns_with_one_odd_value(valid: Callable[[int], str], bad: str) -> None:
    """A number column with one odd cell falls back to typing cell by cell: still quick,
    and the odd cell typed as on its own. (Fewer rows: typing cell by cell is plain Python,
    its regular expressions are timed over 200,000 rows above.)"""
    cells = _with_bad(valid, bad, 1.0, ROWS // 4)
    with _bounded("type_column"):
        typed = type_column(cells)
    with _bounded("json_members"):
        members = json_members("p", cells)
    assert typed[-1] == values.type_cell(bad)
    assert members[-1] == ',"p":' + values.json_text(values.type_cell(bad))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    ["x", "9" * MB, "1" * 12, "2023-10-02T13:08:41." + "1" * MB + "x", "2023-10-02T" + "a" * MB],
)
def test_timestamp_column_with_one_bad_value(bad: str) -> None:
    """200,000 timestamps and one bad one: the bad row is faulted with a short reason."""
    cells = _with_bad(lambda i: str(1_696_252_121 + i), bad, 1.0)
    faults: Faults = {}
    with _bounded("timestamp_column"):
        timestamp_column(cells, faults)
    assert list(faults) == [ROWS]
    assert len(faults[ROWS]) < 200


@pytest.mark.parametrize(
    "cell",
    ["9" * MB, "9" * MB + ".5", "-" + "9" * MB + "x", "1." + "0" * MB, "a@" + ".a" * (MB // 2)],
)
def test_long_cells_are_typed_and_checked_quickly(cell: str) -> None:
    """A 1 MiB cell is typed and put through every reserved check within the bound."""
    with _bounded("a long cell"):
        typed = values.type_cell(cell)
        for name, check in values.RESERVED_CHECKS.items():
            check(cell if name in values.STRING_ATTRIBUTES else typed)  # type: ignore[arg-type]
        with contextlib.suppress(ValueError):
            values.parse_timestamp(cell)


def test_listing_lines_with_long_runs() -> None:
    """A server's `ls -l` lines, however long or odd, are read or skipped quickly."""
    now = datetime(2024, 6, 1, tzinfo=UTC)
    with _bounded("LIST lines"):
        for build in _CASES[ftp_listing._LS_LINE]:
            assert ftp_listing.parse_ls_line(build(), now) is None


def test_a_listed_size_of_thousands_of_digits_is_skipped() -> None:
    """A LIST line whose size has 5,000 digits is not a line we understand (int() would
    refuse it): skipped, the listing goes on."""
    now = datetime(2024, 6, 1, tzinfo=UTC)
    line = "-rw-r--r--   1 owner group   {} Nov 14 22:13 name.csv"
    assert ftp_listing.parse_ls_line(line.format("9" * 5000), now) is None
    assert ftp_listing.parse_ls_line(line.format("1234"), now) == RemoteFile(
        "name.csv", 1234, datetime(2023, 11, 14, 22, 13, tzinfo=UTC).timestamp()
    )


def test_remote_names_against_many_wildcards() -> None:
    """File-entry patterns with many wildcards, against long remote names (up to the
    255 bytes a name may have, and hostile ones past it): selection stays quick."""
    files = [{"kind": "events", "pattern": "*a*a*a*a*a*a*a*a*a*a*b", "event_name": "e"}]
    source = source_config("file:///inbox", files=files)
    names = ["a" * 255, "a" * 254 + "b", "a" * 100_000, "ba" * 127]
    files = [RemoteFile(name, 1, i) for i in range(50) for name in names]
    with _bounded("selection"), capture_logs():  # (the long name is warned of)
        chosen = select(files, source)
    assert [c.file.name for c in chosen] == ["a" * 254 + "b"] * 50
