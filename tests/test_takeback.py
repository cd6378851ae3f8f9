"""A file taken back on SQLite (connector/store/sqlite/takeback.py): out of sight, its keys
free, in the transaction that forgets its entry; its rows removed afterwards, a span per
transaction, resumed after a stop; its id given to no other file meanwhile."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connector.csvrules.rules import FileRules
from connector.errors import Interrupted
from connector.ingest import Ingestor
from connector.store.ledger import Arrival
from connector.store.sqlite import SQLiteStore, takeback
from connector.store.sqlite import contacts as contacts_module

EVENTS = FileRules(kind="events")
CONTACTS = FileRules(kind="contacts")
ROWS = 1_000
SPAN = 100  # events removed per transaction here


@pytest.fixture(autouse=True)
def _small_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(takeback, "EVENTS_AT_A_TIME", SPAN)
    monkeypatch.setattr(contacts_module, "_TAKEN_BACK_ROWS", SPAN // 2)


def _count(db: SQLiteStore, table: str) -> int:
    return int(db.query(f"SELECT count(*) FROM {table}")[0][0])


def _unswept(db: SQLiteStore) -> int:
    return int(db.query("SELECT count(*) FROM taken_back WHERE NOT swept")[0][0])


def _contacts(db: SQLiteStore) -> list[bytes]:
    return [orjson.dumps(c) for c in db.records("contacts")]  # (attributes: JSON fragments)


def _refused(db: SQLiteStore, tmp_path: Path) -> int:
    """An events file of ROWS keyed rows, each naming a new contact, then rejects past
    `max_rejects`: refused once all its rows were committed (its keys claimed). Its rows
    are left to sweep (the ingestor stops as soon as the file is taken back); returns the
    id the file had."""
    path = tmp_path / "refused.csv"
    rows = "".join(f"u{i},buy,k{i}\n" for i in range(ROWS)) + ",,bad\n" * 3
    path.write_text("identifier,name,idempotencyKey\n" + rows)

    def taken_back() -> bool:
        return bool(db.query("SELECT 1 FROM taken_back WHERE NOT swept"))

    ingestor = Ingestor(db, batch_records=SPAN, commit_seconds=0, max_rejects=2, stop=taken_back)
    outcome = ingestor.ingest(path, EVENTS, source="s", name="refused.csv")
    assert outcome.entry.status == "rejected"
    [(file_id,)] = db.query("SELECT file_id FROM taken_back")
    return int(file_id)


def test_a_file_taken_back_is_out_of_sight_and_its_keys_free_before_its_rows_go(
    tmp_path: Path, db: SQLiteStore
) -> None:
    refused = _refused(db, tmp_path)
    assert _count(db, "events") == ROWS  # still there, shown by no entry
    assert list(db.records("events")) == []
    assert _count(db, "idempotency_keys") == ROWS
    again = tmp_path / "again.csv"  # the same keys, by another file, before the sweep
    again.write_text(
        "identifier,name,idempotencyKey\n" + "".join(f"v{i},buy,k{i}\n" for i in range(5))
    )

    outcome = Ingestor(db).ingest(again, EVENTS, source="s", name="again.csv")

    assert (outcome.entry.rows, outcome.entry.duplicates) == (5, 0)
    assert outcome.entry.id > refused  # (a new entry never takes a swept file's id)
    # Its settle swept the refused file's rows away: the store holds only the new file's.
    assert _unswept(db) == 0
    # The refused file's own record (a new entry, not given its former id) keeps its reason.
    [reject] = db.records("rejects")
    assert (reject["file"], reject["line"]) == ("refused.csv", None)
    assert reject["reason"].startswith("more than 2 rows rejected")
    assert [e["identifier"] for e in db.records("events")] == [f"v{i}" for i in range(5)]
    assert _count(db, "events") == 5
    assert db.query("SELECT key, file_id FROM idempotency_keys ORDER BY key") == [
        (f"k{i}", outcome.entry.id) for i in range(5)
    ]
    assert _count(db, "pending_contacts") == 0
    assert sorted(c["identifier"] for c in db.records("contacts")) == [f"v{i}" for i in range(5)]


def test_a_sweep_goes_a_span_per_transaction_and_on_from_where_it_stopped(
    tmp_path: Path, db: SQLiteStore
) -> None:
    _refused(db, tmp_path)
    commits: list[None] = []
    db.db.conn.set_commit_hook(lambda: bool(commits.append(None)))  # (False: commit)
    spans = iter(range(3))

    db.sink.sweep(lambda: next(spans, None) is None)  # three spans, then a stop

    assert (len(commits), _count(db, "events")) == (3, ROWS - 3 * SPAN)
    assert _count(db, "idempotency_keys") == ROWS - 3 * SPAN  # (given back with them)
    assert _unswept(db) == 1
    commits.clear()
    db.sink.sweep(lambda: False)
    assert len(commits) > ROWS // SPAN - 3  # (then its contacts, rejects and record)
    assert (_count(db, "events"), _count(db, "idempotency_keys"), _unswept(db)) == (0, 0, 0)


def test_contacts_staged_by_a_file_taken_back_are_given_up(tmp_path: Path, db: SQLiteStore) -> None:
    """A contacts file set aside after its upserts were staged (stopped at its end, then
    set aside): the contacts it created go, those it staged on read as they were, and
    nothing of it stays in the store."""
    first = tmp_path / "first.csv"
    first.write_text("identifier,plan\n" + "".join(f"c{i},free\n" for i in range(ROWS)))
    Ingestor(db).ingest(first, CONTACTS, source="s", name="first.csv")
    before = _contacts(db)
    changes = _count(db, "contact_changes")
    second = tmp_path / "second.csv"
    second.write_text("identifier,plan\n" + "".join(f"c{i},paid\n" for i in range(0, 2 * ROWS, 2)))

    def settled() -> bool:  # stops the import once its upserts are staged
        staged = "SELECT 1 FROM files WHERE path = 'second.csv' AND staged_through IS NOT NULL"
        return bool(db.query(staged))

    with pytest.raises(Interrupted):
        Ingestor(db, stop=settled).ingest(second, CONTACTS, source="s", name="second.csv")
    assert _count(db, "contacts") == ROWS + ROWS // 2  # staged: the new ones are rows already
    sha256 = db.query("SELECT sha256 FROM files WHERE path = 'second.csv'")[0][0]
    arrival = Arrival("s", "second.csv", sha256, second.stat().st_size, "contacts")

    Ingestor(db).set_aside(arrival, "set aside for the test")

    assert _contacts(db) == before
    assert _count(db, "contacts") == ROWS
    staged = "SELECT count(*) FROM contacts WHERE staged_by NOT IN (SELECT id FROM files)"
    assert db.query(staged) == [(0,)]  # (none is left to a file taken back)
    assert _count(db, "contact_changes") == changes
    assert (_count(db, "pending_contacts"), _unswept(db)) == (0, 0)


def test_an_erasure_reaches_the_rows_of_a_file_taken_back(tmp_path: Path, db: SQLiteStore) -> None:
    """Rows out of sight are still in the store: an erasure sweeps them away first."""
    _refused(db, tmp_path)
    named = "SELECT count(*) FROM {} WHERE identifier = 'u5'"
    assert [db.query(named.format(t)) for t in ("events", "pending_contacts")] == [[(1,)]] * 2

    db.erase("default", ["u5"], "asked", "dpo", 1_800_000_000.0)

    assert [db.query(named.format(t)) for t in ("events", "pending_contacts")] == [[(0,)]] * 2
    assert _unswept(db) == 0
