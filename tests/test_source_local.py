"""file:// sources: the shared Source contract, on a local folder."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.config import SourceConfig
from connector.errors import TransientError
from connector.sources.local import LocalSource
from connector.sources.naming import clash_free_name, hostile, temporary
from connector.sources.watch import FolderWatch
from tests.source_contract import Remote, SourceContract


def local_config(folder: Path) -> SourceConfig:
    return SourceConfig.model_validate(
        {"name": "local", "url": f"file://{folder}", "files": [{"kind": "events", "pattern": "*"}]}
    )


class TestLocalContract(SourceContract):
    @pytest.fixture
    def remote(self, tmp_path: Path) -> Remote:
        root = tmp_path / "inbox"
        root.mkdir()
        return Remote(root=root, connect=lambda: LocalSource(local_config(root)))


def test_a_missing_folder_is_transient(tmp_path: Path) -> None:
    """A folder that is not there (an unmounted share) is retried, not fatal."""
    with pytest.raises(TransientError), LocalSource(local_config(tmp_path / "nope")):
        pass


@pytest.mark.parametrize(
    "name", ["..", "../etc/passwd", "a/b.csv", "a\\b.csv", "a\x00.csv", "a\r.csv", "x" * 256]
)
def test_hostile_names(name: str) -> None:
    """Names that could steer a path, or break a log line, are refused with a reason."""
    assert hostile(name) is not None


@pytest.mark.parametrize("name", ["contacts.csv", "é" * 126 + ".c", "a b.csv", "...csv"])
def test_ordinary_names(name: str) -> None:
    """Spaces, accents and dots inside a name are fine."""
    assert hostile(name) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [(".hidden.csv", True), ("a.csv.part", True), ("a.tmp", True), ("a.filepart", True),
     ("a.csv", False), ("partial.csv", False)],
)  # fmt: skip
def test_temporary_names(name: str, expected: bool) -> None:
    """Files still being uploaded, by naming convention, are not taken."""
    assert temporary(name) is expected


def test_clash_free_name_adds_a_timestamp_then_a_counter() -> None:
    """A clash gets the UTC time before the extension; a second clash a counter."""
    now = datetime(2026, 11, 28, 10, 15, 0, tzinfo=UTC)
    taken = {"a.csv", "a.20261128T101500Z.csv"}
    assert clash_free_name("b.csv", taken.__contains__, now) == "b.csv"
    assert clash_free_name("a.csv", {"a.csv"}.__contains__, now) == "a.20261128T101500Z.csv"
    assert clash_free_name("a.csv", taken.__contains__, now) == "a.20261128T101500Z-2.csv"
    assert clash_free_name("README", {"README"}.__contains__, now) == "README.20261128T101500Z"


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
