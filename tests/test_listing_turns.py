"""Processes sharing a store and a source take turns listing it: one lists about once a
period, the others take files from what that listing found ready. Two store objects on one
file stand for two processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from connector.errors import TransientError
from connector.ingest import Ingestor
from connector.pipeline import Poller
from connector.sources.base import RemoteFile
from connector.sources.local import LocalSource
from connector.store.sqlite import SQLiteStore
from tests.helpers import Clock, configs

PERIOD = 60.0
GOOD = "identifier,n\nu1,1\n"


class Counted(LocalSource):
    """A local folder that counts how often it is listed."""

    listings = 0

    def list(self) -> list[RemoteFile]:
        Counted.listings += 1
        return super().list()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    (tmp_path / "inbox").mkdir()
    Counted.listings = 0
    return tmp_path / "inbox"


@pytest.fixture
def replicas(tmp_path: Path, inbox: Path) -> Iterator[tuple[Poller, Poller, Clock]]:
    """Two processes' pollers of one source, on one clock."""
    config, source = configs(tmp_path)
    clock = Clock()
    with ExitStack() as stack:
        pollers = []
        for _ in range(2):
            store = stack.enter_context(SQLiteStore(config.store.path))
            pollers.append(
                Poller(
                    config,
                    source,
                    store,
                    ingestor=Ingestor(store, clock=clock),
                    every=PERIOD,
                    sleep=lambda _: None,
                    opener=Counted,
                )
            )
        yield pollers[0], pollers[1], clock


def _taken(poller: Poller) -> list[str]:
    return sorted(path.rsplit("/", 1)[1] for path in poller.poll().taken)


def test_a_process_lists_only_in_its_turn(replicas: tuple[Poller, Poller, Clock]) -> None:
    first, second, clock = replicas
    inbox = Path(first.source.remote_path)
    (inbox / "a.csv").write_text(GOOD)
    assert _taken(first) == ["a.csv"]
    assert _taken(second) == []  # a process's first poll lists, whoever listed last
    assert Counted.listings == 2
    (inbox / "b.csv").write_text(GOOD.replace("u1", "u2"))
    clock.now += PERIOD / 2
    assert _taken(first) == []  # not its turn: what the last listing found, all decided
    assert Counted.listings == 2
    clock.now += PERIOD / 2
    assert _taken(second) == ["b.csv"]  # a period on: its turn, the new file seen
    assert Counted.listings == 3


def test_files_another_process_listed_are_taken_unlisted(
    replicas: tuple[Poller, Poller, Clock],
) -> None:
    """A file the listing process could not take (in hand elsewhere) is taken by another
    process from the published listing, without listing the source again."""
    first, second, clock = replicas
    inbox = Path(first.source.remote_path)
    assert _taken(second) == []  # its first poll (lists; nothing there yet)
    (inbox / "a.csv").write_text(GOOD)
    (inbox / "b.csv").write_text(GOOD.replace("u1", "u2"))
    clock.now += PERIOD
    with first.store.claim_place("s", first.path_of("b.csv")):  # a third process has b
        assert _taken(first) == ["a.csv"]
    listed = Counted.listings
    assert _taken(second) == ["b.csv"]
    assert Counted.listings == listed


def test_markers_are_published_with_their_files(tmp_path: Path, inbox: Path) -> None:
    config, source = configs(tmp_path, ready="marker")
    clock = Clock()
    with SQLiteStore(config.store.path) as one, SQLiteStore(config.store.path) as two:
        first, second = (
            Poller(
                config,
                source,
                store,
                ingestor=Ingestor(store, clock=clock),
                every=PERIOD,
                sleep=lambda _: None,
                opener=Counted,
            )
            for store in (one, two)
        )
        assert _taken(second) == []
        (inbox / "a.csv").write_text(GOOD)
        (inbox / "a.csv.done").write_text("")
        clock.now += PERIOD
        with one.claim_place("s", first.path_of("a.csv")):
            assert _taken(first) == []
        assert _taken(second) == ["a.csv"]


def test_one_turn_however_many_ask_at_once(tmp_path: Path) -> None:
    path = tmp_path / "store" / "c.db"
    SQLiteStore(path).close()
    start = threading.Barrier(4)
    turns: list[bool] = []

    def ask(name: str) -> None:
        with SQLiteStore(path) as store:
            start.wait()
            turns.append(store.listings.turn("s", PERIOD, 1_764_000_000.0, name) is None)

    threads = [threading.Thread(target=ask, args=(f"p{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(turns) == [False, False, False, True]


class Failing(Counted):
    """Counted, and its listing fails while ``broken``."""

    broken = False

    def list(self) -> list[RemoteFile]:
        if Failing.broken:
            raise TransientError("the server is down (test)")
        return super().list()


def test_the_poll_after_a_failed_listing_lists_again(tmp_path: Path, inbox: Path) -> None:
    """Its backoff retry must not follow an old listing until the next turn: a listing that
    failed took the turn, and published nothing new."""
    config, source = configs(tmp_path)
    clock = Clock()
    with SQLiteStore(config.store.path) as store:
        poller = Poller(
            config,
            source,
            store,
            ingestor=Ingestor(store, clock=clock),
            every=PERIOD,
            sleep=lambda _: None,
            opener=Failing,
        )
        assert _taken(poller) == []
        clock.now += PERIOD
        (inbox / "a.csv").write_text(GOOD)
        Failing.broken = True
        try:
            with pytest.raises(TransientError):
                poller.poll()
        finally:
            Failing.broken = False
        assert _taken(poller) == ["a.csv"]  # within the period: listed all the same


def test_files_in_hand_elsewhere_do_not_count_against_max_files(
    tmp_path: Path, inbox: Path
) -> None:
    """Replicas go through the same ready files, oldest first: one skipping a file that
    another has in hand takes the next, or every replica would wait on the same few."""
    config, source = configs(tmp_path, max_files=1)
    (inbox / "a.csv").write_text(GOOD)
    (inbox / "b.csv").write_text(GOOD.replace("u1", "u2"))
    with SQLiteStore(config.store.path) as store:
        poller = Poller(config, source, store, sleep=lambda _: None, opener=Counted)
        with store.claim_place("s", poller.path_of("a.csv")):
            assert _taken(poller) == ["b.csv"]
