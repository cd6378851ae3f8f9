"""Golden tests for the shared CSV rules (docs/csv-rules.md), through the CLI in-process.

Each test imports one small file with `connector import` against a private store,
then reads `connector dump ...` and compares whole records (docs/commands.md, What the
dumps show). Cases that need exact bytes (BOM, CR line ends, CRLF in quotes, other
encodings, invalid UTF-8, NUL, empty files) write those bytes from the test; the rest
are fixtures in tests/data/ named after their case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

try:
    import golden
except ImportError:  # tests/ became a package
    from tests import golden

ABSENT = golden.ABSENT
MAX_FIELD = golden.MAX_FIELD
MAX_IDENTIFIER = golden.MAX_IDENTIFIER
MAX_TIMESTAMP = golden.MAX_TIMESTAMP
Harness = golden.Harness

T = 1_696_252_121  # 2023-10-02T13:08:41Z


@pytest.fixture
def h(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Harness:
    return Harness(tmp_path, capsys)


def one_cell(h: Harness, name: str, header: str, cell: str) -> Path:
    """Stage `header` plus one row `u1,<cell>` (cell given as raw CSV text)."""
    return h.stage(name, f"identifier,{header}\nu1,{cell}\n")


# --- line numbers and rule 1: encoding ---------------------------------------------------


def test_bom_is_stripped(h: Harness) -> None:
    """A UTF-8 BOM is stripped: the first header name is matched exactly, lines unchanged."""
    p = h.stage("events_bom.csv", b"\xef\xbb\xbfidentifier,v\nu1,a\n")  # exact bytes
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": "a"}))
    h.assert_file(p, "ingested", rows=1, rejected=0, duplicates=0)


def test_bom_is_stripped_under_another_encoding(h: Harness) -> None:
    """A UTF-8 BOM is stripped even when the source sets another encoding."""
    h.configure(encoding="latin-1")
    p = h.stage("events_bom_latin1.csv", b"\xef\xbb\xbfidentifier,v\nu1,caf\xe9\n")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": "café"}))


def test_default_encoding_is_utf8(h: Harness) -> None:
    """With no `encoding` set, the file is decoded as UTF-8: multi-byte text is read as
    written (cp1252 would read "cafÃ©"), and a latin-1 file, whose é is not UTF-8, is
    rejected whole, naming its line, rather than guessed at."""
    p = h.stage("events_utf8.csv", "identifier,v\nu1,café €\n".encode())
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": "café €"}))
    latin1 = h.stage("events_latin1_by_default.csv", "identifier,v\nu2,café\n".encode("latin-1"))
    assert h.import_(latin1) == 2
    reason = h.assert_file_rejected(latin1)
    assert "line 2" in reason and "utf-8" in reason.lower(), reason
    h.assert_events(h.event(p, 2, "u1", {"v": "café €"}))  # (nothing of the latin-1 file)


@pytest.mark.parametrize(
    ("encoding", "raw", "text"),
    [
        ("latin-1", b"caf\xe9", "café"),
        ("cp1252", b"\x80 5", "€ 5"),
    ],
)
def test_source_encoding_is_used(h: Harness, encoding: str, raw: bytes, text: str) -> None:
    """The source's `encoding` (any Python codec) decodes the file."""
    h.configure(encoding=encoding)
    p = h.stage(f"events_{encoding}.csv", b"identifier;v\nu1;" + raw + b"\n")  # exact bytes
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": text}))


def test_invalid_utf8_rejects_whole_file_naming_the_line(h: Harness) -> None:
    """Bytes that do not decode reject the whole file before any row is stored; the reason
    names the line."""
    rows = b"".join(b"u%d,a\n" % i for i in range(3000))  # valid rows first: nothing may stick
    p = h.stage("events_invalid_utf8.csv", b"identifier,v\n" + rows + b"bad,\xff\nlast,z\n")
    assert h.import_(p) == 2
    reason = h.assert_file_rejected(p)
    assert "3002" in reason, reason
    assert h.events() == []
    assert h.contacts() == {}


# --- rule 2: dialect ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "identifier", "data", "rejects"),
    [
        # `;` is sniffed from the header when it occurs more often than `,`.
        ("events_sniff_semicolon.csv", "u1", {"v": "a,b", "w": "c"}, {}),
        # `,` is sniffed from the header when it occurs more often than `;`.
        ("events_sniff_comma.csv", "u1", {"v": "a;b", "w": "c"}, {}),
        # A tie between `,` and `;` in the header means `,`.
        ("events_sniff_tie.csv", "u1", {"v;w": "a;b"}, {}),
        # A header with neither `,` nor `;` means `,` (a `;` in a row is text).
        ("events_sniff_neither.csv", "u1;x", {}, {3: "expected 1 fields, got 2"}),
        # Sniffing counts delimiters outside quotes only (quoted `;` do not count).
        ("events_sniff_quoted_semicolons.csv", "u1", {"a;b;c": "p;q", "x": "r"}, {}),
        # Sniffing counts delimiters outside quotes only (quoted `,` do not count).
        ("events_sniff_quoted_commas.csv", "u1", {"a,b,c": "p,q", "x": "r"}, {}),
    ],
    ids=[
        "semicolon",
        "comma",
        "tie-means-comma",
        "neither-means-comma",
        "quoted-semicolons-ignored",
        "quoted-commas-ignored",
    ],
)
def test_the_delimiter_is_sniffed_from_the_header(
    h: Harness, name: str, identifier: str, data: dict[str, str], rejects: dict[int, str]
) -> None:
    """With no `delimiter` set, `,` or `;` is sniffed from the header: the one found more
    often outside quotes, `,` on a tie or when neither is there. Each case's fixture in
    tests/data/ is named after it; rows that do not split as the header are rejected."""
    p = h.stage(name)
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, identifier, data))
    h.assert_row_rejects(p, rejects)


def test_tab_delimiter_from_source(h: Harness) -> None:
    """A source `delimiter` of a tab is used as is; `,` and `;` are then text."""
    h.configure(delimiter="\t")
    p = h.stage("events_tab_delimiter.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": "a,b", "w": "c;d"}))


def test_pipe_delimiter_from_source(h: Harness) -> None:
    """A source `delimiter` of `|` is used, with quoting around a `|` in a value."""
    h.configure(delimiter="|")
    p = h.stage("events_pipe_delimiter.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": "a,b;c", "w": "x|y"}))


def test_quoted_delimiters_and_doubled_quotes(h: Harness) -> None:
    """Quoted fields hold delimiters, and `""` inside quotes is one quote."""
    p = h.stage("events_quoted_fields.csv")
    assert h.import_(p) == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": "a,b", "w": 'say "hi"'}),
        h.event(p, 3, "u2", {"v": '"', "w": "x"}),
    )


def test_quoted_newlines_kept_and_lines_counted(h: Harness) -> None:
    """Line breaks inside quotes are kept, and later records get their physical start line
    (an empty line inside quotes is part of the value, not a skipped blank line)."""
    p = h.stage("events_quoted_newlines.csv")
    assert h.import_(p) == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": "line one\nline two"}),
        h.event(p, 4, "u2", {"v": "a\n\nb"}),
        h.event(p, 7, "u3", {"v": "plain"}),
    )


@pytest.mark.parametrize(
    ("name", "data"),
    [
        # exact bytes: CRLF line ends, CRLF inside the quotes
        ("events_crlf_in_quotes_crlf.csv", b'identifier,v\r\nu1,"a\r\nb"\r\nu2,x\r\n'),
        # exact bytes: LF line ends, CRLF inside the quotes
        ("events_crlf_in_quotes_lf.csv", b'identifier,v\nu1,"a\r\nb"\nu2,x\n'),
    ],
)
def test_crlf_inside_quotes_kept_verbatim(h: Harness, name: str, data: bytes) -> None:
    """A CRLF inside quotes is kept verbatim in the value and counts as one line break."""
    p = h.stage(name, data)
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": "a\r\nb"}), h.event(p, 4, "u2", {"v": "x"}))


def test_cr_only_line_ends(h: Harness) -> None:
    """CR alone ends lines (and a CR inside quotes is kept and counted)."""
    p = h.stage("events_cr_only.csv", b'identifier,v\ru1,a\ru2,"b\rc"\ru3,d')  # exact bytes
    assert h.import_(p) == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": "a"}),
        h.event(p, 3, "u2", {"v": "b\rc"}),
        h.event(p, 5, "u3", {"v": "d"}),
    )


def test_mixed_line_ends(h: Harness) -> None:
    """CRLF, LF and CR line ends may be mixed; each counts as one line."""
    p = h.stage("events_mixed_line_ends.csv", b"identifier,v\r\nu1,a\nu2,b\ru3,c\r\n")
    assert h.import_(p) == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": "a"}),
        h.event(p, 3, "u2", {"v": "b"}),
        h.event(p, 4, "u3", {"v": "c"}),
    )


def test_blank_lines_skipped_but_counted(h: Harness) -> None:
    """Empty lines (also before the header) are skipped but count in line numbers."""
    p = h.stage("events_blank_lines.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 4, "u1", {"v": "a"}), h.event(p, 7, "u2", {"v": "b"}))
    h.assert_file(p, "ingested", rows=2, rejected=0, duplicates=0)


def test_blank_crlf_lines_skipped_but_counted(h: Harness) -> None:
    """Empty CRLF and CR lines are skipped but counted."""
    p = h.stage("events_blank_crlf_lines.csv", b"identifier,v\r\n\r\nu1,a\r\n\r\ru2,b\r\n")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 3, "u1", {"v": "a"}), h.event(p, 6, "u2", {"v": "b"}))


def test_whitespace_only_line_is_a_record(h: Harness) -> None:
    """A line holding only spaces is not blank: it is a record (here a ragged one)."""
    p = h.stage("events_whitespace_line.csv")
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {2: "expected 2 fields, got 1"})
    h.assert_events(h.event(p, 3, "u1", {"v": "a"}))


def test_stray_quote_in_unquoted_field_is_text(h: Harness) -> None:
    """A quote inside an unquoted field is kept as text."""
    p = h.stage("events_stray_quote.csv")
    assert h.import_(p) == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": 'ab"c', "w": '5"'}),
        h.event(p, 3, "u2", {"v": 'x"y"z', "w": '3 " 4'}),
    )
    assert h.rejects() == []


def test_unterminated_quote_rejects_only_that_record(h: Harness) -> None:
    """A quoted field open at end of file rejects that record (`unterminated quote`) only."""
    p = h.stage("events_unterminated_quote.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": "a"}))
    h.assert_row_rejects(p, {3: "unterminated quote"})
    h.assert_file(p, "ingested", rows=1, rejected=1, duplicates=0)


@pytest.mark.parametrize(
    "row",
    [b"u1,a\x00b", b'u1,"a\x00b"', b"u\x001,a", b"u1,\x00"],
    ids=["unquoted", "quoted", "identifier", "alone"],
)
def test_nul_in_a_cell_rejects_the_row(h: Harness, row: bytes) -> None:
    """A cell holding a NUL character rejects its row; the other rows are ingested."""
    p = h.stage("events_nul.csv", b"identifier,v\n" + row + b"\nu2,c\n")  # exact bytes
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {2: None})
    h.assert_events(h.event(p, 3, "u2", {"v": "c"}))
    h.assert_contacts({"u2": {}})


# --- rule 3: header ----------------------------------------------------------------------


def test_header_names_are_trimmed(h: Harness) -> None:
    """Header names lose surrounding whitespace (so ` identifier ` is the identifier)."""
    p = h.stage("events_header_trimmed.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": "a", "w": "b"}))


def test_header_names_are_case_sensitive(h: Harness) -> None:
    """`V` and `v` are two different header names."""
    p = h.stage("events_header_case_sensitive.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"V": "a", "v": "b"}))


def test_identifier_header_is_case_sensitive(h: Harness) -> None:
    """`Identifier` is not the identifier column `identifier`: the file is rejected."""
    p = h.stage("events_identifier_header_case.csv")
    assert h.import_(p) == 2
    h.assert_file_rejected(p)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("contacts_empty_header_name.csv", "contacts"),
        ("contacts_blank_header_name.csv", "contacts"),
        ("contacts_trailing_delimiter_header.csv", "contacts"),
        ("contacts_duplicate_header.csv", "contacts"),
        ("contacts_duplicate_header_after_trim.csv", "contacts"),
        ("contacts_long_header_name.csv", "contacts"),
        ("events_empty_header_name.csv", "events"),
        ("events_duplicate_header.csv", "events"),
        ("events_long_header_name.csv", "events"),
        ("contacts_nul_in_header_name.csv", "contacts"),
        ("events_nul_in_header_name.csv", "events"),
    ],
)
def test_bad_header_rejects_file(h: Harness, name: str, kind: str) -> None:
    """An empty, duplicate (after trimming), over-255-character or NUL-holding header name
    rejects the file: exit 2, reject with line null, `files` status rejected, nothing
    stored."""
    p = h.stage(name)
    assert h.import_(p, kind=kind) == 2
    h.assert_file_rejected(p)
    assert h.contacts() == {}


def test_header_name_of_255_chars_is_accepted(h: Harness) -> None:
    """A header name of exactly 255 characters is accepted."""
    p = h.stage("events_header_name_255.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"h" * 255: "a"}))


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("events_empty.csv", b""),  # 0 bytes
        ("events_only_bom.csv", b"\xef\xbb\xbf"),
        ("events_only_blank_lines.csv", b"\n\n\r\n\r"),
        ("events_bom_and_blank_line.csv", b"\xef\xbb\xbf\r\n"),
    ],
)
@pytest.mark.parametrize("kind", ["events", "contacts"])
def test_file_without_header_is_rejected(h: Harness, name: str, data: bytes, kind: str) -> None:
    """A file with no header (0 bytes, only a BOM, only blank lines) is rejected whole."""
    p = h.stage(name, data)
    assert h.import_(p, kind=kind) == 2
    h.assert_file_rejected(p)


@pytest.mark.parametrize("name", ["events_header_only.csv", "events_header_only_no_newline.csv"])
def test_header_only_is_ingested_with_zero_rows(h: Harness, name: str) -> None:
    """A header with no rows is ingested with 0 rows."""
    p = h.stage(name)
    assert h.import_(p) == 0
    h.assert_file(p, "ingested", rows=0, rejected=0, duplicates=0)
    assert h.events() == []
    assert h.rejects() == []


# --- rule 4: rows ------------------------------------------------------------------------


def test_ragged_rows_rejected_others_ingested(h: Harness) -> None:
    """A row with another field count is rejected (`expected N fields, got M`); the other
    rows of the file are ingested."""
    p = h.stage("events_ragged_rows.csv")
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {3: "expected 3 fields, got 2", 4: "expected 3 fields, got 4"})
    h.assert_events(h.event(p, 2, "u1", {"v": "a", "w": "b"}), h.event(p, 5, "u4", {}))
    h.assert_file(p, "ingested", rows=2, rejected=2, duplicates=0)
    h.assert_contacts({"u1": {}, "u4": {}})


def test_field_size_limit_in_characters(h: Harness) -> None:
    """A field over 1,048,576 characters rejects its row; exactly 1,048,576 characters
    (counted after decoding, here 2 MiB of UTF-8) is accepted."""
    big = "é" * MAX_FIELD
    over = "x" * (MAX_FIELD + 1)
    text = f'identifier,v\nu1,{over}\nu2,{big}\nu3,"{over}"\nu4,ok\n'
    p = h.stage("events_field_size.csv", text)
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {2: None, 4: None})
    h.assert_events(h.event(p, 3, "u2", {"v": big}), h.event(p, 5, "u4", {"v": "ok"}))


def test_row_with_several_faults_is_rejected_once(h: Harness) -> None:
    """A row with several faults gives one reject."""
    text = f"identifier,timestamp,idempotencyKey\nu1,1e9,{'k' * 129}\n,soon,{'k' * 200}\nu3,\x00\n"
    p = h.stage("events_several_faults.csv", text)
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {2: None, 3: None, 4: None})
    h.assert_file(p, "ingested", rows=0, rejected=3, duplicates=0)


def test_file_with_every_row_rejected_is_ingested(h: Harness) -> None:
    """A file whose every row is rejected is still `ingested`, with 0 rows."""
    p = h.stage("events_all_rows_rejected.csv")
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {2: None, 3: None, 4: "expected 2 fields, got 1"})
    h.assert_file(p, "ingested", rows=0, rejected=3, duplicates=0)
    assert h.events() == []
    assert h.contacts() == {}


def test_file_counts(h: Harness) -> None:
    """`dump files` counts stored rows, rejected rows and duplicate events separately."""
    p = h.stage("events_file_counts.csv")
    assert h.import_(p) == 0
    record = h.assert_file(p, "ingested", rows=2, rejected=1, duplicates=1)
    assert record["path"] == p.name
    h.assert_events(h.event(p, 2, "u1", {"v": 1}, key="a"), h.event(p, 5, "u4", {"v": 4}, key="c"))
    h.assert_row_rejects(p, {4: "expected 3 fields, got 2"})
    h.assert_contacts({"u1": {}, "u2": {}, "u4": {}})


# --- rule 5: typing ----------------------------------------------------------------------

TYPING = [
    # booleans, any letter case
    ("true", True),
    ("false", False),
    ("TRUE", True),
    ("False", False),
    ("tRuE", True),
    ("yes", "yes"),
    ("t", "t"),
    (" true", " true"),
    # integers within the signed 64-bit range
    ("0", 0),
    ("42", 42),
    ("-17", -17),
    ("-0", 0),
    ("9223372036854775807", 9223372036854775807),
    ("-9223372036854775808", -9223372036854775808),
    ("9223372036854775808", "9223372036854775808"),
    ("-9223372036854775809", "-9223372036854775809"),
    # decimals
    ("3.14", 3.14),
    ("-0.5", -0.5),
    ("0.0", 0.0),
    ("10.250", 10.25),
    ("12345678901234567890.5", 12345678901234567890.5),
    ("1.", "1."),
    (".5", ".5"),
    ("-.5", "-.5"),
    ("01.5", "01.5"),
    # verbatim strings
    ("007", "007"),
    ("+32478112233", "+32478112233"),
    ("+5", "+5"),
    ("1e3", "1e3"),
    ('"1,5"', "1,5"),
    (" 12", " 12"),
    ("12 ", "12 "),
    ("NaN", "NaN"),
    ("Infinity", "Infinity"),
    ("null", "null"),
    ('"[1,2]"', "[1,2]"),
    ('"{""a"":1}"', '{"a":1}'),
    ("0x1F", "0x1F"),
    ("1_000", "1_000"),
    ("--1", "--1"),
    ("\u0661\u0662\u0663", "\u0661\u0662\u0663"),  # Arabic-Indic digits: ASCII digits only
    ("\uff11\uff12", "\uff11\uff12"),  # fullwidth digits
    # quoting does not change typing
    ('"123"', 123),
    ('"true"', True),
    ('"1.5"', 1.5),
    ('""', ABSENT),
    ("", ABSENT),
]


@pytest.mark.parametrize(("cell", "expected"), TYPING)
def test_event_data_typing(h: Harness, cell: str, expected: Any) -> None:
    """An event data cell is typed per rule 5 (empty → absent; quoting changes nothing)."""
    p = one_cell(h, "events_typing.csv", "v", cell)
    assert h.import_(p) == 0
    data = {} if expected is ABSENT else {"v": expected}
    h.assert_events(h.event(p, 2, "u1", data))


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("TRUE", True), ("42", 42), ("-1.5", -1.5), ("007", "007"), ('"7"', 7), ('""', ABSENT)],
)
def test_contact_attribute_typing(h: Harness, cell: str, expected: Any) -> None:
    """A contact attribute is typed per rule 5 too."""
    p = one_cell(h, "contacts_typing.csv", "v", cell)
    assert h.import_(p, kind="contacts") == 0
    h.assert_contacts({"u1": {} if expected is ABSENT else {"v": expected}})


def test_identifiers_stay_strings(h: Harness) -> None:
    """Identifiers are never typed: `007`, `123`, `true`, `1.5` stay strings."""
    p = h.stage("events_identifier_strings.csv", "identifier,v\n007,1\n123,2\ntrue,3\n1.5,4\n")
    assert h.import_(p) == 0
    h.assert_events(
        h.event(p, 2, "007", {"v": 1}),
        h.event(p, 3, "123", {"v": 2}),
        h.event(p, 4, "true", {"v": 3}),
        h.event(p, 5, "1.5", {"v": 4}),
    )
    h.assert_contacts({"007": {}, "123": {}, "true": {}, "1.5": {}})


# --- rule 6: contacts files --------------------------------------------------------------


def test_contacts_identifier_column_required(h: Harness) -> None:
    """A contacts file without the identifier column is rejected whole."""
    p = h.stage("contacts_missing_identifier_column.csv")
    assert h.import_(p, kind="contacts") == 2
    h.assert_file_rejected(p)
    assert h.contacts() == {}


def test_contact_identifier_taken_verbatim(h: Harness) -> None:
    """Identifiers are taken verbatim: no trimming, no case change, no typing."""
    p = h.stage("contacts_identifier_verbatim.csv")
    assert h.import_(p, kind="contacts") == 0
    h.assert_contacts(
        {" Ab ": {"v": 1}, "Ab": {"v": 2}, "ab": {"v": 3}, "007": {"v": 4}, "true": {"v": 5}}
    )


@pytest.mark.parametrize("cell", ["", "   ", '""', '" "', " \t "])
@pytest.mark.parametrize("kind", ["contacts", "events"])
def test_empty_identifier_rejects_row(h: Harness, cell: str, kind: str) -> None:
    """An empty or whitespace-only identifier rejects the row; the others are stored."""
    p = h.stage(f"{kind}_empty_identifier.csv", f"identifier,v\n{cell},1\nu2,2\n")
    assert h.import_(p, kind=kind) == 0
    h.assert_row_rejects(p, {2: None})
    h.assert_contacts({"u2": {"v": 2}} if kind == "contacts" else {"u2": {}})


@pytest.mark.parametrize("kind", ["contacts", "events"])
def test_identifier_length_in_characters(h: Harness, kind: str) -> None:
    """An identifier of 512 characters (after decoding: here 512, 1,024 and 2,048 bytes of
    UTF-8) is kept; 513 rejects the row, which then changes nothing."""
    p = h.stage(f"{kind}_identifier_length.csv")
    assert h.import_(p, kind=kind) == 0
    reason = f"identifier (the identifier) longer than {MAX_IDENTIFIER} characters"
    h.assert_row_rejects(p, {3: reason, 5: reason, 7: reason})
    h.assert_file(p, "ingested", rows=4, rejected=3, duplicates=0)
    assert {r["reason"] for r in h.rejects()} == {reason}
    kept = {"i" * 512: 1, "é" * 512: 3, "\U0001d11e" * 512: 5, "u7": 7}
    if kind == "contacts":
        h.assert_contacts({i: {"v": v} for i, v in kept.items()})
    else:
        h.assert_events(*(h.event(p, v + 1, i, {"v": v}) for i, v in kept.items()))
        h.assert_contacts({i: {} for i in kept})


def test_identifier_length_in_a_contacts_file_with_an_event(h: Harness) -> None:
    """A contacts file that carries an event: a long identifier records neither."""
    h.configure(
        files=[
            {"kind": "contacts", "pattern": "*", "event_name": "signup", "event_columns": ["plan"]}
        ]
    )
    long = "x" * (MAX_IDENTIFIER + 1)
    p = h.stage("contacts_identifier_length_event.csv", f"identifier,plan\n{long},a\nu2,b\n")
    assert h.import_(p, kind="contacts") == 0
    h.assert_row_rejects(p, {2: "longer than 512 characters"})
    h.assert_contacts({"u2": {}})
    h.assert_events(h.event(p, 3, "u2", {"plan": "b"}, name="signup"))


@pytest.mark.parametrize(
    ("identifier", "row", "reason"),
    [
        # the length before the identifier's reserved check (neither is valid as one)
        ("email", f"{'a b' * 200},1", "email (the identifier) longer than 512 characters"),
        ("externalId", f"{'e' * 513},1", "externalId (the identifier) longer than 512 characters"),
        # blank before long (600 spaces); long before a bad timestamp
        ("identifier", f"{' ' * 600},1e9", "identifier (the identifier) is empty"),
        (
            "identifier",
            f"{'i' * 513},1e9",
            "identifier (the identifier) longer than 512 characters",
        ),
    ],
)
def test_identifier_length_in_check_order(
    h: Harness, identifier: str, row: str, reason: str
) -> None:
    """A long identifier is reported after a blank one and before any later check, its
    reserved check included (a valid address over 512 characters is rejected too)."""
    h.configure(identifier=identifier)
    p = h.stage("events_identifier_length_order.csv", f"{identifier},timestamp\n{row}\n")
    assert h.import_(p) == 0
    assert [(r["line"], r["reason"]) for r in h.rejects()] == [(2, reason)]


RESERVED_VALID = [
    ("email", "a@b.co", "a@b.co"),
    ("email", "first.last+tag@mail.example.org", "first.last+tag@mail.example.org"),
    ("phone", "32478112233", "32478112233"),  # stays a string
    ("phone", "123456", "123456"),
    ("phone", "123456789012345", "123456789012345"),
    ("externalId", "123", "123"),  # stays a string
    ("externalId", "A-Z_a.z/0-9", "A-Z_a.z/0-9"),
    ("externalId", "x" * 64, "x" * 64),
    ("unsubscribed", "true", True),
    ("unsubscribed", "FALSE", False),
    ("smsCapable", "True", True),
    ("smsCapable", "false", False),
    ("language", "en", "en"),
    ("language", "fr", "fr"),
    ("createdAt", "0", 0),
    ("createdAt", "1696252121", 1696252121),
    ("createdAt", "4102444800", 4102444800),
]

RESERVED_INVALID = [
    ("email", "plainaddress"),
    ("email", "a b@x.com"),
    ("email", " a@x.com"),
    ("email", "a@b@x.com"),
    ("email", "a@localhost"),
    ("phone", "12345"),
    ("phone", "1234567890123456"),
    ("phone", "+32478112233"),
    ("phone", "032478112233"),
    ("phone", "32 478112233"),
    ("phone", "3247811223a"),
    ("externalId", "x" * 65),
    ("externalId", "a b"),
    ("externalId", "a:b"),
    ("externalId", "\u00e9"),
    ("unsubscribed", "yes"),
    ("unsubscribed", "1"),
    ("smsCapable", "0"),
    ("smsCapable", "no"),
    ("language", "EN"),
    ("language", "En"),
    ("language", "eng"),
    ("language", "e"),
    ("language", "e1"),
    ("createdAt", "-1"),
    ("createdAt", "4102444801"),
    ("createdAt", "1.5"),
    ("createdAt", "007"),
    ("createdAt", "1e3"),
    ("createdAt", "2023-10-02T13:08:41Z"),
    ("createdAt", "true"),
]


@pytest.mark.parametrize(("attr", "cell", "expected"), RESERVED_VALID)
def test_reserved_attribute_valid(h: Harness, attr: str, cell: str, expected: Any) -> None:
    """A valid reserved attribute is stored; email/phone/externalId stay strings."""
    p = one_cell(h, "contacts_reserved_valid.csv", attr, cell)
    assert h.import_(p, kind="contacts") == 0
    assert h.rejects() == []
    h.assert_contacts({"u1": {attr: expected}})


@pytest.mark.parametrize(("attr", "cell"), RESERVED_INVALID)
def test_reserved_attribute_invalid_rejects_row(h: Harness, attr: str, cell: str) -> None:
    """An invalid reserved attribute rejects the row, which then changes nothing."""
    p = h.stage("contacts_reserved_invalid.csv", f"identifier,{attr}\nu1,{cell}\nu2,\n")
    assert h.import_(p, kind="contacts") == 0
    h.assert_row_rejects(p, {2: None})
    h.assert_contacts({"u2": {}})


@pytest.mark.parametrize(
    ("identifier", "good", "bad"),
    [
        ("email", "a@b.co", "not-an-email"),
        ("phone", "32478112233", "+32478112233"),
        ("externalId", "ext-1/A.b_c", "ext 1"),
    ],
)
@pytest.mark.parametrize("kind", ["contacts", "events"])
def test_reserved_identifier_is_checked(
    h: Harness, identifier: str, good: str, bad: str, kind: str
) -> None:
    """A reserved attribute used as the identifier is checked like one and stays a string."""
    h.configure(identifier=identifier)
    p = h.stage(f"{kind}_reserved_identifier.csv", f"{identifier},v\n{good},1\n{bad},2\n")
    assert h.import_(p, kind=kind) == 0
    h.assert_row_rejects(p, {3: None})
    if kind == "contacts":
        h.assert_contacts({good: {"v": 1}})
    else:
        h.assert_events(h.event(p, 2, good, {"v": 1}))
        h.assert_contacts({good: {}})


def test_contacts_merge_across_rows_and_files(h: Harness) -> None:
    """Contacts are upserted: attributes merge, later rows and files win, and an empty
    cell leaves the existing attribute as it was."""
    first = h.stage("contacts_merge_first.csv")
    second = h.stage("contacts_merge_second.csv")
    assert h.import_(first, kind="contacts") == 0
    h.assert_contacts({"u1": {"a": 2, "b": "x", "c": "keep"}, "u2": {"a": True}})
    assert h.import_(second, kind="contacts") == 0
    h.assert_contacts(
        {"u1": {"a": 2, "b": "y", "c": "keep", "d": 1.5}, "u2": {"a": True}, "u3": {}}
    )


def test_rejected_contact_row_changes_nothing(h: Harness) -> None:
    """A rejected contacts row changes nothing: no attribute, no new contact."""
    base = h.stage("contacts_rejected_row_base.csv")
    p = h.stage("contacts_rejected_row_changes_nothing.csv")
    assert h.import_(base, kind="contacts") == 0
    assert h.import_(p, kind="contacts") == 0
    h.assert_row_rejects(p, {2: None, 3: None, 4: "expected 3 fields, got 4"})
    h.assert_contacts({"u1": {"a": 1}})
    h.assert_file(p, "ingested", rows=0, rejected=3, duplicates=0)


def test_contacts_file_has_no_events(h: Harness) -> None:
    """A plain contacts file records no event."""
    p = h.stage("contacts_merge_first.csv")
    assert h.import_(p, kind="contacts") == 0
    assert h.events() == []


# --- rule 7: contacts files that carry an event ------------------------------------------

SIGNUP = [
    {"kind": "events", "pattern": "*", "event_name": "purchase"},
    {"kind": "contacts", "pattern": "*", "event_name": "signup", "event_columns": ["plan", "ref"]},
]


def test_contacts_file_records_its_event(h: Harness) -> None:
    """Each valid contacts row also records the entry's event, with the listed columns as
    its data (not attributes), even when they are all empty."""
    h.configure(files=SIGNUP)
    p = h.stage("contacts_with_event.csv")
    assert h.import_(p, kind="contacts") == 0
    h.assert_contacts({"u1": {"email": "u1@x.co"}, "u2": {}})
    h.assert_events(
        h.event(p, 2, "u1", {"plan": "gold", "ref": "r1"}, name="signup"),
        h.event(p, 3, "u2", {}, name="signup"),
    )


def test_contacts_event_column_missing_rejects_file(h: Harness) -> None:
    """A listed event column missing from the header rejects the contacts file."""
    h.configure(files=SIGNUP)
    p = h.stage("contacts_with_event_missing_column.csv")
    assert h.import_(p, kind="contacts") == 2
    h.assert_file_rejected(p)
    assert h.contacts() == {}


def test_contacts_event_timestamp_and_key(h: Harness) -> None:
    """Listed `timestamp` and `idempotencyKey` columns act as in events files: a duplicate
    key skips only the event, a bad timestamp rejects the whole row."""
    cols = ["timestamp", "idempotencyKey", "plan"]
    files = [{"kind": "contacts", "pattern": "*", "event_name": "signup", "event_columns": cols}]
    h.configure(files=files)
    p = h.stage("contacts_with_event_timestamp_key.csv")
    assert h.import_(p, kind="contacts") == 0
    h.assert_events(
        h.event(p, 2, "u1", {"plan": "gold"}, name="signup", key="k1", timestamp=T),
        h.event(p, 5, "u4", {"plan": "y"}, name="signup"),
    )
    h.assert_row_rejects(p, {4: "timestamp"})
    h.assert_contacts({"u1": {"tier": 3}, "u2": {"tier": 4}, "u4": {"tier": 6}})
    h.assert_file(p, "ingested", rejected=1, duplicates=1)


# --- rule 8: events files ----------------------------------------------------------------

NAMELESS = [{"kind": "events", "pattern": "*"}, {"kind": "contacts", "pattern": "*"}]


def test_event_name_from_name_column(h: Harness) -> None:
    """The `name` column gives the event name and is not data."""
    h.configure(files=NAMELESS)
    p = h.stage("events_name_column.csv")
    assert h.import_(p) == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": 1}, name="buy"), h.event(p, 3, "u2", {"v": 2}, name="refund")
    )


def test_name_column_wins_over_event_name(h: Harness) -> None:
    """With both, the `name` column wins over the entry's `event_name`."""
    p = h.stage("events_name_column.csv")
    assert h.import_(p) == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": 1}, name="buy"), h.event(p, 3, "u2", {"v": 2}, name="refund")
    )


def test_no_event_name_rejects_file(h: Harness) -> None:
    """With no `name` column (`Name` is not one) and no `event_name`, the file is rejected."""
    h.configure(files=NAMELESS)
    p = h.stage("events_no_name.csv")
    assert h.import_(p) == 2
    h.assert_file_rejected(p)
    assert h.contacts() == {}


def test_empty_name_cell_rejects_row(h: Harness) -> None:
    """An empty or whitespace-only `name` cell rejects the row (no fallback)."""
    p = h.stage("events_empty_name_cell.csv")
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {2: None, 3: None})
    h.assert_events(h.event(p, 4, "u3", name="buy"))


def test_event_creates_unknown_contact_only(h: Harness) -> None:
    """An event for an unknown contact creates it with empty attributes, and leaves a known
    contact's attributes as they were."""
    known = h.stage("contacts_known.csv")
    p = h.stage("events_unknown_contact.csv")
    assert h.import_(known, kind="contacts") == 0
    assert h.import_(p) == 0
    h.assert_contacts({"u1": {"a": 1}, "u2": {}})
    h.assert_events(h.event(p, 2, "u1", {"v": "x"}), h.event(p, 3, "u2", {"v": "y"}))


TIMESTAMPS_OK = [
    ("1696252121", T),
    ('"1696252121"', T),
    ("1696252121.999", T),
    ("0", 0),
    ("0.5", 0),
    ("4102444800", MAX_TIMESTAMP),
    ("4102444800.9", MAX_TIMESTAMP),  # range checked after truncation
    ("2023-10-02T13:08:41Z", T),
    ("2023-10-02T15:08:41+02:00", T),
    ("2023-10-02T10:38:41-02:30", T),
    ("2023-10-02T13:08:41.987654Z", T),
    ("2023-10-02T15:08:41.5+02:00", T),
    ("1970-01-01T00:00:00Z", 0),
    ("2100-01-01T00:00:00Z", MAX_TIMESTAMP),
    ("2100-01-01T00:00:00.5Z", MAX_TIMESTAMP),
]

TIMESTAMPS_BAD = [
    "1696252121000",  # milliseconds
    "4102444801",
    "-1",
    "+1696252121",
    "1696252121.",
    "2023-10-02T13:08:41",  # no offset
    "2023-10-02",  # date alone
    "1e9",
    "2100-01-01T00:00:01Z",
    "1969-12-31T23:59:59Z",
    "soon",
    "true",
]


@pytest.mark.parametrize(("cell", "expected"), TIMESTAMPS_OK)
def test_timestamp_accepted(h: Harness, cell: str, expected: int) -> None:
    """Unix seconds (decimals truncated) or ISO 8601 with an offset (fractions truncated),
    from 0 to 4102444800, become the event's integer timestamp and are not data."""
    p = one_cell(h, "events_timestamp_ok.csv", "timestamp", cell)
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", timestamp=expected))


@pytest.mark.parametrize("cell", TIMESTAMPS_BAD)
def test_timestamp_rejected(h: Harness, cell: str) -> None:
    """Any other timestamp (ms, no offset, date alone, `1e9`, out of range) rejects the row
    with a reason about the timestamp."""
    p = h.stage("events_timestamp_bad.csv", f"identifier,timestamp\nu1,{cell}\nu2,{T}\n")
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {2: "timestamp"})
    h.assert_events(h.event(p, 3, "u2", timestamp=T))


def test_empty_timestamp_means_processing_time(h: Harness) -> None:
    """An empty `timestamp` cell means the processing time."""
    p = h.stage("events_timestamp_empty.csv", 'identifier,timestamp\nu1,\nu2,""\n')
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1"), h.event(p, 3, "u2"))


def test_idempotency_key_length(h: Harness) -> None:
    """A key of 128 characters (after decoding) is kept; 129 rejects the row; empty is no key."""
    p = h.stage("events_idempotency_key_length.csv")
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {3: None, 6: None})
    h.assert_events(
        h.event(p, 2, "u1", key="k" * 128),
        h.event(p, 4, "u3", key=None),
        h.event(p, 5, "u4", key="é" * 128),
    )


def test_data_prefix_stripped_once(h: Harness) -> None:
    """A `data.` header prefix is removed once; other headers are data names as they are."""
    p = h.stage("events_data_prefix.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"total": 10, "a.b": "x", "data.x": "y", "plain": "z"}))


def test_data_prefix_collision_rejects_file(h: Harness) -> None:
    """`total` and `data.total` make two equal names: the file is rejected."""
    p = h.stage("events_data_prefix_collision.csv")
    assert h.import_(p) == 2
    h.assert_file_rejected(p)


def test_reserved_header_lookalikes_are_data(h: Harness) -> None:
    """Reserved headers match exactly: `Timestamp`, `data.name`, `NAME`, `data.timestamp`...
    are data properties."""
    p = h.stage("events_reserved_lookalikes.csv")
    assert h.import_(p) == 0
    data = {
        "Timestamp": 2023,
        "name": "bob",
        "IdempotencyKey": "k",
        "NAME": "N",
        "timestamp": "junk",
        "idempotencyKey": "kk",
        "identifier": "zz",
    }
    h.assert_events(h.event(p, 2, "u1", data))


# --- rule 9: idempotencyKey --------------------------------------------------------------


def test_repeated_keys_in_one_file(h: Harness) -> None:
    """Keys are compared exactly: a repeat is a duplicate (not a reject), `K1` is another
    key, a key of spaces is a key, and the skipped events' contacts are still created."""
    p = h.stage("events_duplicate_keys.csv")
    assert h.import_(p) == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": 1}, key="k1"),
        h.event(p, 4, "u3", {"v": 3}, key="K1"),
        h.event(p, 5, "u4", {"v": 4}, key="   "),
    )
    assert h.rejects() == []
    h.assert_file(p, "ingested", rows=3, rejected=0, duplicates=2)
    h.assert_contacts({f"u{i}": {} for i in range(1, 6)})


def test_repeated_keys_across_files(h: Harness) -> None:
    """A key accepted in one file makes a later file's event with that key (whatever its
    identifier or name) a duplicate."""
    first = h.stage("events_duplicate_keys_first.csv")
    second = h.stage("events_duplicate_keys_second.csv")
    assert h.import_(first) == 0
    assert h.import_(second) == 0
    h.assert_events(
        h.event(first, 2, "u1", key="k1"), h.event(second, 3, "u3", name="other", key="k2")
    )
    h.assert_file(second, "ingested", rows=1, rejected=0, duplicates=1)
    h.assert_contacts({"u1": {}, "u2": {}, "u3": {}})


def test_repeated_keys_across_sources(h: Harness) -> None:
    """Keys are global across sources: two sources polled by `once` and an `import` share
    one key space."""
    files = [{"kind": "events", "pattern": "*.csv", "event_name": "e"}]
    polled = {"files": files, "min_age": "0s", "after": "leave"}
    h.configure(h.source("alpha", **polled), h.source("beta", **polled))
    h.stage("a.csv", "identifier,idempotencyKey\nu1,k1\n", folder=h.root / "alpha")
    h.stage("b.csv", "identifier,idempotencyKey\nu2,k1\n", folder=h.root / "beta")
    rc, _ = h.run("once")
    assert rc == 0, h.last_output
    records = h.files()
    assert sorted((f["source"], f["status"]) for f in records) == [
        ("alpha", "ingested"),
        ("beta", "ingested"),
    ]
    assert sum(f["duplicates"] for f in records) == 1
    assert sum(f["rows"] for f in records) == 1
    assert [e["idempotencyKey"] for e in h.events()] == ["k1"]
    c = h.stage("events_key_after_sources.csv", "identifier,idempotencyKey\nu3,k1\n")
    assert h.import_(c) == 0
    h.assert_file(c, "ingested", rows=0, rejected=0, duplicates=1)
    h.assert_contacts({"u1": {}, "u2": {}, "u3": {}})


def test_key_repeated_under_another_source_rules(h: Harness) -> None:
    """A key is global whatever source's file rules (`--source`) read the file."""
    other = h.source("other", delimiter="|", files=[{"kind": "events", "pattern": "*"}])
    h.configure(other)
    first = h.stage("events_key_first.csv", "identifier,idempotencyKey\nu1,k1\n")
    second = h.stage("events_key_other.csv", "identifier|name|idempotencyKey\nu2|x|k1\n")
    assert h.import_(first) == 0
    assert h.import_(second, "--source", "other") == 0
    h.assert_file(second, "ingested", rows=0, rejected=0, duplicates=1)
    h.assert_events(h.event(first, 2, "u1", key="k1"))


def test_rejected_row_does_not_consume_its_key(h: Harness) -> None:
    """A row rejected for another reason does not consume its key (nor create its contact)."""
    p = h.stage("events_rejected_row_keeps_key.csv")
    assert h.import_(p) == 0
    h.assert_row_rejects(p, {2: "timestamp"})
    h.assert_events(h.event(p, 3, "u2", key="k1", timestamp=T))
    h.assert_file(p, "ingested", rows=1, rejected=1, duplicates=0)
    h.assert_contacts({"u2": {}})


# --- rule 10: columns mapping ------------------------------------------------------------


def test_columns_mapping_renames_and_skips(h: Harness) -> None:
    """`columns` renames headers (matched after trimming) before the other rules, `""`
    skips a column, and a mapped name absent from the file is ignored."""
    columns = {"E-mail": "email", "Internal note": "", "Amount": "amount", "Ghost": "ghost"}
    files = [{"kind": "events", "pattern": "*", "event_name": "purchase", "columns": columns}]
    h.configure(identifier="email", files=files)
    p = h.stage("events_columns_mapping.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "a@b.co", {"amount": 12.5, "Other": "x"}))


def test_columns_mapping_to_name(h: Harness) -> None:
    """A column mapped to `name` is the event name column."""
    files = [{"kind": "events", "pattern": "*", "columns": {"Event": "name"}}]
    h.configure(files=files)
    p = h.stage("events_mapping_to_name.csv")
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", name="signup"))


def test_columns_mapping_checks_reserved_attributes(h: Harness) -> None:
    """A contacts column mapped to a reserved attribute (or the identifier) is checked as one."""
    files = [
        {"kind": "contacts", "pattern": "*", "columns": {"Customer": "identifier", "Tel": "phone"}}
    ]
    h.configure(files=files)
    p = h.stage("contacts_columns_mapping.csv")
    assert h.import_(p, kind="contacts") == 0
    h.assert_row_rejects(p, {3: None})
    h.assert_contacts({"c1": {"phone": "32478112233", "Note": "hi"}})


@pytest.mark.parametrize(
    ("name", "columns"),
    [
        ("events_mapping_duplicate.csv", {"A": "B"}),
        ("events_mapping_same_target.csv", {"A": "x", "B": "x"}),
    ],
)
def test_columns_mapping_to_duplicate_rejects_file(
    h: Harness, name: str, columns: dict[str, str]
) -> None:
    """A mapping that makes two equal header names rejects the file."""
    files = [{"kind": "events", "pattern": "*", "event_name": "e", "columns": columns}]
    h.configure(files=files)
    p = h.stage(name)
    assert h.import_(p) == 2
    h.assert_file_rejected(p)


# --- §1 import options and §5 file identity -----------------------------------------------


def test_same_bytes_under_another_name_is_duplicate(h: Harness) -> None:
    """The same bytes under another name are recorded `duplicate` and not ingested again."""
    p = h.stage("events_simple.csv")
    copy = h.stage("events_simple_copy.csv", p.read_bytes())
    assert h.import_(p) == 0
    assert h.import_(copy) == 0
    h.assert_file(p, "ingested", rows=2)
    h.assert_file(copy, "duplicate")
    h.assert_events(h.event(p, 2, "u1", {"v": 1}), h.event(p, 3, "u2"))


def test_dry_run_stores_nothing(h: Harness) -> None:
    """`--dry-run` validates and reports but stores nothing, not even the ledger entry."""
    p = h.stage("events_ragged_rows.csv")
    assert h.import_(p, "--dry-run") == 0
    assert h.events() == []
    assert h.contacts() == {}
    assert h.rejects() == []
    assert h.files() == []
    assert h.import_(p) == 0
    h.assert_file(p, "ingested", rows=2, rejected=2, duplicates=0)


def test_dry_run_of_rejected_file(h: Harness) -> None:
    """`--dry-run` of a file rejected whole exits 2 and stores nothing."""
    p = h.stage("events_duplicate_header.csv")
    assert h.import_(p, "--dry-run") == 2
    assert h.rejects() == []
    assert h.files() == []


def test_event_name_option_overrides_entry(h: Harness) -> None:
    """`--event-name` overrides the entry's `event_name`."""
    p = h.stage("events_simple.csv")
    assert h.import_(p, "--event-name", "refund") == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": 1}, name="refund"), h.event(p, 3, "u2", name="refund")
    )


def test_event_name_option_supplies_missing_name(h: Harness) -> None:
    """`--event-name` names a file that has neither a `name` column nor an `event_name`."""
    h.configure(files=NAMELESS)
    p = h.stage("events_simple.csv")
    assert h.import_(p, "--event-name", "visit") == 0
    h.assert_events(h.event(p, 2, "u1", {"v": 1}, name="visit"), h.event(p, 3, "u2", name="visit"))


def test_event_name_option_does_not_beat_name_column(h: Harness) -> None:
    """`--event-name` replaces `event_name`, so a `name` column still wins."""
    p = h.stage("events_name_column.csv")
    assert h.import_(p, "--event-name", "refund") == 0
    h.assert_events(
        h.event(p, 2, "u1", {"v": 1}, name="buy"), h.event(p, 3, "u2", {"v": 2}, name="refund")
    )


def test_source_option_picks_file_rules(h: Harness) -> None:
    """`--source` takes the file rules from that source; rows are recorded under `import`."""
    partner = h.source(
        "partner",
        identifier="email",
        delimiter="|",
        files=[{"kind": "events", "pattern": "*", "event_name": "partner_event"}],
    )
    h.configure(partner, delimiter=";")
    p = h.stage("events_partner.csv", "email|v;w\na@b.co|1;2\n")
    assert h.import_(p, "--source", "partner") == 0
    h.assert_events(h.event(p, 2, "a@b.co", {"v;w": "1;2"}, name="partner_event"))
    h.assert_file(p, "ingested", rows=1)


def test_file_entry_chosen_by_pattern(h: Harness) -> None:
    """The first entry of the kind whose pattern matches the file name gives the rules; with
    none matching, the first entry of that kind."""
    files = [
        {"kind": "events", "pattern": "refunds_*.csv", "event_name": "refund"},
        {"kind": "events", "pattern": "orders_*.csv", "event_name": "order"},
    ]
    h.configure(files=files)
    refund = h.stage("refunds_1.csv", "identifier\nu1\n")
    order = h.stage("orders_1.csv", "identifier\nu2\n")
    other = h.stage("misc.csv", "identifier\nu3\n")
    for p in (refund, order, other):
        assert h.import_(p) == 0
    h.assert_events(
        h.event(refund, 2, "u1", name="refund"),
        h.event(order, 2, "u2", name="order"),
        h.event(other, 2, "u3", name="refund"),
    )


def test_defaults_apply_without_import_source(h: Harness) -> None:
    """With no source named `import`, the defaults apply (identifier column `identifier`,
    sniffed delimiter, UTF-8), not another source's rules."""
    other = h.source(
        "other",
        identifier="email",
        delimiter="|",
        encoding="latin-1",
        files=[{"kind": "events", "pattern": "*", "event_name": "other_event"}],
    )
    h.configure(other, import_source=False)
    p = h.stage("events_defaults.csv", "identifier;name;v\nu1;buy;café\n".encode())
    assert h.import_(p) == 0
    h.assert_events(h.event(p, 2, "u1", {"v": "café"}, name="buy"))
    nameless = h.stage("events_defaults_nameless.csv", "identifier;v\nu1;x\n")
    assert h.import_(nameless) == 2
    h.assert_file_rejected(nameless)
