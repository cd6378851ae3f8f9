"""Import benchmark: `connector import` on six CSV shapes, against a stdlib baseline and SQLite's
own CSV importer.

    python bench/import_bench.py [--shapes all] [--rows 1000000] [--only a,b,c] [--repeat N]

For each shape, in the same run:
(a) `connector import FILE --kind events` (`--kind contacts` for the contacts shape) into a fresh
    store, while bench/lock_probe.py asks for the store's write lock from outside;
(b) bench/baseline_stream.py, the plain DictReader + json + sqlite3 importer: one INSERT per
    row, or for contacts one upsert per row;
(c) the sqlite3 CLI's `.import` (C code, no typing, all-TEXT table): the speed ceiling.

The shapes (`--shapes` takes names or numbers, e.g. `--shapes 1,contacts`), each generated
once from a fixed seed into bench/out/ and reused until its generator changes:
1. current          gen_events.py's file: --rows events over 100,000 contacts, no quotes
2. new-ids          bench/gen_shapes.py: --rows events, ~65% of them naming a contact not seen
                    earlier in the file (a pool of ~0.65 x --rows contacts), no quotes
3. quoted-1pct      (2)'s rows, one in 100 with a comma in its coupon, quoted by RFC 4180
4. all-quoted-crlf  (2)'s rows with every field quoted and CRLF line ends (csv.QUOTE_ALL, as
                    spreadsheets and pandas export)
5. contacts         --rows distinct contacts: identifier + 8 attributes (strings, numbers,
                    booleans, empty cells)
6. new-ids-5m       (2)'s shape at 5 x --rows

The goals, each PASS or FAIL per shape (throughput ratios: the other's seconds / a's seconds):
- a/b >= 3.0 and a/c >= 0.75;
- a's peak RSS <= 100 MB, and new-ids-5m's within 10% of new-ids's: memory flat in file size;
- a's longest write-lock hold <= 1.0 s: how long any other writer of the store had to wait.
A run of (a) counts only if it stored every row of its file, so none was rejected (it prints
what `connector dump files` says); the dialect of every shape is the one connector sniffs
(CSV rules §2: `,` outnumbers `;` in the header, RFC 4180 quotes, CR LF ends).

Each run is a fresh child process with a fresh temporary database; its wall time and its own
peak RSS (from wait4) are measured. Best time of --repeat, but worst RSS and lock hold. The
exit status is always 0: this is a report, not a gate.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
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

from lock_probe import LockHolds, WriteLockProbe

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"  # git-ignored: generated files are cached here between runs
GENERATOR = BENCH / "gen_events.py"
SHAPES_GENERATOR = BENCH / "gen_shapes.py"
MB = 1e6  # decimal megabytes everywhere, for file sizes and RSS alike
STORE = "connector.db"  # (a)'s store, in its work dir: where the lock probe looks

MIN_VS_BASELINE = 3.0  # a must import at least 3x as fast as b
MIN_VS_SQLITE = 0.75  # ... and at least 0.75x as fast as c
MAX_RSS_MB = 100.0  # ... with a peak RSS of at most 100 MB
MAX_RSS_GROWTH = 0.10  # ... which 5x the rows may move by at most 10%
MAX_LOCK_HOLD = 1.0  # ... holding the store's write lock for at most 1 s at a time
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
    lock: LockHolds | None = None  # the write-lock holds seen from outside, if probed


@dataclass(frozen=True)
class Importer:
    job: Callable[[Path, Path], Job]  # (csv, fresh work dir) -> the command to time
    stored: Callable[[Path], tuple[int | None, str]]  # (work dir) -> (rows stored, note)
    lock_db: str | None = None  # the store in the work dir whose write lock to probe, if any


@dataclass(frozen=True)
class Shape:
    name: str
    kind: str  # events or contacts: what `--kind` the file is imported with
    scale: int  # rows = scale x --rows
    generator: str | None  # gen_shapes.py's name for it; None: gen_events.py's file
    what: str

    def file(self, rows: int) -> Path:
        return events_file(rows) if self.generator is None else shape_file(self.generator, rows)


SHAPES = (
    Shape("current", "events", 1, None, "events over 100,000 contacts, no quotes"),
    Shape("new-ids", "events", 1, "new-ids", "events, ~65% of rows a new contact, no quotes"),
    Shape("quoted-1pct", "events", 1, "quoted-1pct", "new-ids, 1 row in 100 with a quoted cell"),
    Shape("all-quoted-crlf", "events", 1, "all-quoted-crlf", "new-ids, all quoted, CRLF"),
    Shape("contacts", "contacts", 1, "contacts", "distinct contacts, 8 attributes"),
    Shape("new-ids-5m", "events", 5, "new-ids", "new-ids at 5x the rows"),
)
RSS_BASE = {"new-ids-5m": "new-ids"}  # whose peak RSS a shape's must stay within 10% of


# --- the three importers ---------------------------------------------------------------------


def connector_script() -> Path:
    # The script installed next to this interpreter, so `make bench` measures the venv's code.
    return Path(sys.executable).parent / "connector"


def connector_job(csv_path: Path, work: Path, kind: str = "events") -> Job:
    # Everything connector does to a file is timed (hashing, archive copy, ledger, store): that
    # is what a user waits for.
    config = work / "connector.toml"
    config.write_text(
        # json.dumps quotes a path as a valid TOML basic string.
        f"[store]\npath = {json.dumps(str(work / STORE))}\n\n"
        f"[paths]\nstaging = {json.dumps(str(work / 'staging'))}\n"
        f"archive = {json.dumps(str(work / 'archive'))}\n",
        encoding="utf-8",
    )
    argv = [str(connector_script()), "--config", str(config), "import", str(csv_path)]
    return Job([*argv, "--kind", kind])


def connector_stored(work: Path) -> tuple[int | None, str]:
    # Ask connector itself (contract §3 `dump files`) rather than guess its schema: a run that
    # exits 0 without storing every row must not pass as fast. Its `rows` are the rows stored:
    # equal to the file's, they leave no room for a rejected or duplicate one.
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


def baseline_job(csv_path: Path, work: Path, kind: str = "events") -> Job:
    script = str(BENCH / "baseline_stream.py")
    return Job([sys.executable, script, str(csv_path), str(work / "db"), "--kind", kind])


def sqlite_cli_job(csv_path: Path, work: Path, table: str = "events") -> Job:
    cli = shutil.which("sqlite3")
    assert cli is not None  # checked before any run
    with csv_path.open(encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))  # (a quoted header too: the all-quoted shape has one)
    columns = ", ".join('"{}" TEXT'.format(name.replace('"', '""')) for name in header)
    quoted = '"{}"'.format(str(csv_path).replace("\\", "\\\\").replace('"', '\\"'))
    # The table is made first, all TEXT, so that .import only parses and inserts; since the table
    # exists, .import would store the header as a row, hence --skip 1. (.mode csv reads RFC 4180
    # quotes and drops the CR of a CR LF.)
    script = f"CREATE TABLE {table} ({columns});\n.mode csv\n.import --skip 1 {quoted} {table}\n"
    # -bail: an import error must end in a non-zero exit, not a silent partial table.
    return Job([cli, "-bail", str(work / "db")], stdin=script)


def count_rows(work: Path, table: str = "events") -> tuple[int | None, str]:
    try:
        with contextlib.closing(sqlite3.connect(work / "db")) as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]), ""
    except sqlite3.Error as exc:
        return None, f"count: {exc}"


def importers(kind: str) -> dict[str, Importer]:
    """The three importers of a file of `kind`; (b) and (c) store into a table named so."""
    return {
        "a": Importer(functools.partial(connector_job, kind=kind), connector_stored, STORE),
        "b": Importer(
            functools.partial(baseline_job, kind=kind), functools.partial(count_rows, table=kind)
        ),
        "c": Importer(
            functools.partial(sqlite_cli_job, table=kind), functools.partial(count_rows, table=kind)
        ),
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
        probe = (
            WriteLockProbe(work / importer.lock_db, limit=MAX_LOCK_HOLD)
            if importer.lock_db
            else None
        )
        try:
            # The probe's thread starts before the child and waits for its store to appear.
            with probe or contextlib.nullcontext():
                seconds, rss_mb, exit_code = measure(importer.job(csv_path, work), log, timeout)
        except OSError as exc:  # could not start it at all: report it, run the others
            return Result(0.0, 0.0, -1, None, f"not started: {exc}")
        lock = None if probe is None else probe.holds
        if exit_code != 0:
            lines = log.read_text(errors="replace").strip().splitlines()
            timed_out = exit_code == -signal.SIGKILL and seconds >= timeout
            why = f"killed after {timeout:.0f} s" if timed_out else f"exit {exit_code}"
            last = f": {lines[-1]}" if lines else ""
            return Result(seconds, rss_mb, exit_code, None, why + last, lock)
        stored, note = importer.stored(work)
        return Result(seconds, rss_mb, exit_code, stored, note, lock)


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
    warm(path)
    return path


def shape_file(generator: str, rows: int) -> Path:
    """gen_shapes.py's `generator` at `rows`, made once and reused until a generator changes."""
    # gen_shapes.py takes its columns and values from gen_events.py: a change to either counts.
    code = SHAPES_GENERATOR.read_bytes() + GENERATOR.read_bytes()
    digest = f"{zlib.crc32(code):08x}"  # a cache key, not a security check
    # (Not events_*: events_file would take it for its own and delete it as stale.)
    path = OUT / f"shape_{generator}_{rows}_{digest}.csv"
    if not path.exists():
        for stale in OUT.glob("shape_*.csv"):
            if not stale.name.endswith(f"_{digest}.csv"):
                stale.unlink()
        argv = [sys.executable, str(SHAPES_GENERATOR), generator, "--rows", str(rows)]
        subprocess.run([*argv, "--out", str(path)], check=True)
    warm(path)
    return path


def warm(path: Path) -> None:
    # Read it once so that every importer starts from the page cache, not whoever runs first
    # paying for the disk.
    with path.open("rb") as f:
        while f.read(1 << 20):
            pass


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


@dataclass(frozen=True)
class Outcome:
    """One shape's figures: its size and each importer's best run, for the summary."""

    shape: Shape
    rows: int
    size: int
    best: dict[str, Result]
    ran: list[str]  # the importers that ran, whether or not they succeeded


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def lock_cells(lock: LockHolds | None) -> str:
    """The lock columns of (a)'s line: its longest hold and how many passed the limit."""
    if lock is None or lock.probes == 0 or lock.error:
        return f"{'-':>10} {'-':>5}"
    return f"{ms(lock.longest):>10} {lock.over:>5}"


def shape_table(results: dict[str, list[Result]], rows: int, size: int) -> dict[str, Result]:
    """Print each importer's line of one shape; return each one's best run."""
    best: dict[str, Result] = {}
    print(
        "\nimporter                seconds     rows/s    MB/s  peak RSS MB     a/x"
        "   lock max  >1 s  stored"
    )
    for key, runs in results.items():
        done = [r for r in runs if r.exit_code == 0]
        if not done:
            print(f"{LABELS[key]:<22} {'failed':>8}  {runs[-1].note}")
            continue
        # Best time of the repeats (the least disturbed run), but the worst RSS and lock hold:
        # those are ceilings, and a lucky run must not hide a peak.
        locks = [r.lock for r in done if r.lock is not None]
        run = replace(
            min(done, key=lambda r: r.seconds),
            rss_mb=max(r.rss_mb for r in done),
            lock=max(locks, key=lambda h: (not h.error, h.longest), default=None),
        )
        best[key] = run
        a = best.get("a")
        ratio = f"{run.seconds / a.seconds:.2f}x" if key != "a" and a is not None else "-"
        locked = lock_cells(run.lock) if key == "a" else f"{'':>10} {'':>5}"
        stored = "?" if run.stored is None else f"{run.stored:,}"
        note = f" ({run.note})" if run.note else ""
        print(
            f"{LABELS[key]:<22} {run.seconds:>8.2f} {rows / run.seconds:>10,.0f}"
            f" {size / MB / run.seconds:>7.1f} {run.rss_mb:>12.1f} {ratio:>7} {locked}"
            f"  {stored}{note}"
        )
    a = best.get("a")
    if a is not None and a.lock is not None:
        h = a.lock
        if h.error or h.probes == 0:
            print(f"(a) write lock: not measured ({h.error or 'the store never had a schema'})")
        else:
            print(
                f"(a) write lock, probed {h.probes:,} times: {h.stretches:,} holds seen,"
                f" {h.busy:.2f} s held in all; longest {ms(h.longest)} from {h.longest_at:.1f} s"
                f" after the start; {h.over} over {MAX_LOCK_HOLD:.0f} s"
            )
    return best


Goal = tuple[str, bool | None]  # (the figure as shown, PASS/FAIL/None for not measured)


def goals(outcome: Outcome, outcomes: dict[str, Outcome]) -> dict[str, Goal]:
    """Each goal's figure and verdict for one shape."""
    best, rows, ran_a = outcome.best, outcome.rows, "a" in outcome.ran
    a = best.get("a")
    # A run of (a) that failed or stored too few rows passes nothing: its speed means nothing.
    valid = a is not None and a.stored == rows
    found: dict[str, Goal] = {}
    for key, target in (("b", MIN_VS_BASELINE), ("c", MIN_VS_SQLITE)):
        other = best.get(key)
        if a is not None and other is not None:
            ratio = other.seconds / a.seconds  # a throughput ratio: how many times faster a is
            # A baseline that stored too little did other work: no comparison.
            fair = other.stored == rows
            found[key] = (f"{ratio:.2f}x", (valid and ratio >= target) if fair else None)
        else:
            # (a) ran and failed: FAIL; one side not run at all: nothing to compare.
            found[key] = ("", False if ran_a and key in outcome.ran else None)
    if a is None:
        found["rss"] = found["lock"] = ("", False if ran_a else None)
    else:
        found["rss"] = (f"{a.rss_mb:.1f} MB", valid and a.rss_mb <= MAX_RSS_MB)
        h = a.lock
        if h is None or h.error or h.probes == 0:
            found["lock"] = ("", None)
        else:
            found["lock"] = (ms(h.longest), valid and h.longest <= MAX_LOCK_HOLD)
    base = outcomes.get(RSS_BASE.get(outcome.shape.name, ""))
    if base is not None:
        other = base.best.get("a")
        if a is not None and other is not None:
            growth = a.rss_mb / other.rss_mb - 1
            base_valid = other.stored == base.rows
            ok = valid and base_valid and abs(growth) <= MAX_RSS_GROWTH
            found["growth"] = (f"{growth:+.1%}", ok)
        else:
            found["growth"] = ("", False if ran_a else None)
    return found


GOALS = {
    "b": f"a/b >= {MIN_VS_BASELINE:.2f}x",
    "c": f"a/c >= {MIN_VS_SQLITE:.2f}x",
    "rss": f"RSS <= {MAX_RSS_MB:.0f} MB",
    "lock": f"lock <= {ms(MAX_LOCK_HOLD)}",
    "growth": f"RSS vs base <= {MAX_RSS_GROWTH:.0%}",
}


def summary(outcomes: dict[str, Outcome]) -> None:
    print("\nsummary: (a) against each goal, per shape")
    print((f"{'shape':<16}" + "".join(f"  {title:<20}" for title in GOALS.values())).rstrip())
    passed = failed = 0
    failures: list[str] = []
    for outcome in outcomes.values():
        found = goals(outcome, outcomes)
        cells = []
        missed = []
        for key in GOALS:
            if key not in found:
                cells.append(f"  {'':<20}")
                continue
            figure, ok = found[key]
            shown = "PASS" if ok else ("n/a" if ok is None else "FAIL")
            cells.append(f"  {f'{figure} {shown}'.strip():<20}")
            passed += ok is True
            if ok is False:
                missed.append(GOALS[key])
        print(f"{outcome.shape.name:<16}" + "".join(cells).rstrip())
        a = outcome.best.get("a")
        if "a" in outcome.ran and (a is None or a.stored != outcome.rows):
            print(f"{'':<16}  (a) did not store all {outcome.rows:,} rows: every goal FAILs")
        failed += len(missed)
        if missed:
            failures.append(f"{outcome.shape.name} ({', '.join(missed)})")
    verdicts = f"\n{passed} goals PASS, {failed} FAIL"
    print(verdicts + (": " + "; ".join(failures) if failures else ""))


def pick_shapes(spec: str) -> list[Shape] | None:
    """The shapes `--shapes` names, by name or number, in their own order; None if unknown."""
    if spec.strip() == "all":
        return list(SHAPES)
    wanted = {part.strip() for part in spec.split(",") if part.strip()}
    picked = [s for i, s in enumerate(SHAPES, 1) if s.name in wanted or str(i) in wanted]
    known = {s.name for s in SHAPES} | {str(i) for i in range(1, len(SHAPES) + 1)}
    return picked if picked and wanted <= known else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes",
        default="all",
        help="shapes to run, by name or number: " + ", ".join(s.name for s in SHAPES),
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows of each shape (new-ids-5m: 5x as many)"
    )
    parser.add_argument("--only", default="abc", help="importers to run, e.g. `a` or `b,c`")
    parser.add_argument("--repeat", type=int, default=1, help="runs per importer; best counts")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds before a run dies")
    args = parser.parse_args(argv)
    only = [k for k in "abc" if k in args.only]
    if not only or set(args.only) - set("abc, "):
        parser.error("--only takes a, b and c, e.g. --only a,c")
    if args.repeat < 1 or args.rows < 1:
        parser.error("--rows and --repeat must be at least 1")
    shapes = pick_shapes(args.shapes)
    if shapes is None:
        parser.error(f"--shapes takes `all` or some of {', '.join(s.name for s in SHAPES)}")

    if "a" in only and not connector_script().exists():
        print(f"no connector script at {connector_script()}: skipping (a)")
        only.remove("a")
    if "c" in only and shutil.which("sqlite3") is None:
        print("the sqlite3 CLI is not on PATH: skipping (c)")
        only.remove("c")

    print(
        f"best of {args.repeat}; Python {sys.version.split()[0]}; SQLite: connector's"
        f" {apsw_version()}, the baseline's {sqlite3.sqlite_version}, the CLI's"
        f" {sqlite_cli_version()}; MB = 10^6 bytes"
    )
    outcomes: dict[str, Outcome] = {}
    for number, shape in enumerate(shapes, 1):
        rows = args.rows * shape.scale
        csv_path = shape.file(rows)
        size = csv_path.stat().st_size
        print(
            f"\n== {number}/{len(shapes)} {shape.name}: {shape.what}, --kind {shape.kind};"
            f" {csv_path.name}: {rows:,} rows, {size / MB:.1f} MB"
        )
        runners = importers(shape.kind)
        results: dict[str, list[Result]] = {key: [] for key in only}
        # Interleaved (a b c a b c ...) so that a slow spell of the machine hurts all alike.
        for i in range(args.repeat):
            for key in only:
                result = run_once(runners[key], csv_path, args.timeout)
                results[key].append(result)
                status = "ok" if result.exit_code == 0 else result.note
                if result.lock is not None and result.lock.probes:
                    status += f", longest write-lock hold {ms(result.lock.longest)}"
                print(
                    f"  run {i + 1} {LABELS[key]:<22} {result.seconds:7.2f} s  {status}", flush=True
                )
        best = shape_table(results, rows, size)
        outcomes[shape.name] = Outcome(shape, rows, size, best, only)
    summary(outcomes)
    return 0


def apsw_version() -> str:
    try:
        import apsw  # connector's SQLite: the venv's, which is this interpreter's
    except ImportError:
        return "?"
    return str(apsw.sqlite_lib_version())


def sqlite_cli_version() -> str:
    cli = shutil.which("sqlite3")
    if cli is None:
        return "-"
    done = subprocess.run([cli, "-version"], capture_output=True, text=True, check=False)
    return (done.stdout.split() or ["?"])[0]


if __name__ == "__main__":
    sys.exit(main())
