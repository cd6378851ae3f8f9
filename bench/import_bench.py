"""Import benchmark: `connector import` against a stdlib baseline and SQLite's own CSV importer.

    python bench/import_bench.py [--rows 1000000] [--only a,b,c] [--repeat N]

(a) `connector import FILE --kind events` into a fresh store;
(b) bench/baseline_stream.py, the plain DictReader + json + sqlite3 importer;
(c) the sqlite3 CLI's `.import` (C code, no typing, all-TEXT table): the speed ceiling.

Each run is a fresh child process with a fresh temporary database; its wall time and its own
peak RSS (from wait4) are measured. The report ends with PASS/FAIL against the targets, but the
exit status is always 0: this is a report, not a gate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"  # git-ignored: generated files are cached here between runs
GENERATOR = BENCH / "gen_events.py"
MB = 1e6  # decimal megabytes everywhere, for file sizes and RSS alike

MIN_VS_BASELINE = 3.0  # a must import at least 3x as fast as b
MIN_VS_SQLITE = 0.75  # ... and at least 0.75x as fast as c
MAX_RSS_MB = 100.0  # ... with a peak RSS of at most 100 MB
LABELS = {"a": "(a) connector import", "b": "(b) stdlib baseline", "c": "(c) sqlite3 .import"}


@dataclass(frozen=True)
class Job:
    """One child process to time: its command line and, for the sqlite3 CLI, its script."""

    argv: list[str]
    stdin: str | None = None


@dataclass(frozen=True)
class Result:
    seconds: float
    rss_mb: float
    exit_code: int
    stored: int | None  # rows found in the store afterwards; None when it could not be read
    note: str  # the last line of output of a failed run, or what the store says


@dataclass(frozen=True)
class Importer:
    job: Callable[[Path, Path], Job]  # (csv, fresh work dir) -> the command to time
    stored: Callable[[Path], tuple[int | None, str]]  # (work dir) -> (rows stored, note)


# --- the three importers ---------------------------------------------------------------------


def connector_script() -> Path:
    # The script installed next to this interpreter, so `make bench` measures the venv's code.
    return Path(sys.executable).parent / "connector"


def connector_job(csv_path: Path, work: Path) -> Job:
    # Everything connector does to a file is timed (hashing, archive copy, ledger, store): that
    # is what a user waits for.
    config = work / "connector.toml"
    config.write_text(
        # json.dumps quotes a path as a valid TOML basic string.
        f"[store]\npath = {json.dumps(str(work / 'connector.db'))}\n\n"
        f"[paths]\nstaging = {json.dumps(str(work / 'staging'))}\n"
        f"archive = {json.dumps(str(work / 'archive'))}\n",
        encoding="utf-8",
    )
    argv = [str(connector_script()), "--config", str(config), "import", str(csv_path)]
    return Job([*argv, "--kind", "events"])


def connector_stored(work: Path) -> tuple[int | None, str]:
    # Ask connector itself (contract §3 `dump files`) rather than guess its schema: a run that
    # exits 0 without storing every row must not pass as fast.
    argv = [str(connector_script()), "--config", str(work / "connector.toml"), "dump", "files"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        files = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        if done.returncode != 0 or not files:
            return None, f"dump files: exit {done.returncode}, {len(files)} files"
        rows = sum(int(f["rows"]) for f in files)
        statuses = ",".join(sorted({str(f["status"]) for f in files}))
        rejected = sum(int(f["rejected"]) for f in files)
        duplicates = sum(int(f["duplicates"]) for f in files)
        return rows, f"{statuses}, {rejected} rejected, {duplicates} duplicates"
    except (OSError, ValueError, KeyError, TypeError, subprocess.TimeoutExpired) as exc:
        return None, f"dump files: {exc!r}"


def baseline_job(csv_path: Path, work: Path) -> Job:
    return Job([sys.executable, str(BENCH / "baseline_stream.py"), str(csv_path), str(work / "db")])


def sqlite_cli_job(csv_path: Path, work: Path) -> Job:
    cli = shutil.which("sqlite3")
    assert cli is not None  # checked before any run
    with csv_path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split(",")
    columns = ", ".join('"{}" TEXT'.format(name.replace('"', '""')) for name in header)
    quoted = '"{}"'.format(str(csv_path).replace("\\", "\\\\").replace('"', '\\"'))
    # The table is made first, all TEXT, so that .import only parses and inserts; since the table
    # exists, .import would store the header as a row, hence --skip 1.
    script = f"CREATE TABLE events ({columns});\n.mode csv\n.import --skip 1 {quoted} events\n"
    # -bail: an import error must end in a non-zero exit, not a silent partial table.
    return Job([cli, "-bail", str(work / "db")], stdin=script)


def count_events(work: Path) -> tuple[int | None, str]:
    try:
        with contextlib.closing(sqlite3.connect(work / "db")) as db:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0]), ""
    except sqlite3.Error as exc:
        return None, f"count: {exc}"


IMPORTERS = {
    "a": Importer(connector_job, connector_stored),
    "b": Importer(baseline_job, count_events),
    "c": Importer(sqlite_cli_job, count_events),
}


# --- measuring -------------------------------------------------------------------------------


def measure(job: Job, log: Path, timeout: float) -> tuple[float, float, int]:
    """Run `job`; return its wall seconds, its own peak RSS in MB and its exit code."""

    def kill() -> None:
        # The child leads its own session, so this ends it and anything it started; it may
        # also have ended just as the timer fired.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            job.argv,
            stdin=subprocess.PIPE if job.stdin is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,  # one log file: a pipe left unread could stall the child
            start_new_session=True,
        )
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            if proc.stdin is not None:
                # A child that dies before reading its script shows up in its exit status.
                with contextlib.suppress(BrokenPipeError), proc.stdin:
                    proc.stdin.write((job.stdin or "").encode())
            # wait4 reports this child's own rusage, not a max over every child reaped so far
            # as getrusage(RUSAGE_CHILDREN) would.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped above; tell Popen so
    return seconds, maxrss_mb(usage), proc.returncode


def maxrss_mb(usage: resource.struct_rusage) -> float:
    return usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024) / MB  # macOS: bytes


def run_once(importer: Importer, csv_path: Path, timeout: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="connector-bench-") as tmp:
        work = Path(tmp)
        log = work / "output.log"
        try:
            seconds, rss_mb, exit_code = measure(importer.job(csv_path, work), log, timeout)
        except OSError as exc:  # could not start it at all: report it, run the others
            return Result(0.0, 0.0, -1, None, f"not started: {exc}")
        if exit_code != 0:
            lines = log.read_text(errors="replace").strip().splitlines()
            timed_out = exit_code == -signal.SIGKILL and seconds >= timeout
            why = f"killed after {timeout:.0f} s" if timed_out else f"exit {exit_code}"
            last = f": {lines[-1]}" if lines else ""
            return Result(seconds, rss_mb, exit_code, None, why + last)
        stored, note = importer.stored(work)
        return Result(seconds, rss_mb, exit_code, stored, note)


def events_file(rows: int) -> Path:
    """The generated file for `rows`, made once and reused until the generator changes."""
    digest = f"{zlib.crc32(GENERATOR.read_bytes()):08x}"  # a cache key, not a security check
    path = OUT / f"events_{rows}_{digest}.csv"
    if not path.exists():
        for stale in OUT.glob("events_*.csv"):
            if not stale.name.endswith(f"_{digest}.csv"):
                stale.unlink()  # from an older generator: never read again, and large
        argv = [sys.executable, str(GENERATOR), "--rows", str(rows), "--out", str(path)]
        subprocess.run(argv, check=True)
    # Read it once so that every importer starts from the page cache, not whoever runs first
    # paying for the disk.
    with path.open("rb") as f:
        while f.read(1 << 20):
            pass
    return path


# --- reporting -------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a (not measured)" if ok is None else ("PASS" if ok else "FAIL")


def table(
    results: dict[str, list[Result]], labels: dict[str, str], rows: int, size: int
) -> dict[str, Result]:
    """Print each importer's line (postgres_bench's too); return each one's best run."""
    best: dict[str, Result] = {}
    print("\nimporter                seconds     rows/s    MB/s  peak RSS MB  stored")
    for key, runs in results.items():
        done = [r for r in runs if r.exit_code == 0]
        if not done:
            print(f"{labels[key]:<22} {'failed':>8}  {runs[-1].note}")
            continue
        # Best time of the repeats (the least disturbed run), but the worst RSS: memory is a
        # ceiling, and a lucky run must not hide a peak.
        run = replace(min(done, key=lambda r: r.seconds), rss_mb=max(r.rss_mb for r in done))
        best[key] = run
        stored = "?" if run.stored is None else f"{run.stored:,}"
        note = f" ({run.note})" if run.note else ""
        print(
            f"{labels[key]:<22} {run.seconds:>8.2f} {rows / run.seconds:>10,.0f}"
            f" {size / MB / run.seconds:>7.1f} {run.rss_mb:>12.1f}  {stored}{note}"
        )
    return best


def report(results: dict[str, list[Result]], rows: int, size: int) -> None:
    best = table(results, LABELS, rows, size)
    a = best.get("a")
    ran_a = "a" in results
    # A run of (a) that failed or stored too few rows passes nothing: its speed means nothing.
    valid = a is not None and a.stored == rows
    if ran_a and not valid:
        print(f"(a) did not store all {rows:,} rows: every target FAILs")
    print()
    for key, target in (("b", MIN_VS_BASELINE), ("c", MIN_VS_SQLITE)):
        other = best.get(key)
        ok: bool | None = None  # None: one side was not measured, nothing to compare
        value = ""
        if a is not None and other is not None:
            ratio = other.seconds / a.seconds  # a throughput ratio: how many times faster a is
            ok, value = valid and ratio >= target, f"{ratio:.2f}x"
        elif ran_a and other is not None:
            ok = False  # (a) ran and failed
        print(f"a/{key:<6} {value:>9}  target >= {target:.2f}x  {verdict(ok)}")
    rss = "" if a is None else f"{a.rss_mb:.1f} MB"
    rss_ok = None if not ran_a else a is not None and valid and a.rss_mb <= MAX_RSS_MB
    print(f"a RSS    {rss:>9}  target <= {MAX_RSS_MB:.0f} MB  {verdict(rss_ok)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the events file")
    parser.add_argument("--only", default="abc", help="importers to run, e.g. `a` or `b,c`")
    parser.add_argument("--repeat", type=int, default=1, help="runs per importer; best counts")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a run dies")
    args = parser.parse_args(argv)
    only = [k for k in "abc" if k in args.only]
    if not only or set(args.only) - set("abc, "):
        parser.error("--only takes a, b and c, e.g. --only a,c")
    if args.repeat < 1 or args.rows < 1:
        parser.error("--rows and --repeat must be at least 1")

    if "a" in only and not connector_script().exists():
        print(f"no connector script at {connector_script()}: skipping (a)")
        only.remove("a")
    if "c" in only and shutil.which("sqlite3") is None:
        print("the sqlite3 CLI is not on PATH: skipping (c)")
        only.remove("c")

    csv_path = events_file(args.rows)
    size = csv_path.stat().st_size
    print(
        f"{csv_path.name}: {args.rows:,} rows, {size / MB:.1f} MB; best of {args.repeat};"
        f" Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}; MB = 10^6 bytes"
    )
    results: dict[str, list[Result]] = {key: [] for key in only}
    # Interleaved (a b c a b c ...) so that a slow spell of the machine hurts all alike.
    for i in range(args.repeat):
        for key in only:
            result = run_once(IMPORTERS[key], csv_path, args.timeout)
            results[key].append(result)
            status = "ok" if result.exit_code == 0 else result.note
            print(f"  run {i + 1} {LABELS[key]:<22} {result.seconds:7.2f} s  {status}", flush=True)
    report(results, args.rows, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
