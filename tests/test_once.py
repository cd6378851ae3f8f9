"""`connector once` end to end over a file:// source: selection, readiness within the poll,
ledger, store, archive, the remote action, and crashes between those steps."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connector.cli import main
from connector.config import PathsConfig
from connector.housekeeping import sweep, sweep_logged
from connector.sources.base import RemoteFile
from connector.sources.local import LocalSource
from connector.store.sqlite import SQLiteStore
from tests.helpers import crash_then_rerun, drop_config, dump

CONTACTS = "email,plan\nada@example.com,pro\nbad,free\n"
EVENTS = "email,name,idempotencyKey\nada@example.com,buy,k1\nada@example.com,buy,k1\n"


def _config(root: Path, *, after: str = "move:processed", min_age: str = "0s") -> Path:
    return drop_config(
        root,
        ingest={"batch_records": 200, "commit_interval": "0s"},
        identifier="email",
        min_age=min_age,
        after=after,
        files=[
            {"kind": "contacts", "pattern": "contacts_*.csv"},
            {"kind": "events", "pattern": "events_*.csv"},
        ],
    )


def test_once_ingests_archives_and_moves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each ready file is ingested once, archived by checksum and moved to processed/."""
    config = _config(tmp_path)
    inbox = tmp_path / "inbox"
    (inbox / "contacts_1.csv").write_text(CONTACTS)
    (inbox / "events_1.csv").write_text(EVENTS)
    (inbox / "events_1.csv.part").write_text("still uploading")
    (inbox / "notes.txt").write_text("not matched")
    assert main(["--config", str(config), "once"]) == 0
    assert "drop: 2 ingested" in capsys.readouterr().out
    assert sorted(p.name for p in inbox.iterdir()) == [
        "events_1.csv.part",
        "notes.txt",
        "processed",
    ]
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == [
        "contacts_1.csv",
        "events_1.csv",
    ]
    sha = hashlib.sha256(CONTACTS.encode()).hexdigest()
    assert (
        gzip.decompress((tmp_path / "archive" / f"{sha}.csv.gz").read_bytes()) == CONTACTS.encode()
    )
    files = dump(config, "files", capsys)
    assert {(f["path"], f["status"], f["rows"], f["rejected"], f["duplicates"]) for f in files} == {
        (str(inbox / "contacts_1.csv"), "ingested", 1, 1, 0),
        (str(inbox / "events_1.csv"), "ingested", 1, 0, 1),
    }
    assert not list((tmp_path / "staging").rglob("*.*"))


def test_a_reupload_under_a_new_name_is_a_duplicate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same bytes again, renamed, are recorded as duplicate and completed too."""
    config = _config(tmp_path, after="delete")
    inbox = tmp_path / "inbox"
    (inbox / "events_1.csv").write_text(EVENTS)
    assert main(["--config", str(config), "once"]) == 0
    (inbox / "events_copy.csv").write_text(EVENTS)
    assert main(["--config", str(config), "once"]) == 0
    assert [f["status"] for f in dump(config, "files", capsys)] == ["ingested", "duplicate"]
    assert list(inbox.iterdir()) == []
    assert len(dump(config, "events", capsys)) == 1


def test_a_file_rejected_whole_goes_to_the_error_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused file is recorded with its reason and moved aside, not retried forever."""
    config = _config(tmp_path)
    (tmp_path / "inbox" / "contacts_bad.csv").write_text("plan\npro\n")  # no identifier
    assert main(["--config", str(config), "once"]) == 0
    assert (tmp_path / "inbox" / "rejected" / "contacts_bad.csv").exists()
    (reject,) = dump(config, "rejects", capsys)
    assert reject["line"] is None and "identifier" in str(reject["reason"])


def test_left_files_are_skipped_unread_on_later_polls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With after = leave, a known file (same path, size, mtime) is not downloaded again."""
    config = _config(tmp_path, after="leave")
    (tmp_path / "inbox" / "events_1.csv").write_text(EVENTS)
    assert main(["--config", str(config), "once"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "once"]) == 0
    assert "drop: nothing new" in capsys.readouterr().out
    assert len(dump(config, "files", capsys)) == 1


def test_max_files_caps_each_poll_and_known_files_do_not_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At most max_files per poll; files left in place (and known) never starve new ones."""
    config = _config(tmp_path, after="leave")
    config.write_text(
        config.read_text().replace('after = "leave"', 'after = "leave"\nmax_files = 2')
    )
    inbox = tmp_path / "inbox"
    for i in range(3):
        (inbox / f"events_{i}.csv").write_text(f"email,name\nu{i}@example.com,buy\n")
        os.utime(inbox / f"events_{i}.csv", (1_700_000_000 + i, 1_700_000_000 + i))
    assert main(["--config", str(config), "once"]) == 0
    assert main(["--config", str(config), "once"]) == 0
    (inbox / "events_new.csv").write_text("email,name\nnew@example.com,buy\n")
    assert main(["--config", str(config), "once"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["drop: 2 ingested", "drop: 1 ingested", "drop: 1 ingested"]


def test_a_new_file_waits_min_age_within_the_same_poll(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`once` sees a file, re-checks it after min_age in the same run, then takes it."""
    config = _config(tmp_path, min_age="300ms")
    (tmp_path / "inbox" / "events_1.csv").write_text(EVENTS)
    started = time.monotonic()
    assert main(["--config", str(config), "once"]) == 0
    assert time.monotonic() - started >= 0.3
    assert "drop: 1 ingested" in capsys.readouterr().out


def test_a_failing_remote_action_does_not_block_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A move that keeps failing is reported and retried (exit 1: a file failed); new
    files are still taken."""
    config = _config(tmp_path)
    inbox = tmp_path / "inbox"
    (inbox / "processed").write_text("a file where the folder should be")
    (inbox / "events_1.csv").write_text(EVENTS)
    assert main(["--config", str(config), "once"]) == 1
    assert "1 failed, retried next time" in capsys.readouterr().out
    (inbox / "events_2.csv").write_text(EVENTS.replace("k1", "k2"))
    assert main(["--config", str(config), "once"]) == 1
    out = capsys.readouterr().out
    assert "drop: 1 ingested" in out and "2 failed" in out  # both moves still fail
    assert [f["status"] for f in dump(config, "files", capsys)] == ["ingested", "ingested"]


def test_archive_keeps_copies_for_archive_keep(tmp_path: Path) -> None:
    """Archived copies older than paths.archive_keep are pruned; newer ones stay."""
    config = _config(tmp_path)
    config.write_text(config.read_text().replace("[ingest]", 'archive_keep = "1d"\n[ingest]'))
    assert 'archive_keep = "1d"' in config.read_text()
    archive = tmp_path / "archive"
    archive.mkdir()
    old, new = archive / ("0" * 64 + ".csv.gz"), archive / ("1" * 64 + ".csv.gz")
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    assert main(["--config", str(config), "once"]) == 0
    assert not old.exists() and new.exists()


def test_housekeeping_removes_what_crashes_abandoned_a_day_ago(tmp_path: Path) -> None:
    """Archive copies never finished and staged downloads left for a day go, whether or not
    archive_keep is set; fresh ones (maybe in use) and finished copies stay."""
    archive, staging = tmp_path / "archive", tmp_path / "staging" / "drop"
    archive.mkdir()
    staging.mkdir(parents=True)
    day_ago = time.time() - 86400 - 60
    old = [
        archive / f".{'a' * 64}.x1.part",
        staging / f"{'d' * 40}.part",
        staging / f"{'e' * 40}.csv",
    ]
    fresh = [archive / f".{'b' * 64}.x2.part", staging / f"{'f' * 40}.part"]
    kept = [archive / f"{'c' * 64}.csv.gz", staging / "notes.txt"]  # not temporaries of ours
    for path in [*old, *fresh, *kept]:
        path.write_bytes(b"x")
    for path in [*old, *kept]:
        os.utime(path, (day_ago, day_ago))

    paths = PathsConfig(staging=tmp_path / "staging", archive=archive)
    assert sweep(paths) == {"archived": 0, "abandoned": 3}
    assert [path.exists() for path in old + fresh + kept] == [False] * 3 + [True] * 4
    old[1].write_bytes(b"x")
    os.utime(old[1], (day_ago, day_ago))
    with capture_logs() as logs:
        sweep_logged(paths)
    assert [(log["event"], log["abandoned"]) for log in logs] == [("housekeeping", 1)]


def test_once_says_which_files_another_run_has_in_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `once` beside a running service skips the file the service is taking, says so,
    and exits 0: the file is not its failure."""
    config = _config(tmp_path)
    (tmp_path / "inbox" / "events_1.csv").write_text(EVENTS)
    inbox_file = str(tmp_path / "inbox" / "events_1.csv")
    with SQLiteStore(tmp_path / "store" / "c.db") as db, db.claim_place("drop", inbox_file):
        assert main(["--config", str(config), "once"]) == 0
    assert "drop: nothing new; 1 in hand in another run, skipped" in capsys.readouterr().out
    assert (tmp_path / "inbox" / "events_1.csv").exists()


@pytest.mark.slow
def test_an_unreachable_source_exits_1_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source that cannot be listed fails `once` (status 1) with one clear line."""
    config = _config(tmp_path)
    (tmp_path / "inbox").rmdir()
    assert main(["--config", str(config), "once"]) == 1
    assert "drop: could not be polled: folder" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    "step",
    [
        "after_list",
        "mid_download",
        "after_download",
        "after_deliver:2",
        "after_commit:2",
        "after_finish",
        "after_archive",
        "after_remote_action",
    ],
)
def test_crash_between_pipeline_steps(tmp_path: Path, step: str) -> None:
    """The daemon SIGKILLed at each pipeline step, then started again: rows once, the file
    moved, no .part."""
    config = _config(tmp_path)
    data = "email,name,idempotencyKey\n" + "".join(
        f"u{i}@example.com,buy,k{i}\n" for i in range(1000)
    )
    (tmp_path / "inbox" / "events_1.csv").write_text(data)
    assert crash_then_rerun(config, step) == list(range(2, 1002))
    assert [p.name for p in (tmp_path / "inbox").iterdir()] == ["processed"]
    assert not list((tmp_path / "staging").rglob("*.part"))


def test_bytes_that_arrive_again_renew_their_archive_copy(tmp_path: Path) -> None:
    """archive_keep counts from the last arrival of the bytes, not the first."""
    from connector.archive import archive

    staged = tmp_path / "f.csv"
    staged.write_text(CONTACTS)
    copy = archive(staged, "a" * 64, tmp_path / "archive")
    os.utime(copy, (time.time() - 2 * 86400,) * 2)
    assert archive(staged, "a" * 64, tmp_path / "archive") == copy
    paths = PathsConfig(
        staging=tmp_path / "staging", archive=tmp_path / "archive", archive_keep="1d"
    )
    assert sweep(paths) == {"archived": 0, "abandoned": 0} and copy.exists()
    assert gzip.decompress(copy.read_bytes()) == CONTACTS.encode()


def test_an_unexpected_error_listing_one_source_leaves_the_others_polled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A defect met while listing one source fails that source (status 1, one line) and
    the sources after it are still polled."""
    config = _config(tmp_path)
    second = tmp_path / "second"
    second.mkdir()
    (second / "events_1.csv").write_text(EVENTS)
    text = config.read_text()
    later = text[text.index("[[sources]]") :].replace('name = "drop"', 'name = "later"')
    config.write_text(text + later.replace(str(tmp_path / "inbox"), str(second)))
    listing = LocalSource.list

    def broken(self: LocalSource) -> list[RemoteFile]:
        if self.folder == tmp_path / "inbox":
            raise RuntimeError("a library tripped over this listing")
        return listing(self)

    monkeypatch.setattr(LocalSource, "list", broken)
    assert main(["--config", str(config), "once"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "drop: could not be polled: unexpected RuntimeError: a library tripped over this listing",
        "later: 1 ingested",
    ]
