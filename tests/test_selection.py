"""Which files a poll takes: patterns, safe names, markers, order, cap, and readiness."""

from __future__ import annotations

import itertools
import os
from typing import Any

import pytest
from structlog.testing import capture_logs

from connector.config import SourceConfig
from connector.selection import Candidate, Readiness, refused, select
from connector.sources.base import RemoteFile
from tests.helpers import Clock, source_config

FILES = [
    {"kind": "contacts", "pattern": "contacts_*.csv"},
    {"kind": "events", "pattern": "purchases_*.csv", "event_name": "purchase"},
]


def _source(**settings: Any) -> SourceConfig:
    return source_config("file:///inbox", files=FILES, **settings)


_fresh = itertools.count()


def _fresh_name() -> str:
    """A source name no other test used: skipped names are warned about once per process."""
    return f"acme-{next(_fresh)}"


def _names(candidates: list[Candidate]) -> list[str]:
    return [c.file.name for c in candidates]


def test_patterns_pick_the_kind_and_rules() -> None:
    """Each name is matched against the file entries; the entry sets the kind and rules."""
    files = [
        RemoteFile("contacts_1.csv", 1, 10),
        RemoteFile("purchases_1.csv", 1, 20),
        RemoteFile("other.csv", 1, 30),
    ]
    chosen = select(files, _source())
    assert _names(chosen) == ["contacts_1.csv", "purchases_1.csv"]
    assert chosen[0].rules.kind == "contacts"
    assert chosen[1].rules.event_name == "purchase"


def test_oldest_first() -> None:
    """Oldest first, then by name (the poll caps the count, after setting known aside)."""
    files = [RemoteFile(f"contacts_{i}.csv", 1, 100 - i) for i in range(4)]
    files.append(RemoteFile("contacts_x.csv", 1, 97))
    assert _names(select(files, _source())) == [
        "contacts_3.csv",
        "contacts_x.csv",
        "contacts_2.csv",
        "contacts_1.csv",
        "contacts_0.csv",
    ]


def test_temporary_and_hostile_names_are_skipped() -> None:
    """Uploads in progress are ignored quietly; hostile names with a warning."""
    files = [
        RemoteFile(n, 1, 1)
        for n in (
            ".contacts_1.csv",
            "contacts_2.csv.part",
            "contacts_3.tmp",
            "contacts_../x.csv",
            "contacts_\n.csv",
            "contacts_ok.csv",
        )
    ]
    with capture_logs() as logs:
        assert _names(select(files, _source(name=_fresh_name()))) == ["contacts_ok.csv"]
    assert [entry["event"] for entry in logs] == ["file_skipped", "file_skipped"]


def test_a_skipped_name_is_warned_about_once_per_source() -> None:
    """The same hostile name at every poll is warned about once per source, escaped; a new
    hostile name, or the same name on another source, is warned about in its turn."""
    odd = os.fsdecode(b"contacts_\xff.csv")
    ansi = "contacts_\x1b[2J.csv"
    acme, other = _source(name=_fresh_name()), _source(name=_fresh_name())
    with capture_logs() as logs:
        for _ in range(3):
            assert select([RemoteFile(odd, 1, 1), RemoteFile("contacts_1.csv", 1, 2)], acme)
        select([RemoteFile(odd, 1, 1), RemoteFile(ansi, 1, 1)], acme)
        select([RemoteFile(odd, 1, 1)], other)
    assert [(e["source"], e["file"], e["reason"]) for e in logs] == [
        (acme.name, r"contacts_\xff.csv", "not valid UTF-8"),
        (acme.name, r"contacts_\x1b[2J.csv", "a control character"),
        (other.name, r"contacts_\xff.csv", "not valid UTF-8"),
    ]


def test_refused_names_each_skipped_file_with_its_reason() -> None:
    """What check reports as skipped: every hostile name, matching a pattern or not."""
    files = [
        RemoteFile("a\x07.txt", 1, 1),
        RemoteFile("contacts_1.csv", 1, 1),
        RemoteFile("contacts_\x7f.csv", 1, 1),
    ]
    assert [(f.name, why) for f, why in refused(files)] == [
        ("a\x07.txt", "a control character"),
        ("contacts_\x7f.csv", "a control character"),
    ]


def test_marker_mode_takes_a_file_once_its_marker_exists() -> None:
    """ready = "marker": X.csv is taken only when X.csv.done is listed too."""
    files = [
        RemoteFile("contacts_1.csv", 1, 1),
        RemoteFile("contacts_1.csv.done", 0, 2),
        RemoteFile("contacts_2.csv", 1, 3),
    ]
    chosen = select(files, _source(ready="marker"))
    assert _names(chosen) == ["contacts_1.csv"]
    assert chosen[0].marker == "contacts_1.csv.done"


def _candidate(size: int, mtime: float, name: str = "contacts_1.csv") -> Candidate:
    return select([RemoteFile(name, size, mtime)], _source())[0]


def test_a_file_is_ready_after_min_age_unchanged() -> None:
    """Unchanged for min_age since we first saw it: ready; the wait is said meanwhile."""
    clock = Clock(1000.0)
    readiness = Readiness(30, clock)
    assert readiness.split([_candidate(10, 5)]) == ([], 30)
    clock.now += 29
    assert readiness.split([_candidate(10, 5)]) == ([], pytest.approx(1))
    clock.now += 1
    ready, wait = readiness.split([_candidate(10, 5)])
    assert _names(ready) == ["contacts_1.csv"] and wait is None


def test_a_growing_file_is_never_ready() -> None:
    """Each change of size or mtime restarts the wait."""
    clock = Clock(1000.0)
    readiness = Readiness(30, clock)
    for size in range(10):
        assert readiness.split([_candidate(size, 5)])[0] == []
        clock.now += 20
    assert readiness.split([_candidate(9, 6)])[0] == []  # same size, new mtime


def test_forgotten_when_no_longer_listed() -> None:
    """A file that disappears and comes back starts over."""
    clock = Clock(1000.0)
    readiness = Readiness(30, clock)
    readiness.split([_candidate(1, 1)])
    clock.now += 40
    readiness.split([])
    assert readiness.split([_candidate(1, 1)])[0] == []


def test_the_memory_of_warned_names_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever writes to the server can make any number of hostile names: past the bound,
    the oldest is forgotten (and would be warned about again), so memory stays bounded."""
    monkeypatch.setattr("connector.selection._WARNED_MAX", 2)
    acme = _source(name=_fresh_name())
    with capture_logs() as logs:
        for name in ("a\x07", "b\x07", "c\x07", "c\x07", "a\x07"):
            select([RemoteFile(name, 1, 1)], acme)
    assert [e["file"] for e in logs] == [r"a\x07", r"b\x07", r"c\x07", r"a\x07"]
