"""The column-at-a-time typing must agree with the cell-by-cell rules, whatever the column."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.csvrules.values import (
    json_members,
    json_text,
    parse_timestamp,
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
        ("true", True), ("FaLsE", False), ("0", 0), ("-12", -12), ("12.50", 12.5),
        ("9223372036854775807", 9223372036854775807),
        ("9223372036854775808", "9223372036854775808"),
        ("-9223372036854775808", -9223372036854775808),
        ("007", "007"), ("+32478112233", "+32478112233"), ("1e3", "1e3"), ("1,5", "1,5"),
        (" 12", " 12"), ("NaN", "NaN"), ("null", "null"), ("[1,2]", "[1,2]"),
        ("١٢", "١٢"), ("", None),
    ],
)  # fmt: skip
def test_type_cell(text: str, expected: object) -> None:
    """CONTRACT §4 rule 5, value by value (ASCII digits only: Arabic-Indic stays text)."""
    assert type_cell(text) == expected
    assert type(type_cell(text)) is type(expected)


def test_timestamp_column_with_a_line_break_in_a_cell() -> None:
    """A cell "1\n2" is not two timestamps: it is rejected, its neighbours kept."""
    faults: dict[int, str] = {}
    assert timestamp_column(["5", "1\n2", ""], faults) == [5, -1, -1]
    assert list(faults) == [1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1696252121", 1696252121), ("1696252121.999", 1696252121), ("0", 0),
        ("4102444800", 4102444800), ("4102444800.5", 4102444800), ("-0.5", 0),
        ("2023-10-02T13:08:41Z", 1696252121), ("2023-10-02T15:08:41+02:00", 1696252121),
        ("2023-10-02T13:08:41.987Z", 1696252121), ("2023-10-02t13:08:41z", 1696252121),
    ],
)  # fmt: skip
def test_timestamps_accepted(text: str, expected: int) -> None:
    """Seconds (decimals truncated) and ISO 8601 with an offset, within 0..4102444800."""
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1696252121000", "milliseconds"), ("4102444801", "range"), ("-1", "range"),
        ("2023-10-02T13:08:41", "offset"), ("2023-10-02", "offset"), ("1e9", "neither"),
        ("2100-01-01T00:00:01Z", "range"), ("2023-13-02T13:08:41Z", "valid"),
        ("yesterday", "neither"),
    ],
)  # fmt: skip
def test_timestamps_rejected_with_a_reason(text: str, why: str) -> None:
    """Anything else is refused with a reason that says why."""
    with pytest.raises(ValueError, match=why):
        parse_timestamp(text)
