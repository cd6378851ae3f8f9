"""The contract every Store adapter passes (as ``source_contract`` is for sources): the
ledger, the rows, the idempotency keys, the contacts, provisional rows, dry runs and claims,
all through the port (``connector.store.port``) and the Ingestor, never through SQL. An
adapter's test module subclasses StoreContract and provides the ``store_config`` fixture (a
StoreConfig of an empty store of its own)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from connector.arriving import ingest_arriving
from connector.config import StoreConfig
from connector.csvrules.reader import Inspector
from connector.csvrules.rules import FileRules
from connector.download import Staged
from connector.errors import Interrupted, PlaceBusy, UnknownCursor
from connector.ingest import Ingestor, Outcome
from connector.parsing import ParseJob
from connector.pipeline import Poller
from connector.sources.base import RemoteFile
from connector.store import open_store
from connector.store.erasure import erase
from connector.store.feed import KINDS, START, Cursor, Kind, parse_cursor
from connector.store.ledger import Arrival, Delivered, Entry, Known, iso
from connector.store.port import TABLES, Store, Table
from connector.store.retention import Pruned, prune
from tests.helpers import POLLED_ROWS, T0, Clock, Flaky, broken_poller

EVENTS = FileRules(kind="events")
CONTACTS = FileRules(kind="contacts")
DAY = 24 * 3600
KEYED = "identifier,name,idempotencyKey\n"


class _Undone(Exception):
    """Raised to leave a transaction with an exception."""


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def records(store: Store, table: Table, tenant: str | None = None) -> list[dict[str, Any]]:
    """The table as `connector dump` prints it, JSON fragments read as values."""
    return [orjson.loads(orjson.dumps(record)) for record in store.records(table, tenant)]


def fed(
    store: Store,
    kind: Kind,
    after: Cursor = START,
    tenant: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The feed as `connector feed` prints it, JSON fragments read as values."""
    lines = []
    with closing(store.feed(kind, after, tenant)) as records:
        for record in records:
            lines.append(orjson.loads(orjson.dumps(record)))
            if len(lines) == limit:
                break
    return lines


def fed_by_pages(store: Store, kind: Kind, page: int) -> list[dict[str, Any]]:
    """The whole feed read ``page`` lines at a time, each read from the last cursor."""
    lines: list[dict[str, Any]] = []
    after = START
    while more := fed(store, kind, after, limit=page):
        lines += more
        after = parse_cursor(more[-1]["cursor"], kind)
    return lines


def contacts(store: Store) -> dict[str, dict[str, Any]]:
    return {c["identifier"]: c["attributes"] for c in records(store, "contacts")}


def _events(store: Store) -> list[tuple[str, str, str | None, int]]:
    return [
        (e["file"], e["identifier"], e["idempotencyKey"], e["line"])
        for e in records(store, "events")
    ]


def _stopping_after(batches: int) -> Callable[[], bool]:
    """A stop request once ``batches`` batches were stored (``Ingestor.stop`` is asked
    before each batch, then once more after the last)."""
    asked = iter(range(1_000_000))
    return lambda: next(asked) >= batches


# Files stored as they download (``arriving.ingest_arriving``): small files, parsed in this
# process as they grow (the daemon parses large ones in a child; the store sees the same).
ROWS = 12
BATCH = 3
# The delimiter given: sniffing it would wait for more lines than such a file has.
ARRIVING = FileRules(kind="events", delimiter=",")


def _keyed_rows(keys: Callable[[int], str] = lambda i: f"k{i}") -> bytes:
    return (KEYED + "".join(f"u{i % 5},buy,{keys(i)}\n" for i in range(ROWS))).encode()


class Download:
    """A download stand-in into ``folder/big.part``: writes all but the last byte of
    ``data``, waits until ``held_until()`` says so (or ``release()``), then writes the
    rest; each piece hashed before it is written, as download() does."""

    def __init__(self, folder: Path, data: bytes) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.part = folder / "big.part"
        self.part.write_bytes(b"")
        self.data = data
        self.held_until: Callable[[], bool] = lambda: True
        self._released = threading.Event()
        self.inspector = Inspector("utf-8")

    def release(self) -> None:
        self._released.set()

    def __call__(self) -> Staged:
        inspector = self.inspector
        with self.part.open("ab") as out:
            inspector.feed(self.data[:-1])
            out.write(self.data[:-1])
            out.flush()
            deadline = time.monotonic() + 30
            while not (self._released.is_set() or self.held_until()):
                assert time.monotonic() < deadline, "the writer never got that far"
                time.sleep(0.005)
            inspector.feed(self.data[-1:])
            out.write(self.data[-1:])
        inspector.finish()
        done = self.part.with_suffix(".csv")
        done.unlink(missing_ok=True)
        self.part.rename(done)
        return Staged(done, inspector)


def _arriving(
    ingestor: Ingestor, download: Download, rules: FileRules = ARRIVING, tenant: str = "default"
) -> Outcome:
    """``download`` stored as it arrives, as the daemon does (its place claimed)."""
    size = len(download.data)
    arrival = Arrival("src", "/in/big.csv", None, size, rules.kind, 1.0, tenant)
    job = ParseJob(
        download.part,
        rules,
        batch_records=ingestor.batch_records,
        in_child=False,
        spool_dir=None,
        growing_to=size,
    )
    with ThreadPoolExecutor(1) as pool, job:
        fetched: Future[Staged] = pool.submit(download)
        try:
            with ingestor.store.claim_place(arrival.source, arrival.path):
                return ingest_arriving(
                    ingestor,
                    rules,
                    arrival=arrival,
                    job=job,
                    fetched=fetched,
                    resumed=False,
                    arrived=download.inspector.prefix,
                )
        finally:
            download.release()  # (a run that stopped early must not wait for it)


def _provisional_cursor(store: Store) -> int:
    """How many records the provisional entry of /in/big.csv has committed (read in the
    calling thread's own transaction, as another process would)."""
    entries = store.ledger.unfinished_at("src", "/in/big.csv")
    return max((e.cursor for e in entries if e.sha256 is None), default=0)


def _stopped_after_two_batches(store: Store, data: bytes, tmp_path: Path) -> Entry:
    """The provisional entry a try left once it had stored two batches of ``data`` as it
    arrived, then was asked to stop."""
    stopping = Ingestor(
        store, clock=Clock(), batch_records=BATCH, commit_seconds=0, stop=_stopping_after(2)
    )
    stalled = Download(tmp_path / "staging", data)
    stalled.held_until = lambda: False  # until the stopped run lets it go
    with pytest.raises(Interrupted):
        _arriving(stopping, stalled)
    [left] = store.ledger.unfinished_at("src", "/in/big.csv")
    return left


class StoreContract:
    """Subclasses provide a ``store_config`` fixture: the StoreConfig of an empty store."""

    @pytest.fixture
    def store(self, store_config: StoreConfig) -> Iterator[Store]:
        with open_store(store_config) as store:
            yield store

    @pytest.fixture
    def polled(self, tmp_path: Path, store: Store) -> tuple[Poller, Flaky]:
        """``broken_poller`` into this store."""
        return broken_poller(tmp_path, store)

    # -- Opening -------------------------------------------------------------------------

    def test_an_empty_store_dumps_nothing(self, store: Store) -> None:
        for table in TABLES:
            assert records(store, table) == []

    def test_opening_a_new_store_at_once_and_again_is_safe(
        self, store_config: StoreConfig, tmp_path: Path
    ) -> None:
        """Several processes (here threads, each with a store object of its own) opening a
        new store together create it once; opening it again keeps what it holds."""
        with ThreadPoolExecutor(6) as pool:
            stores = list(pool.map(lambda _: open_store(store_config), range(6)))
        try:
            path = _file(tmp_path, "a.csv", "identifier,name\nu1,buy\n")
            outcomes = [Ingestor(s).ingest(path, EVENTS, source="s", name="a") for s in stores]
            assert [o.entry.status for o in outcomes] == ["ingested"] + ["duplicate"] * 5
        finally:
            for store in stores:
                store.close()
        for _ in range(2):
            with open_store(store_config) as again:
                assert [f["status"] for f in records(again, "files")] == (
                    ["ingested"] + ["duplicate"] * 5
                )
                assert [e["identifier"] for e in records(again, "events")] == ["u1"]

    # -- The ledger ----------------------------------------------------------------------

    def test_an_entry_begun_failed_then_begun_again_resumes_and_finishes(
        self, store: Store
    ) -> None:
        """``begin`` makes an ``ingesting`` entry (not dumped); ``fail`` leaves it
        ``failed``; the same bytes begun again, from anywhere, resume that entry with its
        cursor; ``finish`` makes it final."""
        ledger = store.ledger
        arrival = Arrival("s", "/in/a.csv", "ab" * 32, 40, "events", 7.0)
        entry = ledger.begin(arrival, T0)
        assert (entry.status, entry.sha256, entry.cursor, entry.rows) == (
            "ingesting",
            "ab" * 32,
            0,
            0,
        )
        assert ledger.unfinished(arrival) == entry
        assert records(store, "files") == []
        with store.transaction():
            ledger.advance(entry.id, 4, 1, Delivered(rows=2, duplicates=1, first_event=None))
        ledger.fail(entry.id, T0 + 1)
        failed = ledger.get(entry.id)
        assert (failed.status, failed.cursor, failed.rows, failed.rejected, failed.duplicates) == (
            "failed",
            4,
            2,
            1,
            1,
        )
        [dumped] = records(store, "files")
        assert (dumped["path"], dumped["status"], dumped["processed_at"]) == (
            "/in/a.csv",
            "failed",
            iso(T0 + 1),
        )
        assert ledger.known_at("s", "/in/a.csv") is None  # not a decision
        assert ledger.ingested("default", "ab" * 32) is None

        elsewhere = replace(arrival, source="t", path="/in/b.csv")
        again = ledger.begin(elsewhere, T0 + 2)
        assert (again.id, again.status, again.cursor, again.source, again.path) == (
            entry.id,
            "ingesting",
            4,
            "t",
            "/in/b.csv",
        )
        done = ledger.finish(entry.id, T0 + 3)
        assert (done.status, done.cursor, done.rows) == ("ingested", 4, 2)
        assert ledger.ingested("default", "ab" * 32) == done
        assert ledger.unfinished(arrival) is None
        assert ledger.unfinished_at("t", "/in/b.csv") == []
        [dumped] = records(store, "files")
        assert dumped == {
            "tenant": "default",
            "source": "t",
            "path": "/in/b.csv",
            "sha256": "ab" * 32,
            "size": 40,
            "status": "ingested",
            "rows": 2,
            "rejected": 1,
            "duplicates": 1,
            "processed_at": iso(T0 + 3),
        }

    def test_a_file_stopped_mid_way_is_failed_then_resumed_from_its_cursor(
        self, store: Store, tmp_path: Path
    ) -> None:
        path = _file(
            tmp_path,
            "a.csv",
            "identifier,name\n" + "".join(f"{'' if i == 4 else f'u{i}'},buy\n" for i in range(10)),
        )
        stopping = Ingestor(store, batch_records=3, commit_seconds=0, stop=_stopping_after(2))
        with pytest.raises(Interrupted):
            stopping.ingest(path, EVENTS, source="s", name="a")
        arrival = Arrival("s", "a", _sha256(path), path.stat().st_size, "events")
        entry = store.ledger.unfinished(arrival)
        assert entry is not None
        assert (entry.status, entry.cursor, entry.rows, entry.rejected) == ("failed", 6, 5, 1)
        assert [(f["status"], f["rows"]) for f in records(store, "files")] == [("failed", 5)]
        for table in ("events", "rejects", "contacts"):
            assert records(store, table) == []  # shown with the final entry only

        with capture_logs() as logs:
            outcome = Ingestor(store, batch_records=3).ingest(path, EVENTS, source="s", name="a")

        assert [log["cursor"] for log in logs if log["event"] == "file_resumed"] == [6]
        assert (outcome.entry.id, outcome.entry.status) == (entry.id, "ingested")
        assert (outcome.entry.rows, outcome.entry.rejected) == (9, 1)
        assert [e["line"] for e in records(store, "events")] == [2, 3, 4, 5, 7, 8, 9, 10, 11]
        assert [(r["line"], r["file"]) for r in records(store, "rejects")] == [(6, "a")]
        assert [(f["status"], f["rows"]) for f in records(store, "files")] == [("ingested", 9)]

    def test_a_stopped_file_is_failed_then_resumed_by_the_next_poll(
        self, polled: tuple[Poller, Flaky]
    ) -> None:
        poller, flaky = polled
        flaky.broken = False
        poller.ingestor.stop = _stopping_after(3)
        with pytest.raises(Interrupted):
            poller.poll(stop=lambda: False)
        (entry,) = records(poller.store, "files")
        assert (entry["status"], entry["rows"], entry["rejected"]) == ("failed", 2_997, 3)
        # Its events and rejects are shown once it is ingested, together.
        assert records(poller.store, "events") == []
        assert records(poller.store, "rejects") == []
        poller.ingestor.stop = lambda: False
        flaky.broken = True  # the next try fails to fetch it: still one entry
        poller.poll()
        assert [f["status"] for f in records(poller.store, "files")] == ["failed"]
        flaky.broken = False
        poller.poll()
        (entry,) = records(poller.store, "files")
        assert (entry["status"], entry["rows"], entry["rejected"]) == (
            "ingested",
            POLLED_ROWS - 5,
            5,
        )
        lines = [e["line"] for e in records(poller.store, "events")]
        assert sorted(lines) == [n + 2 for n in range(POLLED_ROWS) if n % 1000 != 7]
        assert [r["line"] for r in records(poller.store, "rejects")] == [9, 1009, 2009, 3009, 4009]

    def test_a_file_that_cannot_be_fetched_is_failed_until_it_can(
        self, polled: tuple[Poller, Flaky]
    ) -> None:
        poller, flaky = polled
        for _ in range(2):  # a second failed poll does not add a second entry
            with capture_logs() as logs:
                summary = poller.poll()
            assert [path.rsplit("/", 1)[1] for path in summary.failed] == ["events.csv"]
            [failed] = [log for log in logs if log["event"] == "file_failed"]
            assert failed["log_level"] == "warning" and failed["file"].endswith("/events.csv")
            assert failed["cause"].endswith("connection reset (test)")
            (entry,) = records(poller.store, "files")
            assert (entry["status"], entry["sha256"], entry["rows"]) == ("failed", None, 0)
            assert entry["size"] > 0 and entry["processed_at"]
        flaky.broken = False
        poller.poll()
        (entry,) = records(poller.store, "files")
        assert (entry["status"], entry["rows"]) == ("ingested", POLLED_ROWS - 5)
        assert entry["sha256"] is not None

    def test_a_failure_note_is_one_entry_replaced_by_the_decision(
        self, store: Store, tmp_path: Path
    ) -> None:
        """``note_failure``: a ``failed`` entry without a checksum, one per place however
        often it fails, replaced by what a later try decides; a try that stored part of
        the file keeps its entry (and cursor), only dated again."""
        ledger = store.ledger
        path = _file(tmp_path, "a.csv", "identifier,name\n" + "u,buy\n" * 6)
        place = Arrival("s", "/in/a.csv", None, path.stat().st_size, "events", 3.0)
        ledger.note_failure(place, T0)
        ledger.note_failure(place, T0 + 5)
        [note] = ledger.unfinished_at("s", "/in/a.csv")
        assert (note.status, note.sha256, note.cursor, note.size) == (
            "failed",
            None,
            0,
            path.stat().st_size,
        )
        assert [(f["status"], f["sha256"], f["processed_at"]) for f in records(store, "files")] == [
            ("failed", None, iso(T0 + 5))
        ]
        assert ledger.known_at("s", "/in/a.csv") is None

        stopping = Ingestor(store, batch_records=2, commit_seconds=0, stop=_stopping_after(1))
        with pytest.raises(Interrupted):
            stopping.ingest(path, EVENTS, source="s", name="/in/a.csv")
        [begun] = ledger.unfinished_at("s", "/in/a.csv")  # the note was superseded
        assert (begun.status, begun.cursor) == ("failed", 2)
        ledger.note_failure(place, T0 + 9)  # a try that stored part of it: dated again
        assert ledger.unfinished_at("s", "/in/a.csv") == [begun]
        assert [(f["status"], f["processed_at"]) for f in records(store, "files")] == [
            ("failed", iso(T0 + 9))
        ]
        outcome = Ingestor(store).ingest(path, EVENTS, source="s", name="/in/a.csv")
        assert (outcome.entry.id, outcome.entry.rows) == (begun.id, 6)
        assert [f["status"] for f in records(store, "files")] == ["ingested"]

    def test_same_bytes_under_another_name_is_a_duplicate(
        self, store: Store, tmp_path: Path
    ) -> None:
        """File identity is the checksum: a renamed re-upload is recorded, not ingested."""
        text = "identifier,name\nu1,buy\n"
        ingestor = Ingestor(store)
        ingestor.ingest(_file(tmp_path, "a.csv", text), EVENTS, source="s", name="a")
        again = ingestor.ingest(_file(tmp_path, "b.csv", text), EVENTS, source="other", name="b")
        assert again.entry.status == "duplicate"
        assert len(records(store, "events")) == 1
        files = records(store, "files")
        assert [(f["path"], f["status"], f["rows"]) for f in files] == [
            ("a", "ingested", 1),
            ("b", "duplicate", 0),
        ]

    def test_same_bytes_after_reopening_the_store_are_a_duplicate(
        self, store_config: StoreConfig, tmp_path: Path
    ) -> None:
        text = "identifier,name\nu1,buy\nu2,buy\n"
        with open_store(store_config) as store:
            Ingestor(store).ingest(_file(tmp_path, "a.csv", text), EVENTS, source="s", name="a")
        with open_store(store_config) as store:
            again = Ingestor(store).ingest(
                _file(tmp_path, "b.csv", text), EVENTS, source="t", name="b"
            )
            assert (again.entry.status, again.entry.rows) == ("duplicate", 0)
            assert [e["identifier"] for e in records(store, "events")] == ["u1", "u2"]
            first = store.ledger.ingested("default", _sha256(tmp_path / "a.csv"))
            assert first is not None and first.path == "a"

    def test_rejected_bytes_may_be_sent_again(self, store: Store, tmp_path: Path) -> None:
        """A file refused whole (say, a wrong encoding setting) is processed again next
        time; once ingested, its earlier rejection is no longer shown."""
        path = tmp_path / "a.csv"
        path.write_bytes("identifier,name\nu1,caf\xe9\n".encode("latin-1"))
        ingestor = Ingestor(store)
        refused = ingestor.ingest(path, EVENTS, source="s", name="a")
        assert refused.entry.status == "rejected" and refused.reason
        [reject] = records(store, "rejects")
        assert (reject["file"], reject["line"], reject["reason"]) == ("a", None, refused.reason)
        latin = FileRules(kind="events", encoding="latin-1")
        assert ingestor.ingest(path, latin, source="s", name="a").entry.status == "ingested"
        assert records(store, "events")[0]["name"] == "café"
        assert [f["status"] for f in records(store, "files")] == ["rejected", "ingested"]
        # Its rejection is over: `dump rejects` no longer shows it. Another file of that
        # name, refused and never ingested (other bytes), still shows.
        assert records(store, "rejects") == []
        path.write_bytes(b"email\nada@example.com\n")
        assert ingestor.ingest(path, EVENTS, source="s", name="a").entry.status == "rejected"
        assert [r["sha256"] for r in records(store, "rejects")] == [_sha256(path)]
        # A file set aside unread (no checksum) shows until that listing is ingested: not
        # when another file of the same name (other size or mtime) is.
        daily = Arrival("s", "daily.csv", None, 20, "events", 1_700_000_000.0)
        ingestor.set_aside(daily, "set aside after 5 failed tries in a row")
        path.write_bytes(b"identifier,name\nu9,buy\n")
        ingestor.ingest(path, EVENTS, source="s", name="daily.csv", mtime=1_700_086_400.0)
        assert [r["file"] for r in records(store, "rejects")] == ["a", "daily.csv"]
        path.write_bytes(b"identifier,name\nu,b\n")  # (20 bytes, as listed when set aside)
        ingestor.ingest(path, EVENTS, source="s", name="daily.csv", mtime=1_700_000_000.0)
        assert [r["file"] for r in records(store, "rejects")] == ["a"]

    def test_known_decisions_by_place_and_their_remote_action(
        self, store: Store, tmp_path: Path
    ) -> None:
        """``known``/``known_at``: the latest decision per path of a source, and whether
        its remote action was done (and moved the file away)."""
        ledger = store.ledger
        ingestor = Ingestor(store)
        a = _file(tmp_path, "a.csv", "identifier,name\nu1,buy\n")
        first = ingestor.ingest(a, EVENTS, source="s", name="/in/a.csv", mtime=7.5).entry
        size = a.stat().st_size
        assert ledger.known("s") == {"/in/a.csv": Known(first.id, size, 7.5, "ingested", False)}
        assert ledger.known("t") == {}
        assert ledger.known_at("s", "/in/a.csv") == ledger.known("s")["/in/a.csv"]
        assert ledger.known_at("s", "/in/other.csv") is None

        ledger.mark_completed("s", "/in/a.csv", "leave", T0)
        done = Known(first.id, size, 7.5, "ingested", completed=True, sent_away=False)
        assert ledger.known_at("s", "/in/a.csv") == done
        # Other bytes at the same place: the latest decision counts.
        empty = _file(tmp_path, "empty.csv", "")
        refused = ingestor.ingest(empty, EVENTS, source="s", name="/in/a.csv", mtime=9.0).entry
        dup = ingestor.ingest(a, EVENTS, source="s", name="/in/b.csv", mtime=None).entry
        assert ledger.known("s") == {
            "/in/a.csv": Known(refused.id, 0, 9.0, "rejected", False),
            "/in/b.csv": Known(dup.id, size, None, "duplicate", False),
        }
        ledger.mark_completed("s", "/in/a.csv", "move:done", T0)
        ledger.mark_completed("s", "/in/b.csv", "delete", T0)
        known = ledger.known("s")
        assert [(k.completed, k.sent_away) for k in known.values()] == [(True, True)] * 2

    def test_failed_tries_are_counted_per_listing(self, store: Store) -> None:
        """``tried`` counts failed tries of a listing in a row; a new listing of the path
        starts again at 1, and a completed file forgets them."""
        ledger = store.ledger
        place = Arrival("s", "/in/a.csv", None, 10, "events", 1.0)
        assert [ledger.tried(place, f"cause {n}") for n in range(3)] == [1, 2, 3]
        assert ledger.tried(replace(place, path="/in/b.csv"), "x") == 1  # per path
        assert ledger.tried(replace(place, source="t"), "x") == 1  # per source
        assert ledger.tried(replace(place, size=11), "x") == 1  # a new listing
        assert ledger.tried(replace(place, size=11), "x") == 2
        assert ledger.tried(replace(place, size=11, mtime=None), "x") == 1
        assert ledger.tried(replace(place, size=11, mtime=None), "x") == 2
        ledger.mark_completed("s", "/in/a.csv", "leave", T0)
        assert ledger.tried(replace(place, size=11, mtime=None), "x") == 1
        assert ledger.tried(replace(place, path="/in/b.csv"), "x") == 2

    def test_provisional_entries_are_known_by_place_and_listing(self, store: Store) -> None:
        """An entry without a checksum is found by its place and listing (``unfinished``),
        is ``stale`` for any other listing of that place, until ``decide`` gives it one."""
        ledger = store.ledger
        place = Arrival("s", "/in/big.csv", None, 100, "events", 1.0)
        entry = ledger.begin(place, T0)
        assert (entry.status, entry.sha256) == ("ingesting", None)
        assert ledger.unfinished(place) == entry
        assert ledger.begin(place, T0 + 1).id == entry.id  # resumed, not a second one
        assert ledger.unfinished(replace(place, size=101)) is None
        assert ledger.unfinished_at("s", "/in/big.csv") == [entry]
        assert ledger.unfinished_at("s", "/in/other.csv") == []
        assert ledger.stale(place) == []
        assert ledger.stale(replace(place, size=200)) == [entry.id]
        assert ledger.stale(replace(place, mtime=None)) == [entry.id]
        assert ledger.stale(replace(place, mtime=2.0)) == [entry.id]
        assert ledger.stale(replace(place, path="/in/other.csv", size=7)) == []
        assert not ledger.decided_unfinished(place)

        with store.transaction():
            ledger.decide(entry.id, "cd" * 32)
        assert ledger.decided_unfinished(place)
        assert not ledger.decided_unfinished(replace(place, size=200))
        assert ledger.stale(replace(place, size=200)) == []  # decided: resumed by checksum
        assert ledger.unfinished(replace(place, size=5, sha256="cd" * 32)) == ledger.get(entry.id)
        ledger.fail(entry.id, T0 + 2)
        assert [e.status for e in ledger.unfinished_at("s", "/in/big.csv")] == ["failed"]
        with store.transaction():
            ledger.forget(entry.id)
        assert ledger.unfinished_at("s", "/in/big.csv") == []
        assert records(store, "files") == []

    def test_a_transaction_is_all_or_nothing(self, store: Store) -> None:
        """Rolled back on an exception; nested, a savepoint that rolls back alone."""
        ledger = store.ledger
        arrival = Arrival("s", "/in/a.csv", "ab" * 32, 1, "events")
        entry = ledger.begin(arrival, T0)
        with suppress(_Undone), store.transaction():
            ledger.advance(entry.id, 5, 0, Delivered(5, 0, None))
            raise _Undone
        assert ledger.get(entry.id).cursor == 0
        with store.transaction():
            ledger.advance(entry.id, 1, 0, Delivered(1, 0, None))
            with suppress(_Undone), store.transaction():
                ledger.advance(entry.id, 10, 0, Delivered(10, 0, None))
                raise _Undone
            ledger.advance(entry.id, 2, 0, Delivered(2, 0, None))
        assert ledger.get(entry.id).cursor == 3
        with store.grouped(3600) as group:
            group.begin()
            ledger.advance(entry.id, 1, 0, Delivered(1, 0, None))
            assert group.commit()
            assert not group.commit()
            group.begin()
            ledger.advance(entry.id, 1, 0, Delivered(1, 0, None))
            assert not group.tick()  # (not open an hour)
        assert ledger.get(entry.id).cursor == 5
        with suppress(_Undone), store.grouped(3600) as group:
            group.begin()
            ledger.advance(entry.id, 1, 0, Delivered(1, 0, None))
            assert group.commit()
            group.begin()
            ledger.advance(entry.id, 100, 0, Delivered(100, 0, None))
            raise _Undone
        assert ledger.get(entry.id).cursor == 6

    # -- What shows, and when ------------------------------------------------------------

    def test_rows_of_an_unfinished_file_are_not_visible(self, store: Store, tmp_path: Path) -> None:
        """Events, rejects and the contacts they create show up with their ledger entry, not
        batch by batch, though each batch is committed (docs/guarantees.md)."""
        path = _file(tmp_path, "a.csv", "identifier,name\n" + "u,buy\nv,buy\n" * 3 + ",buy\n")
        ingestor = Ingestor(store, batch_records=2, commit_seconds=0)
        seen: list[int] = []

        def peek(_records: int) -> None:
            shown = [records(store, t) for t in ("events", "rejects", "contacts", "files")]
            seen.append(sum(map(len, shown)))

        ingestor.ingest(path, EVENTS, source="s", name="a", progress=peek)
        assert seen == [0, 0, 0, 0]
        assert len(records(store, "events")) == 6
        assert len(records(store, "rejects")) == 1
        assert [c["identifier"] for c in records(store, "contacts")] == ["u", "v"]

    def test_contact_updates_of_an_unfinished_file_are_not_visible(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A contacts file's upserts are applied when it ends, in file order: later rows win."""
        Ingestor(store).ingest(
            _file(tmp_path, "a.csv", "identifier,plan\nu,free\n"), CONTACTS, source="s", name="a"
        )
        text = "identifier,plan,seats\n" + "u,pro,1\nu,max,\nw,free,2\n" * 2
        ingestor = Ingestor(store, batch_records=2, commit_seconds=0)
        seen: list[object] = []

        def peek(_records: int) -> None:
            seen.append(contacts(store))

        ingestor.ingest(
            _file(tmp_path, "b.csv", text), CONTACTS, source="s", name="b", progress=peek
        )
        assert seen == [{"u": {"plan": "free"}}] * 3
        assert contacts(store) == {
            "u": {"plan": "max", "seats": 1},
            "w": {"plan": "free", "seats": 2},
        }

    def test_dry_run_stores_nothing_but_counts_exactly(self, store: Store, tmp_path: Path) -> None:
        """Inside rolled_back() the counts are real and nothing remains afterwards."""
        path = _file(tmp_path, "a.csv", KEYED + "u,buy,K\nv,buy,K\nw,,\n")
        with store.rolled_back():
            outcome = Ingestor(store).ingest(path, EVENTS, source="s", name="a")
        entry = outcome.entry
        assert (entry.status, entry.rows, entry.rejected, entry.duplicates) == ("ingested", 1, 1, 1)
        for table in TABLES:
            assert records(store, table) == []
        # Nor any claimed key: a real run afterwards stores the same.
        real = Ingestor(store).ingest(path, EVENTS, source="s", name="a").entry
        assert (real.status, real.rows, real.rejected, real.duplicates) == ("ingested", 1, 1, 1)

    # -- Idempotency keys ----------------------------------------------------------------

    def test_key_window_is_24_hours_of_processing_time(self, store: Store, tmp_path: Path) -> None:
        """A key accepted at T is a duplicate until T+24h (exclusive) and usable again after."""
        clock = Clock()
        ingestor = Ingestor(store, clock=clock)
        first = _file(tmp_path, "a.csv", KEYED + "u1,buy,K\n")
        assert ingestor.ingest(first, EVENTS, source="s", name="a").entry.rows == 1
        clock.now += DAY - 1
        second = _file(tmp_path, "b.csv", KEYED + "u2,buy,K\n")
        outcome = ingestor.ingest(second, EVENTS, source="s", name="b")
        assert (outcome.entry.rows, outcome.entry.duplicates) == (0, 1)
        clock.now += 1  # exactly 24 h after the first acceptance
        third = _file(tmp_path, "c.csv", KEYED + "u3,buy,K\n")
        assert ingestor.ingest(third, EVENTS, source="s", name="c").entry.rows == 1
        assert [e["identifier"] for e in records(store, "events")] == ["u1", "u3"]
        # a duplicate event still creates its contact
        assert [c["identifier"] for c in records(store, "contacts")] == ["u1", "u2", "u3"]

    def test_keys_hold_across_a_restart(self, store_config: StoreConfig, tmp_path: Path) -> None:
        """Accepted keys live in the store: a new process sees them."""
        with open_store(store_config) as store:
            Ingestor(store).ingest(
                _file(tmp_path, "a.csv", KEYED + "u1,buy,K\n"), EVENTS, source="s", name="a"
            )
        with open_store(store_config) as store:
            outcome = Ingestor(store).ingest(
                _file(tmp_path, "b.csv", KEYED + "u2,buy,K\n"), EVENTS, source="t", name="b"
            )
        assert outcome.entry.duplicates == 1

    def test_processing_time_is_the_clock(self, store: Store, tmp_path: Path) -> None:
        """An event without a timestamp takes the processing time."""
        clock = Clock()
        path = _file(tmp_path, "a.csv", "identifier,name,timestamp\nu1,buy,\nu2,buy,5\n")
        Ingestor(store, clock=clock).ingest(path, EVENTS, source="s", name="a")
        assert [e["timestamp"] for e in records(store, "events")] == [int(clock.now), 5]

    def test_a_key_repeated_in_a_file_and_in_a_batch_keeps_its_first_use(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Within one batch and across batches of one file: the first use is stored, later
        ones are duplicates; keys are exact (case, spaces); a rejected row does not
        consume its key."""
        # Not formatted: a table, one batch (two rows) a line, with what that batch shows.
        # fmt: off
        rows = [
            "u1,buy,K", "u2,buy,K",  # batch 1: twice in one batch
            "u3,buy,L", "u4,buy,k",  # batch 2: another case is another key
            "u5,buy,L", ",buy,R",  # batch 3: L again (across batches); R's row rejected
            "u6,buy,R", "u7,buy, ",  # batch 4: R not consumed; a key of a space is a key
            "u8,buy, ", "u9,buy,",  # batch 5: " " again; an empty cell is no key
            "u10,buy,",  # batch 6: no key, never a duplicate
        ]
        # fmt: on
        path = _file(tmp_path, "a.csv", KEYED + "".join(r + "\n" for r in rows))
        outcome = Ingestor(store, batch_records=2, commit_seconds=0).ingest(
            path, EVENTS, source="s", name="a"
        )
        entry = outcome.entry
        assert (entry.rows, entry.rejected, entry.duplicates) == (7, 1, 3)
        assert [(e["identifier"], e["idempotencyKey"]) for e in records(store, "events")] == [
            ("u1", "K"),
            ("u3", "L"),
            ("u4", "k"),
            ("u6", "R"),
            ("u7", " "),
            ("u9", None),
            ("u10", None),
        ]
        assert len(contacts(store)) == 10  # duplicates create their contacts all the same

    def test_a_file_refused_whole_gives_back_the_keys_it_claimed(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Past max_rejects a file is refused whole once some of its keys were claimed:
        they are given back (another file may use them at once), not those another file
        had accepted."""
        clock = Clock()
        ingestor = Ingestor(store, clock=clock, batch_records=2, commit_seconds=0, max_rejects=3)
        earlier = _file(tmp_path, "earlier.csv", KEYED + "z,buy,M\n")
        assert ingestor.ingest(earlier, EVENTS, source="s", name="earlier").entry.rows == 1
        clock.now += 60
        bad = _file(tmp_path, "bad.csv", KEYED + "u1,buy,K\nu2,buy,M\n" + ",buy,\n" * 6)
        refused = ingestor.ingest(bad, EVENTS, source="s", name="bad")
        assert refused.entry.status == "rejected"
        assert refused.reason
        assert refused.reason.startswith("more than 3 rows rejected; first at line 4: ")
        assert (refused.entry.rows, refused.entry.rejected, refused.entry.duplicates) == (0, 0, 0)
        assert [e["identifier"] for e in records(store, "events")] == ["z"]
        assert [(r["file"], r["line"]) for r in records(store, "rejects")] == [("bad", None)]
        assert [c["identifier"] for c in records(store, "contacts")] == ["z"]
        clock.now += 60
        later = _file(tmp_path, "later.csv", KEYED + "v1,buy,K\nv2,buy,M\n")
        outcome = ingestor.ingest(later, EVENTS, source="s", name="later")
        assert (outcome.entry.rows, outcome.entry.duplicates) == (1, 1)  # K given back, not M
        assert [e["identifier"] for e in records(store, "events")] == ["z", "v1"]

    # -- The change feed -----------------------------------------------------------------

    def test_the_feed_shows_each_record_once_in_the_order_files_became_final(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A file begun first but final last comes last (its events have the lower ids);
        its records come together; read a line at a time from each cursor, or all at
        once, the feed is the same; lines are the dump's records with their cursors."""
        ingestor = Ingestor(store, batch_records=2, commit_seconds=0)
        later = _file(tmp_path, "later.csv", KEYED + "v1,buy,b1\nv2,buy,b2\n,buy,\nv3,buy,\n")
        seen_meanwhile: list[list[dict[str, Any]]] = []

        def meanwhile() -> None:  # before the first file's final entry
            ingestor.ingest(later, EVENTS, source="s", name="later.csv")
            seen_meanwhile.append(fed(store, "events"))

        first = _file(tmp_path, "first.csv", KEYED + "u1,buy,a1\n,buy,\nu2,buy,a2\n")
        ingestor.ingest(first, EVENTS, source="s", name="first.csv", before_final=meanwhile)
        people = _file(tmp_path, "people.csv", "identifier,plan\nu1,pro\n")
        ingestor.ingest(people, CONTACTS, source="s", name="people.csv")

        events = fed(store, "events")
        assert [(e["file"], e["identifier"]) for e in events] == [
            ("later.csv", "v1"),
            ("later.csv", "v2"),
            ("later.csv", "v3"),
            ("first.csv", "u1"),
            ("first.csv", "u2"),
        ]
        assert seen_meanwhile == [events[:3]]
        by_event = {(e["file"], e["line"]): e for e in records(store, "events")}
        for event in events:
            assert {k: v for k, v in event.items() if k != "cursor"} == by_event[
                (event["file"], event["line"])
            ]
        assert [f["path"] for f in fed(store, "files")] == ["later.csv", "first.csv", "people.csv"]
        assert [(r["file"], r["line"]) for r in fed(store, "rejects")] == [
            ("later.csv", 4),
            ("first.csv", 3),
        ]
        for kind in KINDS:
            whole = fed(store, kind)
            cursors = [line["cursor"] for line in whole]
            assert len(set(cursors)) == len(cursors) and whole
            assert fed_by_pages(store, kind, 1) == fed_by_pages(store, kind, 2) == whole
            assert fed(store, kind, parse_cursor(cursors[-1], kind)) == []
        resumed = fed(store, "events", parse_cursor(events[1]["cursor"], "events"))
        assert resumed == events[2:]

    def test_contacts_lines_are_changes_with_all_attributes_after_each(
        self, store: Store, tmp_path: Path
    ) -> None:
        """One line per contact per file that created it or changed its attributes, with
        every attribute as it was after that file; a file that changes nothing of a
        contact adds no line for it; an events file adds its new contacts."""
        ingestor = Ingestor(store, clock=Clock(), batch_records=2, commit_seconds=0)
        files = [
            ("a.csv", "identifier,plan,seats\nu1,free,1\n", CONTACTS),
            ("b.csv", "identifier,plan,seats\nu1,free,\nu2,pro,3\n", CONTACTS),
            ("c.csv", "identifier,name\nu1,buy\nu9,buy\n", EVENTS),
            ("d.csv", "identifier,plan\nu1,pro\nu1,max\n", CONTACTS),
        ]
        for name, text, rules in files:
            ingestor.ingest(_file(tmp_path, name, text), rules, source="s", name=name)
        updated = {f["path"]: f["processed_at"] for f in records(store, "files")}
        lines = fed(store, "contacts")
        assert [(c["identifier"], c["attributes"], c["updated_at"]) for c in lines] == [
            ("u1", {"plan": "free", "seats": 1}, updated["a.csv"]),
            ("u2", {"plan": "pro", "seats": 3}, updated["b.csv"]),
            ("u9", {}, updated["c.csv"]),
            ("u1", {"plan": "max", "seats": 1}, updated["d.csv"]),
        ]
        assert {c["tenant"] for c in lines} == {"default"}

    def test_a_cursor_it_never_gave_is_refused(self, store: Store, tmp_path: Path) -> None:
        ingestor = Ingestor(store)
        ingestor.ingest(
            _file(tmp_path, "a.csv", "identifier,name\nu1,buy\n"), EVENTS, source="s", name="a"
        )
        refused: list[tuple[str, Kind]] = [
            ("2:1", "events"),
            ("x", "events"),
            ("1", "events"),
            ("1:1", "files"),
            ("-1:2", "rejects"),
            ("01:1", "contacts"),
            (" 1:1", "events"),
        ]
        for text, kind in refused:
            with pytest.raises(UnknownCursor, match="cursor"):
                fed(store, kind, parse_cursor(text, kind))
        with pytest.raises(UnknownCursor, match="has not reached it"):
            fed(store, "files", Cursor(2))

    def test_each_tenant_has_its_feed_in_the_common_order(
        self, store: Store, tmp_path: Path
    ) -> None:
        ingestor = Ingestor(store)
        for tenant in ("acme", "globex", "acme"):
            path = _file(tmp_path, f"{tenant}.csv", f"identifier,name\nu-{tenant},buy\n")
            ingestor.ingest(path, EVENTS, source="s", name=f"{tenant}.csv", tenant=tenant)
        everyone = fed(store, "files")
        assert [f["tenant"] for f in everyone] == ["acme", "globex", "acme"]  # (a duplicate)
        assert fed(store, "files", tenant="acme") == [everyone[0], everyone[2]]
        after_first = parse_cursor(everyone[0]["cursor"], "files")
        assert fed(store, "files", after_first, tenant="globex") == [everyone[1]]
        assert [e["tenant"] for e in fed(store, "events", tenant="globex")] == ["globex"]

    # -- Retention and erasure -----------------------------------------------------------

    def test_retention_removes_old_records_keeps_the_ledger_and_refuses_old_cursors(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Records of files final before `keep` go, a few rows a transaction, in feed
        order; their ledger entries stay (the same bytes are still a duplicate); a feed
        cursor from before what was kept is refused; keys past 24 hours go."""
        clock = Clock()
        ingestor = Ingestor(store, clock=clock, batch_records=2, commit_seconds=0)
        old = _file(tmp_path, "old.csv", KEYED + "u1,buy,K\n,buy,\nu2,buy,\nu3,buy,\n")
        ingestor.ingest(old, EVENTS, source="s", name="old.csv")
        ingestor.ingest(
            _file(tmp_path, "people.csv", "identifier,plan\nu1,pro\n"),
            CONTACTS,
            source="s",
            name="people.csv",
        )
        cursor = fed(store, "events")[0]["cursor"]
        clock.now += 3 * DAY
        ingestor.ingest(
            _file(tmp_path, "new.csv", KEYED + "v1,buy,L\n"), EVENTS, source="s", name="new.csv"
        )

        pruned = prune(store.db, 2 * DAY, clock.now + 60, rows=2)  # type: ignore[attr-defined]

        # (contact changes: u1, u2 and u3 created by old.csv, u1 changed by people.csv)
        assert (pruned.files, pruned.events, pruned.rejects, pruned.contact_changes) == (2, 3, 1, 4)
        assert pruned.keys == 1  # K, accepted three days ago; not L
        assert [e["file"] for e in records(store, "events")] == ["new.csv"]
        assert records(store, "rejects") == []
        assert [f["path"] for f in records(store, "files")] == ["old.csv", "people.csv", "new.csv"]
        assert contacts(store) == {"u1": {"plan": "pro"}, "u2": {}, "u3": {}, "v1": {}}
        assert [e["file"] for e in fed(store, "events")] == ["new.csv"]
        assert len(fed(store, "files")) == 3
        with pytest.raises(UnknownCursor, match="older than what the store keeps"):
            fed(store, "events", parse_cursor(cursor, "events"))
        again = ingestor.ingest(old, EVENTS, source="s", name="again.csv")
        assert again.entry.status == "duplicate"
        assert prune(store.db, 2 * DAY, clock.now + 60) == Pruned(keys=0)  # type: ignore[attr-defined]

    def test_a_reader_who_missed_nothing_goes_on_after_retention(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Refused are only cursors before records that were removed: one at the end of a
        pruned file goes on, one in its middle is refused; a reader from the start begins
        after the pruned files; a file left half-pruned (a stopped run: marked, rows left)
        is finished by the next run, and bounds a file without events lacks do not stop it."""
        clock = Clock()
        ingestor = Ingestor(store, clock=clock, batch_records=2, commit_seconds=0)
        ingestor.ingest(
            _file(tmp_path, "old.csv", KEYED + "u1,buy,\nu2,buy,\n"),
            EVENTS,
            source="s",
            name="old.csv",
        )
        ingestor.ingest(
            _file(tmp_path, "people.csv", "identifier,plan\nu1,pro\n"),
            CONTACTS,
            source="s",
            name="people.csv",
        )
        clock.now += 3 * DAY
        ingestor.ingest(
            _file(tmp_path, "new.csv", KEYED + "v1,buy,\n"), EVENTS, source="s", name="new.csv"
        )
        first, last = (parse_cursor(e["cursor"], "events") for e in fed(store, "events")[:2])
        store.query("UPDATE files SET last_event = NULL WHERE path = 'people.csv'")  # type: ignore[attr-defined]
        store.query("UPDATE feed_clock SET pruned = 1")  # type: ignore[attr-defined]

        prune(store.db, 2 * DAY, clock.now + 60)  # type: ignore[attr-defined]

        assert [e["file"] for e in records(store, "events")] == ["new.csv"]
        assert [e["file"] for e in fed(store, "events", last)] == ["new.csv"]
        assert [e["file"] for e in fed(store, "events")] == ["new.csv"]
        with pytest.raises(UnknownCursor, match="older than what the store keeps"):
            fed(store, "events", first)

    def test_a_feed_left_open_keeps_nothing_written_meanwhile(
        self, store_config: StoreConfig, tmp_path: Path
    ) -> None:
        """A feed read left open (a generator not run to its end) does not hold what the
        same thread writes meanwhile: it reads on a connection of its own."""
        text = "identifier,name\nu1,buy\n"
        with open_store(store_config) as store:
            ingestor = Ingestor(store)
            ingestor.ingest(_file(tmp_path, "a.csv", text), EVENTS, source="s", name="a")
            reading = store.feed("events", START)
            next(reading)
            ingestor.ingest(
                _file(tmp_path, "b.csv", text + "u2,buy\n"), EVENTS, source="s", name="b"
            )
        with open_store(store_config) as store:
            assert [f["path"] for f in records(store, "files")] == ["a", "b"]
        reading.close()

    def test_erasure_removes_a_tenants_contacts_and_their_events_everywhere(
        self, store: Store, tmp_path: Path
    ) -> None:
        ingestor = Ingestor(store, batch_records=2, commit_seconds=0)
        sha = {}
        for tenant in ("acme", "globex"):
            for name, text, rules in [
                ("e.csv", KEYED + "u1,buy,a\nu2,buy,b\nu1,view,\n", EVENTS),
                ("c.csv", "identifier,plan\nu1,pro\nu3,free\n", CONTACTS),
            ]:
                path = _file(tmp_path, f"{tenant}-{name}", text)
                sha[tenant, name] = ingestor.ingest(
                    path, rules, source="s", name=name, tenant=tenant
                ).entry.sha256

        erased = erase(
            store.db,  # type: ignore[attr-defined]
            "acme",
            ["u1", "nobody"],
            "request 7",
            "ops",
            T0,
            ids=2,
        )

        assert (erased.contacts, erased.events) == (1, 2)
        assert erased.files == {sha["acme", "e.csv"], sha["acme", "c.csv"]}
        left = [(e["tenant"], e["identifier"]) for e in records(store, "events")]
        assert left == [("acme", "u2"), ("globex", "u1"), ("globex", "u2"), ("globex", "u1")]
        assert [(c["tenant"], c["identifier"]) for c in records(store, "contacts")] == [
            ("acme", "u2"),
            ("acme", "u3"),
            ("globex", "u1"),
            ("globex", "u2"),
            ("globex", "u3"),
        ]
        assert "u1" not in {c["identifier"] for c in fed(store, "contacts", tenant="acme")}
        assert records(store, "audit") == [
            {
                "at": iso(T0),
                "action": "erase",
                "tenant": "acme",
                "sha256": None,
                "reason": "request 7",
                "user": "ops",
            }
        ]

    # -- Tenants -------------------------------------------------------------------------

    def test_tenants_share_no_bytes_keys_or_contacts(self, store: Store, tmp_path: Path) -> None:
        """The same bytes, key and identifier in two tenants are unrelated; within one
        tenant, its sources share them. Every record says whose it is, and a tenant's are
        read alone."""
        ingestor = Ingestor(store, batch_records=2, commit_seconds=0)

        def ingest(name: str, text: str, rules: FileRules, tenant: str) -> Outcome:
            path = _file(tmp_path, f"{tenant}-{name}", text)
            return ingestor.ingest(path, rules, source=f"{tenant}-src", name=name, tenant=tenant)

        people = "identifier,plan\nada@example.com,pro\n"
        orders = KEYED + "ada@example.com,buy,o-1\n"
        for tenant in ("acme", "globex"):
            assert ingest("people.csv", people, CONTACTS, tenant).entry.status == "ingested"
            assert ingest("orders.csv", orders, EVENTS, tenant).entry.duplicates == 0
        ingest("more.csv", "identifier,plan\nada@example.com,free\n,x\n", CONTACTS, "globex")
        again = ingestor.ingest(
            _file(tmp_path, "same.csv", people),
            CONTACTS,
            source="other",
            name="same.csv",
            tenant="acme",
        )
        assert again.entry.status == "duplicate"
        reused = KEYED + "bob,buy,o-1\n"
        assert ingest("reused.csv", reused, EVENTS, "acme").entry.duplicates == 1

        assert [tuple(c.values()) for c in records(store, "contacts")] == [
            ("acme", "ada@example.com", {"plan": "pro"}),
            ("acme", "bob", {}),
            ("globex", "ada@example.com", {"plan": "free"}),
        ]
        assert [(e["tenant"], e["idempotencyKey"]) for e in records(store, "events")] == [
            ("acme", "o-1"),
            ("globex", "o-1"),
        ]
        assert [(f["tenant"], f["path"], f["status"]) for f in records(store, "files")] == [
            ("acme", "people.csv", "ingested"),
            ("acme", "orders.csv", "ingested"),
            ("globex", "people.csv", "ingested"),
            ("globex", "orders.csv", "ingested"),
            ("globex", "more.csv", "ingested"),
            ("acme", "same.csv", "duplicate"),
            ("acme", "reused.csv", "ingested"),
        ]
        for table in ("contacts", "events", "rejects", "files"):
            mine = [r for r in records(store, table) if r["tenant"] == "globex"]
            assert records(store, table, "globex") == mine != []
            assert records(store, table, "initech") == []

    def test_keys_given_back_and_decided_stay_in_their_tenant(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A file refused whole gives back its tenant's keys only; rows stored as a file
        arrives claim their keys in its tenant."""
        ingestor = Ingestor(store, clock=Clock(), batch_records=2, commit_seconds=0, max_rejects=3)
        held = _file(tmp_path, "held.csv", KEYED + "z,buy,K\n")
        ingestor.ingest(held, EVENTS, source="s", name="held", tenant="acme")
        bad = _file(tmp_path, "bad.csv", KEYED + "u1,buy,K\n" + ",buy,\n" * 6)
        refused = ingestor.ingest(bad, EVENTS, source="t", name="bad", tenant="globex")
        assert refused.entry.status == "rejected"
        later = _file(tmp_path, "later.csv", KEYED + "v1,buy,K\n")
        assert (
            ingestor.ingest(later, EVENTS, source="s", name="later", tenant="acme").entry.duplicates
            == 1
        )

        download = Download(tmp_path / "staging", _keyed_rows(lambda i: "K" if i == 0 else f"k{i}"))
        outcome = _arriving(ingestor, download, tenant="globex")
        assert (outcome.entry.status, outcome.entry.duplicates) == ("ingested", 0)
        keyed = [
            (e["tenant"], e["identifier"])
            for e in records(store, "events")
            if e["idempotencyKey"] == "K"
        ]
        assert keyed == [("acme", "z"), ("globex", "u0")]

    # -- Contacts ------------------------------------------------------------------------

    def test_contacts_merge_later_rows_win_per_attribute_across_files(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Attributes are merged per contact: a later row wins for what it sets, an empty
        cell leaves an attribute as it was, and attributes set by earlier files stay.
        Identifiers and attribute names are case-sensitive."""
        ingestor = Ingestor(store, batch_records=2, commit_seconds=0)
        first = "identifier,plan,seats,Plan\nu,free,1,X\nU,pro,,\nu,basic,,\n"
        ingestor.ingest(_file(tmp_path, "a.csv", first), CONTACTS, source="s", name="a")
        assert contacts(store) == {
            "U": {"plan": "pro"},
            "u": {"plan": "basic", "seats": 1, "Plan": "X"},
        }
        second = "identifier,plan,city,vip\nu,pro,Gent,\nu,max,,true\nu ,x,,\n"
        ingestor.ingest(_file(tmp_path, "b.csv", second), CONTACTS, source="s", name="b")
        assert contacts(store) == {
            "U": {"plan": "pro"},
            "u": {"plan": "max", "seats": 1, "Plan": "X", "city": "Gent", "vip": True},
            "u ": {"plan": "x"},  # taken verbatim
        }
        assert [c["identifier"] for c in records(store, "contacts")] == ["U", "u", "u "]

    def test_an_events_file_creates_missing_contacts_only(
        self, store: Store, tmp_path: Path
    ) -> None:
        ingestor = Ingestor(store, batch_records=2, commit_seconds=0)
        ingestor.ingest(
            _file(tmp_path, "a.csv", "identifier,plan\nu,free\n"), CONTACTS, source="s", name="a"
        )
        text = "identifier,name,plan\nu,buy,gold\nnew,buy,x\nu,buy,\nNew,buy,y\n"
        ingestor.ingest(_file(tmp_path, "b.csv", text), EVENTS, source="s", name="b")
        assert contacts(store) == {"New": {}, "new": {}, "u": {"plan": "free"}}
        assert [e["data"] for e in records(store, "events")] == [
            {"plan": "gold"},
            {"plan": "x"},
            {},
            {"plan": "y"},
        ]
        ingestor.ingest(
            _file(tmp_path, "c.csv", "identifier,plan\nnew,pro\n"), CONTACTS, source="s", name="c"
        )
        assert contacts(store)["new"] == {"plan": "pro"}

    def test_files_stored_at_once_show_their_contacts_in_the_order_they_end(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A file's contacts show with its final entry, whatever other files do meanwhile:
        one that starts and ends while another is being stored shows its changes when it
        ends, and the file that ends last wins for what it sets. The feed gives each
        contact as it was after each file."""
        ingestor = Ingestor(store, clock=Clock(), batch_records=2, commit_seconds=0)
        base = _file(tmp_path, "base.csv", "identifier,plan,seats\nu,free,1\n")
        ingestor.ingest(base, CONTACTS, source="s", name="base.csv")
        middle = _file(tmp_path, "b.csv", "identifier,plan,city\nu,basic,Gent\nx,pro,\n")
        seen: list[object] = []

        def meanwhile(_records: int) -> None:
            if not seen:  # (after a.csv's first batch: b.csv starts and ends)
                ingestor.ingest(middle, CONTACTS, source="s", name="b.csv")
            seen.append(contacts(store))

        text = "identifier,plan,vip\nu,gold,\nn,new,\nw,x,true\nw,y,\n"
        last = _file(tmp_path, "a.csv", text)
        ingestor.ingest(last, CONTACTS, source="s", name="a.csv", progress=meanwhile)
        after_b = {"u": {"plan": "basic", "seats": 1, "city": "Gent"}, "x": {"plan": "pro"}}
        assert seen == [after_b, after_b]
        assert contacts(store) == after_b | {
            "u": {"plan": "gold", "seats": 1, "city": "Gent"},
            "n": {"plan": "new"},
            "w": {"plan": "y", "vip": True},
        }
        # (files in the order they ended; within a file, in no set order)
        by_file: dict[str, dict[str, object]] = {}
        for line in fed(store, "contacts"):
            seq = line["cursor"].split(":")[0]  # (the file's number on the feed clock)
            by_file.setdefault(seq, {})[line["identifier"]] = line["attributes"]
        assert list(by_file.values()) == [
            {"u": {"plan": "free", "seats": 1}},
            after_b,
            {
                "n": {"plan": "new"},
                "u": {"plan": "gold", "seats": 1, "city": "Gent"},
                "w": {"plan": "y", "vip": True},
            },
        ]

    def test_a_file_taken_back_leaves_the_contacts_as_the_others_made_them(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A file refused whole once some of its contacts were stored changes no contact,
        creates none and adds nothing to the feed; a contact it had created that a file
        ending meanwhile needs (an events file's) stays, as that file made it."""
        ingestor = Ingestor(store, batch_records=2, commit_seconds=0, max_rejects=1)
        ingestor.ingest(
            _file(tmp_path, "base.csv", "identifier,plan\nu,free\n"),
            CONTACTS,
            source="s",
            name="base.csv",
        )
        events = _file(tmp_path, "e.csv", "identifier,name\nn,buy\n")
        started: list[int] = []

        def meanwhile(records_: int) -> None:
            if not started:
                started.append(records_)
                ingestor.ingest(events, EVENTS, source="s", name="e.csv")

        text = "identifier,plan\nu,gold\nn,new\n,x\n,y\n"  # (then 2 rows rejected)
        refused = _file(tmp_path, "a.csv", text)
        outcome = ingestor.ingest(refused, CONTACTS, source="s", name="a.csv", progress=meanwhile)
        assert outcome.entry.status == "rejected"
        assert contacts(store) == {"u": {"plan": "free"}, "n": {}}
        assert [(c["identifier"], c["attributes"]) for c in fed(store, "contacts")] == [
            ("u", {"plan": "free"}),
            ("n", {}),
        ]
        again = _file(tmp_path, "c.csv", "identifier,plan\nn,pro\n")
        ingestor.ingest(again, CONTACTS, source="s", name="c.csv")
        assert contacts(store) == {"u": {"plan": "free"}, "n": {"plan": "pro"}}

    # -- Rows stored as the file arrives -------------------------------------------------

    def test_provisional_rows_are_decided_as_an_import_would(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Rows stored while the file downloads wait, unseen, under an entry without a
        checksum; once it is known they are kept, their keys claimed in file order: a key
        accepted by an earlier file within 24 h drops its event, a key repeated in the
        file keeps its first use."""
        ingestor = Ingestor(store, clock=Clock(), batch_records=BATCH, commit_seconds=0)
        earlier = _file(tmp_path, "earlier.csv", KEYED + "z,buy,seen\n")
        ingestor.ingest(earlier, EVENTS, source="src", name="earlier.csv")
        data = _keyed_rows(lambda i: {2: "seen", 4: "twice", 9: "twice"}.get(i, f"k{i}"))
        download = Download(tmp_path / "staging", data)
        unseen: list[list[tuple[str, str, str | None, int]]] = []

        def all_provisional() -> bool:  # (another thread: a connection of its own)
            if _provisional_cursor(store) < ROWS - BATCH:
                return False
            unseen.append(_events(store))
            return True

        download.held_until = all_provisional
        outcome = _arriving(ingestor, download)

        assert unseen == [[("earlier.csv", "z", "seen", 2)]]
        entry = outcome.entry
        assert (entry.status, entry.sha256) == ("ingested", hashlib.sha256(data).hexdigest())
        assert (entry.rows, entry.duplicates, entry.cursor) == (ROWS - 2, 2, ROWS)
        big = [(key, line) for file, _, key, line in _events(store) if file == "/in/big.csv"]
        assert big == [
            (f"k{i}" if i not in (4,) else "twice", i + 2) for i in range(ROWS) if i not in (2, 9)
        ]
        assert store.ledger.unfinished_at("src", "/in/big.csv") == []
        assert [f["status"] for f in records(store, "files")] == ["ingested", "ingested"]

    def test_provisional_rows_of_a_duplicate_are_taken_back(
        self, store: Store, tmp_path: Path
    ) -> None:
        """The same bytes under another name: every row stored while downloading is removed,
        and the file is recorded once, as a duplicate."""
        data = _keyed_rows()
        ingestor = Ingestor(store, clock=Clock(), batch_records=BATCH, commit_seconds=0)
        first = tmp_path / "first.csv"
        first.write_bytes(data)
        ingestor.ingest(first, EVENTS, source="src", name="first.csv")
        download = Download(tmp_path / "staging", data)
        download.held_until = lambda: _provisional_cursor(store) >= ROWS - BATCH

        outcome = _arriving(ingestor, download)

        assert outcome.entry.status == "duplicate"
        assert len(records(store, "events")) == ROWS
        assert [(f["path"], f["status"]) for f in records(store, "files")] == [
            ("first.csv", "ingested"),
            ("/in/big.csv", "duplicate"),
        ]
        assert store.ledger.unfinished_at("src", "/in/big.csv") == []
        # Its keys were never claimed: the first file's still hold, no more.
        again = _file(tmp_path, "again.csv", KEYED + "v,buy,k0\nv,buy,new\n")
        assert ingestor.ingest(again, EVENTS, source="src", name="again").entry.duplicates == 1

    def test_provisional_rows_of_an_earlier_listing_are_taken_back(
        self, store: Store, tmp_path: Path
    ) -> None:
        """A provisional entry left by a stopped try is resumed only for the same listing:
        the file listed with another size gets a new entry, and the old rows go."""
        data = _keyed_rows()
        left = _stopped_after_two_batches(store, data, tmp_path)
        assert (left.status, left.sha256, left.cursor) == ("failed", None, 2 * BATCH)
        assert store.ledger.stale(
            Arrival("src", "/in/big.csv", None, len(data) + 1, "events", 1.0)
        ) == [left.id]

        longer = data + b"u1,buy,last\n"
        download = Download(tmp_path / "staging2", longer)
        download.held_until = lambda: _provisional_cursor(store) >= ROWS + 1 - BATCH
        ingestor = Ingestor(store, clock=Clock(), batch_records=BATCH, commit_seconds=0)
        outcome = _arriving(ingestor, download)

        assert (outcome.entry.status, outcome.entry.rows) == ("ingested", ROWS + 1)
        assert [line for *_, line in _events(store)] == list(range(2, ROWS + 3))
        assert [(f["path"], f["status"]) for f in records(store, "files")] == [
            ("/in/big.csv", "ingested")
        ]
        assert store.ledger.unfinished_at("src", "/in/big.csv") == []

    def test_provisional_rows_resume_in_a_download_anew_of_the_same_bytes(
        self, store: Store, tmp_path: Path
    ) -> None:
        """Another run (a replica: its own staging folder) takes over a file a stopped try
        had stored in part: it downloads the file anew, finds that its first bytes are
        those the committed rows were read from, and goes on from the cursor."""
        data = _keyed_rows()
        left = _stopped_after_two_batches(store, data, tmp_path)
        assert left.cursor == 2 * BATCH and left.prefix is not None
        assert left.prefix.sha256 == hashlib.sha256(data[: left.prefix.size]).hexdigest()

        ingestor = Ingestor(store, clock=Clock(), batch_records=BATCH, commit_seconds=0)
        with capture_logs() as logs:
            outcome = _arriving(ingestor, Download(tmp_path / "elsewhere", data))

        assert [g["cursor"] for g in logs if g["event"] == "file_resumed"] == [2 * BATCH]
        assert (outcome.entry.id, outcome.entry.status) == (left.id, "ingested")
        assert (outcome.entry.rows, outcome.entry.cursor) == (ROWS, ROWS)
        assert [line for *_, line in _events(store)] == list(range(2, ROWS + 2))

    # -- Listing turns -------------------------------------------------------------------

    def test_a_listing_turn_goes_to_one_and_its_files_to_the_others(self, store: Store) -> None:
        """One wins a turn; the others get the last published listing, the previous one's
        while the new turn lists."""
        turns = store.listings
        a, b = [RemoteFile("a.csv", 1, T0)], [RemoteFile("b.csv", 2, T0 + 1)]
        assert turns.turn("s", 60, T0, "one") is None
        assert turns.turn("s", 60, T0 + 1, "two") == []  # (nothing published yet)
        turns.publish("s", a, "one", T0)
        assert turns.turn("s", 60, T0 + 2, "two") == a
        assert turns.turn("t", 60, T0 + 2, "two") is None  # (another source: its own turns)
        assert turns.turn("s", 60, T0 + 61, "two") is None  # (a period on: two's turn)
        assert turns.turn("s", 60, T0 + 62, "one") == a  # (while two lists: one's listing)
        turns.publish("s", b, "two", T0 + 61)
        assert turns.turn("s", 60, T0 + 63, "one") == b

    def test_a_turn_of_every_zero_is_ours_whatever_the_others_clock(self, store: Store) -> None:
        """A first poll, and `once`, always list: even when another host's clock, ahead of
        ours, recorded its turn in our future."""
        assert store.listings.turn("s", 60, T0 + 3600, "fast") is None
        assert store.listings.turn("s", 0, T0, "slow") is None
        assert store.listings.turn("s", 0, T0, "slow") is None

    def test_a_late_listing_does_not_overwrite_a_newer_turns(self, store: Store) -> None:
        """A slow (or thawed) lister publishes to its own turn only: once another has taken
        the next one, what that one publishes stays."""
        turns = store.listings
        old, new = [RemoteFile("old.csv", 1, T0)], [RemoteFile("new.csv", 2, T0)]
        assert turns.turn("s", 60, T0, "slow") is None
        assert turns.turn("s", 60, T0 + 60, "fast") is None
        turns.publish("s", new, "fast", T0 + 60)
        turns.publish("s", old, "slow", T0)
        assert turns.turn("s", 60, T0 + 61, "third") == new
        turns.publish("s", old, "fast", T0)  # (its own name, an older turn: still not)
        assert turns.turn("s", 60, T0 + 62, "third") == new

    # -- Claims --------------------------------------------------------------------------

    def test_a_place_held_by_another_run_is_busy_until_let_go(
        self, store: Store, store_config: StoreConfig
    ) -> None:
        with open_store(store_config) as other:  # another process, as far as claims go
            with other.claim_place("s", "/in/a.csv"):
                with pytest.raises(PlaceBusy), store.claim_place("s", "/in/a.csv", wait=False):
                    pytest.fail("claimed twice")
                with store.claim_place("s", "/in/b.csv", wait=False):  # another place: free
                    pass
                with store.claim_place("t", "/in/a.csv", wait=False):  # another source's
                    pass
            with (
                store.claim_place("s", "/in/a.csv", wait=False),  # let go: free again
                pytest.raises(PlaceBusy),
                other.claim_place("s", "/in/a.csv", wait=False),
            ):
                pytest.fail("claimed twice")
        with store.claim_place("s", "/in/a.csv", wait=False):  # its holder closed
            pass

    def test_a_second_claim_of_the_same_bytes_waits_for_the_first(
        self, store: Store, store_config: StoreConfig
    ) -> None:
        sha256 = "ab" * 32
        with open_store(store_config) as other:
            held = threading.Event()

            def second() -> None:
                with other.claim(sha256):
                    held.set()

            with store.claim(sha256):
                with store.claim("cd" * 32):  # other bytes: no wait
                    pass
                thread = threading.Thread(target=second)
                thread.start()
                assert not held.wait(0.5), "claimed while another run held it"
            try:
                assert held.wait(15), "still waiting once the first let go"
            finally:
                thread.join(30)
            with store.claim(sha256):  # and the second let it go in turn
                pass

    def test_a_run_asked_to_stop_gives_up_waiting_for_a_claim(
        self, store: Store, store_config: StoreConfig
    ) -> None:
        """A SIGTERM must not wait for another run's file to end (a large one, elsewhere)."""
        sha256 = "ef" * 32
        stopping = threading.Event()
        with open_store(store_config) as other, store.claim(sha256):
            threading.Timer(0.2, stopping.set).start()
            started = time.monotonic()
            with pytest.raises(Interrupted), other.claim(sha256, stop=stopping.is_set):
                pass
            assert time.monotonic() - started < 5

    def test_confirm_passes_while_claims_are_held_and_with_none(self, store: Store) -> None:
        """Just before the remote action: every claim of this thread still holds."""
        store.confirm()
        with store.claim_place("s", "/in/a.csv", wait=False), store.claim("ab" * 32):
            store.confirm()
            store.confirm()
        store.confirm()
