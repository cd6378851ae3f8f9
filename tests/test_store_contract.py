"""The Store contract (tests/store_contract.py) on each adapter: SQLite on a file of its
own, PostgreSQL on a fresh database of the session's server. And SQLite's schema history: a
store of every earlier version is upgraded with its data, a newer one refused (the only
tests here that use SQL)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apsw
import pytest

from connector.config import StoreConfig
from connector.csvrules.rules import FileRules
from connector.errors import FatalError
from connector.ingest import Ingestor
from connector.store import open_store
from connector.store.feed import FEED_NUMBERING
from connector.store.ledger import Arrival
from connector.store.sqlite import SQLiteStore
from connector.store.sqlite.db import MIGRATIONS
from tests.helpers import T0, Clock
from tests.store_contract import StoreContract, contacts, fed, records

EVENTS = FileRules(kind="events")
CONTACTS = FileRules(kind="contacts")


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store_config(self, tmp_path: Path) -> StoreConfig:
        return StoreConfig.model_validate({"path": str(tmp_path / "store" / "c.db")})

    @pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))
    def test_a_store_of_an_earlier_schema_is_upgraded_with_its_data(
        self, store_config: StoreConfig, tmp_path: Path, version: int
    ) -> None:
        """A store made by an earlier connector (schema ``version``), holding a file
        ingested and one stopped part-way: upgraded on opening, it shows the same records,
        knows their bytes and keys, and resumes the stopped file from its cursor."""
        ingested = tmp_path / "a.csv"
        ingested.write_text("identifier,name,idempotencyKey,n\nu1,buy,K,1\n,buy,,\n")
        stopped = tmp_path / "b.csv"
        stopped.write_text("identifier,name\nv1,buy\nv2,buy\nv3,buy\n")
        a, b = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (ingested, stopped))
        assert store_config.path is not None
        store_config.path.parent.mkdir()
        old = apsw.Connection(str(store_config.path))
        for number, script in enumerate(MIGRATIONS[:version], start=1):
            old.execute(script)
            old.execute(f"PRAGMA user_version={number}")
        # (columns of schema v1; from v9 on, contacts and keys name their tenant)
        tenant, default = ("tenant, ", "'default', ") if version >= 9 else ("", "")
        old.execute(
            "INSERT INTO files(id, source, path, sha256, size, mtime, kind, status, rows,"
            " rejected, duplicates, cursor, started_at, processed_at) VALUES"
            " (1, 's', '/in/a.csv', ?, ?, 7.5, 'events', 'ingested', 1, 1, 0, 2,"
            "  '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z'),"
            " (2, 's', '/in/b.csv', ?, ?, NULL, 'events', 'failed', 1, 0, 0, 1,"
            "  '2026-01-01T00:00:02Z', '2026-01-01T00:00:03Z');"
            "INSERT INTO events(file_id, line, identifier, name, timestamp, idempotency_key,"
            " data) VALUES (1, 2, 'u1', 'buy', 5, 'K', '{\"n\":1}'), (2, 2, 'v1', 'buy', 6,"
            " NULL, '{}');"
            "INSERT INTO rejects(file_id, line, reason) VALUES (1, 3, 'identifier is empty');"
            f"INSERT INTO contacts({tenant}identifier, attributes)"
            f" VALUES ({default}'u1', '{{\"plan\":\"free\"}}'), ({default}'v1', '{{}}');"
            f"INSERT INTO idempotency_keys({tenant}key, accepted_at)"
            f" VALUES ({default}'K', {int(T0)})",
            (a, ingested.stat().st_size, b, stopped.stat().st_size),
        )
        if version >= 2:
            old.execute("UPDATE files SET completed_at = '2026-01-01T00:00:04Z' WHERE id = 1")
        if version >= 10:  # (what that connector did as files became final)
            old.execute(FEED_NUMBERING)
            old.execute("UPDATE feed_clock SET seq = (SELECT max(feed_seq) FROM files)")
            old.execute(
                "INSERT INTO contact_changes(file_id, identifier, attributes)"
                " SELECT 1, identifier, attributes FROM contacts"
            )
        old.close()

        with open_store(store_config) as store:
            assert isinstance(store, SQLiteStore)
            assert store.query("PRAGMA user_version") == [(len(MIGRATIONS),)]
            files = [
                (f["path"], f["sha256"], f["status"], f["rows"], f["processed_at"])
                for f in records(store, "files")
            ]
            assert files == [
                ("/in/a.csv", a, "ingested", 1, "2026-01-01T00:00:01Z"),
                ("/in/b.csv", b, "failed", 1, "2026-01-01T00:00:03Z"),
            ]
            events = [
                (e["file"], e["line"], e["data"], e["timestamp"], e["idempotencyKey"])
                for e in records(store, "events")
            ]
            assert events == [("/in/a.csv", 2, {"n": 1}, 5, "K")]
            assert [(r["file"], r["line"]) for r in records(store, "rejects")] == [("/in/a.csv", 3)]
            assert contacts(store) == {"u1": {"plan": "free"}, "v1": {}}
            known = store.ledger.known_at("s", "/in/a.csv")
            assert known is not None and (known.size, known.mtime, known.status) == (
                ingested.stat().st_size,
                7.5,
                "ingested",
            )
            assert known.completed == (version >= 2)

            ingestor = Ingestor(store, clock=Clock(), batch_records=1, commit_seconds=0)
            again = ingestor.ingest(ingested, EVENTS, source="t", name="/in/again.csv")
            assert again.entry.status == "duplicate"
            resumed = ingestor.ingest(stopped, EVENTS, source="s", name="/in/b.csv")
            assert (resumed.entry.id, resumed.entry.rows, resumed.entry.cursor) == (2, 3, 3)
            keyed = tmp_path / "c.csv"
            keyed.write_text("identifier,name,idempotencyKey\nw,buy,K\nw,buy,L\n")
            outcome = ingestor.ingest(keyed, EVENTS, source="s", name="/in/c.csv")
            assert (outcome.entry.rows, outcome.entry.duplicates) == (1, 1)  # K still held
            update = tmp_path / "d.csv"
            update.write_text("identifier,seats\nu1,2\n")
            ingestor.ingest(update, CONTACTS, source="s", name="/in/d.csv")
            store.ledger.note_failure(Arrival("s", "/in/e.csv", None, 9, "events"), T0)

            assert [(e["file"], e["line"]) for e in records(store, "events")] == [
                ("/in/a.csv", 2),
                ("/in/b.csv", 2),
                ("/in/b.csv", 3),
                ("/in/b.csv", 4),
                ("/in/c.csv", 3),
            ]
            assert contacts(store) == {
                "u1": {"plan": "free", "seats": 2},
                "v1": {},
                "v2": {},
                "v3": {},
                "w": {},
            }
            assert [(f["path"], f["status"]) for f in records(store, "files")] == [
                ("/in/a.csv", "ingested"),
                ("/in/b.csv", "ingested"),
                ("/in/again.csv", "duplicate"),
                ("/in/c.csv", "ingested"),
                ("/in/d.csv", "ingested"),
                ("/in/e.csv", "failed"),
            ]
            # The feed: what was final before the upgrade first, in the order recorded,
            # the contacts as they were then as its last file's changes.
            assert [(e["file"], e["line"]) for e in fed(store, "events")] == [
                ("/in/a.csv", 2),
                ("/in/b.csv", 2),
                ("/in/b.csv", 3),
                ("/in/b.csv", 4),
                ("/in/c.csv", 3),
            ]
            assert [f["path"] for f in fed(store, "files")] == [
                "/in/a.csv",
                "/in/again.csv",
                "/in/b.csv",
                "/in/c.csv",
                "/in/d.csv",
            ]
            assert [(c["identifier"], c["attributes"]) for c in fed(store, "contacts")] == [
                ("u1", {"plan": "free"}),
                ("v1", {}),
                ("v2", {}),
                ("v3", {}),
                ("w", {}),
                ("u1", {"plan": "free", "seats": 2}),
            ]

    def test_a_store_of_a_newer_schema_is_refused(self, store_config: StoreConfig) -> None:
        assert store_config.path is not None
        open_store(store_config).close()
        newer = apsw.Connection(str(store_config.path))
        newer.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
        newer.close()
        with pytest.raises(FatalError, match=rf"schema v{len(MIGRATIONS) + 1} is newer than"):
            open_store(store_config)


@pytest.mark.slow  # (a PostgreSQL server)
class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store_config(self, postgres_url: str) -> StoreConfig:
        return StoreConfig.model_validate({"url": postgres_url})

    # Its schema has one version so far (connector.store.postgres.schema): nothing earlier
    # to upgrade from. Opening a new store at once and again is in the contract; processes
    # migrating together and a newer schema refused are in tests/test_postgres_store.py.
