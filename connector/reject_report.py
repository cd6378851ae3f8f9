"""The reject report: ``<file name>.rejects.csv``, written on the source beside where a
file went (`reject_report = true`), so that the customer who sent it sees which rows were
refused and why, without access to the connector.

It is read in spreadsheets, by people, so it is written for them: UTF-8 with a BOM (Excel
reads UTF-8 only with one), CRLF line ends, and no cell that a spreadsheet would run as a
formula — the values are the customer's own cells, and a cell such as ``=HYPERLINK(...)``
must show as text, not act (CSV injection)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from connector.store.ledger import Reject

# What makes a spreadsheet read a cell as a formula (OWASP's list): such a cell is written
# with a leading apostrophe, which spreadsheets show as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
HEADER = ("line", "reason", "value")


def inert(cell: str) -> str:
    """``cell`` as a spreadsheet will show it without running it."""
    return "'" + cell if cell.startswith(FORMULA_STARTS) else cell


def reject_report(rejects: Iterable[Reject]) -> bytes:
    """The report of a file's rejects, in file order (a file rejected whole: one row, its
    line empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(HEADER)
    for line, reason, value in rejects:
        writer.writerow(("" if line is None else line, inert(reason), inert(value)))
    return out.getvalue().encode("utf-8-sig")
