"""The change feed under concurrent writers, and `feed --follow`, on both backends.

The guarantee under test: a consumer that passes back the cursor of the last line it read
gets every record exactly once, none skipped, none repeated, while other writers commit
files concurrently and out of the order of their ids. The rest of the feed's rules (order,
cursors inside a file, contacts as changes, tenants, unknown cursors) are in the store
contract suite."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.config import StoreConfig
from connector.csvrules.rules import FileRules
from connector.ingest import Ingestor
from connector.store import open_store
from connector.store.feed import KINDS, START, Kind, parse_cursor
from connector.store.port import Store
from connector.testing.postgres import EmbeddedPostgres
from tests.helpers import write_config
from tests.store_contract import fed, records

# Slow (pyproject's `slow` marker): `connector feed` subprocesses, and PostgreSQL.
pytestmark = pytest.mark.slow

EVENTS = FileRules(kind="events")
CONTACTS = FileRules(kind="contacts")


def _files(folder: Path, seed: int, count: int) -> list[tuple[Path, FileRules]]:
    """``count`` small files of random sizes, events and contacts, each with a bad row."""
    rng = random.Random(seed)
    folder.mkdir(exist_ok=True)
    made = []
    for n in range(count):
        rows = rng.randint(1, 40)
        if rng.random() < 0.3:
            text = "identifier,plan\n" + "".join(
                f"c{rng.randint(0, 30)},p{rng.randint(0, 3)}\n" for _ in range(rows)
            )
            rules = CONTACTS
        else:
            text = "identifier,name,idempotencyKey\n" + "".join(
                f"u{rng.randint(0, 30)},buy,k{n}-{i}\n" for i in range(rows)
            )
            rules = EVENTS
        path = folder / f"f{n:03d}.csv"
        path.write_text(text + ",bad,\n")
        made.append((path, rules))
    return made


def _everything(store: Store, kind: Kind) -> list[Any]:
    """What the feed of ``kind`` must have given, whatever the order: the store's records
    (changes of contacts: one per contact per file that changed it)."""
    if kind == "contacts":
        [(count,)] = store.query("SELECT count(*) FROM contact_changes")
        return [count]
    table = {"events": "events", "rejects": "rejects", "files": "files"}[kind]
    keys = {
        "events": ("file", "line"),
        "rejects": ("file", "line"),
        "files": ("path", "sha256", "status"),
    }[kind]
    return sorted(
        tuple(r[k] for k in keys)
        for r in records(store, table)  # type: ignore[arg-type]
        if kind != "files" or r["status"] != "failed"
    )


def _consumed(lines: list[dict[str, Any]], kind: Kind) -> list[Any]:
    if kind == "contacts":
        return [len(lines)]
    keys = {
        "events": ("file", "line"),
        "rejects": ("file", "line"),
        "files": ("path", "sha256", "status"),
    }[kind]
    return sorted(tuple(line[k] for k in keys) for line in lines)


class Consumer:
    """Reads every feed a few lines at a time from its last cursor, over and over, until
    told the writers are done and a read then finds nothing new."""

    def __init__(self, store: Store, page: int) -> None:
        self.store, self.page = store, page
        self.lines: dict[Kind, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        self.done = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="consumer")

    def _run(self) -> None:
        try:
            while True:
                finished = self.done.is_set()  # (asked before the reads that must see all)
                new = 0
                for kind in KINDS:
                    lines = self.lines[kind]
                    after = parse_cursor(lines[-1]["cursor"], kind) if lines else START
                    more = fed(self.store, kind, after, limit=self.page)
                    lines += more
                    new += len(more)
                if finished and not new:
                    return
        except BaseException as exc:  # (told to the test)
            self.failure = exc

    def __enter__(self) -> Consumer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "the consumer never caught up"

    def check(self, store: Store) -> None:
        assert self.failure is None, self.failure
        for kind in KINDS:
            lines = self.lines[kind]
            cursors = [line["cursor"] for line in lines]
            assert len(set(cursors)) == len(cursors), f"{kind}: a line given twice"
            assert _consumed(lines, kind) == _everything(store, kind), kind
            assert lines == fed(store, kind), f"{kind}: not in the feed's order"


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32), page=st.integers(1, 9))
def test_sqlite_consumer_with_cursors_gets_every_record_once_under_concurrent_writers(
    tmp_path_factory: pytest.TempPathFactory, seed: int, page: int
) -> None:
    """Three writers (each its own store object and connection, as three processes)
    ingest files in a random order, pausing at random before each file's final entry,
    while a consumer pages through every feed."""
    root = tmp_path_factory.mktemp("feed")
    config = StoreConfig.model_validate({"path": str(root / "store" / "c.db")})
    files = _files(root / "in", seed, 18)
    rng = random.Random(seed)
    rng.shuffle(files)
    pauses = [rng.random() * 0.02 for _ in files]

    def writer(mine: list[int]) -> None:
        with open_store(config) as store:
            ingestor = Ingestor(store, batch_records=rng.randint(1, 9), commit_seconds=0)
            for i in mine:
                path, rules = files[i]
                ingestor.ingest(
                    path,
                    rules,
                    source="s",
                    name=path.name,
                    before_final=lambda i=i: time.sleep(pauses[i]),
                )

    with open_store(config) as store, Consumer(store, page) as consumer:
        writers = [
            threading.Thread(target=writer, args=(list(range(w, len(files), 3)),)) for w in range(3)
        ]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(120)
    with open_store(config) as store:
        consumer.check(store)


def test_postgres_consumer_with_cursors_gets_every_record_once_under_concurrent_processes(
    postgres_url: str, tmp_path: Path
) -> None:
    """Three `connector import` processes on one PostgreSQL store commit files at once
    (their events' ids interleave, and a file may become final before one that took lower
    ids) while a consumer pages through every feed."""
    config = write_config(tmp_path, store={"url": postgres_url})
    files = _files(tmp_path / "in", 7, 24)  # (seed 7: each importer has both kinds)
    open_store(StoreConfig.model_validate({"url": postgres_url})).close()  # (schema first)
    with (
        open_store(StoreConfig.model_validate({"url": postgres_url})) as store,
        Consumer(store, 3) as consumer,
    ):
        importers = [
            _importing(config, [path for path, rules in files[w::3] if rules is chosen])
            for w in range(3)
            for chosen in (EVENTS, CONTACTS)
        ]
        for importer in importers:
            assert importer.wait(120) == 0
        consumer.done.set()
    with open_store(StoreConfig.model_validate({"url": postgres_url})) as store:
        consumer.check(store)
        assert len(consumer.lines["files"]) == len(files)


def _importing(config: Path, paths: list[Path]) -> subprocess.Popen[bytes]:
    """`connector import` of ``paths`` (all of one kind), in a process of its own."""
    kind = "contacts" if "plan" in paths[0].read_text().split("\n", 1)[0] else "events"
    argv = [sys.executable, "-m", "connector", "--config", str(config), "import"]
    return subprocess.Popen([*argv, *map(str, paths), "--kind", kind], stdout=subprocess.DEVNULL)


# -- feed --follow ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store' / 'c.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def _ingested(store: Store, tmp_path: Path, name: str, identifier: str) -> None:
    """A one-event file ``name`` of ``identifier``, ingested: final at once."""
    path = tmp_path / name
    path.write_text(f"identifier,name\n{identifier},buy\n")
    Ingestor(store).ingest(path, EVENTS, source="s", name=name)


def _following(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connector", "--config", str(config), "feed", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _line_within(process: subprocess.Popen[str], seconds: float) -> dict[str, Any]:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(seconds)
    assert got and got[0], f"no line within {seconds} s"
    return dict(json.loads(got[0]))


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_follow_prints_files_as_they_become_final_and_stops_on_a_signal(
    store_url: str, tmp_path: Path, stop: signal.Signals
) -> None:
    config = write_config(tmp_path, store={"url": store_url})
    with open_store(StoreConfig.model_validate({"url": store_url})) as store:
        _ingested(store, tmp_path, "a.csv", "u1")
        follower = _following(config, "events", "--follow")
        try:
            assert _line_within(follower, 30)["identifier"] == "u1"  # what was there
            time.sleep(0.5)  # (it waits now)
            _ingested(store, tmp_path, "b.csv", "u2")
            final = time.monotonic()
            assert _line_within(follower, 10)["identifier"] == "u2"
            assert time.monotonic() - final < 5  # (the bench measures it: within 1 s)
            follower.send_signal(stop)
            assert follower.wait(10) == 0
        finally:
            follower.kill()
            follower.communicate()


def test_follow_with_a_limit_ends_with_its_last_line(store_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, store={"url": store_url})
    with open_store(StoreConfig.model_validate({"url": store_url})) as store:
        _ingested(store, tmp_path, "a.csv", "u1")
        follower = _following(config, "files", "--follow", "--limit", "2")
        try:
            assert _line_within(follower, 30)["path"] == "a.csv"
            _ingested(store, tmp_path, "b.csv", "u2")
            assert _line_within(follower, 10)["path"] == "b.csv"
            assert follower.wait(10) == 0
        finally:
            follower.kill()
            follower.communicate()


def test_an_unknown_cursor_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "--config",
            str(config),
            "feed",
            "events",
            "--after",
            "7:3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "connector: unknown cursor '7:3': this store's feed has not reached it"
        " (a cursor of another store?)"
    ]


def test_follow_goes_on_from_its_cursor_after_postgresql_restarts(tmp_path: Path) -> None:
    """The store goes away under a follower: it says so (`feed_store_failed`), waits, and
    once the server answers again prints what became final meanwhile, nothing twice."""
    with EmbeddedPostgres() as server:
        url = server.create_database()
        config = write_config(tmp_path, store={"url": url})
        with open_store(StoreConfig.model_validate({"url": url})) as store:
            _ingested(store, tmp_path, "a.csv", "u1")
        follower = _following(config, "events", "--follow")
        try:
            assert _line_within(follower, 30)["identifier"] == "u1"
            server.stop()
            time.sleep(1.5)  # (its next wait finds the store gone)
            server.start()
            with open_store(StoreConfig.model_validate({"url": url})) as store:
                _ingested(store, tmp_path, "b.csv", "u2")
            assert _line_within(follower, 60)["identifier"] == "u2"
            follower.send_signal(signal.SIGTERM)
            assert follower.wait(10) == 0
            assert follower.stdout is not None and follower.stdout.read() == ""
            assert follower.stderr is not None and "feed_store_failed" in follower.stderr.read()
        finally:
            follower.kill()
            follower.communicate()
