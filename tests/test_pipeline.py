"""The poll's error boundary for one file: whatever goes wrong while a file is taken fails
that file only, the poll goes on, and a file that keeps failing is set aside (quarantined)
after `max_tries` tries in a row, so that it neither blocks its source nor is retried for
ever. Connecting and listing are retried as downloads are."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from connector.actions import Action
from connector.config import Config
from connector.errors import Interrupted, TransientError
from connector.ingest import Ingestor
from connector.parsing import PARALLEL_MIN_BYTES
from connector.pipeline import Poller
from connector.sources.base import RemoteFile
from connector.sources.local import LocalSource
from connector.store.sqlite import SQLiteStore
from connector.testing import EmbeddedSFTPServer, Fault
from tests.helpers import EVENTS, configs, server_config

if TYPE_CHECKING:
    from connector.testing.plugin import FaultProxyFactory

POISON = "events_poison.csv"
GOOD = "identifier,n\nu1,1\nu2,2\n"


class Poisoned(LocalSource):
    """A local folder where reading one file fails after ``good_bytes``, as a defect would
    (not an error of ours), or as a network fault would with ``transient`` set."""

    transient = False
    good_bytes = 0
    stall = 0.0  # seconds before the failure, as a slow link's: the parse catches up

    def read(self, name: str, offset: int = 0) -> Iterator[bytes]:
        if name != POISON:
            yield from super().read(name, offset)
            return
        sent = offset
        for chunk in super().read(name, offset):
            if sent + len(chunk) > Poisoned.good_bytes:
                break
            sent += len(chunk)
            yield chunk
        else:
            return
        time.sleep(Poisoned.stall)
        if Poisoned.transient:
            raise TransientError("connection reset (test)")
        raise RuntimeError("a library tripped over these bytes")


@pytest.fixture(autouse=True)
def _poisoned_afresh() -> None:
    """Poisoned's settings are its class's: each test starts from these, whichever tests
    ran before it (`-m "not slow"` leaves some out)."""
    Poisoned.transient, Poisoned.good_bytes, Poisoned.stall = False, 0, 0.0


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    (folder / POISON).write_text(GOOD.replace("u", "p"))
    return folder


@pytest.fixture
def poller(tmp_path: Path, inbox: Path) -> Iterator[Poller]:
    config, source = configs(tmp_path, max_tries=3)
    with SQLiteStore(config.store.path) as db:
        yield Poller(config, source, db, sleep=lambda _: None, opener=Poisoned)


def records_of(config: Config) -> list[dict[str, Any]]:
    with SQLiteStore(config.store.path) as db:
        return list(db.records("files"))


def _statuses(poller: Poller) -> dict[str, str]:
    return {f["path"].rsplit("/", 1)[1]: f["status"] for f in poller.store.records("files")}


def test_an_unexpected_error_fails_that_file_only_with_its_traceback_logged(
    poller: Poller, inbox: Path
) -> None:
    """A defect met while taking one file fails it (cause and traceback in the log), and
    the poll goes on with the other files."""
    (inbox / "events_good.csv").write_text(GOOD)
    with capture_logs() as logs:
        summary = poller.poll()
    assert [p.rsplit("/", 1)[1] for p in summary.taken] == ["events_good.csv"]
    [cause] = summary.failed.values()
    assert cause == "unexpected RuntimeError: a library tripped over these bytes"
    [failed] = [log for log in logs if log["event"] == "file_failed"]
    assert failed["exc_info"] is True and failed["file"].endswith(POISON)
    assert _statuses(poller) == {"events_good.csv": "ingested", POISON: "failed"}


def test_a_file_failing_max_tries_in_a_row_is_set_aside(poller: Poller, inbox: Path) -> None:
    """After `max_tries` failed tries of the same listing the file is recorded rejected,
    with the count and the last cause, and moved where files rejected whole go; later
    polls no longer touch it, and new files are still taken."""
    for _ in range(2):
        assert list(poller.poll().failed) == [str(inbox / POISON)]
        assert (inbox / POISON).exists()
    with capture_logs() as logs:
        summary = poller.poll()
    assert summary.failed == {}
    assert [e.status for e in summary.taken.values()] == ["rejected"]
    assert [log["tries"] for log in logs if log["event"] == "file_quarantined"] == [3]
    assert not (inbox / POISON).exists() and (inbox / "rejected" / POISON).exists()
    [reject] = poller.store.records("rejects")
    assert reject["line"] is None and reject["reason"] == (
        "set aside after 3 failed tries in a row; the last: unexpected RuntimeError:"
        " a library tripped over these bytes"
    )
    (inbox / "events_good.csv").write_text(GOOD)
    summary = poller.poll()
    assert [p.rsplit("/", 1)[1] for p in summary.taken] == ["events_good.csv"]
    assert summary.failed == {}
    assert _statuses(poller) == {POISON: "rejected", "events_good.csv": "ingested"}


def test_network_faults_never_set_a_file_aside(poller: Poller) -> None:
    """Faults of the network or the server say nothing of the file: it is tried again at
    every poll, however many times, and never set aside; a success clears the count."""
    Poisoned.transient = True
    for _ in range(5):
        [cause] = poller.poll().failed.values()
        assert cause.endswith("connection reset (test)")
    assert _statuses(poller) == {POISON: "failed"}
    assert poller.store.query("SELECT count(*) FROM tries") == [(0,)]
    Poisoned.good_bytes = 1 << 20  # the next try gets every byte
    assert [e.status for e in poller.poll().taken.values()] == ["ingested"]


def test_a_new_listing_starts_again_from_one_try(poller: Poller, inbox: Path) -> None:
    """A file sent again (another size or mtime) is another listing: its tries start
    again from one, and once it goes through the count is cleared."""
    for _ in range(2):
        poller.poll()
    (inbox / POISON).write_text(GOOD.replace("u", "q"))  # re-sent: another listing
    for tries in (1, 2):
        poller.poll()
        assert poller.store.query("SELECT tries FROM tries") == [(tries,)]
    assert (inbox / POISON).exists()
    Poisoned.good_bytes = 1 << 20
    assert [e.status for e in poller.poll().taken.values()] == ["ingested"]
    assert poller.store.query("SELECT count(*) FROM tries") == [(0,)]


@pytest.mark.slow
def test_one_poll_counts_one_try_even_in_its_second_round(tmp_path: Path, inbox: Path) -> None:
    """A poll that waits for a pending file lists again; a file that failed in its first
    round is not tried a second time in the same poll."""
    config, source = configs(tmp_path, min_age="200ms", max_tries=3)
    with SQLiteStore(config.store.path) as db:
        poller = Poller(config, source, db, sleep=time.sleep, opener=Poisoned)
        poller.poll()  # the poison is seen, waited for, tried: one try
        (inbox / "events_new.csv").write_text(GOOD)  # pending: the poll will list again
        with capture_logs() as logs:
            summary = poller.poll()
        assert [log["event"] for log in logs].count("file_failed") == 1
        assert db.query("SELECT tries FROM tries") == [(2,)]
        assert [p.rsplit("/", 1)[1] for p in summary.taken] == ["events_new.csv"]


def test_a_file_set_aside_is_left_in_place_when_error_dir_deletes(tmp_path: Path) -> None:
    """With `error_dir = "delete"` a file set aside is left where it is (bytes never
    ingested are not deleted on a defect's account), and later polls skip it unread."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / POISON).write_text(GOOD)
    config, source = configs(tmp_path, max_tries=1, error_dir="delete")
    with SQLiteStore(config.store.path) as db:
        poller = Poller(config, source, db, sleep=lambda _: None, opener=Poisoned)
        assert [e.status for e in poller.poll().taken.values()] == ["rejected"]
        assert (inbox / POISON).exists()
        summary = poller.poll()
        assert (summary.taken, summary.failed, summary.completed) == ({}, {}, [])
        assert db.query("SELECT action FROM files") == [("leave",)]


def test_a_file_moved_back_from_error_dir_is_taken_again(poller: Poller, inbox: Path) -> None:
    """A move keeps the file's mtime: the same path, size and mtime listed again after
    the connector moved the file away means someone moved it back, and it is taken."""
    for _ in range(3):
        poller.poll()
    (inbox / "rejected" / POISON).rename(inbox / POISON)
    Poisoned.good_bytes = 1 << 20  # the cause was fixed
    assert [e.status for e in poller.poll().taken.values()] == ["ingested"]
    assert [f["status"] for f in poller.store.records("files")] == ["rejected", "ingested"]


class BrokenMove(LocalSource):
    """A local folder whose remote action fails as a defect would (not an error of ours)."""

    def complete(self, name: str, action: Action, report: bytes | None = None) -> str | None:
        raise RuntimeError("a library tripped over the move")


def test_a_failing_remote_action_never_sets_a_decided_file_aside(tmp_path: Path) -> None:
    """A file already ingested whose move keeps failing, even unexpectedly, stays
    ingested: only its remote action is redone, however often it fails."""
    config, source = configs(tmp_path, after="move:done", max_tries=1)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "events_1.csv").write_text(GOOD)
    with SQLiteStore(config.store.path) as db:
        poller = Poller(config, source, db, sleep=lambda _: None, opener=BrokenMove)
        for _ in range(3):
            [cause] = poller.poll().failed.values()
            assert cause == "unexpected RuntimeError: a library tripped over the move"
        assert _statuses(poller) == {"events_1.csv": "ingested"}
        assert db.query("SELECT count(*) FROM tries") == [(0,)]


def test_a_file_another_run_decided_since_the_listing_is_left_alone(tmp_path: Path) -> None:
    """Two runs given one source: a file the other run ingests and moves away after this
    run listed it is skipped (decided meanwhile), not fetched from where it no longer is."""
    config, source = configs(tmp_path, after="move:done", max_tries=3)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "events_1.csv").write_text(GOOD)
    with SQLiteStore(config.store.path) as db, SQLiteStore(config.store.path) as other_db:
        other = Poller(config, source, other_db, ingestor=Ingestor(other_db), sleep=lambda _: None)

        class Raced(LocalSource):
            def list(self) -> list[RemoteFile]:
                listing = super().list()
                other.poll()  # the other run takes the file between our listing and take
                return listing

        poller = Poller(config, source, db, sleep=lambda _: None, opener=Raced)
        with capture_logs() as logs:
            summary = poller.poll()
    assert (summary.taken, summary.failed) == ({}, {})
    assert "file_decided_meanwhile" in [log["event"] for log in logs]
    assert [f["status"] for f in records_of(config)] == ["ingested"]


@pytest.mark.slow
def test_a_checksum_claim_held_elsewhere_never_deadlocks_a_set_aside(
    tmp_path: Path, inbox: Path
) -> None:
    """Setting aside a file whose bytes were begun under its place, while another writer of
    this process holds their checksum claim (and will want the store next), waits for the
    claim outside any transaction: both finish."""
    (inbox / POISON).write_text("identifier,n\n" + "".join(f"u{i},{i}\n" for i in range(3_000)))
    config, source = configs(tmp_path, max_tries=2)
    with SQLiteStore(config.store.path) as db, SQLiteStore(config.store.path) as other_db:
        calls = iter(range(1_000_000))

        def defect() -> bool:  # the second batch meets a defect, after the first commit
            if next(calls) == 1:
                raise RuntimeError("a defect met in the second batch")
            return False

        ingestor = Ingestor(db, batch_records=1_000, commit_seconds=0, stop=defect)
        Poller(
            config, source, ingestor.store, ingestor=ingestor, sleep=lambda _: None
        ).poll()  # bytes begun: try 1
        [(sha256,)] = db.query("SELECT sha256 FROM files WHERE status = 'failed'")
        holding, done = threading.Event(), threading.Event()

        def writer() -> None:  # holds the claim, then wants the store's write lock
            with other_db.claim(sha256):
                holding.set()
                time.sleep(0.3)
                with other_db.transaction():
                    other_db.query("SELECT 1")
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        holding.wait(5)
        # Try 2 fails before the bytes are read (no claim taken): the file is set aside.
        poller = Poller(
            config, source, ingestor.store, ingestor=ingestor, sleep=lambda _: None, opener=Poisoned
        )
        summary = poller.poll()
        thread.join(10)
        assert done.is_set() and not thread.is_alive()
        assert [e.status for e in summary.taken.values()] == ["rejected"]
        assert db.query("SELECT count(*) FROM events") == [(0,)]


def test_a_large_file_set_aside_takes_back_what_it_stored(tmp_path: Path, inbox: Path) -> None:
    """A large file stores rows as it downloads; once it is set aside, none of them stay
    (nothing of a file that never got a checksum is kept), and its reason is recorded."""
    rows = "".join(f"p{i},{i}\n" for i in range(PARALLEL_MIN_BYTES // 8))
    (inbox / POISON).write_text("identifier,n\n" + rows)
    Poisoned.good_bytes, Poisoned.stall = PARALLEL_MIN_BYTES // 2, 0.3
    config, source = configs(tmp_path, max_tries=2)
    with SQLiteStore(config.store.path) as db:
        ingestor = Ingestor(db, batch_records=1_000, commit_seconds=0)
        poller = Poller(config, source, db, ingestor=ingestor, sleep=lambda _: 0, opener=Poisoned)
        poller.poll()
        [(stored,)] = db.query("SELECT count(*) FROM events")
        assert stored > 0  # provisional rows, not shown
        assert [e.status for e in poller.poll().taken.values()] == ["rejected"]
        assert db.query("SELECT count(*) FROM events") == [(0,)]
        assert [f["status"] for f in db.records("files")] == ["rejected"]


def test_a_file_set_aside_gives_back_the_keys_it_took(tmp_path: Path) -> None:
    """A file whose ingestion keeps failing after some batches were committed (its
    checksum known, its keys accepted) is set aside with none of it kept: its keys are
    given back, so another file may use them."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rows = "".join(f"u{i},{i},k{i}\n" for i in range(3_000))
    (inbox / "events_1.csv").write_text("identifier,n,idempotencyKey\n" + rows)
    config, source = configs(tmp_path, max_tries=2)
    with SQLiteStore(config.store.path) as db:
        batches = iter(range(1_000_000))

        def defect() -> bool:  # checked between batches: the third one meets a defect
            ingesting = db.query("SELECT 1 FROM files WHERE status = 'ingesting'")
            if ingesting and next(batches) % 3 == 2:
                raise RuntimeError("a defect met in the third batch")
            return False

        ingestor = Ingestor(db, batch_records=500, commit_seconds=0, stop=defect)
        poller = Poller(config, source, ingestor.store, ingestor=ingestor, sleep=lambda _: None)
        poller.poll()
        assert db.query("SELECT count(*) > 0 FROM idempotency_keys") == [(1,)]
        [entry] = poller.poll().taken.values()
        assert entry.status == "rejected"
        assert db.query("SELECT count(*) FROM idempotency_keys") == [(0,)]
        assert db.query("SELECT count(*) FROM events") == [(0,)]
        assert [f["status"] for f in db.records("files")] == ["rejected"]


def test_listing_retries_stop_when_a_stop_is_asked(tmp_path: Path) -> None:
    """A stop asked while a source cannot be reached ends the poll at once (Interrupted),
    rather than after every connection attempt."""
    config, source = configs(tmp_path, max_tries=3)  # (its folder does not exist: listing fails)
    attempts: list[float] = []
    with SQLiteStore(config.store.path) as db:
        poller = Poller(config, source, db, sleep=attempts.append)
        with pytest.raises(Interrupted):
            poller.poll(stop=lambda: len(attempts) >= 1)
    assert len(attempts) == 1  # one wait, then the stop was seen


@pytest.mark.slow
def test_a_reset_while_connecting_is_retried_like_a_download(
    sftp_server: EmbeddedSFTPServer,
    tmp_path: Path,
    fault_proxy: FaultProxyFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection reset during the SSH handshake of a poll's first connection is
    retried with the download's policy: the poll lists and takes the file."""
    sftp_server.root.joinpath("events_1.csv").write_text(GOOD)
    proxy = fault_proxy(sftp_server, Fault(reset_after=500))
    monkeypatch.setenv("SFTP_TEST_PASSWORD", sftp_server.password)
    config, _ = configs(tmp_path)
    source = server_config(
        sftp_server,
        port=proxy.port,
        name="s",
        min_age="0s",
        files=EVENTS,
        password_env="SFTP_TEST_PASSWORD",
        known_hosts=str(sftp_server.write_known_hosts(tmp_path / "kh", port=proxy.port)),
    )
    with SQLiteStore(config.store.path) as db:
        summary = Poller(config, source, db, sleep=lambda _: None).poll()
    assert proxy.faults_applied == 1
    assert [e.status for e in summary.taken.values()] == ["ingested"]
