"""The reject report a customer opens in a spreadsheet: every cell read back as a
spreadsheet reads a CSV file (RFC 4180 quoting, UTF-8 with its BOM), none of them a
formula, each one the customer's cell as it was."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.reject_report import FORMULA_STARTS, inert, reject_report
from connector.store.ledger import Reject


def _cells(report: bytes) -> list[list[str]]:
    """The report's cells as a spreadsheet imports them."""
    assert report.startswith("\ufeff".encode())  # (how Excel knows it is UTF-8)
    return list(csv.reader(io.StringIO(report.decode("utf-8-sig"), newline="")))


def _runs_as_formula(cell: str) -> bool:
    return cell.startswith(FORMULA_STARTS)


@pytest.mark.parametrize(
    "value",
    ['=HYPERLINK("http://x","y")', "+1", "-1", "@SUM(A1)", "\t=1", "\r=1", "=1\n=2"],
)
def test_a_cell_a_spreadsheet_would_run_is_written_as_text(value: str) -> None:
    [header, row] = _cells(reject_report([Reject(2, "some reason", value)]))
    assert header == ["line", "reason", "value"]
    assert row == ["2", "some reason", "'" + value]
    assert not _runs_as_formula(row[2])


def test_a_file_rejected_whole_has_an_empty_line_and_value() -> None:
    report = reject_report([Reject(None, "header: no identifier column 'email'", "")])
    assert report.endswith(b"\r\n")
    assert _cells(report) == [
        ["line", "reason", "value"],
        ["", "header: no identifier column 'email'", ""],
    ]


@given(st.lists(st.tuples(st.integers(1, 10**9), st.text(), st.text()), max_size=20))
def test_any_rejects_read_back_inert_and_whole(rows: list[tuple[int, str, str]]) -> None:
    """Whatever the reasons and values (quotes, delimiters, line breaks, BOMs), each
    comes back as one cell, equal to what was rejected but for the apostrophe that keeps a
    formula from running."""
    rejects = [Reject(line, reason, value) for line, reason, value in rows]
    cells = _cells(reject_report(rejects))
    assert cells[0] == ["line", "reason", "value"]
    assert len(cells) == len(rejects) + 1
    for (line, reason, value), got in zip(rejects, cells[1:], strict=True):
        assert got == [str(line), inert(reason), inert(value)]
        assert not any(_runs_as_formula(cell) for cell in got)
