"""Readiness of a `file://` source's files: their mtimes are by this host's clock, so a file
last modified `min_age` ago or more is taken at once; a recent one, and any remote file, is
watched for `min_age` as observed by us."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from connector.cli import main
from connector.config import load_config
from connector.pipeline import Poller
from connector.selection import Candidate, Readiness, select
from connector.sources.base import RemoteFile
from connector.store import open_store
from tests.helpers import Clock, drop_config

EVENTS = [{"kind": "events", "pattern": "*.csv", "event_name": "visit"}]
HOUR_AGO = time.time() - 3600


def _candidates(config: Path, *files: RemoteFile) -> list[Candidate]:
    return select(files, load_config(config).sources[0])


def test_an_old_file_is_ready_at_once_by_our_clock(tmp_path: Path) -> None:
    """Modified min_age ago or more by the wall clock (and 2 s more: mtimes may be that
    coarse): ready when first seen; modified more recently: watched for the whole min_age
    from then, as before."""
    config = drop_config(tmp_path, files=EVENTS)
    wall = Clock(1_700_000_000.0)
    monotonic = Clock(50.0)
    readiness = Readiness(30, monotonic, wall_clock=wall)
    old, settled, fresh = _candidates(
        config,
        RemoteFile("old.csv", 5, wall.now - 3600),
        RemoteFile("settled.csv", 5, wall.now - 32),
        RemoteFile("fresh.csv", 5, wall.now - 31),
    )
    ready, wait = readiness.split([old, settled, fresh])
    assert [c.file.name for c in ready] == ["old.csv", "settled.csv"]
    assert wait == 30  # (observed from now: its age by mtime shortens nothing)
    monotonic.now += 30
    wall.now += 30
    assert [c.file.name for c in readiness.split([fresh])[0]] == ["fresh.csv"]


def test_without_our_clock_an_old_mtime_proves_nothing(tmp_path: Path) -> None:
    """A remote source's mtimes are by the server's clock: an old one still waits."""
    config = drop_config(tmp_path, files=EVENTS)
    readiness = Readiness(30, Clock(50.0))
    assert readiness.split(_candidates(config, RemoteFile("old.csv", 5, 1.0))) == ([], 30)


def test_a_poll_takes_an_old_local_file_without_waiting(tmp_path: Path) -> None:
    """A file:// source's file last modified an hour ago, min_age 30s: taken by the poll
    that first lists it, which never waits; a file written just now is left pending, after
    the poll's one wait for it."""
    config = load_config(drop_config(tmp_path, files=EVENTS, min_age="30s", after="leave"))
    inbox = tmp_path / "inbox"
    (inbox / "old.csv").write_text("identifier\nu1\n")
    os.utime(inbox / "old.csv", (HOUR_AGO, HOUR_AGO))
    waits: list[float] = []
    with open_store(config.store) as store:
        poller = Poller(config, config.sources[0], store, sleep=waits.append)
        summary = poller.poll()
        assert [(e.status, e.rows) for e in summary.taken.values()] == [("ingested", 1)]
        assert (waits, summary.pending) == ([], [])

        (inbox / "fresh.csv").write_text("identifier\nu2\n")
        summary = poller.poll()
        assert (summary.taken, summary.pending) == ({}, ["fresh.csv"])
        assert waits == [pytest.approx(30, abs=1)]


def test_once_takes_an_old_local_file_with_a_long_min_age(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`once` with min_age = "30s" and a file:// file modified an hour ago: taken."""
    config = drop_config(tmp_path, files=EVENTS, min_age="30s")
    (tmp_path / "inbox" / "a.csv").write_text("identifier\nu1\n")
    os.utime(tmp_path / "inbox" / "a.csv", (HOUR_AGO, HOUR_AGO))
    assert main(["--config", str(config), "once"]) == 0
    assert capsys.readouterr().out == "drop: 1 ingested\n"
