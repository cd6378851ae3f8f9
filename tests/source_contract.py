"""The contract every Source adapter passes, each against its real server on loopback
(vdirsyncer's storage-test idea). An adapter's test module subclasses SourceContract and
provides the ``remote`` fixture."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector.actions import parse_action
from connector.arriving import ingest_arriving
from connector.config import SourceConfig
from connector.errors import TransientError
from connector.ingest import Ingestor
from connector.parsing import PARALLEL_MIN_BYTES
from connector.pipeline import Poller, PollSummary
from connector.sources.base import Source
from connector.sources.naming import MAX_NAME_BYTES
from connector.store.sqlite import SQLiteStore
from tests.helpers import Flaky, configs
from tests.mounts import read_only


@dataclass
class Remote:
    """A running server (or folder) and how to reach it: ``root`` is the folder on disk
    that the source's URL points at; ``connect()`` makes a fresh, unopened Source."""

    root: Path
    connect: Callable[[], AbstractContextManager[Source]]


def use_fully(source: Source, name: str) -> TransientError:
    """List, read and complete ``name`` (a 4-byte ``a,b\\n`` file), then read it again once
    it is gone: every step a secret could leak from. Returns the error of the last read."""
    assert [f.name for f in source.list()] == [name]
    assert b"".join(source.read(name)) == b"a,b\n"
    source.complete(name, parse_action("move:done"))
    with pytest.raises(TransientError) as gone:
        b"".join(source.read(name))
    return gone.value


# Names no poll may take, as bytes on the server: how the warning shows each, and why.
HOSTILE_NAMES = {
    b"events_\xff.csv": (r"events_\xff.csv", "not valid UTF-8"),  # Latin-1, say
    b"events_\x1b]0;PWNED\x07.csv": (  # sets a terminal's title
        r"events_\x1b]0;PWNED\x07.csv",
        "a control character",
    ),
    "events_\u009b31m.csv".encode(): (r"events_\u009b31m.csv", "a control character"),  # CSI
    b"events_\x7f.csv": (r"events_\x7f.csv", "a control character"),  # DEL
}
# Names that look odd but are fine: taken like any other.
LONGEST = "events_" + "x" * (MAX_NAME_BYTES - len("events_.csv")) + ".csv"
ODD_BUT_FINE = ["events_a..b.csv", "events_..csv", LONGEST]
_sources = itertools.count()


def _fresh_source_name() -> str:
    """A source name no earlier poll in this process used: hostile names are warned about
    once per source and name for the life of the process."""
    return f"contract-{os.getpid()}-{next(_sources)}"


def _put(remote: Remote, name: str | bytes, data: bytes, mtime: float | None = None) -> Path:
    path = remote.root / os.fsdecode(name)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _poll(
    remote: Remote,
    tmp_path: Path,
    *,
    sleep: Callable[[float], object] = time.sleep,
    poller: Poller | None = None,
    opener: Callable[[SourceConfig], AbstractContextManager[Source]] | None = None,
    parallel_min_bytes: int = PARALLEL_MIN_BYTES,
    **settings: object,
) -> tuple[Poller, PollSummary]:
    """One poll of ``remote`` through the whole pipeline, with this adapter."""
    if poller is None:
        defaults = {
            "name": "contract",
            "url": "file:///outbox",  # the adapter under test is given by `opener`
            "files": [{"kind": "events", "pattern": "events_*.csv", "event_name": "e"}],
        }
        config, source = configs(tmp_path, **(defaults | settings))
        ingestor = Ingestor(SQLiteStore(config.store.path), parallel_min_bytes=parallel_min_bytes)
        poller = Poller(
            config,
            source,
            ingestor.store,
            ingestor=ingestor,
            sleep=sleep,
            opener=opener or (lambda _: remote.connect()),
        )
    return poller, poller.poll()


def _taken(summary: PollSummary) -> list[str]:
    return [path.rsplit("/", 1)[1] for path in summary.taken]


class SourceContract:
    """Subclasses provide a ``remote`` fixture yielding a Remote."""

    def test_poll_takes_matching_files_oldest_first(self, remote: Remote, tmp_path: Path) -> None:
        """Patterns select, oldest goes first, temporary names wait, odd names are skipped."""
        _put(remote, "events_new.csv", b"identifier\nb\n", mtime=1_700_000_200)
        _put(remote, "events_old.csv", b"identifier\na\n", mtime=1_700_000_100)
        _put(remote, "events_up.csv.part", b"identifier\nc\n")
        _put(remote, "notes.txt", b"x")
        _put(remote, "events_\r.csv", b"identifier\nd\n")
        poller, summary = _poll(remote, tmp_path)
        assert _taken(summary) == ["events_old.csv", "events_new.csv"]
        poller.store.close()
        assert sorted(p.name for p in (tmp_path / "staging").rglob("*") if p.is_file()) == []

    def test_poll_downloads_with_the_right_checksum(self, remote: Remote, tmp_path: Path) -> None:
        """The ledger's SHA-256 is that of the server's bytes; the archive holds them."""
        data = b"identifier,n\n" + b"".join(b"u%d,%d\n" % (i, i) for i in range(50_000))
        _put(remote, "events_1.csv", data)
        poller, summary = _poll(remote, tmp_path, after="delete")
        (entry,) = summary.taken.values()
        poller.store.close()
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert (entry.status, entry.rows) == ("ingested", 50_000)
        assert (tmp_path / "archive" / f"{entry.sha256}.csv.gz").exists()
        assert not (remote.root / "events_1.csv").exists()

    def test_a_large_file_is_parsed_as_it_downloads(
        self, remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The parser child follows the staged bytes as they arrive, also across a transfer
        that breaks and resumes: every row once, nothing left in staging. (Any size takes
        that path here: parallel_min_bytes 0.)"""
        data = b"identifier,n\n" + b"".join(b"u%d,%d\n" % (i, i) for i in range(60_000))
        _put(remote, "events_1.csv", data)
        arriving = []

        def spied(*args: Any, **kwargs: Any) -> Any:
            arriving.append(kwargs["arrival"].path)
            return ingest_arriving(*args, **kwargs)

        monkeypatch.setattr("connector.transfer.ingest_arriving", spied)
        flaky = Flaky(remote.connect, cut=len(data) // 3)  # breaks a third of the way in
        poller, summary = _poll(remote, tmp_path, opener=lambda _: flaky, parallel_min_bytes=0)
        assert arriving == ["/outbox/events_1.csv"]  # the path under test was taken
        (entry,) = summary.taken.values()
        events = list(poller.store.records("events"))
        poller.store.close()
        assert flaky.failures == 0 and len(flaky.offsets) > 1  # the transfer did break
        assert (entry.status, entry.rows, entry.sha256) == (
            "ingested",
            60_000,
            hashlib.sha256(data).hexdigest(),
        )
        assert [e["identifier"] for e in events[-2:]] == ["u59998", "u59999"]
        assert sorted(e["line"] for e in events) == list(range(2, 60_002))
        assert [p for p in (tmp_path / "staging").rglob("*") if p.is_file()] == []

    def test_a_growing_upload_waits_until_stable(self, remote: Remote, tmp_path: Path) -> None:
        """A file that grows during min_age is not taken; once it stays still, it is."""
        path = _put(remote, "events_1.csv", b"identifier\na\n")

        def grow(seconds: float) -> None:
            with path.open("ab") as f:
                f.write(b"b\n")

        poller, summary = _poll(remote, tmp_path, sleep=grow, min_age="1s")
        assert summary.taken == {} and summary.pending == ["events_1.csv"]
        _, summary = _poll(remote, tmp_path, poller=poller)  # not seen still for 1 s yet
        assert summary.taken == {}
        poller.sleep = time.sleep
        _, summary = _poll(remote, tmp_path, poller=poller)
        (entry,) = summary.taken.values()
        poller.store.close()
        assert entry.rows == 3  # a, and b twice

    def test_marker_mode(self, remote: Remote, tmp_path: Path) -> None:
        """ready = marker: taken only with its .done marker, which is moved with it."""
        _put(remote, "events_1.csv", b"identifier\na\n")
        poller, summary = _poll(remote, tmp_path, ready="marker", after="move:done")
        assert summary.taken == {}
        _put(remote, "events_1.csv.done", b"")
        _, summary = _poll(remote, tmp_path, poller=poller)
        poller.store.close()
        assert _taken(summary) == ["events_1.csv"]
        assert sorted(p.name for p in (remote.root / "done").iterdir()) == [
            "events_1.csv",
            "events_1.csv.done",
        ]

    def test_hostile_names_are_skipped_once_warned_and_the_others_taken(
        self, remote: Remote, tmp_path: Path
    ) -> None:
        """A name that is not UTF-8 or holds a control character (C0, DEL, C1) is skipped,
        warned about once (escaped), not at every poll; the files beside it are taken."""
        for i, name in enumerate(HOSTILE_NAMES):
            _put(remote, name, b"identifier\nh\n", mtime=1_700_000_000 + i)
        for i, name in enumerate(ODD_BUT_FINE):
            _put(remote, name, b"identifier\nu%d\n" % i, mtime=1_700_000_100 + i)
        with capture_logs() as first:
            poller, summary = _poll(
                remote, tmp_path, name=_fresh_source_name(), after="move:processed"
            )
        assert _taken(summary) == ODD_BUT_FINE
        for i, name in enumerate(HOSTILE_NAMES):  # a new hostile file, moments later
            _put(remote, name, b"identifier\nh\nh2\n", mtime=1_700_000_200 + i)
        with capture_logs() as second:
            _, summary = _poll(remote, tmp_path, poller=poller)
        poller.store.close()
        assert summary.taken == {}
        warnings = [e for e in first if e["event"] == "file_skipped"]
        assert sorted((w["file"], w["reason"]) for w in warnings) == sorted(HOSTILE_NAMES.values())
        assert all(w["log_level"] == "warning" for w in warnings)
        assert [e for e in second if e["event"] == "file_skipped"] == []
        left = sorted(os.fsencode(p.name) for p in remote.root.iterdir() if p.is_file())
        assert left == sorted(HOSTILE_NAMES)  # untouched
        assert sorted(p.name for p in (remote.root / "processed").iterdir()) == sorted(ODD_BUT_FINE)

    def test_a_name_at_the_length_limit_moves_past_a_clash(
        self, remote: Remote, tmp_path: Path
    ) -> None:
        """A 255-byte name whose move clashes is moved under a shortened name (the stamp
        fits, the extension stays, no character is cut in half), once and for all."""
        name = "events_" + "é" * 122 + ".csv"  # 7 + 244 + 4 bytes
        assert len(name.encode()) == MAX_NAME_BYTES
        (remote.root / "processed").mkdir()
        _put(remote, f"processed/{name}", b"an earlier file")
        _put(remote, name, b"identifier\nu1\n")
        poller, summary = _poll(remote, tmp_path, after="move:processed")
        _, again = _poll(remote, tmp_path, poller=poller)
        poller.store.close()
        assert _taken(summary) == [name] and again.taken == {}
        assert not (remote.root / name).exists()
        assert (remote.root / "processed" / name).read_bytes() == b"an earlier file"
        [moved] = [p.name for p in (remote.root / "processed").iterdir() if p.name != name]
        assert (remote.root / "processed" / moved).read_bytes() == b"identifier\nu1\n"
        assert len(os.fsencode(moved)) <= MAX_NAME_BYTES
        assert os.fsencode(moved).decode("utf-8")  # strict: no half character
        assert re.fullmatch(r"events_é+\.\d{8}T\d{6}Z\.csv", moved)

    def test_list_gives_names_sizes_and_mtimes(self, remote: Remote) -> None:
        """Regular files of the folder, with size and UTC modification time; no folders."""
        _put(remote, "a.csv", b"x" * 10, mtime=1_700_000_000)
        _put(remote, "b.csv", b"", mtime=1_700_000_100)
        (remote.root / "sub").mkdir()
        with remote.connect() as source:
            files = {f.name: f for f in source.list()}
        assert set(files) == {"a.csv", "b.csv"}
        assert files["a.csv"].size == 10 and files["b.csv"].size == 0
        assert abs(files["a.csv"].mtime - 1_700_000_000) <= 1
        assert abs(files["b.csv"].mtime - 1_700_000_100) <= 1

    def test_read_streams_the_bytes(self, remote: Remote) -> None:
        """read() yields the whole file, in chunks, byte for byte."""
        data = os.urandom(3 << 20) + b"tail"
        _put(remote, "big.csv", data)
        with remote.connect() as source:
            assert b"".join(source.read("big.csv")) == data

    def test_read_from_an_offset(self, remote: Remote) -> None:
        """read(offset=n) starts at byte n: what a resumed download asks for."""
        data = bytes(range(256)) * 1000
        _put(remote, "r.csv", data)
        with remote.connect() as source:
            assert b"".join(source.read("r.csv", 12345)) == data[12345:]

    def test_read_of_a_missing_file_is_transient(self, remote: Remote) -> None:
        """A file gone between listing and reading is retried later, not a crash."""
        with remote.connect() as source, pytest.raises(TransientError):
            b"".join(source.read("gone.csv"))

    def test_complete_leave_keeps_the_file(self, remote: Remote) -> None:
        """after = leave touches nothing."""
        path = _put(remote, "a.csv", b"1")
        with remote.connect() as source:
            assert source.complete("a.csv", parse_action("leave")) is None
        assert path.exists()

    def test_complete_delete_removes_the_file(self, remote: Remote) -> None:
        """after = delete removes it."""
        path = _put(remote, "a.csv", b"1")
        with remote.connect() as source:
            assert source.complete("a.csv", parse_action("delete")) is None
        assert not path.exists()

    def test_complete_move_creates_the_folder(self, remote: Remote) -> None:
        """after = move:<folder> makes the folder when missing and moves the file there."""
        _put(remote, "a.csv", b"1")
        with remote.connect() as source:
            moved = source.complete("a.csv", parse_action("move:processed"))
        assert moved is not None and moved.endswith("processed/a.csv")
        assert (remote.root / "processed" / "a.csv").read_bytes() == b"1"
        assert not (remote.root / "a.csv").exists()

    def test_complete_move_never_overwrites(self, remote: Remote) -> None:
        """A name clash in the target folder gets a timestamp suffix; nothing is lost."""
        (remote.root / "processed").mkdir()
        _put(remote, "processed/a.csv", b"old")
        _put(remote, "a.csv", b"new")
        with remote.connect() as source:
            moved = source.complete("a.csv", parse_action("move:processed"))
        assert moved is not None
        assert (remote.root / "processed" / "a.csv").read_bytes() == b"old"
        others = [p for p in (remote.root / "processed").iterdir() if p.name != "a.csv"]
        assert len(others) == 1 and others[0].read_bytes() == b"new"
        assert re.fullmatch(r"a[._-]\d{8}T\d{6}(?:\.\d+)?Z?\.csv", others[0].name)
        assert moved.endswith(others[0].name)

    @pytest.mark.parametrize(
        ("after", "report_at"),
        [
            ("move:done", "done/events_1.csv.rejects.csv"),
            ("leave", "events_1.csv.rejects.csv"),
            ("delete", "rejected/events_1.csv.rejects.csv"),  # (error_dir's folder)
        ],
    )
    def test_a_reject_report_lands_where_the_file_went(
        self, remote: Remote, tmp_path: Path, after: str, report_at: str
    ) -> None:
        """With reject_report, a file with rejected rows gets ``<name>.rejects.csv`` beside
        where it went; the next poll does not take the report as a file of its own."""
        _put(remote, "events_1.csv", b"identifier,timestamp\nu1,1\n,2\nu3,=1+2\n")
        poller, summary = _poll(
            remote,
            tmp_path,
            after=after,
            reject_report=True,
            files=[{"kind": "events", "pattern": "events_*", "event_name": "e"}],
        )
        (entry,) = summary.taken.values()
        assert (entry.status, entry.rows, entry.rejected) == ("ingested", 1, 2)
        report = (remote.root / report_at).read_bytes()
        assert report.startswith(b"\xef\xbb\xbfline,reason,value\r\n")
        rows = list(csv.reader(io.StringIO(report.decode("utf-8-sig"))))
        assert rows[1] == ["3", "identifier (the identifier) is empty", ""]
        assert rows[2][0] == "4" and rows[2][2] == "'=1+2"  # (a formula, made inert)
        assert poller.poll().taken == {}  # the report, matching events_*, is not taken
        poller.store.close()

    def test_a_file_rejected_whole_gets_a_report_in_the_error_folder(
        self, remote: Remote, tmp_path: Path
    ) -> None:
        """A file refused whole: one row, its line empty, the reason; beside the file in
        error_dir. A file with no rejected rows gets no report."""
        _put(remote, "events_1.csv", b"email\nada@example.com\n")
        _put(remote, "events_2.csv", b"identifier\nu1\n")
        poller, summary = _poll(remote, tmp_path, reject_report=True, after="move:done")
        poller.store.close()
        assert sorted(e.status for e in summary.taken.values()) == ["ingested", "rejected"]
        report = (remote.root / "rejected" / "events_1.csv.rejects.csv").read_text("utf-8-sig")
        [header, row] = csv.reader(io.StringIO(report))
        assert header == ["line", "reason", "value"] and row[0] == "" and row[2] == ""
        assert row[1].startswith("header: no identifier column 'identifier'")
        assert sorted(p.name for p in (remote.root / "done").iterdir()) == ["events_2.csv"]

    def test_put_writes_replaces_and_removes(self, remote: Remote) -> None:
        """``put`` makes the folder, replaces a file of the name; ``remove`` takes it away."""
        with remote.connect() as source:
            source.put("reports/x", "r.csv", b"first, longer")
            source.put("reports/x", "r.csv", b"second")
            assert (remote.root / "reports" / "x" / "r.csv").read_bytes() == b"second"
            source.put("", "s.csv", b"here")
            assert (remote.root / "s.csv").read_bytes() == b"here"
            source.remove("reports/x", "r.csv")
        assert not (remote.root / "reports" / "x" / "r.csv").exists()

    def test_a_move_into_a_folder_that_cannot_be_made_says_why(
        self, remote: Remote, tmp_path: Path
    ) -> None:
        """On a read-only folder a move fails with the server's reason for the folder (not
        "no such file"); the file stays ingested and is retried at the next poll."""
        _put(remote, "events_1.csv", b"identifier\nu1\n")
        with read_only(remote.root):
            poller, summary = _poll(remote, tmp_path, after="move:done")
            [cause] = summary.failed.values()
        assert re.search(r"read-only|failure|denied", cause, re.IGNORECASE), cause
        assert [e["status"] for e in poller.store.records("files")] == ["ingested"]
        assert poller.poll().completed == ["events_1.csv"]  # writable again: moved
        poller.store.close()
        assert (remote.root / "done" / "events_1.csv").exists()

    def test_complete_of_a_vanished_file_is_transient(self, remote: Remote) -> None:
        """Deleting or moving a file that is already gone is reported, retried later."""
        with remote.connect() as source, pytest.raises(TransientError):
            source.complete("gone.csv", parse_action("delete"))

    def test_a_connection_is_reusable_for_many_operations(self, remote: Remote) -> None:
        """One session lists, reads and completes several files."""
        for i in range(5):
            _put(remote, f"f{i}.csv", str(i).encode())
        with remote.connect() as source:
            for f in sorted(source.list(), key=lambda f: f.name):
                assert b"".join(source.read(f.name)) == f.name[1].encode()
                source.complete(f.name, parse_action("delete"))
        assert not list(remote.root.glob("*.csv"))


Fixture = Iterator[Remote]
