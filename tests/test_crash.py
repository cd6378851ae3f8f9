"""Exactly-once after a crash: a real `connector import` is SIGKILLed at each step, then run
again without the hook; every valid row must be stored exactly once. On each store backend
(``store_table``): on SQLite every test; on PostgreSQL, to keep the run short, every step of
an import, two imports of the same bytes at once, and a contacts file killed before its end
(the others exercise the parser and the kill, which no backend changes)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from connector.crashpoints import IMPORT_STEPS
from tests.helpers import write_config

# Slow (pyproject's `slow` marker): each test kills and reruns `connector` subprocesses.
pytestmark = pytest.mark.slow

ROWS = 3_000
BAD_EVERY = 250  # every 250th row has no name: a reject
KEY_EVERY = 7  # every 7th row repeats the previous key of its kind: a duplicate


def _write_events(path: Path, rows: int, padding: int = 0) -> tuple[int, int, int]:
    """An events file; returns the (stored, rejected, duplicates) it must produce."""
    stored = rejected = duplicates = 0
    pad = "x" * padding
    with path.open("w", newline="") as f:
        f.write("identifier,name,timestamp,idempotencyKey,total,note\n")
        for i in range(rows):
            name = "" if i % BAD_EVERY == 0 else "purchase"
            key = f"k{i - 1}" if i % KEY_EVERY == 0 and i % BAD_EVERY != 1 else f"k{i}"
            f.write(f"user{i % 97}@example.com,{name},{1_700_000_000 + i},{key},{i}.5,{pad}\n")
            if not name:
                rejected += 1
            elif key != f"k{i}":
                duplicates += 1
            else:
                stored += 1
    return stored, rejected, duplicates


def _connector(
    config: Path, *argv: str, crash: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONNECTOR_CRASH_AT"}
    if crash:
        env["CONNECTOR_CRASH_AT"] = crash
    return subprocess.run(
        [sys.executable, "-m", "connector", "--config", str(config), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _dump(config: Path, table: str) -> list[dict[str, object]]:
    result = _connector(config, "dump", table)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def config(tmp_path: Path, store_table: dict[str, str]) -> Path:
    # small batches, a commit after each: several commits in a small file
    return write_config(
        tmp_path, store=store_table, ingest={"batch_records": 400, "commit_interval": "0s"}
    )


def _assert_exactly_once(config: Path, expected: tuple[int, int, int]) -> None:
    stored, rejected, _ = expected
    events = _dump(config, "events")
    lines = [e["line"] for e in events]
    assert len(lines) == len(set(lines)) == stored
    files = [f for f in _dump(config, "files") if f["status"] == "ingested"]
    assert len(files) == 1
    assert (files[0]["rows"], files[0]["rejected"], files[0]["duplicates"]) == expected
    assert len(_dump(config, "rejects")) == rejected


@pytest.mark.parametrize("step", IMPORT_STEPS)
def test_crash_at_each_step_then_rerun_stores_each_row_once(
    tmp_path: Path, config: Path, step: str
) -> None:
    """SIGKILL at any step, then a plain re-run: each valid row once, one ledger entry."""
    data = tmp_path / "events.csv"
    expected = _write_events(data, ROWS)
    nth = "3" if step in ("after_deliver", "after_commit") else "1"
    crashed = _connector(config, "import", str(data), "--kind", "events", crash=f"{step}:{nth}")
    assert crashed.returncode == -signal.SIGKILL
    rerun = _connector(config, "import", str(data), "--kind", "events")
    assert rerun.returncode == 0, rerun.stderr
    if step == "after_finish":
        assert "duplicate" in rerun.stdout  # the first run had finished: same bytes again
    _assert_exactly_once(config, expected)


@pytest.mark.parametrize("store_table", ["sqlite"], indirect=True)
def test_crash_mid_file_resumes_from_the_cursor(tmp_path: Path, config: Path) -> None:
    """After a crash past some commits, the re-run resumes instead of starting over."""
    data = tmp_path / "events.csv"
    expected = _write_events(data, ROWS)
    _connector(config, "import", str(data), "--kind", "events", crash="after_commit:4")
    rerun = _connector(config, "import", str(data), "--kind", "events")
    assert '"file_resumed"' in rerun.stderr
    assert '"cursor": 1600' in rerun.stderr  # four commits of 400 records
    _assert_exactly_once(config, expected)


@pytest.mark.parametrize("store_table", ["sqlite"], indirect=True)
def test_crash_in_the_parallel_parser_path(tmp_path: Path, config: Path) -> None:
    """A file big enough to be parsed in a child process: same guarantee, no orphan child."""
    data = tmp_path / "events.csv"
    expected = _write_events(data, 30_000, padding=280)  # over PARALLEL_MIN_BYTES
    assert data.stat().st_size > 8 << 20
    crashed = _connector(config, "import", str(data), "--kind", "events", crash="after_commit:5")
    assert crashed.returncode == -signal.SIGKILL
    assert _no_parser_left(), "the parser child outlived its parent"
    rerun = _connector(config, "import", str(data), "--kind", "events")
    assert rerun.returncode == 0, rerun.stderr
    _assert_exactly_once(config, expected)


def _no_parser_left(wait: float = 5.0) -> bool:
    """The orphaned child notices the closed pipe on its next write and exits."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
        if "connector.parsing" not in ps.stdout:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("store_table", ["sqlite"], indirect=True)
def test_killed_at_random_moments_converges(tmp_path: Path, config: Path) -> None:
    """Kills at arbitrary moments (not only at named steps) never lose or double a row."""
    data = tmp_path / "events.csv"
    expected = _write_events(data, 20_000)
    env = {k: v for k, v in os.environ.items() if k != "CONNECTOR_CRASH_AT"}
    argv = [sys.executable, "-m", "connector", "--config", str(config), "import", str(data)]
    for delay in (0.4, 0.9, 1.3, 1.8):
        proc = subprocess.Popen(
            [*argv, "--kind", "events"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = _connector(config, "import", str(data), "--kind", "events")
    assert final.returncode == 0, final.stderr
    _assert_exactly_once(config, expected)


def test_two_runs_with_the_same_bytes_at_once_store_them_once(tmp_path: Path, config: Path) -> None:
    """Two imports of the same bytes under two names, at the same moment: one ingests,
    the other waits and records a duplicate."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    expected = _write_events(first, 20_000)
    second.write_bytes(first.read_bytes())
    argv = [sys.executable, "-m", "connector", "--config", str(config), "import"]
    runs = [
        subprocess.Popen(
            [*argv, str(path), "--kind", "events"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for path in (first, second)
    ]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs)
    assert sorted(out.split(": ")[1].split(" ")[0] for out in outputs) == ["duplicate", "ingested"]
    _assert_exactly_once(config, expected)


@pytest.mark.parametrize(
    ("store_table", "step"),
    [
        ("sqlite", "after_commit:3"),
        ("sqlite", "mid_settle"),
        ("sqlite", "before_finish"),
        ("postgresql", "before_finish"),
    ],
    indirect=["store_table"],
)
def test_a_contacts_file_killed_mid_way_shows_nothing_then_merges_once(
    tmp_path: Path, config: Path, store_table: dict[str, str], step: str
) -> None:
    """A contacts file killed part-way shows none of its upserts; the re-run applies all of
    them, in file order (later rows win), and leaves none waiting."""
    data = tmp_path / "contacts.csv"
    with data.open("w") as f:
        f.write("identifier,plan,seats\n")
        for i in range(ROWS):  # 100 contacts, each updated 30 times; the last row wins
            f.write(f"user{i % 100}@example.com,plan{i},{i if i % 3 else ''}\n")
    crashed = _connector(config, "import", str(data), "--kind", "contacts", crash=step)
    assert crashed.returncode == -signal.SIGKILL
    assert _dump(config, "contacts") == []
    rerun = _connector(config, "import", str(data), "--kind", "contacts")
    assert rerun.returncode == 0, rerun.stderr
    contacts = {c["identifier"]: c["attributes"] for c in _dump(config, "contacts")}
    assert len(contacts) == 100
    # its last row (2907) has no seats: the one before (2807) keeps them
    assert contacts["user7@example.com"] == {"plan": "plan2907", "seats": 2807}
    assert _waiting_upserts(store_table) == 0


def _waiting_upserts(store_table: dict[str, str]) -> int:
    """Contact upserts left waiting for their file's final entry, in the store itself."""
    query = "SELECT count(*) FROM pending_contacts"
    if "url" in store_table:
        with psycopg.connect(store_table["url"]) as conn:
            row = conn.execute(query).fetchone()
    else:
        with sqlite3.connect(store_table["path"]) as db:
            row = db.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_a_refused_file_killed_while_its_rows_go_is_swept_by_the_next_file(
    tmp_path: Path,
) -> None:
    """SQLite removes the rows of a file taken back (here: refused past `max_rejects`
    once its rows were committed) after the transaction that refuses it, a span at a
    time. Killed after the first span, nothing of it is shown and its keys are free; the
    next import removes the rest."""
    store = tmp_path / "store" / "c.db"
    config = write_config(
        tmp_path,
        store={"path": str(store)},
        ingest={"batch_records": 400, "commit_interval": "0s", "max_rejects": 2},
    )
    refused = tmp_path / "refused.csv"
    rows = "".join(f"u{i},buy,k{i}\n" for i in range(60_000))  # (two spans of events)
    refused.write_text("identifier,name,idempotencyKey\n" + rows + ",,x\n" * 3)
    crashed = _connector(config, "import", str(refused), "--kind", "events", crash="mid_sweep")
    assert crashed.returncode == -signal.SIGKILL
    assert [f["status"] for f in _dump(config, "files")] == ["rejected"]
    assert _dump(config, "events") == []
    with sqlite3.connect(store) as db:
        left = db.execute("SELECT count(*) FROM events").fetchone()[0]
        assert 0 < left < 60_000  # one span gone, with its keys; the rest to sweep

    again = tmp_path / "again.csv"  # a key of the refused file's rest, used again
    again.write_text("identifier,name,idempotencyKey\nv,buy,k59999\n")
    rerun = _connector(config, "import", str(again), "--kind", "events")

    assert rerun.returncode == 0, rerun.stderr
    assert [e["idempotencyKey"] for e in _dump(config, "events")] == ["k59999"]
    with sqlite3.connect(store) as db:
        for table, count in (("events", 1), ("idempotency_keys", 1), ("rejects", 1)):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == count, table
        assert db.execute("SELECT count(*) FROM taken_back WHERE NOT swept").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM pending_contacts").fetchone()[0] == 0


@pytest.mark.parametrize("store_table", ["sqlite"], indirect=True)
def test_upserts_a_crash_left_after_a_final_entry_are_swept_by_the_next_file(
    tmp_path: Path, config: Path, store_table: dict[str, str]
) -> None:
    """Killed after its final entry, before its pending upserts were removed: the file is
    complete, and the next file's run removes them."""
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("identifier,plan\n" + "".join(f"c{i},free\n" for i in range(500)))
    second.write_text("identifier,plan\nd0,paid\n")
    crashed = _connector(config, "import", str(first), "--kind", "contacts", crash="after_finish")
    assert crashed.returncode == -signal.SIGKILL
    assert _waiting_upserts(store_table) == 500
    assert len(_dump(config, "contacts")) == 500

    rerun = _connector(config, "import", str(second), "--kind", "contacts")

    assert rerun.returncode == 0, rerun.stderr
    assert _waiting_upserts(store_table) == 0
    assert len(_dump(config, "contacts")) == 501
