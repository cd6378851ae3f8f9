"""Replica benchmark: one `connector run` against three sharing a PostgreSQL store, and failover.

    python bench/replicas_bench.py [--files 300] [--rows 20] [--repeat 3] [--failover-mb 200]
                                   [--kill-at-rows 1] [--only shared,failover]

Every source is an EmbeddedSFTPServer on loopback, in a process of its own (daemon_bench's
helper: no measured process shares a GIL with it); the store is a fresh database on one
throwaway PostgreSQL server (connector.testing.postgres.EmbeddedPostgres, fsync off) started by
this bench; replicas are `connector run` processes driven by connector.testing.replicas, each
with its own config, staging and archive. Sources poll with `interval = "1s"`,
`min_age = "0s"`, `after = "move:processed"`; other settings are the defaults.

1. Shared work: `--files` files of `--rows` events each (cut in order from bench/gen_events.py's
   output, so every file has distinct bytes) in a fresh folder, taken by 1 replica, then by 3
   replicas, each time on a fresh database. Time from starting the replicas (their start-up
   and schema creation included) to the moment every file has its final ledger entry (the
   store's `files` table, polled every 50 ms). Runs interleaved (1 3 1 3 ...), best of
   `--repeat`. Afterwards the store must hold every file once and every row once (the store's
   records, as `connector dump files|events` prints them). Target: 3 replicas take at most
   1.1x one replica's time. On two cores no speed-up is expected; the coordination (claims,
   turns at listing) must cost nothing measurable.
2. Failover: one events file of `--failover-mb` MB (past 8 MB, so it is stored as it downloads)
   and 2 replicas with `lease = "3s"`. Once the file's ledger entry has a cursor > 0 (or at
   least `--kill-at-rows`), the replica holding its claim (the `claims` table's owner) is
   SIGKILLed; measured is the time from the SIGKILL to the other replica's first commit on the
   file that moves the cursor (the file's entries found by path in `files`, polled every
   50 ms) past where it was at the kill. Target: at most lease + interval + 2 s. Also shown:
   when the survivor took the claim over (its log), and its first commit on the file at all,
   and whether that resumed the entry or began a new one from 0. Then the file must end
   `ingested` with every row stored once.

The report ends with PASS/FAIL against the targets; the exit status is always 0: a report, not
a gate.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

# The SFTP server in a helper process, from daemon_bench; the cached generator output.
from daemon_bench import Server, sftp_server
from import_bench import MB, OUT, events_file, verdict

from connector.config import StoreConfig
from connector.store import open_store
from connector.testing.postgres import EmbeddedPostgres, PostgresUnavailable
from connector.testing.replicas import Replicas

INTERVAL = 1.0  # the source's poll period, seconds
LEASE = 3.0  # failover's lease, seconds
MAX_SHARED_RATIO = 1.1  # 3 replicas take at most 1.1x one replica's time
FAILOVER_SLACK = 2.0  # the failover target: lease + interval + this
POLL = 0.05  # how often the store is read while waiting, seconds
BYTES_PER_ROW = 109.8  # gen_events.py's rows, on average: the failover file's rows by size
FINAL = ("ingested", "duplicate", "rejected")  # ledger statuses past which a file is decided
SOURCE = "bench"
BIG = "%/big.csv"  # the failover file's ledger path, as a LIKE pattern


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL)


def query(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """The rows of ``sql``; none while the replicas have not made the schema yet."""
    try:
        return conn.execute(sql, params).fetchall()
    except psycopg.errors.UndefinedTable:
        return []


def replicas_for(
    work: Path, server: Server, folder: str, url: str, store: dict[str, Any]
) -> Replicas:
    secret = work / "sftp-password"
    if not secret.exists():
        secret.write_text(server.password)
        secret.chmod(0o600)
    source = {
        "name": SOURCE,
        "url": server.url(folder),
        "password_file": str(secret),
        "known_hosts": str(server.known_hosts),
        "interval": f"{INTERVAL:g}s",
        "min_age": "0s",
        "after": "move:processed",
        "files": [{"kind": "events", "pattern": "*.csv"}],
    }
    return Replicas(work / folder, {"url": url, **store}, source)


# --- 1. shared work ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shared:
    replicas: int
    seconds: float
    by_replica: dict[str, int]  # files ingested, by replica
    problems: list[str]  # what the store holds that it should not, or lacks


def small_files(folder: Path, files: int, rows: int) -> None:
    """``files`` files of ``rows`` events each, cut in order from the generated file."""
    folder.mkdir(parents=True)
    with events_file(files * rows).open(encoding="utf-8") as source:
        header = source.readline()
        for i in range(files):
            body = "".join(source.readline() for _ in range(rows))
            (folder / f"events_{i:04d}.csv").write_text(header + body, encoding="utf-8")


def shared_run(
    pg: EmbeddedPostgres,
    server: Server,
    root: Path,
    work: Path,
    n: int,
    run: int,
    files: int,
    rows: int,
    timeout: float,
) -> Shared:
    folder = f"shared_{n}_{run}"
    small_files(root / folder, files, rows)
    url = pg.create_database()
    try:
        with (
            psycopg.connect(url, autocommit=True) as conn,
            replicas_for(work, server, folder, url, {}) as replicas,
        ):
            names = [f"r{i + 1}" for i in range(n)]
            for name in names:
                replicas.config(name)  # (written before the clock starts)
            started = time.perf_counter()
            for name in names:
                replicas.start(name)
            decided = "SELECT count(DISTINCT path) FROM files WHERE status = ANY(%s)"
            problems = []
            try:
                wait_for(
                    f"{files} files decided by {n} replica(s)",
                    lambda: (query(conn, decided, (list(FINAL),)) or [(0,)])[0][0] >= files,
                    timeout,
                )
                seconds = time.perf_counter() - started
            except TimeoutError as exc:
                seconds = math.inf
                problems.append(str(exc))
            stopped = replicas.stop_all(within=30)
            by_replica = {
                name: sum(e.get("event") == "file_ingested" for e in replicas.events(name))
                for name in names
            }
            problems += [
                f"{name} stopped with {code}" for name, (code, _) in stopped.items() if code != 0
            ]
        problems += check_store(url, files, rows)
        return Shared(n, seconds, by_replica, problems)
    finally:
        pg.drop_database(url.rsplit("/", 1)[1])


def check_store(url: str, files: int, rows: int) -> list[str]:
    """Every file once, ingested, with its rows; every row stored once (the dump's view)."""
    problems = []
    with open_store(StoreConfig(url=url)) as store:
        entries = list(store.records("files"))
        events = Counter((e["file"], e["line"]) for e in store.records("events"))
    paths = Counter(str(e["path"]) for e in entries)
    if len(paths) != files or max(paths.values(), default=0) != 1:
        problems.append(f"{len(entries)} ledger entries for {len(paths)} paths, not {files}")
    statuses = Counter(str(e["status"]) for e in entries)
    if set(statuses) != {"ingested"}:
        problems.append(f"statuses {dict(statuses)}")
    if sum(int(e["rows"]) for e in entries) != files * rows:
        problems.append(f"{sum(int(e['rows']) for e in entries):,} rows in the ledger")
    if sum(events.values()) != files * rows or max(events.values(), default=1) != 1:
        twice = sum(1 for c in events.values() if c > 1)
        problems.append(f"{sum(events.values()):,} events stored, {twice} lines twice")
    return problems


# --- 2. failover ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failover:
    size: int
    rows: int
    killed: str
    killed_entry: tuple[int, int, bool]  # its ledger entry at the kill: id, cursor, checksum known
    taken_over: float | None  # SIGKILL to the survivor's taking over the file's place claim
    first_commit: float | None  # SIGKILL to the survivor's first commit on the file
    resumed: bool | None  # that commit moved the same entry on (else: a new one, from 0)
    past_kill: float | None  # SIGKILL to the file's cursor passing the kill's; None: never
    ingest_seconds: float  # the whole file, replicas' start to its final entry
    problems: list[str]


def failover_run(
    pg: EmbeddedPostgres,
    server: Server,
    root: Path,
    work: Path,
    megabytes: float,
    kill_at: int,
    timeout: float,
) -> Failover:
    rows = max(1, round(megabytes * MB / BYTES_PER_ROW))
    big = events_file(rows)
    folder = "failover"
    (root / folder).mkdir()
    shutil.copyfile(big, root / folder / "big.csv")
    size = big.stat().st_size
    url = pg.create_database()
    problems: list[str] = []
    try:
        with (
            psycopg.connect(url, autocommit=True) as conn,
            replicas_for(work, server, folder, url, {"lease": f"{LEASE:g}s"}) as replicas,
        ):

            def entries() -> list[tuple[int, int, bool]]:
                """The file's ledger entries: id, cursor, whether its checksum is known."""
                sql = "SELECT id, cursor, sha256 IS NOT NULL FROM files WHERE path LIKE %s"
                return [(int(i), int(c), bool(k)) for i, c, k in query(conn, sql, (BIG,))]

            started = time.perf_counter()
            for name in ("r1", "r2"):
                replicas.start(name)
            wait_for(
                f"a commit on the file at cursor {kill_at:,} or more",
                lambda: any(c >= kill_at for _, c, _ in entries()),
                timeout,
            )
            owners = [row[0] for row in query(conn, "SELECT DISTINCT owner FROM claims")]
            if len(owners) != 1 or owners[0] not in ("r1", "r2"):
                raise RuntimeError(f"cannot tell who holds the file: claims held by {owners}")
            killed = owners[0]
            survivor = "r2" if killed == "r1" else "r1"
            killed_wall, killed_at = time.time(), time.perf_counter()
            replicas.kill(killed)  # SIGKILL, then reaped
            # Read after the kill: a commit under way as it died is counted in.
            entry = max(entries(), key=lambda e: e[1])
            first_commit = past_kill = None
            resumed = None
            deadline = killed_at + timeout
            while past_kill is None and time.perf_counter() < deadline:
                now, seen = time.perf_counter(), entries()
                moved = [e for e in seen if (e[0] != entry[0] and e[1] > 0) or e[1] > entry[1]]
                if first_commit is None and moved:
                    first_commit = now - killed_at
                    resumed = any(e[0] == entry[0] for e in moved)
                if any(c > entry[1] for _, c, _ in seen):
                    past_kill = now - killed_at
                time.sleep(POLL)
            decided = "SELECT count(*) FROM files WHERE path LIKE %s AND status = ANY(%s)"
            with contextlib.suppress(TimeoutError):
                wait_for(
                    "the file's final entry",
                    lambda: (query(conn, decided, (BIG, list(FINAL))) or [(0,)])[0][0] > 0,
                    timeout,
                )
            ingest_seconds = time.perf_counter() - started
            stopped = replicas.stop_all(within=30)
            problems += [
                f"{name} stopped with {code}" for name, (code, _) in stopped.items() if code != 0
            ]
            taken = [
                datetime.fromisoformat(e["timestamp"]).timestamp() - killed_wall
                for e in replicas.events(survivor)
                if e.get("event") == "claim_taken_over"
                and str(e.get("claim", "")).startswith("place ")
            ]
            final = query(conn, "SELECT status, rows, rejected, duplicates FROM files")
            if [tuple(e) for e in final] != [("ingested", rows, 0, 0)]:
                problems.append(f"ledger entries (status, rows, rejected, duplicates): {final}")
            stored = query(conn, "SELECT count(*), count(DISTINCT line) FROM events")
            total, lines = stored[0] if stored else (0, 0)
            if (total, lines) != (rows, rows):
                problems.append(f"{total:,} events stored for {lines:,} lines, not {rows:,}")
        return Failover(
            size,
            rows,
            killed,
            entry,
            taken[0] if taken else None,
            first_commit,
            resumed,
            past_kill,
            ingest_seconds,
            problems,
        )
    finally:
        pg.drop_database(url.rsplit("/", 1)[1])


# --- reporting --------------------------------------------------------------------------------


def report_shared(runs: list[Shared], files: int, rows: int) -> None:
    print(f"\n1. shared work: {files} files of {rows} rows, interval {INTERVAL:g}s")
    print("replicas  seconds  files/s  files by replica (best run)  runs (s)")
    best: dict[int, Shared] = {}
    for n in sorted({r.replicas for r in runs}):
        mine = [r for r in runs if r.replicas == n]
        best[n] = run = min(mine, key=lambda r: r.seconds)
        spread = " ".join(f"{k}={v}" for k, v in run.by_replica.items())
        times = " ".join(f"{r.seconds:.2f}" for r in mine)
        print(f"{n:>8} {run.seconds:>8.2f} {files / run.seconds:>8.1f}  {spread:<27}  {times}")
    problems = [f"{r.replicas} replica(s): {p}" for r in runs for p in r.problems]
    for problem in problems:
        print(f"  store check: {problem}")
    one, three = best.get(1), best.get(3)
    ok: bool | None = None
    value = ""
    if one is not None and three is not None:
        ratio = three.seconds / one.seconds
        ok, value = not problems and ratio <= MAX_SHARED_RATIO, f"{ratio:.2f}x"
    print(f"3 vs 1 time {value:>7}  target <= {MAX_SHARED_RATIO:.2f}x  {verdict(ok)}")
    print(f"every file and row stored once: {'yes' if not problems else 'NO'}")


def report_failover(run: Failover) -> None:
    target = LEASE + INTERVAL + FAILOVER_SLACK
    print(
        f"\n2. failover: {run.size / MB:.1f} MB, {run.rows:,} rows, 2 replicas,"
        f" lease {LEASE:g}s, interval {INTERVAL:g}s"
    )

    def after(seconds: float | None) -> str:
        return "never" if seconds is None else f"{seconds:.2f} s after"

    entry_id, cursor, decided = run.killed_entry
    how = "its checksum known" if decided else "no checksum yet: stored as it downloads"
    print(f"SIGKILLed {run.killed} at cursor {cursor:,} (ledger entry {entry_id}, {how})")
    print(f"the survivor took over the file's place claim {after(run.taken_over)}")
    if run.resumed is None:
        resumed = ""
    elif run.resumed:
        resumed = f": entry {entry_id} resumed from cursor {cursor:,}"
    else:
        resumed = (
            f": on a new entry from cursor 0 (entry {entry_id} and the {cursor:,} rows committed"
            " under it were taken back, to be done again)"
        )
    print(f"its first commit on the file came {after(run.first_commit)}{resumed}")
    print(f"the whole file: {run.ingest_seconds:.1f} s from the replicas' start to its final entry")
    for problem in run.problems:
        print(f"  store check: {problem}")
    value = "never" if run.past_kill is None else f"{run.past_kill:.2f} s"
    ok = run.past_kill is not None and run.past_kill <= target
    print(
        f"kill to a commit past the kill's cursor {value:>8}  target <= {target:g} s  {verdict(ok)}"
    )
    print(f"every row of the file stored once: {'yes' if not run.problems else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="small files for shared work")
    parser.add_argument("--rows", type=int, default=20, help="rows per small file")
    parser.add_argument("--repeat", type=int, default=3, help="runs of 1 and 3; best counts")
    parser.add_argument("--failover-mb", type=float, default=200, help="the failover file")
    parser.add_argument(
        "--kill-at-rows", type=int, default=1, help="SIGKILL once the cursor is this far (>= 1)"
    )
    parser.add_argument("--only", default="shared,failover", help="shared, failover or both")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a wait fails")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if not parts or parts - {"shared", "failover"}:
        parser.error("--only takes shared, failover or both")
    if min(args.files, args.rows, args.repeat, args.kill_at_rows) < 1 or args.failover_mb <= 8.4:
        parser.error(
            "--files, --rows, --repeat, --kill-at-rows must be at least 1, --failover-mb past 8.4"
        )

    try:
        pg = EmbeddedPostgres()
    except PostgresUnavailable as exc:
        print(f"no PostgreSQL to run against: {exc}")
        return 0
    OUT.mkdir(exist_ok=True)
    with (
        pg,
        tempfile.TemporaryDirectory(prefix="replicas-bench-", dir=OUT) as tmp,
    ):
        root, work = Path(tmp) / "sftp", Path(tmp) / "work"
        root.mkdir()
        work.mkdir()
        with sftp_server(root, work) as server:
            print(
                f"{os.cpu_count()} CPUs, {platform.platform()}; Python"
                f" {sys.version.split()[0]}; PostgreSQL {pg_version(pg)} (fsync off);"
                " MB = 10^6 bytes"
            )
            if "shared" in parts:
                runs = []
                # Interleaved (1 3 1 3 ...) so that a slow spell of the machine hurts both.
                for i in range(args.repeat):
                    for n in (1, 3):
                        run = shared_run(
                            pg, server, root, work, n, i, args.files, args.rows, args.timeout
                        )
                        runs.append(run)
                        print(f"  run {i + 1}: {n} replica(s) {run.seconds:7.2f} s", flush=True)
                report_shared(runs, args.files, args.rows)
            if "failover" in parts:
                report_failover(
                    failover_run(
                        pg, server, root, work, args.failover_mb, args.kill_at_rows, args.timeout
                    )
                )
    return 0


def pg_version(pg: EmbeddedPostgres) -> str:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


if __name__ == "__main__":
    sys.exit(main())
