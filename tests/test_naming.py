"""Remote names: which are refused and why, how one is shown on a terminal, and how a moved
file's name avoids a clash within the file-name limit."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.sources.naming import MAX_NAME_BYTES, clash_free_name, hostile, shown, temporary

NOW = datetime(2026, 11, 28, 10, 15, 0, tzinfo=UTC)
STAMP = ".20261128T101500Z"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("..", "a path traversal"),
        ("../etc/passwd", "a path traversal"),
        ("a/b.csv", "a path, not a name"),
        ("a\\b.csv", "a path, not a name"),
        (os.fsdecode(b"contacts_\xff.csv"), "not valid UTF-8"),
        ("a\x00.csv", "a control character"),
        ("a\r.csv", "a control character"),
        ("a\t.csv", "a control character"),
        ("ev_\x1b]0;PWNED\x07.csv", "a control character"),
        ("a\x7f.csv", "a control character"),  # DEL
        ("a\x85.csv", "a control character"),  # C1: next line
        ("a\x9b31m.csv", "a control character"),  # C1: CSI
        ("a\u2028.csv", "a control character"),  # a line separator
        ("x" * 256, f"longer than {MAX_NAME_BYTES} bytes"),
        ("é" * 128, f"longer than {MAX_NAME_BYTES} bytes"),  # 256 bytes, in 128 characters
    ],
)
def test_hostile_names(name: str, reason: str) -> None:
    """Names that could steer a path, act on a terminal, or not be stored are refused."""
    assert hostile(name) == reason


@pytest.mark.parametrize(
    "name",
    [
        "contacts.csv",
        "é" * 126 + ".c",
        "a b.csv",
        "...csv",
        "a..b.csv",
        "x" * MAX_NAME_BYTES,
        "données_Ω_😀.csv",
    ],
)
def test_ordinary_names(name: str) -> None:
    """Spaces, accents, emoji, dots inside a name and 255 bytes exactly are fine."""
    assert hostile(name) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".hidden.csv", True),
        ("a.csv.part", True),
        ("a.tmp", True),
        ("a.filepart", True),
        ("a.csv", False),
        ("partial.csv", False),
    ],
)
def test_temporary_names(name: str, expected: bool) -> None:
    """Files still being uploaded, by naming convention, are not taken."""
    assert temporary(name) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("contacts_1.csv", "contacts_1.csv"),
        ("données é.csv", "données é.csv"),
        ("ev_\x1b]0;PWNED\x07.csv", r"ev_\x1b]0;PWNED\x07.csv"),
        (os.fsdecode(b"contacts_\xff.csv"), r"contacts_\xff.csv"),
        ("a\x85b", r"a\u0085b"),  # the character U+0085, not the byte 0x85
        ("a\u2028b\u202e", r"a\u2028b\u202e"),  # a line separator, a right-to-left override
        ("a\xa0b", r"a\u00a0b"),  # a space that does not look like one
        ("tag\U000e0041", r"tag\U000e0041"),
        ("a\\x1b", r"a\\x1b"),  # a backslash in the name is not an escape
        ("a\r\n\tb", r"a\r\n\tb"),
    ],
)
def test_shown_escapes_what_a_terminal_would_act_on(name: str, expected: str) -> None:
    """Printable names are shown as they are; anything else is escaped, visibly."""
    assert shown(name) == expected


_ESCAPE = re.compile(r"\\([\\nrt]|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _unshown(text: str) -> str:
    """The inverse of shown: proof that no two names are shown alike."""

    def one(match: re.Match[str]) -> str:
        escape = match[1]
        if len(escape) == 1:
            return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}[escape]
        code = int(escape[1:], 16)
        return chr(0xDC00 + code) if escape[0] == "x" and code >= 0x80 else chr(code)

    return _ESCAPE.sub(one, text)


@given(st.text() | st.binary().map(os.fsdecode))
def test_shown_is_printable_and_unambiguous(name: str) -> None:
    """Whatever the name, what is shown is printable and tells the name exactly."""
    assert shown(name).isprintable()
    assert _unshown(shown(name)) == name


def test_clash_free_name_adds_a_timestamp_then_a_counter() -> None:
    """A clash gets the UTC time before the extension; a second clash a counter."""
    taken = {"a.csv", f"a{STAMP}.csv"}
    assert clash_free_name("b.csv", taken.__contains__, NOW) == "b.csv"
    assert clash_free_name("a.csv", {"a.csv"}.__contains__, NOW) == f"a{STAMP}.csv"
    assert clash_free_name("a.csv", taken.__contains__, NOW) == f"a{STAMP}-2.csv"
    assert clash_free_name("README", {"README"}.__contains__, NOW) == f"README{STAMP}"


def test_clash_free_name_shortens_a_long_stem_on_a_character_boundary() -> None:
    """At 255 bytes the stem is cut, between characters, so that the stamp fits and the
    extension stays: the move can complete."""
    name = "a" + "é" * 125 + ".csv"  # 1 + 250 + 4 bytes
    first = "a" + "é" * 116 + f"{STAMP}.csv"  # 233 bytes of stem: a 234th would split an é
    assert clash_free_name(name, {name}.__contains__, NOW) == first
    second = "a" + "é" * 115 + f"{STAMP}-2.csv"
    assert clash_free_name(name, {name, first}.__contains__, NOW) == second
    assert [len(n.encode()) for n in (first, second)] == [254, 254]


def test_clash_free_name_keeps_no_overlong_extension() -> None:
    """A name without an extension, or with a "suffix" too long to be one, gets the stamp
    at its end, within the limit."""
    plain = "x" * MAX_NAME_BYTES
    assert clash_free_name(plain, {plain}.__contains__, NOW) == "x" * 238 + STAMP
    dotted = "a." + "b" * 200
    assert clash_free_name(dotted, {dotted}.__contains__, NOW) == dotted[:238] + STAMP


@given(
    st.text(
        st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\"), min_size=1
    ).filter(lambda n: hostile(n) is None and not temporary(n)),
    st.integers(min_value=0, max_value=3),
)
def test_clash_free_names_always_fit_and_are_new(name: str, clashes: int) -> None:
    """Whatever the name and however many clashes, the name found is free, fits the limit,
    and is valid UTF-8."""
    taken = {name}
    for _ in range(clashes):
        taken.add(clash_free_name(name, taken.__contains__, NOW))
    found = clash_free_name(name, taken.__contains__, NOW)
    assert found not in taken
    assert len(found.encode("utf-8")) <= MAX_NAME_BYTES
