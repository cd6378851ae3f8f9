"""An identifier over 512 characters rejects its row, on every store (CSV rules §6.2, §11.4).

PostgreSQL's btree index on ``contacts.identifier`` holds no entry over about 2,700 bytes:
without the bound, a row with a longer identifier that does not compress failed its whole
file at the final transaction there, while SQLite stored it. The rule makes it a reject
with its line on both, and the file's other rows are stored.
"""

from __future__ import annotations

import io
import json
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector.config import StoreConfig
from connector.csvrules.rules import MAX_IDENTIFIER, FileRules, Kind
from connector.dump import dump
from connector.ingest import Ingestor
from connector.store import open_store
from connector.store.port import Store, Table

# Random letters and digits do not compress: as a UTF-8 index entry, 3,000 of them are
# over PostgreSQL's limit for a btree entry (a third of an 8 kB page).
LONG = "".join(random.Random(20261128).choices(string.ascii_letters + string.digits, k=3000))
REASON = f"identifier (the identifier) longer than {MAX_IDENTIFIER} characters"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store' / 'c.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    with open_store(StoreConfig(url=url)) as opened:
        yield opened


def _records(store: Store, table: Table) -> list[dict[str, Any]]:
    """A table as `connector dump` shows it, read back."""
    out = io.BytesIO()
    dump(store, table, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("kind", ["events", "contacts"])
def test_a_long_random_identifier_is_a_reject_and_the_good_rows_are_stored(
    store: Store, tmp_path: Path, kind: Kind
) -> None:
    """A 3,000-character random identifier rejects its row, with its line; the rows
    around it are stored, the 512-character one at the bound included."""
    edge = "é" * MAX_IDENTIFIER  # 1,024 bytes of UTF-8, within the bound in characters
    path = tmp_path / "a.csv"
    path.write_text(f"identifier,v\nu1,1\n{LONG},2\n{edge},3\nu4,4\n", encoding="utf-8")
    rules = FileRules(kind=kind, event_name="e")
    with capture_logs():
        outcome = Ingestor(store).ingest(path, rules, source="s", name="a.csv")
    assert outcome.reason is None
    entry = outcome.entry
    assert (entry.status, entry.rows, entry.rejected) == ("ingested", 3, 1)
    rejects = [(r["line"], r["reason"]) for r in _records(store, "rejects")]
    assert rejects == [(3, REASON)]
    assert len(REASON) < 80  # the identifier itself is not quoted
    contacts = {c["identifier"]: c["attributes"] for c in _records(store, "contacts")}
    if kind == "contacts":
        assert contacts == {"u1": {"v": 1}, edge: {"v": 3}, "u4": {"v": 4}}
    else:
        assert contacts == {"u1": {}, edge: {}, "u4": {}}
        events = [(e["line"], e["identifier"], e["data"]) for e in _records(store, "events")]
        assert sorted(events) == [(2, "u1", {"v": 1}), (4, edge, {"v": 3}), (5, "u4", {"v": 4})]
