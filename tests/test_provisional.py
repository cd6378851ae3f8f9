"""A large file stored while it downloads (arriving.ingest_arriving): its rows wait under a
provisional entry, their idempotency keys unclaimed, until the checksum decides. Whatever the
checksum says, the store must end as if the file had been ingested after its download.

The download is a stand-in thread writing a real `.part` at the test's pace: it can hold the
last bytes back until the writer has stored every batch provisionally, so that the decision
has all of them to settle; the parse is the real child process following the file."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from pathlib import Path

import apsw
import pytest
from structlog.testing import capture_logs

from connector.arriving import ingest_arriving
from connector.config import Config, SourceConfig
from connector.csvrules.reader import Inspector
from connector.csvrules.rules import FileRules
from connector.download import Staged
from connector.errors import FileChanged, Interrupted, PlaceBusy, TransientError
from connector.ingest import Ingestor, Outcome
from connector.parsing import PARALLEL_MIN_BYTES
from connector.pipeline import Poller
from connector.store.keys import DECIDED_EVENTS
from connector.store.ledger import Arrival
from connector.store.sqlite import SQLiteStore
from tests.helpers import configs

# Slow (pyproject's `slow` marker): a parser child process follows each file, at the
# pace of a download held back by the test.
pytestmark = pytest.mark.slow

EVENTS = FileRules(kind="events")
CONTACTS = FileRules(kind="contacts")
ROWS = 90_000
BATCH = 10_000
PAD = "x" * 80  # makes ROWS rows a file large enough for the parser process


def _events_text(keys: Callable[[int], str] = lambda i: f"k{i}") -> str:
    rows = "".join(f"u{i % 97},buy,{keys(i)},{PAD}\n" for i in range(ROWS))
    return "identifier,name,idempotencyKey,pad\n" + rows


class Download:
    """A download stand-in, into ``folder/file.part`` (resumed from what it holds, as
    download() does, hashing each piece before writing it): writes ``data`` up to ``cut``
    (default: all but the last byte), then, once ``held_until()`` says so, the rest — or
    raises ``failure`` instead."""

    def __init__(self, folder: Path, data: bytes, *, cut: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.part = folder / "file.part"
        self.part.touch()
        self.resumes = self.part.stat().st_size > 0  # bytes already staged by a first try
        self.data, self.cut = data, len(data) - 1 if cut is None else cut
        self.failure: BaseException | None = None
        self.held_until: Callable[[], bool] = lambda: True
        self.inspector = Inspector("utf-8")

    def __call__(self) -> Staged:
        inspector = self.inspector
        with self.part.open("ab+") as out:
            out.seek(0)
            inspector.feed_from(out)
            first = self.data[inspector.size : self.cut]
            inspector.feed(first)
            out.write(first)
            out.flush()
            deadline = time.monotonic() + 30
            while not self.held_until():
                assert time.monotonic() < deadline, "the writer never got that far"
                time.sleep(0.01)
            if self.failure is not None:
                raise self.failure
            rest = self.data[inspector.size :]
            inspector.feed(rest)
            out.write(rest)
        inspector.finish()
        done = self.part.with_suffix(".csv")
        os.replace(self.part, done)
        return Staged(done, inspector)


def _arriving(
    ingestor: Ingestor,
    download: Download,
    rules: FileRules = EVENTS,
    *,
    ended_first: bool = False,
) -> Outcome:
    """``ended_first``: the download is over (or failed) before the ingestor begins."""
    size = len(download.data)
    assert size >= PARALLEL_MIN_BYTES  # the path under test: a parser process follows
    arrival = Arrival("src", "big.csv", None, size, rules.kind, 1.0)
    with ThreadPoolExecutor(1) as pool:
        job = ingestor.parse_job(download.part, rules, growing_to=size).__enter__()
        fetched: Future[Staged] = pool.submit(download)
        if ended_first:
            wait([fetched])
        try:
            with ingestor.store.claim_place(arrival.source, arrival.path):  # as Poller does
                return ingest_arriving(
                    ingestor,
                    rules,
                    arrival=arrival,
                    job=job,
                    fetched=fetched,
                    resumed=download.resumes,
                    arrived=download.inspector.prefix,
                )
        finally:
            job.close()


def _stored_provisionally(db_path: Path, records_: int) -> Callable[[], bool]:
    """True once a provisional entry has committed ``records_`` records (a reader of its own,
    as the writer's connection is busy)."""

    def done() -> bool:
        with apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY) as conn:
            rows = conn.execute("SELECT max(cursor) FROM files WHERE sha256 IS NULL").fetchall()
        return bool(rows) and (rows[0][0] or 0) >= records_

    return done


def _wait_for(condition: Callable[[], bool], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _ingestor(db: SQLiteStore, stop: Callable[[], bool] = lambda: False) -> Ingestor:
    # Commit every batch, so the test can see the provisional cursor move.
    return Ingestor(
        db, clock=lambda: 1_764_000_000.0, batch_records=BATCH, commit_seconds=0, stop=stop
    )


def _all_provisional(db: SQLiteStore, data: bytes, tmp_path: Path) -> Download:
    """A download whose last byte waits until every batch the parser could make without it
    has been stored provisionally (the last one follows, after the decision or not)."""
    download = Download(tmp_path / "staging", data)
    download.held_until = _stored_provisionally(db.db.path, ROWS - BATCH)
    return download


def _a_download_fails(ingestor: Ingestor, data: bytes, tmp_path: Path) -> Download:
    """A first try whose download fails after every batch it allows was stored."""
    broken = _all_provisional(ingestor.store, data, tmp_path)
    broken.failure = TransientError("connection reset")
    with pytest.raises(TransientError, match="connection reset"):
        _arriving(ingestor, broken)
    return broken


def _events(db: SQLiteStore) -> list[tuple[object, ...]]:
    return [(e["line"], e["identifier"], e["idempotencyKey"]) for e in db.records("events")]


def _twice_keys(i: int) -> str:
    """A key accepted by an earlier file (``_EARLIER``), one used twice far apart (in
    different spans of ``DECIDED_EVENTS``), a row without one, and distinct keys."""
    return {5: "seen", 7: "twice", 50_000: "twice", 60_000: ""}.get(i, f"k{i}")


_EARLIER = "identifier,name,idempotencyKey\nz,buy,seen\n"


def _imported_alike(tmp_path: Path, db: SQLiteStore, data: bytes) -> Callable[[Outcome], None]:
    """Ingest ``_EARLIER`` into ``db`` and, with ``data`` after it, into a store of its own
    by ``import``: a check that an outcome (and ``db``) ends as that one did."""
    earlier = tmp_path / "earlier.csv"
    earlier.write_text(_EARLIER)
    with SQLiteStore(tmp_path / "twin" / "c.db") as reference:  # one after the other
        _ingestor(reference).ingest(earlier, EVENTS, source="src", name="earlier.csv")
        big = tmp_path / "big.csv"
        big.write_bytes(data)
        expected = _ingestor(reference).ingest(big, EVENTS, source="src", name="big.csv")
        wanted, keys = _events(reference), reference.query(_KEYS)
    _ingestor(db).ingest(earlier, EVENTS, source="src", name="earlier.csv")

    def check(outcome: Outcome) -> None:
        assert outcome.entry.status == "ingested"
        assert (outcome.entry.rows, outcome.entry.duplicates) == (ROWS - 2, 2)
        assert (expected.entry.rows, expected.entry.duplicates) == (ROWS - 2, 2)
        assert outcome.entry.sha256 == expected.entry.sha256
        assert _events(db) == wanted
        assert db.query(_KEYS) == keys

    return check


# Each key with the line of the file that claimed it.
_KEYS = (
    "SELECT k.key, f.path, e.line FROM idempotency_keys k JOIN files f ON f.id = k.file_id"
    " LEFT JOIN events e ON e.file_id = k.file_id AND e.idempotency_key = k.key ORDER BY k.key"
)


def test_keys_are_decided_as_an_import_would(tmp_path: Path, db: SQLiteStore) -> None:
    """Keys claimed at the decision, in file order: one accepted by an earlier file within
    24 h drops its event, a key repeated in the file keeps its first use only."""
    data = _events_text(_twice_keys).encode()
    imported_alike = _imported_alike(tmp_path, db, data)

    outcome = _arriving(_ingestor(db), _all_provisional(db, data, tmp_path))

    imported_alike(outcome)


def test_keys_claimed_in_part_before_a_stop_are_claimed_on_from_there(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """The keys are claimed a span of events per transaction: stopped after the first
    span, the entry is resumed by checksum, the claims go on from where they stopped and
    the store ends as an import of the file would have left it."""
    data = _events_text(_twice_keys).encode()
    imported_alike = _imported_alike(tmp_path, db, data)

    def one_span_claimed() -> bool:
        rows = db.query("SELECT first_event, unclaimed_from FROM files WHERE sha256 IS NOT NULL")
        return any(start is not None and start > begun for begun, start in rows)

    with pytest.raises(Interrupted, match="claiming the file's keys"):
        _arriving(_ingestor(db, stop=one_span_claimed), _all_provisional(db, data, tmp_path))
    [entry] = db.ledger.unfinished_at("src", "big.csv")
    assert entry.status == "failed" and entry.unclaimed_from == entry.first_event + DECIDED_EVENTS
    # (the earlier file's key, and those of the span but the one it had taken)
    assert db.query("SELECT count(*) FROM idempotency_keys") == [(1 + DECIDED_EVENTS - 1,)]

    outcome = _arriving(_ingestor(db), Download(tmp_path / "staging", data))

    imported_alike(outcome)
    assert outcome.entry.unclaimed_from is None


def test_a_duplicate_is_taken_back_whole(tmp_path: Path, db: SQLiteStore) -> None:
    """The same bytes under another name: every row stored while downloading is removed,
    and the file is recorded once, as a duplicate."""
    data = _events_text().encode()
    first = tmp_path / "first.csv"
    first.write_bytes(data)
    ingestor = _ingestor(db)
    ingestor.ingest(first, EVENTS, source="src", name="first.csv")
    before = db.query("SELECT count(*) FROM events")[0][0]

    outcome = _arriving(ingestor, _all_provisional(db, data, tmp_path))

    assert outcome.entry.status == "duplicate"
    assert db.query("SELECT count(*) FROM events")[0][0] == before == ROWS
    statuses = db.query("SELECT path, status FROM files ORDER BY id")
    assert statuses == [("first.csv", "ingested"), ("big.csv", "duplicate")]


def test_a_contacts_duplicate_leaves_no_pending_update(tmp_path: Path, db: SQLiteStore) -> None:
    rows = "".join(f"c{i},{PAD}-{i:010d}\n" for i in range(ROWS))
    data = ("identifier,plan\n" + rows).encode()
    first = tmp_path / "first.csv"
    first.write_bytes(data)
    ingestor = _ingestor(db)
    ingestor.ingest(first, CONTACTS, source="src", name="first.csv")

    outcome = _arriving(ingestor, _all_provisional(db, data, tmp_path), CONTACTS)

    assert outcome.entry.status == "duplicate"
    assert db.query("SELECT count(*) FROM pending_contacts") == [(0,)]
    assert db.query("SELECT count(*) FROM contacts") == [(ROWS,)]


def test_bytes_undecodable_near_the_end_reject_the_file_and_its_rows(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """The parser stops on the bad bytes, the checksum's decision rejects the file whole:
    none of its rows stay, and the reason names the line."""
    data = _events_text().encode() + b"u1,buy,bad,\xff\n"
    ingestor = _ingestor(db)

    outcome = _arriving(ingestor, _all_provisional(db, data, tmp_path))

    assert outcome.entry.status == "rejected"
    assert outcome.reason is not None and outcome.reason.startswith(f"line {ROWS + 2}:")
    assert db.query("SELECT count(*) FROM events") == [(0,)]
    assert db.query("SELECT count(*) FROM rejects") == [(1,)]  # the file's reason only


def test_a_failed_download_keeps_what_was_stored_and_the_next_try_resumes(
    tmp_path: Path, db: SQLiteStore
) -> None:
    data = _events_text().encode()
    ingestor = _ingestor(db)
    _a_download_fails(ingestor, data, tmp_path)
    [(status, sha256, cursor)] = db.query("SELECT status, sha256, cursor FROM files")
    assert (status, sha256) == ("failed", None) and 0 < cursor < ROWS

    again = Download(tmp_path / "staging", data)  # resumed from the staged bytes
    with capture_logs() as logs:
        outcome = _arriving(ingestor, again)

    assert outcome.entry.status == "ingested" and outcome.entry.rows == ROWS
    assert [line for line, _, _ in _events(db)] == list(range(2, ROWS + 2))
    assert db.query("SELECT count(*) FROM files") == [(1,)]
    assert [log["cursor"] for log in logs if log["event"] == "file_resumed"] == [cursor]


def test_a_download_anew_resumes_the_rows_its_bytes_begin_with(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """The staged bytes are gone (another replica's staging, or wiped): the file is fetched
    anew, and once its first bytes are those the committed rows were read from, the rows
    stay and the parse goes on from the cursor."""
    data = _events_text().encode()
    ingestor = _ingestor(db)
    _a_download_fails(ingestor, data, tmp_path).part.unlink()
    [(cursor, size, sha256)] = db.query("SELECT cursor, prefix_size, prefix_sha256 FROM files")
    assert 0 < cursor < ROWS and 0 < size < len(data)
    assert sha256 == hashlib.sha256(data[:size]).hexdigest()

    with capture_logs() as logs:
        outcome = _arriving(ingestor, Download(tmp_path / "staging", data))

    assert outcome.entry.status == "ingested" and outcome.entry.rows == ROWS
    assert [g["cursor"] for g in logs if g["event"] == "file_resumed"] == [cursor]
    assert [line for line, _, _ in _events(db)] == list(range(2, ROWS + 2))
    assert db.query("SELECT count(*) FROM files") == [(1,)]


@pytest.mark.parametrize("cut", [0, 1_000])
def test_a_download_anew_failing_before_its_bytes_compare_keeps_the_rows(
    tmp_path: Path, db: SQLiteStore, cut: int
) -> None:
    """The download anew fails before it holds the bytes to compare (at once, or early):
    its error is raised, and the rows stay for the next try to compare."""
    data = _events_text().encode()
    ingestor = _ingestor(db)
    _a_download_fails(ingestor, data, tmp_path).part.unlink()
    before = db.query("SELECT id, status, cursor, prefix_sha256 FROM files")

    again = Download(tmp_path / "staging", data, cut=cut)
    again.failure = TransientError("refused")
    with pytest.raises(TransientError, match="refused"):
        _arriving(ingestor, again, ended_first=cut == 0)

    assert before[0][1] == "failed"
    assert db.query("SELECT id, status, cursor, prefix_sha256 FROM files") == before
    assert db.query("SELECT count(*) FROM events")[0][0] == before[0][2]


def test_rows_of_other_bytes_under_the_same_listing_are_taken_back(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """Fetched anew, the file begins with other bytes than the committed rows were read
    from (same name, size and time, other content): the rows are taken back and the file
    starts over, so that only the bytes ingested are stored."""
    data = _events_text().encode()
    other = _events_text(lambda i: f"o{i}").encode()
    assert len(other) == len(data)
    ingestor = _ingestor(db)
    _a_download_fails(ingestor, data, tmp_path).part.unlink()

    with capture_logs() as logs:
        outcome = _arriving(ingestor, Download(tmp_path / "staging", other))

    assert outcome.entry.rows == ROWS and not [g for g in logs if g["event"] == "file_resumed"]
    assert {key for _, _, key in _events(db)} == {f"o{i}" for i in range(ROWS)}
    assert db.query("SELECT count(*) FROM files") == [(1,)]


def test_a_download_failing_at_once_on_a_resume_does_not_hang(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """The parse of a resumed entry starts after the download may already have failed:
    it must not follow bytes that will never come (the poll, and a SIGTERM, would wait)."""
    data = _events_text().encode()
    ingestor = _ingestor(db)
    _a_download_fails(ingestor, data, tmp_path)

    again = Download(tmp_path / "staging", data, cut=0)
    again.failure = TransientError("refused at once")
    started = time.monotonic()
    with pytest.raises(TransientError, match="refused at once"):
        _arriving(ingestor, again, ended_first=True)
    assert time.monotonic() - started < 10
    [(status, cursor)] = db.query("SELECT status, cursor FROM files")
    assert status == "failed" and cursor > 0


def test_waiting_for_bytes_holds_no_write_lock(tmp_path: Path, db: SQLiteStore) -> None:
    """While the download stalls, what was stored is committed: another writer (an import,
    another source) is not kept waiting for the network."""
    data = _events_text().encode()
    ingestor = Ingestor(db, clock=lambda: 1_764_000_000.0, batch_records=BATCH)  # 1 s commits
    stalled = Download(tmp_path / "staging", data, cut=len(data) // 3)
    release = threading.Event()
    stalled.held_until = release.is_set
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_arriving, ingestor, stalled)
        try:
            assert _wait_for(_stored_provisionally(db.db.path, BATCH))
            other = apsw.Connection(str(db.db.path))
            other.set_busy_timeout(3000)
            other.execute("BEGIN IMMEDIATE")  # BusyError if the lock were held
            other.execute("ROLLBACK")
            other.close()
        finally:
            release.set()
        assert running.result(60).entry.rows == ROWS


def test_bytes_decided_before_a_stop_are_resumed_by_checksum(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """Stopped after the decision, the entry has its checksum: the next try of the same
    listing waits for the bytes and resumes it, rather than store them all again."""
    data = _events_text().encode()

    def decided() -> bool:
        return bool(db.query("SELECT 1 FROM files WHERE sha256 IS NOT NULL"))

    with pytest.raises(Interrupted):
        _arriving(_ingestor(db, stop=decided), _all_provisional(db, data, tmp_path))
    [(status, cursor)] = db.query("SELECT status, cursor FROM files")
    assert status == "failed" and cursor > 0

    with capture_logs() as logs:
        outcome = _arriving(_ingestor(db), Download(tmp_path / "staging", data))

    assert outcome.entry.rows == ROWS
    [resumed] = [log for log in logs if log["event"] == "file_resumed"]
    assert resumed["cursor"] == cursor and "sha256" in resumed  # by checksum
    assert db.query("SELECT count(*) FROM events") == [(ROWS,)]


def test_a_file_that_changed_while_downloading_is_taken_back(
    tmp_path: Path, db: SQLiteStore
) -> None:
    data = _events_text().encode()
    ingestor = _ingestor(db)
    changing = _all_provisional(db, data, tmp_path)
    changing.failure = FileChanged("big.csv grew while downloading")

    with pytest.raises(FileChanged):
        _arriving(ingestor, changing)

    assert db.query("SELECT count(*) FROM files") == [(0,)]
    assert db.query("SELECT count(*) FROM events") == [(0,)]


def test_rows_of_an_earlier_listing_are_taken_back(tmp_path: Path, db: SQLiteStore) -> None:
    """A provisional entry left by a failed try is resumed only for the same listing: the
    file listed with another size gets a new entry, and the old rows go."""
    data = _events_text().encode()
    ingestor = _ingestor(db)
    _a_download_fails(ingestor, data, tmp_path)

    longer = data + b"u1,buy,last,\n"
    outcome = _arriving(ingestor, Download(tmp_path / "staging2", longer))

    assert outcome.entry.rows == ROWS + 1
    assert db.query("SELECT count(*) FROM events") == [(ROWS + 1,)]
    assert db.query("SELECT count(*) FROM files") == [(1,)]


def test_bytes_another_entry_began_are_resumed_there(tmp_path: Path, db: SQLiteStore) -> None:
    """The same bytes were partly ingested under another name (a stop): the provisional
    rows are taken back and that entry is resumed, so each row is stored once."""
    data = _events_text().encode()
    local = tmp_path / "local.csv"
    local.write_bytes(data)
    batches = 0

    def stop() -> bool:
        nonlocal batches
        batches += 1
        return batches > 3

    stopping = Ingestor(db, batch_records=BATCH, commit_seconds=0, stop=stop)
    with pytest.raises(Exception, match="stopped mid-file"):
        stopping.ingest(local, EVENTS, source="import", name="local.csv")
    [(earlier, cursor)] = db.query("SELECT id, cursor FROM files")
    assert 0 < cursor < ROWS

    outcome = _arriving(_ingestor(db), _all_provisional(db, data, tmp_path))

    assert outcome.entry.id == earlier and outcome.entry.status == "ingested"
    assert outcome.entry.rows == ROWS
    assert db.query("SELECT count(*) FROM events") == [(ROWS,)]
    assert db.query("SELECT source, path FROM files") == [("src", "big.csv")]


def _polled(tmp_path: Path, *, min_age: str) -> tuple[Config, SourceConfig]:
    """A config, and one `file://` source "src" on ``tmp_path/inbox`` (made), after = leave."""
    (tmp_path / "inbox").mkdir()
    files = [{"kind": "events", "pattern": "*.csv"}]
    return configs(tmp_path, name="src", min_age=min_age, after="leave", files=files)


def test_a_file_another_run_has_in_hand_is_skipped(tmp_path: Path) -> None:
    """Two processes given one source (a `once` run by hand beside the service) must not
    both stage and store one file: the second skips it for this poll (`file_busy`), and
    takes it, or finds it known, at the next."""
    config, source = _polled(tmp_path, min_age="0s")
    (tmp_path / "inbox" / "big.csv").write_text(_events_text())
    with SQLiteStore(config.store.path) as db, SQLiteStore(config.store.path) as other:
        poller = Poller(config, source, db, ingestor=_ingestor(db))
        with other.claim_place("src", source.path_of("big.csv")), capture_logs() as logs:
            summary = poller.poll()
        assert not summary.taken and not summary.failed
        assert list(summary.busy) == [source.path_of("big.csv")]
        [busy] = [log for log in logs if log["event"] == "file_busy"]
        assert busy["cause"].startswith("in hand in another run")
        assert not list((tmp_path / "staging").rglob("*.*"))  # nothing staged meanwhile

        assert poller.poll().taken[source.path_of("big.csv")].rows == ROWS
        assert db.query("SELECT count(*) FROM events") == [(ROWS,)]


def test_a_file_decided_by_another_run_since_the_listing_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that listed the folder before another run decided a file, and won its claim
    after, reads the ledger again: it neither takes the file a second time (a second entry,
    a `duplicate`) nor redoes its remote action."""
    config, source = _polled(tmp_path, min_age="0s")
    (tmp_path / "inbox" / "a.csv").write_text("identifier,name\nu1,buy\n")
    with SQLiteStore(config.store.path) as first, SQLiteStore(config.store.path) as second:
        assert list(Poller(config, source, first, ingestor=_ingestor(first)).poll().taken) == [
            source.path_of("a.csv")
        ]
        late = Poller(config, source, second, ingestor=_ingestor(second))
        # What the ledger said when the late run listed the folder: nothing decided yet.
        monkeypatch.setattr(late.ingestor.ledger, "known", lambda source: {})
        summary = late.poll()
        assert not summary.taken and not summary.failed and not summary.completed
        assert first.query("SELECT path, status FROM files") == [
            (source.path_of("a.csv"), "ingested")
        ]
        assert not list((tmp_path / "staging").rglob("*.*"))


def test_a_lock_slot_shared_with_another_file_says_so(db: SQLiteStore) -> None:
    """Place locks share 4096 slots: a file whose slot another file of this run holds is
    skipped for the poll, and the log says why (not "another run")."""

    def slot(path: str) -> str:
        return hashlib.sha256(f"src\0{path}".encode()).hexdigest()[:3]

    other = next(
        p for p in (f"/in/f{i}.csv" for i in range(1, 100_000)) if slot(p) == slot("/in/a.csv")
    )
    with db.claim_place("src", "/in/a.csv"):
        with pytest.raises(PlaceBusy, match="another file of this run"):
            db.claim_place("src", other, wait=False).__enter__()
        with pytest.raises(PlaceBusy, match="in hand in another run"):
            db.claim_place("src", "/in/a.csv", wait=False).__enter__()
    with db.claim_place("src", other, wait=False):  # let go: free again
        pass


def test_a_file_busy_in_a_polls_first_round_and_taken_in_its_second_is_not_busy(
    tmp_path: Path,
) -> None:
    """A poll that waits for a file still settling lists twice: a file busy in the first
    round and taken in the second is reported taken, not busy (and never twice)."""
    config, source = _polled(tmp_path, min_age="0.2s")
    inbox = tmp_path / "inbox"
    (inbox / "a.csv").write_text("identifier,name\nu1,buy\n")
    a, b = source.path_of("a.csv"), source.path_of("b.csv")
    holding = ExitStack()

    def sleep(seconds: float) -> None:  # between a poll's two rounds
        if (inbox / "b.csv").exists():
            holding.close()  # the other run is done with a before our second round
        time.sleep(seconds)

    with SQLiteStore(config.store.path) as db, SQLiteStore(config.store.path) as other:
        holding.enter_context(other.claim_place("src", a))
        poller = Poller(config, source, db, ingestor=_ingestor(db), sleep=sleep)
        first = poller.poll()  # a: first seen, ready in the second round, busy
        assert list(first.busy) == [a] and not first.taken
        (inbox / "b.csv").write_text("identifier,name\nu2,buy\n")  # new: a second round
        summary = poller.poll()  # a: busy in the first round, taken in the second
    assert sorted(summary.taken) == [a, b] and summary.busy == {}
