"""Daemon benchmark: polls of many small files, of a large idle folder, and one large file.

    python bench/daemon_bench.py [--small-files 1000] [--idle-files 10000] [--rows 1000000]
                                 [--after leave|move:processed] [--repeat N] [--keep]
                                 [--link-mb-s R]

Every source is an EmbeddedSFTPServer on loopback. The server runs in its own process
(multiprocessing, spawn), never in a measured one: a paramiko server in the client's process
would take turns with it on one GIL and the figures would measure that contention, not the
client. That helper also counts what clients read (files opened, bytes sent), so the idle poll
can be shown to download nothing. It writes the known_hosts file and hands back its address and
password over a pipe.

1. Many small files: `--small-files` files of 100 events rows each (cut, in order, from
   bench/gen_events.py's output, so every file has distinct bytes); one source with
   `min_age = "0s"`, `max_files` = the count; one `Poller.poll()` takes them all. It runs in a
   fresh child process (peak RSS sampled: import_bench.PeakRss); files/s is over the poll
   alone, the child's wall time (start-up, imports, store creation) is shown beside it.
2. Idle poll: the same folder with `--idle-files` files, all already decided. The files of
   step 1 are known because step 1 ingested them; the files added to reach the count are
   written to the ledger directly (Ledger.record as `ingested`, then `completed`, with the size
   and mtime the SFTP listing shows), as ingesting them all would take minutes. Then a fresh
   child polls twice (first poll after a start, then a steady-state one); each must take at
   most 1 s and download nothing: no file taken or re-completed, staging empty, and the server
   saw no OPEN and sent no file bytes.
3. One large file: a `--rows` events file served over SFTP and taken by `connector once`
   against `connector import` of the same file, each a fresh child with a fresh store; wall
   times include start-up for both. Rows stored are checked with `connector dump files`.
   bench/lock_probe.py measures the longest hold of the store's write lock during `once`,
   and during a second `once` on the same store after the same bytes were put back under
   another name (stored as they arrive, then found a duplicate and taken back).
   With `--link-mb-s R` the server sends at most R MB/s (it sleeps, as a slower link would,
   leaving the CPU to the client; the small files of steps 1-2 barely notice): the report
   then also gives the link's own transfer time and how much of it `once` hid behind its
   work (100 %: `once` took max(transfer, import); 0 %: their sum).

Also, a correctness check beside the timings: one new file dropped among the idle files must be
taken by the next poll with the default `max_files` (100).

The report ends with PASS/FAIL against the targets; the exit status is always 0: a report, not
a gate. Work files go to a temporary folder under bench/out/ (git-ignored), removed at the end
unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# The existing benchmark's helpers: the cached generator output, timing a child and its peak RSS;
# and the probe of the store's write lock.
from import_bench import (
    MB,
    OUT,
    Job,
    connector_job,
    connector_script,
    connector_stored,
    events_file,
    measure,
)
from lock_probe import WriteLockProbe

SMALL_ROWS = 100  # rows per small file
MIN_FILES_PER_S = 50.0
MAX_IDLE_SECONDS = 1.0
MIN_ONCE_VS_IMPORT = 0.8
MAX_RSS_MB = 100.0  # import_bench's target for `connector import`, applied to `once` too
MAX_LOCK_HOLD = 1.0  # ... and its longest write-lock hold, in seconds
SOURCE = "small"  # the source of steps 1, 2 and the new-file check (one ledger)
PATTERN = "events_*.csv"


# --- the SFTP server, in its own process -------------------------------------------------------


def _serve(root: str, known_hosts: str, pipe: Connection, link: float | None) -> None:
    """Runs in the helper process: serve `root`, count reads, answer "stats" until "stop";
    ``link``: send at most that many bytes per second."""
    import threading
    import time

    import connector.testing.sftp as embedded
    from connector.testing import EmbeddedSFTPServer

    lock = threading.Lock()
    counts = {"opens": 0, "bytes_read": 0, "listings": 0}
    paced = {"since": 0.0, "sent": 0}  # the link's schedule: bytes sent since a moment

    def pace(size: int) -> None:
        """Sleep until ``size`` more bytes fit the link. A link idle for longer than a
        socket buffer's worth (256 KB) stores no credit: the schedule starts again from
        now. (Shorter slips are the server's own work between reads, and are made up.)"""
        if link is None:
            return
        with lock:
            now = time.monotonic()
            if now > paced["since"] + (paced["sent"] + (256 << 10)) / link:
                paced["since"], paced["sent"] = now, 0
            paced["sent"] += size
            due = paced["since"] + paced["sent"] / link
        time.sleep(max(0.0, due - now))

    def add(key: str, n: int) -> None:
        with lock:
            counts[key] += n

    class Counting(embedded.RootedSFTP):
        def open(self, path: str, flags: int, attr: Any) -> Any:
            handle = super().open(path, flags, attr)
            if not isinstance(handle, int):  # an int is an error status
                add("opens", 1)
                read = handle.read

                def counted(offset: int, length: int) -> Any:
                    data = read(offset, length)
                    if isinstance(data, bytes):
                        add("bytes_read", len(data))
                        pace(len(data))
                    return data

                handle.read = counted  # paramiko looks it up on the instance
            return handle

        def list_folder(self, path: str) -> Any:
            add("listings", 1)
            return super().list_folder(path)

    # The server looks the interface up in its module when a client connects. Patched here, in
    # this helper process only; nothing in the measured processes is touched.
    embedded.RootedSFTP = Counting
    with EmbeddedSFTPServer(Path(root)) as server:
        server.write_known_hosts(Path(known_hosts))
        pipe.send(
            {
                "host": server.host,
                "port": server.port,
                "user": server.user,
                "password": server.password,
                "fingerprint": server.fingerprint,
            }
        )
        while True:
            message = pipe.recv()
            if message == "stats":
                with lock:
                    pipe.send(dict(counts))
            else:
                break


@dataclass
class Server:
    pipe: Connection
    host: str
    port: int
    user: str
    password: str
    known_hosts: Path

    def stats(self) -> dict[str, int]:
        self.pipe.send("stats")
        stats: dict[str, int] = self.pipe.recv()
        return stats

    def url(self, folder: str) -> str:
        return f"sftp://{self.user}@{self.host}:{self.port}/{folder}"


@contextlib.contextmanager
def sftp_server(root: Path, work: Path, link: float | None = None) -> Iterator[Server]:
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    parent, child = context.Pipe()
    known_hosts = work / "known_hosts"
    process = context.Process(target=_serve, args=(str(root), str(known_hosts), child, link))
    process.daemon = True
    process.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("the SFTP server process did not start")
        info = parent.recv()
        yield Server(
            parent, info["host"], info["port"], info["user"], info["password"], known_hosts
        )
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        process.join(15)
        if process.is_alive():
            process.terminate()  # this process's own helper, by its handle
            process.join(5)


# --- the measured children ---------------------------------------------------------------------


def _worker(args: argparse.Namespace) -> int:
    """Runs in a fresh child: `poll` (time Poller.poll) or `record` (write ledger rows)."""
    import hashlib

    from connector import logs
    from connector.config import load_config
    from connector.ingest import Ingestor
    from connector.pipeline import Poller
    from connector.selection import select
    from connector.sources.registry import open_source
    from connector.store.ledger import Arrival
    from connector.store.sqlite import SQLiteStore

    logs.configure("info")  # as the CLI does by default: JSON lines to stderr (the log file)
    config = load_config(args.config)
    source = config.sources[0]
    result: dict[str, Any] = {}
    with SQLiteStore(config.store.path) as db:
        ingestor = Ingestor(
            db,
            batch_records=config.ingest.batch_records,
            commit_seconds=config.ingest.commit_interval,
        )
        poller = Poller(config, source, ingestor.store, ingestor=ingestor)
        if args.worker == "record":
            started = time.perf_counter()
            known = ingestor.ledger.known(source.name)
            recorded = 0
            now = time.time()
            with open_source(source) as remote, db.transaction():  # one commit for them all
                for candidate in select(remote.list(), source):
                    file = candidate.file
                    path = poller.path_of(file.name)
                    seen = known.get(path)
                    if seen is not None and (seen.size, seen.mtime) == (file.size, file.mtime):
                        continue
                    with (args.root / file.name).open("rb") as f:
                        sha256 = hashlib.file_digest(f, "sha256").hexdigest()
                    arrival = Arrival(source.name, path, sha256, file.size, "events", file.mtime)
                    ingestor.ledger.record(arrival, "ingested", now)
                    ingestor.ledger.mark_completed(source.name, path, "leave", now)
                    recorded += 1
            result = {"recorded": recorded, "seconds": time.perf_counter() - started}
        else:
            polls = []
            for _ in range(args.polls):
                started = time.perf_counter()
                summary = poller.poll()
                seconds = time.perf_counter() - started
                entries = list(summary.taken.values())
                statuses: dict[str, int] = {}
                for entry in entries:
                    statuses[entry.status] = statuses.get(entry.status, 0) + 1
                polls.append(
                    {
                        "seconds": seconds,
                        "taken": len(entries),
                        "statuses": statuses,
                        "rows": sum(e.rows for e in entries),
                        "rejected": sum(e.rejected for e in entries),
                        "completed": len(summary.completed),
                        "pending": len(summary.pending),
                        "names": sorted(summary.taken)[:5],
                    }
                )
            staging = config.paths.staging
            staged = [p for p in staging.rglob("*") if p.is_file()] if staging.exists() else []
            result = {"polls": polls, "staging_files": len(staged)}
    args.result.write_text(json.dumps(result), encoding="utf-8")
    return 0


@dataclass(frozen=True)
class Run:
    seconds: float  # the child's wall time
    rss_mb: float
    exit_code: int
    result: dict[str, Any]
    note: str


def run_worker(mode: str, tag: str, config: Path, timeout: float, *extra: str) -> Run:
    """Run this file as a `mode` worker; its result and log are kept as <config>.<tag>.*"""
    result = config.with_suffix(f".{tag}.json")
    log = config.with_suffix(f".{tag}.log")
    result.unlink(missing_ok=True)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--config",
        str(config),
        "--result",
        str(result),
        *extra,
    ]
    seconds, rss, code = measure(Job(argv), log, timeout)
    note = ""
    if code != 0 or not result.exists():
        lines = log.read_text(errors="replace").strip().splitlines()
        note = f"exit {code}" + (f": {lines[-1]}" if lines else "")
        return Run(seconds, rss, code, {}, note)
    return Run(seconds, rss, code, json.loads(result.read_text()), note)


# --- set-up --------------------------------------------------------------------------------------


def q(value: object) -> str:
    return json.dumps(str(value))  # a valid TOML basic string


def write_config(
    work: Path, server: Server, folder: str, *, pattern: str, max_files: int | None, after: str
) -> Path:
    """connector.toml in `work`, with its own store, staging and archive."""
    work.mkdir(parents=True, exist_ok=True)
    password = work.parent / "password"
    if not password.exists():
        fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(server.password)
    lines = [
        f"[store]\npath = {q(work / 'connector.db')}\n",
        f"[paths]\nstaging = {q(work / 'staging')}\narchive = {q(work / 'archive')}\n",
        "[[sources]]",
        f"name = {q(SOURCE if folder == 'small' else folder)}",
        f"url = {q(server.url(folder))}",
        f"known_hosts = {q(server.known_hosts)}",
        f"password_file = {q(password)}",
        'min_age = "0s"',
        f"after = {q(after)}",
    ]
    if max_files is not None:
        lines.append(f"max_files = {max_files}")
    lines += ["", "[[sources.files]]", 'kind = "events"', f"pattern = {q(pattern)}", ""]
    config = work / "connector.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


def small_name(i: int) -> str:
    return f"events_{i:06d}.csv"


def cut_small_files(pool: Path, folder: Path, files: dict[str, int]) -> int:
    """Write each file name → the header and the rows of piece i (SMALL_ROWS rows each) of
    `pool`. Streamed, pieces in order: this process stays small, as its peak RSS is the floor
    of every child it starts."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = sorted((i, name) for name, i in files.items() if not (folder / name).exists())
    with pool.open(encoding="utf-8", newline="") as f:
        header = f.readline()
        at, rows = -1, ""  # the piece in hand
        for i, name in wanted:
            while at < i:
                lines = [f.readline() for _ in range(SMALL_ROWS)]
                if not lines[-1]:
                    raise SystemExit(f"{pool} has too few rows for piece {i}")
                at, rows = at + 1, "".join(lines)
            (folder / name).write_text(header + rows, encoding="utf-8", newline="")
    return len(wanted)


def versions() -> str:
    code = (
        "import importlib.metadata as m, apsw, paramiko, json;"
        "v = lambda p: m.version(p);"
        "print(json.dumps({'connector': v('connector'), 'paramiko': paramiko.__version__,"
        " 'pydantic': v('pydantic'), 'apsw': apsw.apsw_version(),"
        " 'SQLite': apsw.sqlite_lib_version()}))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        found = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"(versions unknown: {exc!r})"
    return ", ".join(f"{k} {v}" for k, v in found.items())


# --- reporting -----------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    value: str
    target: str
    ok: bool | None  # None: not measured

    def line(self) -> str:
        verdict = "n/a" if self.ok is None else ("PASS" if self.ok else "FAIL")
        return f"{self.name:<50} {self.value:>16}  {self.target:<16} {verdict}"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


# --- the steps -----------------------------------------------------------------------------------


def step_small(args: argparse.Namespace, server: Server, root: Path, work: Path) -> list[Check]:
    n = args.small_files
    config = write_config(
        work / "small", server, "small", pattern=PATTERN, max_files=max(n, 1000), after=args.after
    )
    print(f"\n1. many small files: {n:,} files x {SMALL_ROWS} rows, one poll", flush=True)
    before = server.stats()
    run = run_worker("poll", "small", config, args.timeout, "--polls", "1")
    seen = stats_delta(before, server.stats())
    if run.exit_code != 0:
        print(f"   failed: {run.note}")
        return [
            Check(f"1 poll of {n:,} small files", "failed", f">= {MIN_FILES_PER_S:.0f}/s", False)
        ]
    poll = run.result["polls"][0]
    rate = poll["taken"] / poll["seconds"]
    complete = poll["statuses"] == {"ingested": n} and poll["rows"] == n * SMALL_ROWS
    print(
        f"   poll {poll['seconds']:.2f} s ({rate:,.1f} files/s, "
        f"{poll['rows'] / poll['seconds']:,.0f} rows/s); child wall {run.seconds:.2f} s, "
        f"peak RSS {run.rss_mb:.1f} MB\n"
        f"   taken {poll['statuses']}, {poll['rows']:,} rows, {poll['rejected']} rejected; "
        f"server: {seen['opens']:,} opens, {seen['bytes_read'] / MB:.1f} MB sent, "
        f"{seen['listings']} listings; staging left: {run.result['staging_files']} files",
        flush=True,
    )
    if not complete:
        print(f"   expected {n:,} ingested files and {n * SMALL_ROWS:,} rows: FAIL")
    return [
        Check(
            f"1 poll of {n:,} small files (after={args.after})",
            f"{rate:,.1f} files/s",
            f">= {MIN_FILES_PER_S:.0f} files/s",
            complete and rate >= MIN_FILES_PER_S,
        ),
        Check("  its child's peak RSS", f"{run.rss_mb:.1f} MB", "(info)", None),
    ]


def step_idle(
    args: argparse.Namespace, server: Server, root: Path, work: Path, pool: Path
) -> list[Check]:
    n = args.idle_files
    folder = root / "small"
    present = len(list(folder.glob(PATTERN)))
    if present < n:
        # New names (a name step 1 moved away must not come back with another mtime), cut
        # from the pieces after step 1's, wrapping around: their bytes matter little, as
        # they are written to the ledger below rather than ingested.
        pieces = max(args.small_files, args.idle_files)  # as in the pool (see main)
        top_up = {
            f"events_idle_{i:06d}.csv": (args.small_files + i) % pieces for i in range(n - present)
        }
        made = cut_small_files(pool, folder, top_up)
        print(f"\n2. idle poll: {made:,} files added to the folder", flush=True)
    else:
        print("\n2. idle poll", flush=True)
    config = write_config(
        work / "small", server, "small", pattern=PATTERN, max_files=max(n, 1000), after=args.after
    )
    record = run_worker("record", "record", config, args.timeout, "--root", str(folder))
    if record.exit_code != 0:
        print(f"   recording the ledger failed: {record.note}")
        return [Check(f"2 idle poll ({n:,} known files)", "failed", "<= 1 s", False)]
    listed = len(list(folder.glob(PATTERN)))
    print(
        f"   {listed:,} files in the folder: {listed - record.result['recorded']:,} known by "
        f"ingesting them (step 1), {record.result['recorded']:,} written to the ledger directly "
        f"({record.result['seconds']:.1f} s)",
        flush=True,
    )
    before = server.stats()
    run = run_worker("poll", "idle", config, args.timeout, "--polls", "2")
    seen = stats_delta(before, server.stats())
    if run.exit_code != 0:
        print(f"   failed: {run.note}")
        return [Check(f"2 idle poll ({listed:,} known files)", "failed", "<= 1 s", False)]
    polls = run.result["polls"]
    first, second = polls[0]["seconds"], polls[1]["seconds"]
    untouched = (
        all(p["taken"] == 0 and p["completed"] == 0 for p in polls)
        and run.result["staging_files"] == 0
        and seen["opens"] == 0
        and seen["bytes_read"] == 0
    )
    print(
        f"   first poll {first * 1000:.0f} ms, second {second * 1000:.0f} ms; child wall "
        f"{run.seconds:.2f} s, peak RSS {run.rss_mb:.1f} MB\n"
        f"   taken {sum(p['taken'] for p in polls)}, re-completed "
        f"{sum(p['completed'] for p in polls)}, staging {run.result['staging_files']} files; "
        f"server: {seen['listings']} listings, {seen['opens']} opens, {seen['bytes_read']} bytes "
        "sent",
        flush=True,
    )
    return [
        Check(
            f"2 idle poll, first after start ({listed:,} known)",
            f"{first:.3f} s",
            f"<= {MAX_IDLE_SECONDS:.0f} s",
            first <= MAX_IDLE_SECONDS,
        ),
        Check(
            "  idle poll, steady state",
            f"{second:.3f} s",
            f"<= {MAX_IDLE_SECONDS:.0f} s",
            second <= MAX_IDLE_SECONDS,
        ),
        Check(
            "  downloads during the idle polls",
            f"{seen['opens']} opens, {seen['bytes_read']} B",
            "none",
            untouched,
        ),
    ]


def step_new_among_known(
    args: argparse.Namespace, server: Server, root: Path, work: Path
) -> list[Check]:
    """One new file (newest mtime) among the known ones, default max_files: is it taken?"""
    folder = root / "small"
    listed = len(list(folder.glob(PATTERN)))
    first = folder / small_name(0)
    if not first.exists():  # moved away by after=move:...
        first = next(folder.glob(PATTERN))
    header, *rows = first.read_text(encoding="utf-8").splitlines(keepends=True)
    new = folder / "events_new.csv"
    new.write_text(header + "".join(reversed(rows)), encoding="utf-8", newline="")  # new bytes
    config = write_config(
        work / "small", server, "small", pattern=PATTERN, max_files=None, after=args.after
    )
    print(f"\n   one new file among {listed:,} known ones, default max_files:", flush=True)
    run = run_worker("poll", "new", config, args.timeout, "--polls", "1")
    if run.exit_code != 0:
        print(f"   failed: {run.note}")
        return [Check("  new file among known ones is taken", "failed", "taken", False)]
    poll = run.result["polls"][0]
    taken = poll["names"] == ["/small/events_new.csv"]
    print(f"   taken: {poll['names'] or 'nothing'} in {poll['seconds'] * 1000:.0f} ms", flush=True)
    return [
        Check(
            "  new file among known ones (max_files 100)",
            f"{poll['taken']} taken",
            "the new one",
            taken,
        )
    ]


@dataclass(frozen=True)
class Timed:
    seconds: float
    rss_mb: float
    stored: int | None
    note: str


def timed(job: Job, work: Path, timeout: float) -> Timed:
    seconds, rss, code = measure(job, work / "output.log", timeout)
    if code != 0:
        lines = (work / "output.log").read_text(errors="replace").strip().splitlines()
        return Timed(seconds, rss, None, f"exit {code}" + (f": {lines[-1]}" if lines else ""))
    stored, note = connector_stored(work)
    return Timed(seconds, rss, stored, note)


def again(
    server: Server, folder: Path, served: Path, run_dir: Path, config: Path, timeout: float
) -> tuple[Timed, float]:
    """`once` again on the store of a run that took `served`, the same bytes now under
    another name: stored as they arrive, then found a duplicate and taken back. Its timing
    and its longest write-lock hold."""
    renamed = folder / "events_large_again.csv"
    shutil.copyfile(served, renamed)  # (a new mtime too: a re-upload)
    try:
        with WriteLockProbe(run_dir / "connector.db", limit=MAX_LOCK_HOLD) as probe:
            t = timed(
                Job([str(connector_script()), "--config", str(config), "once"]), run_dir, timeout
            )
    finally:
        renamed.unlink()
    print(f"   the same bytes renamed  {t.seconds:7.2f} s  {t.note}", flush=True)
    return t, probe.holds.longest


def step_large(args: argparse.Namespace, server: Server, root: Path, work: Path) -> list[Check]:
    rows = args.rows
    csv_path = events_file(rows)
    size = csv_path.stat().st_size
    folder = root / "large"
    folder.mkdir(parents=True, exist_ok=True)
    served = folder / "events_large.csv"
    try:
        os.link(csv_path, served)
    except OSError:
        shutil.copyfile(csv_path, served)
    print(
        f"\n3. one large file: {csv_path.name}, {rows:,} rows, {size / MB:.1f} MB; "
        f"best of {args.repeat}",
        flush=True,
    )
    once: list[Timed] = []
    imported: list[Timed] = []
    locks: list[float] = []  # once's longest write-lock hold, per run
    for i in range(args.repeat):  # interleaved, so that a slow spell hurts both alike
        run_dir = work / f"large-once-{i}"
        config = write_config(
            run_dir, server, "large", pattern="*.csv", max_files=None, after="leave"
        )
        before = server.stats()
        with WriteLockProbe(run_dir / "connector.db", limit=MAX_LOCK_HOLD) as probe:
            t = timed(
                Job([str(connector_script()), "--config", str(config), "once"]),
                run_dir,
                args.timeout,
            )
        locks.append(probe.holds.longest)
        sent = stats_delta(before, server.stats())["bytes_read"]
        if sent != size:
            t = Timed(t.seconds, t.rss_mb, t.stored, f"{t.note}; server sent {sent:,} B")
        once.append(t)
        print(f"   run {i + 1} once over SFTP  {t.seconds:7.2f} s  {t.note}", flush=True)
        if i == 0:
            taken_back = again(server, folder, served, run_dir, config, args.timeout)
        import_dir = work / f"large-import-{i}"
        import_dir.mkdir()
        t = timed(connector_job(csv_path, import_dir), import_dir, args.timeout)
        imported.append(t)
        print(f"   run {i + 1} import          {t.seconds:7.2f} s  {t.note}", flush=True)

    def best(runs: list[Timed]) -> Timed | None:
        # Best time of the valid runs, worst RSS of them (memory is a ceiling).
        valid = [r for r in runs if r.stored == rows]
        if not valid:
            return None
        fastest = min(valid, key=lambda r: r.seconds)
        return Timed(fastest.seconds, max(r.rss_mb for r in valid), fastest.stored, fastest.note)

    a, b = best(once), best(imported)
    again_run, again_lock = taken_back
    print("\n   command                  seconds     rows/s    MB/s  peak RSS MB")
    for label, t in (("connector once (SFTP)", a), ("connector import", b)):
        if t is None:
            print(f"   {label:<22}  failed or stored too few rows")
            continue
        print(
            f"   {label:<22} {t.seconds:>8.2f} {rows / t.seconds:>10,.0f} "
            f"{size / MB / t.seconds:>7.1f} {t.rss_mb:>12.1f}"
        )
    ratio = b.seconds / a.seconds if a and b else None
    hidden: list[Check] = []
    if args.link_mb_s and a and b:
        transfer = size / (args.link_mb_s * MB)
        share = (transfer + b.seconds - a.seconds) / min(transfer, b.seconds)
        hidden = [
            Check(
                f"  the link's transfer alone ({args.link_mb_s:g} MB/s)",
                f"{transfer:.2f} s",
                "(info)",
                None,
            ),
            Check("  share of it hidden by once", f"{share:.0%}", "(info)", None),
        ]
    return [
        Check(
            f"3 once over SFTP / import ({rows:,} rows)",
            "failed" if ratio is None else f"{ratio:.2f}x",
            f">= {MIN_ONCE_VS_IMPORT:.2f}x",
            ratio is not None and ratio >= MIN_ONCE_VS_IMPORT,
        ),
        *hidden,
        Check(
            "  once: rows/s", "failed" if a is None else f"{rows / a.seconds:,.0f}", "(info)", None
        ),
        Check(
            "  import: rows/s",
            "failed" if b is None else f"{rows / b.seconds:,.0f}",
            "(info)",
            None,
        ),
        Check(
            "  once: longest write-lock hold",
            f"{max(locks) * 1000:,.0f} ms",
            f"<= {MAX_LOCK_HOLD * 1000:,.0f} ms",
            max(locks) <= MAX_LOCK_HOLD,
        ),
        Check(
            "  the same bytes renamed, taken back: longest write-lock hold",
            f"{again_lock * 1000:,.0f} ms"
            + ("" if "duplicate" in again_run.note else f" ({again_run.note})"),
            f"<= {MAX_LOCK_HOLD * 1000:,.0f} ms",
            again_lock <= MAX_LOCK_HOLD and "duplicate" in again_run.note,
        ),
        Check(
            "  once: peak RSS",
            "failed" if a is None else f"{a.rss_mb:.1f} MB",
            f"<= {MAX_RSS_MB:.0f} MB",
            a is not None and a.rss_mb <= MAX_RSS_MB,
        ),
        Check(
            "  import: peak RSS",
            "failed" if b is None else f"{b.rss_mb:.1f} MB",
            f"<= {MAX_RSS_MB:.0f} MB",
            b is not None and b.rss_mb <= MAX_RSS_MB,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--small-files", type=int, default=1_000, help="files for step 1")
    parser.add_argument("--idle-files", type=int, default=10_000, help="files for step 2")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of step 3's file")
    parser.add_argument("--after", default="leave", help="step 1's after: leave, move:processed")
    parser.add_argument("--repeat", type=int, default=1, help="runs of step 3 each; best counts")
    parser.add_argument("--only", default="123", help="steps to run, e.g. 12 or 3")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a run dies")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--link-mb-s", type=float, help="the server's pace in MB/s (default: none)")
    # The measured children run this file again in one of these modes.
    parser.add_argument("--worker", choices=("poll", "record"), help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--polls", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args)
    if min(args.small_files, args.idle_files, args.rows, args.repeat) < 1:
        parser.error("sizes and --repeat must be at least 1")
    if args.after != "leave" and not args.after.startswith("move:"):
        parser.error("--after is leave or move:<folder> (delete would empty the idle folder)")
    if not connector_script().exists():
        parser.error(f"no connector script at {connector_script()}: run `make test` first")

    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(f"{platform.node()}: {platform.platform()}, nproc {usable} (of {cpus}); {load()}")
    print(f"Python {sys.version.split()[0]}; {versions()}; MB = 10^6 bytes")
    print("SFTP server: EmbeddedSFTPServer in its own process (spawn); clients in fresh children")

    # The pool the small files are cut from: the generator's cached output, the same file as
    # step 3's at the default sizes.
    pool_rows = SMALL_ROWS * max(args.small_files, args.idle_files)
    pool = events_file(pool_rows) if "1" in args.only or "2" in args.only else None

    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="daemon-bench-", dir=OUT))
    checks: list[Check] = []
    try:
        root = work / "sftp"
        (root / "small").mkdir(parents=True)
        link = args.link_mb_s * MB if args.link_mb_s else None
        with sftp_server(root, work, link) as server:
            if pool is not None:
                started = time.perf_counter()
                pieces = {small_name(i): i for i in range(args.small_files)}
                made = cut_small_files(pool, root / "small", pieces)
                print(f"{made:,} small files written in {time.perf_counter() - started:.1f} s")
            if "1" in args.only:
                checks += step_small(args, server, root, work)
            if "2" in args.only:
                assert pool is not None
                checks += step_idle(args, server, root, work, pool)
                checks += step_new_among_known(args, server, root, work)
            if "3" in args.only:
                checks += step_large(args, server, root, work)
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'check':<50} {'measured':>16}  {'target':<16} verdict")
    for check in checks:
        print(check.line())
    print(f"({load()} at the end: other work on the machine slows every figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
