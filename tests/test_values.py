"""The column-at-a-time typing must agree with the cell-by-cell rules, whatever the column."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.csvrules.rules import MAX_IDENTIFIER, NO_TIMESTAMP
from connector.csvrules.values import (
    RESERVED_CHECKS,
    STRING_ATTRIBUTES,
    Faults,
    bound_identifiers,
    check_column,
    json_members,
    json_text,
    key_column,
    parse_timestamp,
    quoted,
    require_present,
    timestamp_column,
    type_cell,
    type_column,
)

numbers = st.one_of(
    st.integers(-(2**64), 2**64).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["0", "-0", "007", "1e3", "12.50", "0.00001", "-0.0", " 12", "1,5"]),
)
cells = st.one_of(
    numbers,
    st.sampled_from(["", "true", "FALSE", "True", "tRuE", "NaN", "null", "[1,2]", '{"a":1}']),
    st.text(max_size=12),
)
# Few distinct values make the "table" path; many make the regex paths.
columns = st.one_of(
    st.lists(cells, max_size=60),
    st.lists(st.sampled_from(["1", "2", "", "x"]), min_size=8, max_size=60),
    st.lists(numbers, max_size=60),
    st.lists(st.integers(-(10**12), 10**12).map(str), max_size=60),
    # quoted line breaks inside cells must not pass for several cells of a number column
    st.lists(st.one_of(numbers, st.sampled_from(["\n", "1\n2", "\r\n", "7\n"])), max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(columns)
def test_type_column_agrees_with_type_cell(column: list[str]) -> None:
    """Every bulk path of type_column gives exactly what type_cell gives per cell."""
    expected = [type_cell(c) for c in column]
    got = type_column(column)
    assert [(type(v), v) for v in got] == [(type(v), v) for v in expected]


@settings(max_examples=300, deadline=None)
@given(columns)
def test_json_members_agree_with_type_cell(column: list[str]) -> None:
    """Every bulk path of json_members renders the value type_cell gives, as JSON."""
    members = json_members("p", column)
    for cell, member in zip(column, members, strict=True):
        value = type_cell(cell)
        if value is None:
            assert member == ""
        else:
            assert json.loads("{" + member[1:] + "}") == {"p": value}
            assert member == ',"p":' + json_text(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("FaLsE", False),
        ("0", 0),
        ("-12", -12),
        ("12.50", 12.5),
        ("9223372036854775807", 9223372036854775807),
        ("9223372036854775808", "9223372036854775808"),
        ("-9223372036854775808", -9223372036854775808),
        ("007", "007"),
        ("+32478112233", "+32478112233"),
        ("1e3", "1e3"),
        ("1,5", "1,5"),
        (" 12", " 12"),
        ("NaN", "NaN"),
        ("null", "null"),
        ("[1,2]", "[1,2]"),
        ("١٢", "١٢"),
        ("", None),
    ],
)
def test_type_cell(text: str, expected: object) -> None:
    """CSV rules §5, value by value (ASCII digits only: Arabic-Indic stays text)."""
    assert type_cell(text) == expected
    assert type(type_cell(text)) is type(expected)


def test_timestamp_column_with_a_line_break_in_a_cell() -> None:
    """A cell "1\n2" is not two timestamps: it is rejected, its neighbours kept."""
    faults: Faults = {}
    assert timestamp_column(["5", "1\n2", ""], faults) == [5, -1, -1]
    assert list(faults) == [1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1696252121", 1696252121),
        ("1696252121.999", 1696252121),
        ("0", 0),
        ("4102444800", 4102444800),
        ("4102444800.5", 4102444800),
        ("-0.5", 0),
        ("2023-10-02T13:08:41Z", 1696252121),
        ("2023-10-02T15:08:41+02:00", 1696252121),
        ("2023-10-02T13:08:41.987Z", 1696252121),
        ("2023-10-02t13:08:41z", 1696252121),
    ],
)
def test_timestamps_accepted(text: str, expected: int) -> None:
    """Seconds (decimals truncated) and ISO 8601 with an offset, within 0..4102444800."""
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1696252121000", "milliseconds"),
        ("4102444801", "range"),
        ("-1", "range"),
        ("2023-10-02T13:08:41", "offset"),
        ("2023-10-02", "offset"),
        ("1e9", "neither"),
        ("2100-01-01T00:00:01Z", "range"),
        ("2023-13-02T13:08:41Z", "valid"),
        ("yesterday", "neither"),
    ],
)
def test_timestamps_rejected_with_a_reason(text: str, why: str) -> None:
    """Anything else is refused with a reason that says why."""
    with pytest.raises(ValueError, match=why):
        parse_timestamp(text)


# --- numbers past what int() and a float hold ----------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "9" * 20,
        "-" + "9" * 20,
        "1" + "0" * 19,
        "9" * 4300,
        "9" * 4301,
        "-" + "9" * 5000,
        "1" * 1_048_576,
    ],
)
def test_integers_past_64_bits_stay_strings_at_any_length(text: str) -> None:
    """An integer outside the signed 64-bit range is a string, even past int()'s 4,300
    digits, on the per-cell path and the whole-column ones."""
    assert type_cell(text) == text
    column = [text, "1", "2", "3"]  # distinct cells: the regular-expression paths
    assert type_column(column) == [text, 1, 2, 3]
    assert json_members("n", column)[0] == ',"n":' + json.dumps(text)
    assert type_column([text] * 8) == [text] * 8  # few distinct values: the table path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9" * 308 + ".5", float("1" + "0" * 308)),  # still below a float's ~1.8e308
        ("9" * 309 + ".5", "9" * 309 + ".5"),
        ("-" + "9" * 400 + ".5", "-" + "9" * 400 + ".5"),
        ("1." + "5" * 5000, 1.5555555555555556),
        ("0." + "0" * 400 + "1", 0.0),  # too small for a float: its nearest one
    ],
)
def test_decimals_past_a_float_stay_strings(text: str, expected: object) -> None:
    """A decimal is the nearest 64-bit float, unless that would be infinite (JSON holds no
    infinity): then it stays a string."""
    assert type_cell(text) == expected
    assert type(type_cell(text)) is type(expected)
    column = [text, "1.5", "2.5", "3.5"]
    assert type_column(column)[0] == expected
    assert json.loads("{" + json_members("n", column)[0][1:] + "}") == {"n": expected}


@pytest.mark.parametrize("text", ["9" * 5000, "9" * 25, "-" + "9" * 5000, "9" * 5000 + ".5"])
def test_huge_timestamps_are_out_of_range_in_our_words(text: str) -> None:
    """A timestamp of any number of digits is refused as out of range, the cell cut short
    in the reason, on the per-cell path and the whole-column one."""
    with pytest.raises(
        ValueError,
        match=r"^timestamp [-0-9.]+(… \([0-9,]+ characters\))? is out of range 0\.\.4102444800$",
    ):
        parse_timestamp(text)
    faults: Faults = {}
    assert timestamp_column(["5", text], faults) == [5, -1]
    assert list(faults) == [1]
    assert len(faults[1][0]) < 120 and faults[1][1] == text


def test_a_huge_created_at_is_refused_with_its_reason() -> None:
    """createdAt of 5,000 digits is a string, so not an integer: the row is rejected."""
    faults: Faults = {}
    cells = ["1", "9" * 5000]
    check_column("createdAt", type_column(cells), cells, faults)
    assert faults == {
        1: (
            'createdAt must be an integer from 0 to 4102444800: "' + "9" * 40 + "… (5,000"
            ' characters)"',
            cells[1],
        )
    }


def test_a_long_cell_is_cut_short_in_its_reason() -> None:
    """A reason quotes at most the first 40 characters of a cell, and says how long it was."""
    with pytest.raises(ValueError, match="neither") as raised:
        parse_timestamp("x" * 1_048_576)
    assert str(raised.value) == (
        "timestamp '" + "x" * 40 + "… (1,048,576 characters)' is neither Unix seconds nor an"
        " ISO 8601 date-time with offset"
    )


@pytest.mark.parametrize("char", ["i", "é", "€", "\U0001d11e"])  # 1 to 4 bytes of UTF-8
def test_an_identifier_is_bounded_in_characters(char: str) -> None:
    """An identifier of 512 characters is kept, whatever their bytes; 513 rejects its row
    with a reason that does not quote it; an empty one keeps its own reason."""
    assert MAX_IDENTIFIER == 512
    column = ["u1", char * 512, char * 513, "", "u5", char * 100_000]
    faults: Faults = {}
    require_present("email (the identifier)", column, faults)
    bound_identifiers("email (the identifier)", column, faults)
    assert faults == {
        2: ("email (the identifier) longer than 512 characters", column[2]),
        3: ("email (the identifier) is empty", ""),
        5: ("email (the identifier) longer than 512 characters", column[5]),
    }
    assert len((char * 512).encode()) <= 2048  # under PostgreSQL's ~2,700 bytes per entry


def test_identifiers_within_the_bound_give_no_fault() -> None:
    """No identifier over 512 characters, no fault (the column's lengths, in one pass)."""
    faults: Faults = {}
    bound_identifiers("identifier", [], faults)
    bound_identifiers("identifier", ["x" * 512] * 1000, faults)
    assert faults == {}


# --- the address check is the rules' pattern, without its backtracking ------------

# CSV rules §6 as the rules' words put it: it may split the domain at any of its dots, which
# is what made a failed match slow; fine as a reference on short texts.
_RULES_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@.][^\s@]*")


def test_email_check_accepts_exactly_the_contract_addresses() -> None:
    """Every text of up to 7 characters over the characters that matter (a letter, '.',
    '@', a space) passes the address check exactly when the contract's pattern matches."""
    check = RESERVED_CHECKS["email"]
    for length in range(8):
        for letters in itertools.product("a.@ ", repeat=length):
            text = "".join(letters)
            assert (check(text) is None) == bool(_RULES_EMAIL.fullmatch(text)), text


# --- any cell in any role: the rules' type or a reason, never an exception ----------------

# Lengths at the edges: a fast path's limit (18 and 300 digits), 64 bits (19-20), a
# float's range (309 digits) and int()'s 4,300 digits.
_EDGE_LENGTHS = [1, 2, 10, 11, 13, 14, 18, 19, 20, 21, 300, 301, 308, 309, 310, 4300, 4301, 5000]
digit_runs = st.builds(
    lambda sign, first, length, fill, fraction: sign + first + fill * (length - 1) + fraction,
    st.sampled_from(["", "-", "+", "0"]),
    st.sampled_from("0123456789"),
    st.sampled_from(_EDGE_LENGTHS),
    st.sampled_from("09"),
    st.sampled_from(["", ".5", ".0", "." + "9" * 400, ".", ".x", "e3", " "]),
)
# Near misses of the reserved attributes' shapes: addresses, phones, ids, languages.
shape_soup = st.lists(
    st.sampled_from(["a", "Z", "@", ".", "..", " ", "-", "_", "/", "0", "1", "9", "+", "é", "\t"]),
    max_size=70,
).map("".join)
long_near_misses = st.builds(
    lambda head, unit, count, tail: head + unit * count + tail,
    st.sampled_from(["", "a@", "a@b", "1", "2023-10-02T13:08:41", "-"]),
    st.sampled_from([".a", "a.", ".", "9", "a", "@"]),
    st.sampled_from([63, 64, 65, 1000, 30_000]),
    st.sampled_from(["", " ", "@", ".", "x", "Z", "\n"]),
)
iso_like = st.builds(
    "{}-{}-{}{}{}:{}{}{}{}".format,
    st.sampled_from(["0000", "0001", "1969", "1970", "2023", "2100", "9999"]),
    st.sampled_from(["00", "01", "02", "12", "13"]),
    st.sampled_from(["00", "01", "29", "31", "32"]),
    st.sampled_from(["T", "t", " ", ""]),
    st.sampled_from(["00", "13", "23", "24"]),
    st.sampled_from(["00", "08", "59", "60"]),
    st.sampled_from(["", ":00", ":41", ":60"]),
    st.sampled_from(["", ".5", ",987", ".1234567", "." + "9" * 5000]),
    st.sampled_from(["Z", "z", "", "+02:00", "+0200", "+02", "-23:59", "+24:00", "+99:99", "x"]),
)
hostile_cells = st.one_of(
    cells,
    digit_runs,
    shape_soup,
    long_near_misses,
    iso_like,
    st.sampled_from(
        [
            str(2**63 - 1),
            str(2**63),
            str(-(2**63)),
            str(-(2**63) - 1),
            "4102444800",
            "4102444801",
            "4102444800999",
            "4102444801000",
            "-0",
            "-0.0",
            "1e9",
        ]
    ),
    st.text(),
)
hostile_columns = st.one_of(
    st.lists(hostile_cells, max_size=30),
    # one odd cell among regular ones: the whole-column paths must fall back, not fail
    st.tuples(
        st.lists(st.sampled_from(["1", "22", "1696252121", "u@a.example", "en"]), max_size=30),
        hostile_cells,
        st.integers(0, 30),
    ).map(lambda t: [*t[0][: t[2]], t[1], *t[0][t[2] :]]),
)


def _spec_type(text: str) -> object:
    """CSV rules §5 for one cell, from the rule's words (a reference, not the code)."""
    if text == "":
        return None
    if text.isascii() and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        fits = len(text.lstrip("-")) <= 19 and -(2**63) <= int(text) < 2**63
        return int(text) if fits else text
    if re.fullmatch(r"-?(0|[1-9][0-9]*)\.[0-9]+", text):
        return float(text) if math.isfinite(float(text)) else text
    return text


def _no_constants(name: str) -> object:
    raise AssertionError(f"not JSON: {name}")


@settings(max_examples=300, deadline=None)
@given(hostile_columns)
def test_any_data_column_is_typed_as_the_rules_say(column: list[str]) -> None:
    """Any cells as a data property or attribute get the rule's type, on every path: the
    whole-column typing, its JSON form, and the per-cell typing."""
    expected = [(type(v), v) for v in map(_spec_type, column)]
    assert [(type(v), v) for v in map(type_cell, column)] == expected
    assert [(type(v), v) for v in type_column(column)] == expected
    for cell, member in zip(column, json_members("p", column), strict=True):
        value = _spec_type(cell)
        if value is None:
            assert member == ""
        else:
            parsed = json.loads("{" + member[1:] + "}", parse_constant=_no_constants)
            assert (type(parsed["p"]), parsed["p"]) == (type(value), value)


@settings(max_examples=200, deadline=None)
@given(hostile_columns, st.sampled_from(sorted(RESERVED_CHECKS)))
def test_any_reserved_column_is_checked_as_cell_by_cell(column: list[str], name: str) -> None:
    """Any cells as a reserved attribute are faulted exactly where the per-cell check
    faults them, whichever whole-column path ran; a bad value is never let through."""
    values = [c or None for c in column] if name in STRING_ATTRIBUTES else type_column(column)
    check = RESERVED_CHECKS[name]
    expected = {
        i: (str(check(v)).replace("{value}", quoted(column[i])), column[i])
        for i, v in enumerate(values)
        if v is not None and check(v)
    }
    faults: Faults = {}
    check_column(name, values, column, faults)
    assert faults == expected
    if name == "createdAt":  # (the contract's words, besides the per-cell check)
        for row, value in enumerate(values):
            if value is not None and row not in faults:
                assert type(value) is int and 0 <= int(value) <= 4_102_444_800


@settings(max_examples=200, deadline=None)
@given(hostile_columns)
def test_any_timestamp_column_is_parsed_as_cell_by_cell(column: list[str]) -> None:
    """Any cells as timestamps give, on the whole-column path, the per-cell result: seconds
    within range, or a short reason in our words."""
    expected_faults: Faults = {}
    expected: list[int] = []
    for row, cell in enumerate(column):
        try:
            expected.append(parse_timestamp(cell) if cell else NO_TIMESTAMP)
        except ValueError as exc:
            expected_faults[row] = (str(exc), cell)
            expected.append(NO_TIMESTAMP)
    faults: Faults = {}
    assert timestamp_column(column, faults) == expected
    assert faults == expected_faults
    assert all(0 <= s <= 4_102_444_800 for s in expected if s != NO_TIMESTAMP)
    for row, (reason, _) in faults.items():
        # short: 40 characters quoted, each at most 10 once escaped (\U0001d11e), + words
        assert reason.startswith("timestamp ") and len(reason) < 500, reason
        whole = column[row].partition(".")[0]
        if re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?", column[row]) and len(whole) > 11:
            assert "out of range" in reason


# Identifiers and keys about their bounds, in characters of one to four bytes of UTF-8.
bounded_cells = st.builds(
    lambda char, length: char * length,
    st.sampled_from(["k", " ", "é", "€", "\U0001d11e"]),
    st.sampled_from([1, 127, 128, 129, 511, 512, 513, 3000]),
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(hostile_columns, st.lists(st.one_of(hostile_cells, bounded_cells), max_size=30)))
def test_any_identifier_or_key_column_is_kept_or_faulted(column: list[str]) -> None:
    """Identifiers are refused only when empty or blank, or past 512 characters (empty
    first), keys only past 128 characters; both are kept verbatim."""
    faults: Faults = {}
    require_present("identifier", column, faults)
    assert set(faults) == {i for i, c in enumerate(column) if c.strip() == ""}
    bound_identifiers("identifier", column, faults)
    assert faults == {
        i: (
            "identifier is empty" if c.strip() == "" else "identifier longer than 512 characters",
            c,
        )
        for i, c in enumerate(column)
        if c.strip() == "" or len(c) > 512
    }
    faults.clear()
    assert list(key_column(column, faults)) == column
    assert set(faults) == {i for i, c in enumerate(column) if len(c) > 128}
