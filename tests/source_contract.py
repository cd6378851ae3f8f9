"""The contract every Source adapter passes, each against its real server on loopback
(vdirsyncer's storage-test idea). An adapter's test module subclasses SourceContract and
provides the ``remote`` fixture."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest

from connector.errors import TransientError
from connector.sources.base import Source


@dataclass
class Remote:
    """A running server (or folder) and how to reach it: ``root`` is the folder on disk
    that the source's URL points at; ``connect()`` makes a fresh, unopened Source."""

    root: Path
    connect: Callable[[], AbstractContextManager[Source]]


def _put(remote: Remote, name: str, data: bytes, mtime: float | None = None) -> Path:
    path = remote.root / name
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


class SourceContract:
    """Subclasses provide a ``remote`` fixture yielding a Remote."""

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
            assert source.complete("a.csv", "leave") is None
        assert path.exists()

    def test_complete_delete_removes_the_file(self, remote: Remote) -> None:
        """after = delete removes it."""
        path = _put(remote, "a.csv", b"1")
        with remote.connect() as source:
            assert source.complete("a.csv", "delete") is None
        assert not path.exists()

    def test_complete_move_creates_the_folder(self, remote: Remote) -> None:
        """after = move:<folder> makes the folder when missing and moves the file there."""
        _put(remote, "a.csv", b"1")
        with remote.connect() as source:
            moved = source.complete("a.csv", "move:processed")
        assert moved is not None and moved.endswith("processed/a.csv")
        assert (remote.root / "processed" / "a.csv").read_bytes() == b"1"
        assert not (remote.root / "a.csv").exists()

    def test_complete_move_never_overwrites(self, remote: Remote) -> None:
        """A name clash in the target folder gets a timestamp suffix; nothing is lost."""
        (remote.root / "processed").mkdir()
        _put(remote, "processed/a.csv", b"old")
        _put(remote, "a.csv", b"new")
        with remote.connect() as source:
            moved = source.complete("a.csv", "move:processed")
        assert moved is not None
        assert (remote.root / "processed" / "a.csv").read_bytes() == b"old"
        others = [p for p in (remote.root / "processed").iterdir() if p.name != "a.csv"]
        assert len(others) == 1 and others[0].read_bytes() == b"new"
        assert re.fullmatch(r"a[._-]\d{8}T\d{6}(?:\.\d+)?Z?\.csv", others[0].name)
        assert moved.endswith(others[0].name)

    def test_complete_of_a_vanished_file_is_transient(self, remote: Remote) -> None:
        """Deleting or moving a file that is already gone is reported, retried later."""
        with remote.connect() as source, pytest.raises(TransientError):
            source.complete("gone.csv", "delete")

    def test_a_connection_is_reusable_for_many_operations(self, remote: Remote) -> None:
        """One session lists, reads and completes several files."""
        for i in range(5):
            _put(remote, f"f{i}.csv", str(i).encode())
        with remote.connect() as source:
            for f in sorted(source.list(), key=lambda f: f.name):
                assert b"".join(source.read(f.name)) == f.name[1].encode()
                source.complete(f.name, "delete")
        assert not list(remote.root.glob("*.csv"))


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


Fixture = Iterator[Remote]
