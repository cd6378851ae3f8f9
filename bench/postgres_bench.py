"""PostgreSQL import benchmark: `connector import` into a PostgreSQL store against psql's `\\copy`.

    python bench/postgres_bench.py [--rows 1000000] [--only a,d] [--repeat N]

Both import the cached events file of bench/import_bench.py (bench/gen_events.py's output) into
a fresh database on the same throwaway server (connector.testing.postgres.EmbeddedPostgres,
started by this bench; it runs with fsync off, so neither side waits for the disk):

(a) `connector import FILE --kind events` with `[store] url` = that database: everything
    connector does to a file is timed (schema creation, hashing, archive copy, typing, ledger,
    COPY of the rows, contact upserts);
(d) `psql -c "\\copy events FROM 'FILE' CSV HEADER"` into an all-TEXT table with the file's
    header columns (made beforehand, untimed): C code, no typing, no checks; the ceiling.

Each run is a fresh child process against a fresh database (dropped after the run, then a
CHECKPOINT, so that no run pays for another's WAL); runs are interleaved (a d a d ...) so that a
slow spell of the machine hurts both alike. Its wall time includes the server's work (both
clients return once their rows are committed); the peak RSS is the client's own (wait4):
connector's process for (a), psql's for (d), not the server's. Best time of the repeats, worst
RSS. That (a) stored every row is checked with `connector dump files`, (d)'s with count(*).

The server is managed from a helper process (multiprocessing, spawn), and this process imports
neither psycopg nor connector: on Linux a child's peak RSS from wait4 is at least its parent's
at the fork (the exec records the forked memory's high-water mark), so the process that starts
the measured children is kept small (~20 MB: the floor of any figure here, printed with them).

Targets: (a) at least 0.5x (d)'s rows/s, with a peak RSS of at most 100 MB. The report ends
with PASS/FAIL; the exit status is always 0: this is a report, not a gate.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

# import_bench's helpers: the cached events file, one timed child with its peak RSS, the check
# of what connector stored, the results table and the verdict's wording.
from import_bench import (
    MB,
    Importer,
    Job,
    Result,
    connector_script,
    connector_stored,
    events_file,
    maxrss_mb,
    run_once,
    table,
    verdict,
)

MIN_VS_COPY = 0.5  # a must import at least 0.5x as fast as d
MAX_RSS_MB = 100.0  # ... with a peak RSS of at most 100 MB
LABELS = {"a": "(a) connector import", "d": "(d) psql \\copy"}


# --- the server, in a helper process ------------------------------------------------------


def _serve(pipe: Connection) -> None:
    """Runs in the helper process: start the server, then make and drop databases on request
    until "stop" (or until this bench is gone: the pipe ends)."""
    import signal

    import psycopg

    from connector.testing.postgres import (
        EmbeddedPostgres,
        PostgresUnavailable,
        find_postgres_bin_dir,
    )

    # Terminated, it still stops the server (pg_ctl detaches it: it would outlive us).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        server = EmbeddedPostgres()
        folder = find_postgres_bin_dir()
    except PostgresUnavailable as exc:
        pipe.send({"error": str(exc)})
        return
    with server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        # psql of the server's own version: beside the server programs, or beside where
        # their symbolic links lead; else the first on PATH.
        psql = next(
            (
                str(c)
                for c in (folder / "psql", (folder / "postgres").resolve().parent / "psql")
                if c.is_file()
            ),
            shutil.which("psql"),
        )
        pipe.send({"version": row[0] if row else "?", "psql": psql})
        while True:
            try:
                command, name = pipe.recv()
            except EOFError:
                return
            if command == "create":
                pipe.send(server.create_database(name))
            elif command == "drop":
                server.drop_database(name)
                # Written out now, untimed: the next run starts with no dirty pages of this one.
                with psycopg.connect(server.url, autocommit=True) as conn:
                    conn.execute("CHECKPOINT")
                pipe.send(None)
            else:
                return


@dataclass
class Server:
    pipe: Connection
    version: str
    psql: Path | None

    def ask(self, command: str, name: str) -> str | None:
        self.pipe.send((command, name))
        try:
            answer: str | None = self.pipe.recv()
        except EOFError:
            raise RuntimeError(f"the PostgreSQL helper died ({command} {name})") from None
        return answer

    @contextlib.contextmanager
    def database(self, name: str) -> Iterator[str]:
        """A fresh database's URL; dropped afterwards."""
        url = self.ask("create", name)
        assert url is not None
        try:
            yield url
        finally:
            self.ask("drop", name)


@contextlib.contextmanager
def postgres() -> Iterator[Server | str]:
    """The server (or why there is none), in a helper process stopped on exit."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(120):
            raise RuntimeError("the PostgreSQL helper did not start")
        info = parent.recv()
        if "error" in info:
            yield str(info["error"])
        else:
            psql = Path(info["psql"]) if info["psql"] else None
            yield Server(parent, info["version"], psql)
    finally:
        with contextlib.suppress(OSError):
            parent.send(("stop", ""))
        process.join(60)  # (it stops the server and removes its folder first)
        if process.is_alive():
            process.terminate()  # this bench's own helper, by its handle
            process.join(10)


# --- the two importers ----------------------------------------------------------------------


def connector_job(url: str, csv_path: Path, work: Path) -> Job:
    config = work / "connector.toml"  # (where import_bench.connector_stored looks for it)
    config.write_text(
        # json.dumps quotes a string as a valid TOML basic string.
        f"[store]\nurl = {json.dumps(url)}\n\n"
        f"[paths]\nstaging = {json.dumps(str(work / 'staging'))}\n"
        f"archive = {json.dumps(str(work / 'archive'))}\n",
        encoding="utf-8",
    )
    argv = [str(connector_script()), "--config", str(config), "import", str(csv_path)]
    return Job([*argv, "--kind", "events"])


def psql(program: Path, url: str, command: str, *options: str) -> list[str]:
    # -X: no ~/.psqlrc; ON_ERROR_STOP: a failed command is a non-zero exit, not a message.
    return [str(program), "-X", "-q", "-v", "ON_ERROR_STOP=1", *options, "-d", url, "-c", command]


def psql_job(program: Path, url: str, csv_path: Path, work: Path) -> Job:
    with csv_path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split(",")
    columns = ", ".join('"{}" text'.format(name.replace('"', '""')) for name in header)
    # Made before the timer starts: (d) times the COPY alone, its ceiling.
    subprocess.run(psql(program, url, f"CREATE TABLE events ({columns})"), check=True)
    quoted = "'{}'".format(str(csv_path).replace("'", "''"))
    return Job(psql(program, url, f"\\copy events FROM {quoted} CSV HEADER"))


def count_rows(program: Path, url: str, work: Path) -> tuple[int | None, str]:
    argv = psql(program, url, "SELECT count(*) FROM events", "-A", "-t")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    try:
        return int(done.stdout), ""
    except ValueError:
        return None, f"count: exit {done.returncode} {done.stderr.strip()}"


def importer(key: str, url: str, program: Path | None) -> Importer:
    if key == "a":
        return Importer(functools.partial(connector_job, url), connector_stored)
    assert program is not None  # checked before any run
    return Importer(
        functools.partial(psql_job, program, url), functools.partial(count_rows, program, url)
    )


# --- reporting ------------------------------------------------------------------------------


def report(results: dict[str, list[Result]], rows: int, size: int) -> None:
    best = table(results, LABELS, rows, size)

    a, d = best.get("a"), best.get("d")
    ran_a = "a" in results
    # A run of (a) that failed or stored too few rows passes nothing: its speed means nothing.
    valid = (
        a is not None
        and a.stored == rows
        and all(r.stored == rows for r in results["a"] if r.exit_code == 0)
    )
    if ran_a and not valid:
        print(f"(a) did not store all {rows:,} rows in every run: every target FAILs")
    if d is not None and d.stored != rows:
        print(f"(d) stored {d.stored} rows, not {rows:,}: the yardstick is off")
    # Every child starts with this process's peak as its own (see the module's doc).
    floor = maxrss_mb(resource.getrusage(resource.RUSAGE_SELF))
    print(f"(peak RSS floor: {floor:.1f} MB, this process's own; a figure near it is the floor)")
    print()
    ok: bool | None = None  # None: one side was not measured, nothing to compare
    value = ""
    if a is not None and d is not None:
        ratio = d.seconds / a.seconds  # a throughput ratio: a's rows/s over d's
        ok, value = valid and ratio >= MIN_VS_COPY, f"{ratio:.2f}x"
    elif ran_a and d is not None:
        ok = False  # (a) ran and failed
    print(f"a/d      {value:>9}  target >= {MIN_VS_COPY:.2f}x  {verdict(ok)}")
    rss = "" if a is None else f"{a.rss_mb:.1f} MB"
    rss_ok = None if not ran_a else a is not None and valid and a.rss_mb <= MAX_RSS_MB
    print(f"a RSS    {rss:>9}  target <= {MAX_RSS_MB:.0f} MB  {verdict(rss_ok)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the events file")
    parser.add_argument("--only", default="ad", help="importers to run, e.g. `a` or `a,d`")
    parser.add_argument("--repeat", type=int, default=3, help="runs per importer; best counts")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a run dies")
    args = parser.parse_args(argv)
    only = [k for k in "ad" if k in args.only]
    if not only or set(args.only) - set("ad, "):
        parser.error("--only takes a and d, e.g. --only a,d")
    if args.repeat < 1 or args.rows < 1:
        parser.error("--rows and --repeat must be at least 1")

    if "a" in only and not connector_script().exists():
        print(f"no connector script at {connector_script()}: skipping (a)")
        only.remove("a")

    csv_path = events_file(args.rows)
    size = csv_path.stat().st_size
    with postgres() as server:
        if isinstance(server, str):
            print(f"no PostgreSQL to run against: {server}")
            return 0
        if "d" in only and server.psql is None:
            print("no psql beside the PostgreSQL server programs nor on PATH: skipping (d)")
            only.remove("d")
        print(
            f"{csv_path.name}: {args.rows:,} rows, {size / MB:.1f} MB; best of {args.repeat};"
            f" Python {sys.version.split()[0]}, PostgreSQL {server.version} (fsync off),"
            f" {server.psql}; MB = 10^6 bytes"
        )
        results: dict[str, list[Result]] = {key: [] for key in only}
        for i in range(args.repeat):
            for key in only:
                with server.database(f"bench_{key}_{i}") as url:
                    result = run_once(importer(key, url, server.psql), csv_path, args.timeout)
                results[key].append(result)
                status = "ok" if result.exit_code == 0 else result.note
                print(
                    f"  run {i + 1} {LABELS[key]:<22} {result.seconds:7.2f} s  {status}", flush=True
                )
    report(results, args.rows, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
