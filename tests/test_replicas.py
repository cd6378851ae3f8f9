"""Several `connector run` processes on one PostgreSQL store and one SFTP server: every
file is ingested once whichever replica takes it, also when one is SIGKILLed mid-file and
another frozen (SIGSTOP) past its lease; PostgreSQL restarted under a running daemon."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connector.parsing import PARALLEL_MIN_BYTES
from connector.testing import EmbeddedSFTPServer
from connector.testing.postgres import EmbeddedPostgres
from connector.testing.replicas import Replicas

# Slow (pyproject's `slow` marker): daemon replicas as subprocesses, on PostgreSQL.
pytestmark = pytest.mark.slow

SMALL = 200  # small files, ROWS events each
ROWS = 5
LEASE = 2.0
PAD = "x" * 200


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _large(path: Path) -> int:
    """An events file just past the size parsed as it downloads; returns its rows."""
    rows = 0
    with path.open("w") as f:
        f.write("identifier,n,pad\n")
        while f.tell() < PARALLEL_MIN_BYTES + (1 << 20):
            f.write(f"{path.stem}u{rows},{rows},{PAD}\n")
            rows += 1
    return rows


@pytest.fixture
def sftp(tmp_path: Path) -> Iterator[EmbeddedSFTPServer]:
    with EmbeddedSFTPServer(tmp_path / "sftp") as server:
        yield server


def _replicas(tmp_path: Path, sftp: EmbeddedSFTPServer, store_url: str) -> Replicas:
    secret = tmp_path / "sftp-password"
    secret.write_text(sftp.password)
    secret.chmod(0o600)
    source = {
        "name": "acme",
        "url": sftp.url + "outbox",
        "password_file": str(secret),
        "known_hosts": str(sftp.write_known_hosts(tmp_path / "known_hosts")),
        "interval": "1s",
        "min_age": "0s",
        "after": "move:processed",
        "files": [{"kind": "events", "pattern": "*.csv", "event_name": "e"}],
    }
    store = {"url": store_url, "lease": f"{LEASE:g}s"}
    return Replicas(tmp_path / "replicas", store, source, ingest={"commit_interval": "0s"})


def _fill(outbox: Path) -> dict[str, int]:
    """A few hundred small files and two large ones; the rows each must give."""
    outbox.mkdir()
    expected = {}
    for i in range(SMALL):
        name = f"events_{i:03d}.csv"
        (outbox / name).write_text(
            "identifier,n\n" + "".join(f"f{i}u{r},{r}\n" for r in range(ROWS))
        )
        expected[name] = ROWS
    for name in ("big_1.csv", "big_2.csv"):
        expected[name] = _large(outbox / name)
    return expected


def _holds_a_claim(store_url: str, replica: str) -> bool:
    with psycopg.connect(store_url, autocommit=True) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM claims WHERE owner = %s", (replica,))
        except psycopg.errors.UndefinedTable:  # (the replicas have not made the schema yet)
            return False
        count = row.fetchone()
    return bool(count and count[0])


def _dump(replicas: Replicas, table: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        replicas.command("r2", "dump", table),
        capture_output=True,
        text=True,
        check=True,
        env=replicas.env,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def _check_exactly_once(replicas: Replicas, outbox: Path, expected: dict[str, int]) -> None:
    events = _dump(replicas, "events")
    seen = Counter((e["file"].rsplit("/", 1)[1], e["line"]) for e in events)
    assert [key for key, n in seen.items() if n > 1] == []  # nothing stored twice
    stored = Counter(name for name, _ in seen)
    assert stored == Counter(expected)  # nothing lost
    files = _dump(replicas, "files")
    assert Counter(f["path"].rsplit("/", 1)[1] for f in files) == Counter(set(expected))
    assert {f["status"] for f in files} == {"ingested"}
    assert sorted(p.name for p in outbox.iterdir()) == ["processed"]
    assert sorted(p.name for p in (outbox / "processed").iterdir()) == sorted(expected)


def test_three_replicas_share_the_work_through_a_crash_and_a_freeze(
    tmp_path: Path, sftp: EmbeddedSFTPServer, postgres_url: str
) -> None:
    outbox = sftp.root / "outbox"
    expected = _fill(outbox)
    with _replicas(tmp_path, sftp, postgres_url) as replicas:
        for name in ("r1", "r2", "r3"):
            replicas.start(name)
        # r1 dies mid-file (holding a claim); it is started again, as a supervisor would.
        _wait(lambda: _holds_a_claim(postgres_url, "r1"), 60, "r1 to take a file")
        replicas.kill("r1")
        replicas.start("r1-again")
        # r2 is frozen mid-file for three leases: its claims are taken over meanwhile.
        _wait(lambda: _holds_a_claim(postgres_url, "r2"), 60, "r2 to take a file")
        replicas.freeze("r2")
        time.sleep(3 * LEASE)
        replicas.thaw("r2")
        _wait(lambda: not any(outbox.glob("*.csv")), 120, "every file to be taken")
        stopped = replicas.stop_all(within=10)
        late = {
            name: (stop, replicas.events(name)[-6:])
            for name, stop in stopped.items()
            if stop[0] != 0 or stop[1] >= 10
        }
        assert not late, late
        _check_exactly_once(replicas, outbox, expected)
        ingested_by = {
            name
            for name in ("r1", "r1-again", "r2", "r3")
            if any(e["event"] == "file_ingested" for e in replicas.events(name))
        }
        assert len(ingested_by) >= 2, ingested_by
        # A claim of the frozen replica that another took over is one it says it lost.
        others = [e for name in ("r1-again", "r3") for e in replicas.events(name)]
        if any(e["event"] == "claim_taken_over" and e.get("owner") == "r2" for e in others):
            assert any(e["event"] == "claim_lost" for e in replicas.events("r2"))
        assert all(e.get("replica") == "r3" for e in replicas.events("r3") if "level" in e)


def test_postgresql_restarted_under_a_running_daemon(
    tmp_path: Path, sftp: EmbeddedSFTPServer
) -> None:
    """Polls fail while the server is down (transient: logged, retried), then resume;
    nothing is lost or stored twice."""
    outbox = sftp.root / "outbox"
    outbox.mkdir()
    expected = {}
    with (
        EmbeddedPostgres() as server,
        _replicas(tmp_path, sftp, server.create_database()) as replicas,
    ):
        replicas.start("r1")
        for i in range(20):
            (outbox / f"events_{i:03d}.csv").write_text(f"identifier,n\nu{i},{i}\n")
            expected[f"events_{i:03d}.csv"] = 1
        expected["big_1.csv"] = _large(outbox / "big_1.csv")
        _wait(lambda: any((outbox / "processed").glob("*.csv")), 60, "a first file")
        server.stop()
        time.sleep(2)
        server.start()
        _wait(lambda: not any(outbox.glob("*.csv")), 120, "every file to be taken")
        stopped = replicas.stop_all(within=10)
        assert stopped["r1"][0] == 0, stopped
        failed = [e for e in replicas.events("r1") if e["event"] in ("poll_failed", "file_failed")]
        assert failed, "the restart went unnoticed"
        assert not [e for e in replicas.events("r1") if e["event"] == "poll_crashed"]
        _check_exactly_once(replicas, outbox, expected)
