"""Streaming download into staging: checksum on the way, resume after failures."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pytest

from connector.download import download
from connector.errors import FileChanged, StorageError, TransientError
from connector.retries import Retries
from tests.helpers import Flaky, local, remote_file
from tests.mounts import grow, small_disk


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def test_download_stages_the_file_with_its_checksum(inbox: Path, tmp_path: Path) -> None:
    """The staged copy has the same bytes; the checksum is computed on the way."""
    data = os.urandom(3_000_000)
    file = remote_file(inbox, "a.csv", data)
    source = local(inbox)
    staged = download("s", lambda _: source, file, tmp_path / "staging", "latin-1")
    assert staged.path.read_bytes() == data
    assert staged.inspector.hexdigest() == hashlib.sha256(data).hexdigest()
    assert staged.path.parent == tmp_path / "staging"
    assert re.fullmatch(r"[0-9a-f]{40}\.csv", staged.path.name)  # never the remote name
    assert not list((tmp_path / "staging").glob("*.part"))


def test_a_broken_transfer_resumes_from_its_offset(inbox: Path, tmp_path: Path) -> None:
    """After resets the download continues where it stopped; the checksum is still right."""
    data = os.urandom(5_000_000)
    file = remote_file(inbox, "a.csv", data)
    flaky = Flaky.at(inbox, cut=1_500_000, failures=2)
    staged = download(
        "s", lambda _: flaky, file, tmp_path / "st", "latin-1", retries=Retries(max_wait=0.01)
    )
    assert flaky.offsets == [0, 1_500_000, 3_000_000]
    assert staged.inspector.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_transfer_that_ends_early_without_an_error_is_read_on(
    inbox: Path, tmp_path: Path
) -> None:
    """Fewer bytes than listed, with no error, is a transfer cut short: read on from there
    (not taken for a file still being written, whose staged bytes would be thrown away)."""
    data = os.urandom(2_000_000)
    file = remote_file(inbox, "a.csv", data)
    short = Flaky.at(inbox, cut=700_000, silent=True)
    staged = download(
        "s", lambda _: short, file, tmp_path / "st", "latin-1", retries=Retries(max_wait=0.01)
    )
    assert short.offsets == [0, 700_000]
    assert staged.inspector.hexdigest() == hashlib.sha256(data).hexdigest()


def test_retries_give_up_with_a_transient_error(inbox: Path, tmp_path: Path) -> None:
    """A source that keeps failing is left for the next poll, its partial file kept."""
    file = remote_file(inbox, "a.csv", b"x" * 2_000_000)
    flaky = Flaky.at(inbox, cut=100, failures=99)
    with pytest.raises(TransientError, match="reset"):
        download(
            "s",
            lambda _: flaky,
            file,
            tmp_path / "st",
            "utf-8",
            retries=Retries(attempts=3, max_wait=0.01),
        )
    assert len(flaky.offsets) == 3
    (part,) = (tmp_path / "st").glob("*.part")
    assert part.stat().st_size == 300


def test_a_partial_file_from_a_crash_is_resumed(inbox: Path, tmp_path: Path) -> None:
    """A .part left by a dead process is re-hashed and continued, not fetched again."""
    data = os.urandom(1_000_000)
    file = remote_file(inbox, "a.csv", data)
    flaky = Flaky.at(inbox, cut=400_000, failures=99)
    with pytest.raises(TransientError):
        download(
            "s", lambda _: flaky, file, tmp_path / "st", "latin-1", retries=Retries(attempts=1)
        )
    steady = Flaky.at(inbox, failures=0)
    staged = download("s", lambda _: steady, file, tmp_path / "st", "latin-1")
    assert steady.offsets == [400_000]
    assert staged.inspector.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_complete_staged_file_from_a_crash_is_reused_and_touched(
    inbox: Path, tmp_path: Path
) -> None:
    """A staged file left complete by a crash (a day ago, say) is re-hashed, not fetched
    again, and touched: housekeeping removes only staged files nobody uses."""
    data = os.urandom(1_000_000)
    file = remote_file(inbox, "a.csv", data)
    source = Flaky.at(inbox, failures=0)
    first = download("s", lambda _: source, file, tmp_path / "st", "latin-1")
    os.utime(first.path, (1_000_000_000, 1_000_000_000))
    again = download("s", lambda _: source, file, tmp_path / "st", "latin-1")
    assert again.path == first.path and source.offsets == [0, len(data)]  # nothing re-sent
    assert again.inspector.hexdigest() == hashlib.sha256(data).hexdigest()
    assert again.path.stat().st_mtime > time.time() - 60


def test_a_file_that_grows_is_not_taken(inbox: Path, tmp_path: Path) -> None:
    """More bytes than listed means the upload goes on: FileChanged, no retry now."""
    file = remote_file(inbox, "a.csv", b"12345")
    (inbox / "a.csv").write_bytes(b"1234567890")
    source = local(inbox)
    with pytest.raises(FileChanged):
        download("s", lambda _: source, file, tmp_path / "st", "utf-8")
    assert not list((tmp_path / "st").glob("*.csv"))


def test_staging_under_a_file_is_one_line_naming_it(inbox: Path, tmp_path: Path) -> None:
    """A file where the staging folder should be: a StorageError (transient: the file is
    tried again later) naming the folder and the file in the way; nothing is fetched."""
    blocker = tmp_path / "staging"
    blocker.write_text("not a folder")
    file = remote_file(inbox, "a.csv", b"identifier\nu1\n")
    source = Flaky.at(inbox, failures=0)
    with pytest.raises(StorageError) as info:
        download("s", lambda _: source, file, blocker / "s", "utf-8")
    assert str(info.value) == f"staging {blocker / 's'}: {blocker} is not a folder"
    assert isinstance(info.value, TransientError) and source.offsets == []


def test_a_full_staging_disk_fails_at_once_and_the_next_try_resumes_from_disk(
    inbox: Path, tmp_path: Path
) -> None:
    """A write that fills the disk is not retried (the network is not at fault, and a retry
    would append after a half-written chunk): the download fails naming the staged file;
    the next one re-reads what reached the disk and fetches only the rest."""
    data = os.urandom(3_000_000)
    file = remote_file(inbox, "a.csv", data)
    source = Flaky.at(inbox, failures=0)
    with small_disk(tmp_path / "st") as disk:
        with pytest.raises(StorageError, match=r"^staging .*\.part: the disk is full$"):
            download("s", lambda _: source, file, disk, "latin-1", retries=Retries(max_wait=0.01))
        (part,) = disk.glob("*.part")
        kept = part.stat().st_size
        assert source.offsets == [0] and 0 < kept < len(data)
        grow(disk)
        staged = download("s", lambda _: source, file, disk, "latin-1")
        assert staged.path.read_bytes() == data
    assert source.offsets == [0, kept]
    assert staged.inspector.hexdigest() == hashlib.sha256(data).hexdigest()
