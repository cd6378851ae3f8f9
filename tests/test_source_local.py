"""file:// sources: the shared Source contract, on a local folder."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connector.actions import parse_action
from connector.errors import TransientError
from connector.sources.watch import FolderWatch
from tests.helpers import local
from tests.source_contract import Remote, SourceContract


class TestLocalContract(SourceContract):
    @pytest.fixture
    def remote(self, tmp_path: Path) -> Remote:
        root = tmp_path / "inbox"
        root.mkdir()
        return Remote(root=root, connect=lambda: local(root))


SHM = Path("/dev/shm")


@pytest.mark.skipif(
    not SHM.is_dir() or SHM.stat().st_dev == Path(__file__).stat().st_dev,
    reason="needs a folder on another file system (/dev/shm)",
)
def test_move_to_another_file_system_copies_then_removes(tmp_path: Path) -> None:
    """A move folder on another file system (a mount): hard links fail there with EXDEV,
    so the file is copied — with its modification time — and the original removed."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("a,b\n")
    os.utime(inbox / "a.csv", (1_700_000_000, 1_700_000_000))
    elsewhere = Path(tempfile.mkdtemp(dir=SHM))
    try:
        (inbox / "done").symlink_to(elsewhere, target_is_directory=True)
        (elsewhere / "a.csv").write_text("someone else's\n")
        with local(inbox) as source:
            moved = source.complete("a.csv", parse_action("move:done"))
        assert moved is not None and Path(moved).parent == inbox / "done"
        assert Path(moved).read_text() == "a,b\n"
        assert Path(moved).stat().st_mtime == 1_700_000_000
        assert (elsewhere / "a.csv").read_text() == "someone else's\n"  # not overwritten
        assert sorted(p.name for p in elsewhere.iterdir()) == sorted(["a.csv", Path(moved).name])
        assert not (inbox / "a.csv").exists()
    finally:
        shutil.rmtree(elsewhere)


def test_move_where_hard_links_are_refused_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAT and some SMB mounts refuse hard links (EPERM): the file is renamed instead.
    (Such a mount cannot be made here, hence the patched link.)"""

    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", refuse)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("a,b\n")
    with local(inbox) as source:
        moved = source.complete("a.csv", parse_action("move:done"))
    assert moved == str(inbox / "done" / "a.csv")
    assert Path(moved).read_text() == "a,b\n" and not (inbox / "a.csv").exists()


def test_a_folder_that_cannot_be_watched_is_left_to_the_polls(tmp_path: Path) -> None:
    """A missing folder (an unmounted share) must not stop the daemon from starting: the
    watch says why it is not watching, and the scheduled polls go on."""
    with capture_logs() as logs, FolderWatch(tmp_path / "nope", lambda: None) as watch:
        assert not watch.watching
    [warning] = [log for log in logs if log["event"] == "watch_unavailable"]
    assert warning["folder"] == str(tmp_path / "nope") and warning["cause"]


def test_a_missing_folder_is_transient(tmp_path: Path) -> None:
    """A folder that is not there (an unmounted share) is retried, not fatal."""
    with pytest.raises(TransientError), local(tmp_path / "nope"):
        pass


def test_watch_signals_a_new_file_and_ignores_uploads_in_progress(tmp_path: Path) -> None:
    """A file appearing (or renamed from .part) signals at once; a .part alone does not."""
    signalled = threading.Event()
    with FolderWatch(tmp_path, signalled.set):
        (tmp_path / "upload.csv.part").write_text("partial")
        assert not signalled.wait(0.5)
        (tmp_path / "upload.csv.part").rename(tmp_path / "upload.csv")
        assert signalled.wait(5)
        signalled.clear()
        (tmp_path / "other.csv").write_text("x")
        assert signalled.wait(5)
