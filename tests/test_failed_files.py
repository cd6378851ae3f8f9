"""Files that fail show in the ledger as ``failed`` (docs/commands.md, What the dumps
show) until a later try decides them, and keep one entry per file throughout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest
from structlog.testing import capture_logs

from connector.csvrules.rules import FileRules
from connector.errors import Interrupted, StorageError
from connector.ingest import Ingestor
from connector.pipeline import Poller
from connector.store.sqlite import SQLiteStore
from tests.helpers import POLLED_ROWS, Flaky, broken_poller, configs

ROWS = 5_000


@pytest.fixture
def polled(tmp_path: Path, db: SQLiteStore) -> tuple[Poller, Flaky]:
    return broken_poller(tmp_path, db)


def _files(poller: Poller) -> list[dict[str, Any]]:
    return list(poller.store.records("files"))


def test_a_file_that_cannot_be_archived_is_not_decided(polled: tuple[Poller, Flaky]) -> None:
    """The archive copy is made while the rows are written and awaited before the final
    entry: when it fails, the file is `failed` (nothing shown) and the poll ends (every
    file would fail alike), and the next try ends it."""
    poller, flaky = polled
    flaky.broken = False
    archive = poller.config.paths.archive
    archive.write_text("a file where the archive folder should be")
    with pytest.raises(StorageError, match=f"^archive {archive}: not a folder$"):
        poller.poll()
    (entry,) = _files(poller)
    assert entry["status"] == "failed"
    assert list(poller.store.records("events")) == []
    archive.unlink()
    poller.poll()
    (entry,) = _files(poller)
    assert (entry["status"], entry["rows"]) == ("ingested", POLLED_ROWS - 5)
    assert (archive / f"{entry['sha256']}.csv.gz").exists()


def test_a_store_busy_too_long_fails_the_file_only_and_the_next_poll_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding the store past the wait (an `import` applying a million
    contacts, say): the file fails this poll, the poll goes on, and the next one takes it."""
    monkeypatch.setattr("connector.store.sqlite.db.BUSY_TIMEOUT_MS", 200)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "events.csv").write_text("identifier,n\nu1,1\nu2,2\n")
    config, source = configs(tmp_path)
    with SQLiteStore(config.store.path) as db:
        poller = Poller(config, source, db, sleep=lambda _: None)
        other = apsw.Connection(str(config.store.path))
        other.execute("BEGIN IMMEDIATE")
        try:
            summary = poller.poll()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert [cause for cause in summary.failed.values()] == [
            f"the store {config.store.path} stayed locked by another writer"
        ]
        assert not summary.taken
        taken = poller.poll().taken
        assert [(e.status, e.rows) for e in taken.values()] == [("ingested", 2)]
        assert len(list(db.records("events"))) == 2


def test_a_part_done_entry_stays_when_other_bytes_take_its_name(tmp_path: Path) -> None:
    """A file stopped part-way keeps its entry (and its accepted keys) when other bytes
    arrive under its name: the same bytes, sent again, still resume it."""
    first, other = tmp_path / "first.csv", tmp_path / "other.csv"
    first.write_text("identifier,name\n" + "".join(f"u{i},buy\n" for i in range(ROWS)))
    other.write_text("identifier,name\nv1,buy\n")
    events = FileRules(kind="events")
    with SQLiteStore(tmp_path / "store" / "c.db") as db:
        batches = iter(range(100))
        stopping = Ingestor(
            db, batch_records=1_000, commit_seconds=0, stop=lambda: next(batches) >= 2
        )
        with pytest.raises(Interrupted):
            stopping.ingest(first, events, source="s", name="/in/x.csv")
        [(cursor,)] = db.query("SELECT cursor FROM files WHERE status = 'failed'")
        assert 0 < cursor < ROWS

        Ingestor(db).ingest(other, events, source="s", name="/in/x.csv")
        assert db.query("SELECT status, cursor FROM files ORDER BY id") == [
            ("failed", cursor),
            ("ingested", 1),
        ]
        with capture_logs() as logs:
            again = Ingestor(db).ingest(first, events, source="s", name="/in/x.csv")
        assert [log["cursor"] for log in logs if log["event"] == "file_resumed"] == [cursor]
        assert again.entry.rows == ROWS
        assert len(list(db.records("events"))) == ROWS + 1
