"""One file through the ledger, the rules and the store (connector/ingest.py), in-process,
with an injected clock so the 24-hour idempotency window can be crossed."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import apsw
import orjson
import pytest

from connector.csvrules.rules import FileRules
from connector.errors import Interrupted, StoreBusy
from connector.ingest import Ingestor
from connector.store.feed import START
from connector.store.ledger import Arrival
from connector.store.port import Group
from connector.store.sqlite import SQLiteStore
from connector.store.sqlite import contacts as contacts_module
from connector.store.sqlite.db import MIGRATIONS
from tests.helpers import Clock

EVENTS = FileRules(kind="events")
CONTACTS = FileRules(kind="contacts")
DAY = 24 * 3600


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _events(db: SQLiteStore) -> list[dict[str, object]]:
    return list(db.records("events"))


def _contacts(db: SQLiteStore) -> list[dict[str, object]]:
    """Contacts with their attributes as objects (the dump gives JSON text fragments)."""
    return [orjson.loads(orjson.dumps(c)) for c in db.records("contacts")]


def test_utf16_without_bom_is_rejected_whole(tmp_path: Path, db: SQLiteStore) -> None:
    """A codec that cannot even start (UTF-16 with no BOM) rejects the file, no traceback."""
    path = tmp_path / "a.csv"
    path.write_bytes("identifier,name\nu,buy\n".encode("utf-16-le") + b"\x00")
    outcome = Ingestor(db).ingest(
        path, FileRules(kind="events", encoding="utf-16"), source="s", name="a"
    )
    assert outcome.entry.status == "rejected"
    assert outcome.reason and "utf-16" in outcome.reason


def test_a_bare_data_prefix_header_is_rejected(tmp_path: Path, db: SQLiteStore) -> None:
    """`data.` alone would name an empty property: the file is refused."""
    path = _file(tmp_path, "a.csv", "identifier,name,data.\nu,buy,x\n")
    outcome = Ingestor(db).ingest(path, EVENTS, source="s", name="a")
    assert outcome.entry.status == "rejected"


@pytest.mark.slow
def test_many_processes_opening_a_new_store_at_once(tmp_path: Path) -> None:
    """The schema is created once even when several processes open a new store together."""
    code = (
        "import sys; from pathlib import Path; from connector.store.sqlite import SQLiteStore;"
        " SQLiteStore(Path(sys.argv[1])).close()"
    )
    store = tmp_path / "new" / "c.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(store)], stderr=subprocess.PIPE)
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    with SQLiteStore(store) as db:
        assert db.query("PRAGMA user_version")[0][0] == len(MIGRATIONS)


@pytest.mark.slow
def test_a_second_writer_waits_for_the_first_rather_than_failing(tmp_path: Path) -> None:
    """Two connections (two sources polled at once): a ledger step that reads, then writes,
    waits while the other commits, instead of being refused (BEGIN IMMEDIATE)."""
    path = tmp_path / "store" / "c.db"
    with SQLiteStore(path) as first, SQLiteStore(path) as second:
        holding = threading.Event()

        def hold() -> None:
            with first.transaction():
                first.db.conn.execute(
                    "INSERT INTO rejects(file_id, line, reason) VALUES (0, 1, 'x')"
                )
                holding.set()
                time.sleep(0.5)

        thread = threading.Thread(target=hold)
        thread.start()
        holding.wait()
        arrival = Arrival("s", "/a.csv", "ab" * 32, 3, "events")
        entry = Ingestor(second).ledger.begin(arrival, 1_764_000_000.0)
        thread.join()
        assert entry.status == "ingesting"


def test_an_events_file_queues_only_contacts_not_stored_yet(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """Events of known contacts add nothing to apply at the file's end: only new ones wait."""
    Ingestor(db).ingest(
        _file(tmp_path, "a.csv", "identifier,plan\nu,free\nv,pro\n"), CONTACTS, source="s", name="a"
    )
    waiting: list[int] = []

    def peek(_records: int) -> None:
        waiting.append(db.query("SELECT count(*) FROM pending_contacts")[0][0])

    text = "identifier,name\n" + "u,buy\nv,buy\nw,buy\n" * 4
    Ingestor(db, batch_records=3, commit_seconds=0).ingest(
        _file(tmp_path, "b.csv", text), EVENTS, source="s", name="b", progress=peek
    )
    assert waiting == [1, 1, 1, 1]  # w, once
    assert [c["identifier"] for c in _contacts(db)] == ["u", "v", "w"]
    assert _contacts(db)[0]["attributes"] == {"plan": "free"}


def _stopped_after_a_chunk_staged(db: SQLiteStore, path: Path) -> None:
    """Import a contacts file, stopped once the first chunk of its upserts is staged."""

    def staged_some() -> bool:
        return db.query("SELECT staged_through FROM files")[0][0] is not None

    with pytest.raises(Interrupted):
        Ingestor(db, stop=staged_some).ingest(path, CONTACTS, source="s", name="a")


def test_contact_upserts_staged_part_way_are_resumed_and_shown_once(
    tmp_path: Path, db: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop while a file's contact upserts are staged (a chunk of identifiers per
    transaction) shows none of them; the next run stages the rest from where the last one
    got to, then shows them all, each contact once in the feed."""
    # (a batch gives one upsert per contact: ten here, staged three to a transaction)
    monkeypatch.setattr(contacts_module, "CHUNK_ROWS", 3)
    text = "identifier,plan\n" + "".join(f"u{i % 10},p{i}\n" for i in range(40))
    path = _file(tmp_path, "a.csv", text)

    _stopped_after_a_chunk_staged(db, path)

    assert _contacts(db) == []
    assert db.query("SELECT staged_through, status FROM files") == [("u2", "failed")]
    Ingestor(db).ingest(path, CONTACTS, source="s", name="a")
    last = {f"u{k}": {"plan": f"p{30 + k}"} for k in range(10)}  # (later rows win)
    assert {c["identifier"]: c["attributes"] for c in _contacts(db)} == last
    lines = [orjson.loads(orjson.dumps(line)) for line in db.feed("contacts", START)]
    assert {line["identifier"]: line["attributes"] for line in lines} == last
    assert len(lines) == 10
    assert db.query("SELECT count(*) FROM pending_contacts") == [(0,)]


@pytest.mark.parametrize("cell", ["x" * 100, "y" * 5_000])  # (sorted with its upsert, or not)
def test_a_chunk_of_upserts_staged_is_bounded_by_their_bytes(
    tmp_path: Path, db: SQLiteStore, monkeypatch: pytest.MonkeyPatch, cell: str
) -> None:
    """However many rows a chunk may take, it ends before its attributes pass the bytes a
    chunk may hold, so that a file of large records stages them a few at a time."""
    monkeypatch.setattr(contacts_module, "CHUNK_BYTES", 3 * len(cell))
    text = "identifier,note\n" + "".join(f"u{i},{cell}\n" for i in range(10))
    path = _file(tmp_path, "a.csv", text)

    _stopped_after_a_chunk_staged(db, path)

    # (each contact's attributes are its cell and a little more: two fit in three cells)
    assert db.query("SELECT staged_through FROM files") == [("u1",)]
    Ingestor(db).ingest(path, CONTACTS, source="s", name="a")
    assert len(_contacts(db)) == 10


def test_the_last_record_stored_is_not_kept_in_memory(tmp_path: Path, db: SQLiteStore) -> None:
    """Cached statements keep no record bound once a file is stored: huge records would
    otherwise stay in the writer's memory while it waits for the next file."""
    big = "x" * 900_000  # 2.7 MB a record
    db.db.conn.release_memory()
    before = apsw.memory_used()
    for kind, rules, header in (
        ("events", EVENTS, "identifier,name,idempotencyKey,a,b,c\n"),
        ("contacts", CONTACTS, "identifier,a,b,c\n"),
    ):
        key = ",k" if kind == "events" else ""
        rows = "".join(f"u{i}{',buy' if key else ''}{key}{i},{big},{big},{big}\n" for i in range(3))
        path = _file(tmp_path, f"{kind}.csv", header + rows)
        assert Ingestor(db).ingest(path, rules, source="s", name=kind).entry.rows == 3
    db.db.conn.release_memory()  # (pages cached for the store are not the question)
    assert apsw.memory_used() - before < 1_000_000


@pytest.mark.parametrize("units", [[0.05] * 40, [0.01] * 10 + [0.12] * 10 + [0.02] * 20])
def test_a_group_commits_before_one_more_unit_would_hold_the_store_too_long(
    units: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are grouped into transactions of about ``seconds``, none longer: a group
    commits when one more unit like the last (twice, for safety), then a commit like the
    last, might not fit; units may speed up or slow down."""
    clock = Clock(0.0)
    monkeypatch.setattr("connector.store.port.time.monotonic", clock)
    held: list[float] = []
    began: list[float] = []

    def end(*, commit: bool) -> None:
        clock.now += 0.03  # (a commit takes time too)
        held.append(clock.now - began[-1])

    with Group(lambda: began.append(clock.now), end, 1.0) as group:
        for unit in units:
            group.begin()
            clock.now += unit
            group.tick()
    assert len(held) > 1
    assert max(held) <= 1.0
    assert min(held[:-1]) >= 0.5  # (not committing at every unit either)


def test_a_long_file_does_not_starve_another_writer_of_this_process(tmp_path: Path) -> None:
    """Writers of one process take turns: while one commits group after group, another
    one's transaction gets in at the next commit, not after the whole file."""
    path = tmp_path / "store" / "c.db"
    with SQLiteStore(path) as busy, SQLiteStore(path) as other:
        started, done = threading.Event(), threading.Event()

        def long_file() -> None:
            with busy.grouped(0.02) as group:
                while not done.is_set():
                    group.begin()
                    busy.db.conn.execute(
                        "INSERT INTO rejects(file_id, line, reason) VALUES (0, 1, 'x')"
                    )
                    started.set()
                    group.tick()

        thread = threading.Thread(target=long_file)
        thread.start()
        try:
            assert started.wait(10)
            waited = time.monotonic()
            with other.transaction():
                other.db.conn.execute(
                    "INSERT INTO rejects(file_id, line, reason) VALUES (1, 1, 'y')"
                )
            assert time.monotonic() - waited < 2
        finally:
            done.set()
            thread.join()


def test_a_store_locked_by_another_process_too_long_is_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("connector.store.sqlite.db.BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "store" / "c.db"
    SQLiteStore(path).close()  # created
    holder = apsw.Connection(str(path))  # as another process would: no turns shared
    holder.execute("BEGIN IMMEDIATE")
    try:
        with (
            SQLiteStore(path) as db,
            pytest.raises(StoreBusy, match="locked by another writer"),
            db.transaction(),
        ):
            pass
        with SQLiteStore(path) as db:  # and nothing is left half-done: the next one works
            holder.execute("ROLLBACK")
            with db.transaction():
                db.db.conn.execute("INSERT INTO rejects(file_id, line, reason) VALUES (0, 1, 'x')")
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


def test_a_file_refused_late_gives_back_only_its_own_key_claims(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """A file stopped after claiming a key, then refused whole (past max_rejects) more than
    24 hours later, gives back its own claims only: the key another file accepted again
    once it had expired still holds within its window."""
    clock = Clock()
    header = "identifier,name,idempotencyKey\n"
    first = _file(tmp_path, "a.csv", header + "u1,buy,K\nu2,buy,L\n" + ",buy,\n" * 6)
    calls = iter(range(1_000))
    stopping = Ingestor(
        db,
        clock=clock,
        batch_records=2,
        commit_seconds=0,
        max_rejects=3,
        stop=lambda: next(calls) >= 1,
    )
    with pytest.raises(Interrupted):
        stopping.ingest(first, EVENTS, source="s", name="a")
    assert db.query("SELECT key FROM idempotency_keys ORDER BY key") == [("K",), ("L",)]
    clock.now += DAY + 1  # K expires; another file accepts it again
    ingestor = Ingestor(db, clock=clock, batch_records=2, commit_seconds=0, max_rejects=3)
    again = ingestor.ingest(
        _file(tmp_path, "b.csv", header + "v1,buy,K\n"), EVENTS, source="s", name="b"
    )
    assert (again.entry.rows, again.entry.duplicates) == (1, 0)
    clock.now += 10
    refused = ingestor.ingest(first, EVENTS, source="s", name="a")  # resumed: too many rejects
    assert refused.entry.status == "rejected"
    assert db.query("SELECT key FROM idempotency_keys") == [("K",)]  # b's claim, not a's L
    clock.now += 10
    third = ingestor.ingest(
        _file(tmp_path, "c.csv", header + "w1,buy,K\n"), EVENTS, source="s", name="c"
    )
    assert (third.entry.rows, third.entry.duplicates) == (0, 1)
    assert [e["identifier"] for e in _events(db)] == ["v1"]


def test_keys_accepted_before_their_file_was_recorded_are_given_back_by_text(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """Keys a store accepted before it recorded the accepting file (a store upgraded from
    schema v5) are given back by their text when that file is refused whole."""
    header = "identifier,name,idempotencyKey\n"
    first = _file(tmp_path, "a.csv", header + "u1,buy,K\nu2,buy,L\n" + ",buy,\n" * 6)
    calls = iter(range(1_000))
    stopping = Ingestor(
        db, batch_records=2, commit_seconds=0, max_rejects=3, stop=lambda: next(calls) >= 1
    )
    with pytest.raises(Interrupted):
        stopping.ingest(first, EVENTS, source="s", name="a")
    with db.transaction():  # as the v6 migration leaves the keys of a v5 store
        db.db.conn.execute("UPDATE idempotency_keys SET file_id = NULL")
    ingestor = Ingestor(db, batch_records=2, commit_seconds=0, max_rejects=3)
    assert ingestor.ingest(first, EVENTS, source="s", name="a").entry.status == "rejected"
    assert db.query("SELECT count(*) FROM idempotency_keys") == [(0,)]
