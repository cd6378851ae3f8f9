"""Typing and checking of cell values (CSV rules §5, §6 and §8), one column at a time.

Work is done per column rather than per cell because columns are regular: a column of
booleans or plan names has few distinct values (typed once each), and a column of numbers
is recognised by one regular-expression pass over its joined text. Only irregular columns
fall back to typing cell by cell, with the same function, so every path gives the same answer.

Every regular expression here sees customer text, so each is written to match a text in one
way only. A pattern with several ways to match the same text (a domain that may be split at
any of its dots) makes a failed match retry every combination: quadratic time in one cell,
exponential over a column. Numbers are converted only once their length shows they fit
(``int()`` refuses more than 4,300 digits).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from json.encoder import encode_basestring as encode_string  # C: a str as a JSON string

from connector.csvrules.rules import MAX_IDENTIFIER, MAX_KEY, MAX_TIMESTAMP, NO_TIMESTAMP

Value = str | int | float | bool
# Why a row is rejected, and the cell (or line) that made it so: index in the batch → fault.
Fault = tuple[str, str]
Faults = dict[int, Fault]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A sign and 19 digits at most: a longer integer is out of the 64-bit range whatever its digits.
_INT64_CHARS = 20
# [0-9], not \d: only ASCII digits are numbers (\d would accept Arabic-Indic digits).
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\.[0-9]+")
# Whole-column recognisers over _lines(cells); an empty line is an empty cell.
# Up to 18 digits an integer is always within 64 bits; longer ones take the exact path.
_INT_COLUMN = re.compile(r"(?:(?:0|-?[1-9][0-9]{0,17})?\n)*")
# Up to 300 integer digits a decimal is always a finite float.
_DECIMAL_COLUMN = re.compile(r"(?:(?:-?(?:0|[1-9][0-9]{0,299})\.[0-9]+)?\n)*")
# Integers and decimals mixed (e.g. prices written "12" and "12.50").
_NUMBER_COLUMN = re.compile(r"(?:(?:0|-?[1-9][0-9]{0,17}|-?(?:0|[1-9][0-9]{0,299})\.[0-9]+)?\n)*")
# Numbers whose text is already what repr(float) prints, a trailing zero aside: at most 12
# significant digits, none below 1e-4 (repr would switch to "1e-05").
_SHORT_NUMBER_COLUMN = re.compile(
    r"(?:(?:0|-?[1-9][0-9]{0,17}|-?(?:0|[1-9][0-9]{0,7})\.[0-9]{1,4})?\n)*"
)
# A cell that could be typed at all starts with a digit, '-', t/T or f/F.
_MAYBE_TYPED = re.compile(r"^[-0-9tTfF]", re.MULTILINE)
_TYPED_START = frozenset("-0123456789tTfF")
_BOOLS = {"true": True, "false": False}
_LOW_CARDINALITY = 4  # type distinct values once when each repeats this often on average


def _lines(cells: Iterable[str]) -> str | None:
    """The cells one per line, for the whole-column patterns; None when a cell holds a line
    break itself (a quoted one), which would pass for several cells."""
    cells = list(cells)
    text = "\n".join(cells)
    return None if text.count("\n") != max(0, len(cells) - 1) else text + "\n"


def type_cell(text: str) -> Value | None:
    """One cell → its typed value; ``None`` for an empty cell (the property is absent)."""
    if not text:
        return None
    if len(text) <= 5:
        flag = _BOOLS.get(text.lower())
        if flag is not None:
            return flag
    if len(text) <= _INT64_CHARS and _INT.fullmatch(text):
        number = int(text)
        return number if INT64_MIN <= number <= INT64_MAX else text
    if _DECIMAL.fullmatch(text):
        # The nearest 64-bit float (float() reads any length in linear time; a decimal too
        # small for a float reads as 0.0). One too large for it would be inf, which JSON
        # cannot hold: such a decimal stays a string, as an integer out of range does.
        real = float(text)
        return real if math.isfinite(real) else text
    return text


def _classify(cells: Sequence[str]) -> tuple[str, set[str]]:
    """How a column can be typed in bulk: ``table`` (few distinct values), ``text`` (no cell
    could be typed, empty cells aside), ``int``, ``decimal``, ``number`` (both; empty cells
    allowed) or ``mixed`` (cell by cell)."""
    distinct = set(cells)
    if len(distinct) * _LOW_CARDINALITY <= len(cells):
        return "table", distinct
    text = _lines(distinct)
    if text is None:
        return "mixed", distinct
    if _MAYBE_TYPED.search(text) is None:
        return "text", distinct
    if _INT_COLUMN.fullmatch(text):
        return "int", distinct
    if _DECIMAL_COLUMN.fullmatch(text):
        return "decimal", distinct
    if _NUMBER_COLUMN.fullmatch(text):
        return "number", distinct
    return "mixed", distinct


# A decimal written with a comma ("12,50"): with a source's `decimal = ","`, read as "12.50".
_COMMA_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*),[0-9]+")


def with_decimal_points(cells: Sequence[str]) -> Sequence[str]:
    """``cells`` with each decimal written with a comma written with a point instead; the
    column itself when it holds none (one pass over its text)."""
    if not any("," in c for c in cells):
        return cells
    return [c.replace(",", ".") if "," in c and _COMMA_DECIMAL.fullmatch(c) else c for c in cells]


def type_column(cells: Sequence[str]) -> list[Value | None]:
    """``type_cell`` over a column, fast for the regular columns real files have."""
    mode, distinct = _classify(cells)
    if mode == "table":
        table = {cell: type_cell(cell) for cell in distinct}
        return list(map(table.__getitem__, cells))
    if mode == "text":
        return [c or None for c in cells]
    if mode == "int":
        return [int(c) if c else None for c in cells]
    if mode == "decimal":
        return [float(c) if c else None for c in cells]
    if mode == "number":
        return [(float(c) if "." in c else int(c)) if c else None for c in cells]
    return list(map(type_cell, cells))


def json_text(value: Value) -> str:
    """A typed value as JSON text (``repr`` of a finite float is valid JSON)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_string(value)
    return repr(value)


def json_members(name: str, cells: Sequence[str]) -> list[str]:
    """Per cell, ``,"name":<typed value as JSON>``, or ``""`` for an empty cell.

    Rows are then built as ``"{" + "".join(members)[1:] + "}"`` with no per-value Python
    objects, which is what makes events files fast: the leading comma lets empty cells
    vanish in the join."""
    prefix = "," + encode_string(name) + ":"
    mode, distinct = _classify(cells)
    if mode == "table":
        table = {c: "" if c == "" else prefix + json_text(type_cell(c)) for c in distinct}  # type: ignore[arg-type]
        return list(map(table.__getitem__, cells))
    if mode == "text":
        if "" in distinct:
            return [prefix + encode_string(c) if c else "" for c in cells]
        return list(map(prefix.__add__, map(encode_string, cells)))
    if mode == "int":  # the cell's own text is the canonical JSON (no "-0": see the regex)
        return [prefix + c if c else "" for c in cells]
    if mode in ("decimal", "number"):
        if _SHORT_NUMBER_COLUMN.fullmatch(_lines(distinct) or "x"):
            # their text is canonical JSON unless a decimal ends in 0 ("12.50" → 12.5)
            return [
                prefix + (repr(float(c)) if c[-1] == "0" and "." in c else c) if c else ""
                for c in cells
            ]
        return [(prefix + (repr(float(c)) if "." in c else c)) if c else "" for c in cells]
    # mixed: type the distinct cells that could be typed; encode the others as strings
    table = {c: prefix + json_text(type_cell(c)) for c in distinct if c[:1] in _TYPED_START}  # type: ignore[arg-type]
    table[""] = ""
    return [table[c] if c in table else prefix + encode_string(c) for c in cells]


# --- reserved contact attributes (rule 6) -------------------------------------------

# local@domain, the domain holding a dot followed by a character other than a dot, after
# its first character. The plain form, `[^\s@]+\.[^\s@.][^\s@]*`, could put that dot at any
# of several dots (backtracking tries them all); here it is the first such dot, one way only.
_EMAIL = re.compile(r"[^\s@]+@[^\s@][^\s@.]*\.+[^\s@.][^\s@]*")
_PHONE = re.compile(r"[1-9][0-9]{5,14}")
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9_\-./]{1,64}")
_LANGUAGE = re.compile(r"[a-z]{2}")

# Reserved attributes that keep their text: typing must not turn a phone into a number.
STRING_ATTRIBUTES = frozenset({"email", "phone", "externalId"})


def _check_email(value: Value) -> str | None:
    ok = isinstance(value, str) and _EMAIL.fullmatch(value)
    return None if ok else "email is not an address: {value} (expected local@domain.tld)"


def _check_phone(value: Value) -> str | None:
    ok = isinstance(value, str) and _PHONE.fullmatch(value)
    return None if ok else "phone must be 6 to 15 digits, no '+', not starting with 0: {value}"


def _check_external_id(value: Value) -> str | None:
    ok = isinstance(value, str) and _EXTERNAL_ID.fullmatch(value)
    return None if ok else "externalId must be at most 64 characters of A-Za-z0-9_-./: {value}"


def _check_bool(name: str) -> Callable[[Value], str | None]:
    def check(value: Value) -> str | None:
        return None if isinstance(value, bool) else f"{name} must be true or false: {{value}}"

    return check


def _check_language(value: Value) -> str | None:
    ok = isinstance(value, str) and _LANGUAGE.fullmatch(value)
    return None if ok else "language must be two lowercase letters (ISO 639-1): {value}"


def _check_created_at(value: Value) -> str | None:
    ok = type(value) is int and 0 <= value <= MAX_TIMESTAMP
    return None if ok else f"createdAt must be an integer from 0 to {MAX_TIMESTAMP}: {{value}}"


# Each check's reason has the place of the cell, "{value}", filled in by ``check_column``.
RESERVED_CHECKS: dict[str, Callable[[Value], str | None]] = {
    "email": _check_email,
    "phone": _check_phone,
    "externalId": _check_external_id,
    "unsubscribed": _check_bool("unsubscribed"),
    "smsCapable": _check_bool("smsCapable"),
    "language": _check_language,
    "createdAt": _check_created_at,
}


# Whole-column forms of the string checks, for the common all-valid column; "\n" never
# matches inside them, so a multi-line cell cannot pass as several valid lines, and each
# line matches in one way only, so a failed match takes time linear in the column.
_STRING_COLUMN_CHECKS = {
    name: re.compile(f"(?:(?:{pattern.pattern})?\n)*")
    for name, pattern in (
        ("email", _EMAIL),
        ("phone", _PHONE),
        ("externalId", _EXTERNAL_ID),
        ("language", _LANGUAGE),
    )
}


def require_present(what: str, cells: Sequence[str], faults: Faults) -> None:
    """An empty or whitespace-only cell rejects its row (identifiers, event names)."""
    if "" in cells or any(map(str.isspace, cells)):
        for row, cell in enumerate(cells):
            if not cell or cell.isspace():
                faults.setdefault(row, (f"{what} is empty", cell))


def bound_identifiers(what: str, cells: Sequence[str], faults: Faults) -> None:
    """An identifier over MAX_IDENTIFIER characters rejects its row (rule 11.4: every store
    can index those within it); one pass over the lengths when none is."""
    if max(map(len, cells), default=0) > MAX_IDENTIFIER:
        for row, cell in enumerate(cells):
            if len(cell) > MAX_IDENTIFIER:
                faults.setdefault(row, (f"{what} longer than {MAX_IDENTIFIER} characters", cell))


def check_column(
    name: str, values: Sequence[Value | None], cells: Sequence[str], faults: Faults
) -> None:
    """Reserved-attribute checks over a column (``values``, typed from ``cells``); ``None``
    and "" are absent, not checked. A reason quotes the cell as written."""
    check = RESERVED_CHECKS.get(name)
    if check is None:
        return
    whole = _STRING_COLUMN_CHECKS.get(name)
    if whole is not None and all(isinstance(v, str) or v is None for v in values):
        text = _lines([v or "" for v in values])  # type: ignore[misc]
        if text is not None and whole.fullmatch(text):
            return
    for row, value in enumerate(values):
        if value is not None and value != "":
            reason = check(value)
            if reason is not None:
                cell = cells[row]
                faults.setdefault(row, (reason.replace("{value}", quoted(cell)), cell))


# --- event fields (rule 8) -----------------------------------------------------------

_ISO = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)",
    re.IGNORECASE,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Plain integer seconds (or empty), ten digits at most: the common case, checked in one pass.
_SECONDS_COLUMN = re.compile(r"(?:(?:0|[1-9][0-9]{0,9})?\n)*")
_DATE_FIRST = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ].*)?")
# An ISO 8601 date-time without offset (what a source's `timezone` reads), "T" or a space
# between date and time.
_ISO_LOCAL = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?",
    re.IGNORECASE,
)
_SHOWN = 40  # characters of a cell quoted in a reason


def _shown(text: str) -> str:
    """A cell as quoted in a reason: a long one (a megabyte, say) cut short."""
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}… ({len(text):,} characters)"


def quoted(text: str) -> str:
    """A cell in a reason: in double quotes, escaped as in JSON (a line break, a quote and
    an invisible character are seen for what they are), a long one cut short."""
    return encode_string(_shown(text))


@dataclass(frozen=True)
class LocalTimes:
    """How a source reads times written without a UTC offset (off by default: such a time
    rejects its row): ISO 8601 date-times without offset and ``formats`` (``strptime``'s)
    are read in ``zone``; a format with ``%z`` carries its own offset. A time that occurs
    twice (the hour clocks go back) is the first; one that never occurs (the hour they go
    forward) is read with the offset before the change."""

    zone: tzinfo | None
    formats: tuple[str, ...] = ()
    decimal_comma: bool = False  # Unix seconds may be written "1696252121,5"

    def read(self, text: str) -> datetime | None:
        """``text`` as a moment, or None when it is not one of these forms."""
        if self.zone is not None and _ISO_LOCAL.fullmatch(text):
            try:
                return datetime.fromisoformat(text.upper().replace(",", ".")).replace(
                    tzinfo=self.zone
                )
            except ValueError:
                return None
        for form in self.formats:
            try:
                moment = datetime.strptime(text, form)
            except ValueError:
                continue
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=self.zone)
        return None


def _epoch_seconds(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(seconds=1)


def _seconds(moment: datetime, text: str) -> int:
    seconds = _epoch_seconds(moment)
    if 0 <= seconds <= MAX_TIMESTAMP:
        return seconds
    raise ValueError(f"timestamp {_shown(text)!r} is out of range 0..{MAX_TIMESTAMP}")


def parse_timestamp(text: str, local: LocalTimes | None = None) -> int:
    """A timestamp cell → Unix seconds; ValueError says why it is not one. ``local``: how
    the source reads times without an offset, if it does; its formats come first (a
    format of digits alone, such as %Y%m%d, would otherwise read as Unix seconds), but a
    moment they read out of range gives way to the other forms (strptime takes "1696..."
    as the year 1696)."""
    formatted = local.read(text) if local is not None and local.formats else None
    if formatted is not None and 0 <= _epoch_seconds(formatted) <= MAX_TIMESTAMP:
        return _epoch_seconds(formatted)
    number = text
    if local is not None and local.decimal_comma and _COMMA_DECIMAL.fullmatch(text):
        number = text.replace(",", ".")
    if _INT.fullmatch(number) or _DECIMAL.fullmatch(number):
        whole = number.partition(".")[0]  # truncation, exact for any length
        # (not converted past 64 bits: out of range whatever the digits)
        seconds = int(whole) if len(whole) <= _INT64_CHARS else INT64_MAX
        if 0 <= seconds <= MAX_TIMESTAMP:
            return seconds
        if seconds > MAX_TIMESTAMP and seconds // 1000 <= MAX_TIMESTAMP:
            raise ValueError(f"timestamp {_shown(text)} is out of range; milliseconds? use seconds")
        raise ValueError(f"timestamp {_shown(text)} is out of range 0..{MAX_TIMESTAMP}")
    if _ISO.fullmatch(text):
        try:
            moment = datetime.fromisoformat(text.upper().replace(",", ".").replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"timestamp {_shown(text)!r} is not a valid date-time") from None
        return _seconds(moment, text)
    local_moment = local.read(text) if local is not None and not local.formats else None
    if local_moment is not None:
        return _seconds(local_moment, text)
    if formatted is not None:
        return _seconds(formatted, text)  # (out of range: said so)
    if local is not None and local.formats:
        raise ValueError(
            f"timestamp {_shown(text)!r} is neither Unix seconds, an ISO 8601 date-time nor"
            f" of the source's timestamp_formats"
        )
    if _DATE_FIRST.fullmatch(text):
        raise ValueError(
            f"timestamp {_shown(text)!r} needs a time with a UTC offset (e.g. Z or +02:00)"
        )
    raise ValueError(
        f"timestamp {_shown(text)!r} is neither Unix seconds nor an ISO 8601 date-time with offset"
    )


def timestamp_column(
    cells: Sequence[str], faults: Faults, local: LocalTimes | None = None
) -> list[int]:
    """Timestamps of a column, NO_TIMESTAMP where absent (the processing time applies)."""
    if (local is None or not local.formats) and _SECONDS_COLUMN.fullmatch(_lines(cells) or "x"):
        fast = [int(c) if c else NO_TIMESTAMP for c in cells]
        if max(fast, default=0) <= MAX_TIMESTAMP:
            return fast
    out: list[int] = []
    for row, cell in enumerate(cells):
        if not cell:
            out.append(NO_TIMESTAMP)
            continue
        try:
            out.append(parse_timestamp(cell, local))
        except ValueError as exc:
            faults.setdefault(row, (str(exc), cell))
            out.append(NO_TIMESTAMP)
    return out


def key_column(cells: Sequence[str], faults: Faults) -> Sequence[str]:
    """idempotencyKey cells: verbatim ("" means none); over 128 characters rejects the row."""
    if max(map(len, cells), default=0) > MAX_KEY:
        for row, cell in enumerate(cells):
            if len(cell) > MAX_KEY:
                faults.setdefault(row, (f"idempotencyKey longer than {MAX_KEY} characters", cell))
    return cells
