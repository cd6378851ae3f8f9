"""Files holding customer data are private whatever the umask: every file we make 0600
(the store and its -wal and -shm, lock files, staged downloads, archive copies) and every
folder 0700. Each test runs under umask 022, the usual default, which would give 0644."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.archive import archive
from connector.cli import main
from connector.download import download
from connector.errors import TransientError
from connector.retries import Retries
from connector.store.sqlite import SQLiteStore
from tests.helpers import Flaky, drop_config, remote_file, write_config

EVENTS = "identifier,name,idempotencyKey\na@x.com,buy,k1\nb@x.com,buy,k2\n"


@pytest.fixture(autouse=True)
def _umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    """Every file and folder under ``root`` (``root`` included) → its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def _private(modes: dict[str, int], root: Path) -> None:
    for name, mode in modes.items():
        expected = 0o700 if (root / name).is_dir() else 0o600
        assert (name, oct(mode)) == (name, oct(expected))


def test_import_makes_the_store_its_folder_and_lock_files_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`connector import` into a new store: store, lock folder and lock files, and the
    folders made on the way to the store, are private."""
    (tmp_path / "events.csv").write_text(EVENTS)
    store = tmp_path / "var" / "db" / "c.db"
    config = write_config(tmp_path, store={"path": str(store)})
    assert (
        main(["--config", str(config), "import", str(tmp_path / "events.csv"), "--kind", "events"])
        == 0
    )
    assert "ingested" in capsys.readouterr().out
    modes = _modes(tmp_path / "var")
    assert {"db/c.db", "db/.locks"} <= modes.keys() and any("/.locks/" in n for n in modes)
    _private(modes, tmp_path / "var")


def test_once_over_a_folder_makes_every_file_and_folder_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`connector once` over a file:// source: store, lock files, staging and archive
    folders, the archive copy: all private."""
    config = drop_config(tmp_path, min_age="0s", files=[{"kind": "events", "pattern": "*.csv"}])
    (tmp_path / "inbox" / "e.csv").write_text(EVENTS)
    assert main(["--config", str(config), "once"]) == 0
    assert "drop: 1 ingested" in capsys.readouterr().out
    for folder in ("store", "staging", "archive"):
        modes = _modes(tmp_path / folder)
        _private(modes, tmp_path / folder)
    assert any(name.endswith(".csv.gz") for name in _modes(tmp_path / "archive"))


def test_without_the_cli_every_file_is_still_made_private(tmp_path: Path) -> None:
    """The modes are set where each file is made, not only by the command line's umask:
    the store with its -wal and -shm (while open), a lock file, a staged .part left by a
    failed download, an archive copy, and each folder made on the way."""
    with SQLiteStore(tmp_path / "var" / "c.db") as db:
        with db.claim("0" * 64):
            pass
        modes = _modes(tmp_path / "var")
    assert {"c.db", "c.db-wal", "c.db-shm", ".locks", ".locks/000"} <= modes.keys()
    _private(modes, tmp_path / "var")

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    file = remote_file(inbox, "a.csv", os.urandom(100_000))
    broken = Flaky.at(inbox, cut=50_000, failures=9)
    with pytest.raises(TransientError):
        download(
            "s",
            lambda _: broken,
            file,
            tmp_path / "staging" / "deep" / "s",
            "latin-1",
            retries=Retries(attempts=1),
        )
    staged = _modes(tmp_path / "staging")
    assert any(name.endswith(".part") for name in staged)
    _private(staged, tmp_path / "staging")

    archive(inbox / "a.csv", "a" * 64, tmp_path / "archive" / "deep")
    copies = _modes(tmp_path / "archive")
    assert f"deep/{'a' * 64}.csv.gz" in copies
    _private(copies, tmp_path / "archive")


@pytest.mark.slow
def test_the_demo_leaves_nothing_readable_by_others(tmp_path: Path) -> None:
    """`connector demo` started under umask 022: its folder var/ is private, and so is
    every file in it (sample data, the store, archive copies, its config and secrets)."""
    done = subprocess.run(
        [sys.executable, "-m", "connector", "demo"],
        cwd=tmp_path,
        umask=0o022,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modes = _modes(tmp_path / "var")
    assert modes["."] == modes["demo"] == 0o700
    files = {n: m for n, m in modes.items() if (tmp_path / "var" / n).is_file()}
    assert "demo/connector.db" in files
    assert {n: oct(m) for n, m in files.items() if m != 0o600} == {}
