"""Feed benchmark: `connector feed events` of a 1,000,000-row store, and `--follow` latency.

    python bench/feed_bench.py [--rows 1000000] [--repeat 2] [--only sqlite,postgres]

On each backend (PostgreSQL in a throwaway server started by postgres_bench's helper
process, where its server programs exist) the cached events file of import_bench is
imported once, untimed, into a fresh store. Then, interleaved (f d f d ...), best of
`--repeat`:

(f) `connector feed events > /dev/null`: every event, each line with its cursor;
(d) `connector dump events > /dev/null`: the same events by the dump's one query, without
    cursors: the baseline, in the same run.

Each is a fresh child process: wall time, lines/s, output MB/s (the bytes written, counted
once by a run into a pipe) and its own peak RSS (wait4). This process imports neither
connector nor psycopg, so that its own memory does not show in its children's peak RSS.

Follow latency: `connector feed files --follow` is started on the store, then a one-row
file is imported ten times (`connector import`, in a child): measured is the time from
reading the import's summary line (printed once its final commit returned) to reading the
follower's line for that file: median and worst. Then SIGTERM: the follower must exit 0.

Targets: (f) at least 500,000 lines/s on SQLite with a peak RSS of at most 100 MB, the same
order of magnitude (50,000 lines/s) on PostgreSQL; follow latency at most 1 s on both. The
report ends with PASS/FAIL; the exit status is always 0: a report, not a gate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from import_bench import MB, Job, connector_script, events_file, measure, verdict
from postgres_bench import Server, postgres

MIN_LINES_PER_S = {"sqlite": 500_000, "postgres": 50_000}
MAX_RSS_MB = 100.0
MAX_LATENCY_S = 1.0
FOLLOWED_FILES = 10
TIMEOUT = 900.0


def connector(config: Path, *args: str) -> list[str]:
    return [str(connector_script()), "--config", str(config), *args]


@contextlib.contextmanager
def stores(only: set[str], work: Path) -> Iterator[list[tuple[str, str]]]:
    """(backend, store URL) for each backend asked for and available."""
    with contextlib.ExitStack() as stack:
        found = []
        if "sqlite" in only:
            found.append(("sqlite", f"sqlite:///{work / 'store' / 'c.db'}"))
        if "postgres" in only:
            server = stack.enter_context(postgres())
            if isinstance(server, Server):
                found.append(("postgres", stack.enter_context(server.database("feed_bench"))))
            else:
                print(f"postgres: not measured: {server}")
        yield found


def output_size(config: Path) -> tuple[int, int]:
    """Lines and bytes `feed events` prints, counted through a pipe (untimed)."""
    lines = size = 0
    with subprocess.Popen(connector(config, "feed", "events"), stdout=subprocess.PIPE) as feed:
        assert feed.stdout is not None
        while chunk := feed.stdout.read(1 << 20):
            lines += chunk.count(b"\n")
            size += len(chunk)
    return lines, size


def follow_latency(config: Path, work: Path) -> tuple[list[float], int | None]:
    """Seconds from each import's final commit to the follower's line; its exit code."""
    follower = subprocess.Popen(
        connector(config, "feed", "files", "--follow"), stdout=subprocess.PIPE, text=True
    )
    assert follower.stdout is not None
    seen = follower.stdout.readline()  # the big file: the follower is up
    assert json.loads(seen)["status"] == "ingested", seen
    latencies = []
    try:
        for n in range(FOLLOWED_FILES):
            small = work / f"small-{n}.csv"
            small.write_text(f"identifier,name\nfollowed-{n},buy\n")
            time.sleep(0.2)  # (the follower is waiting, not still reading)
            with subprocess.Popen(
                connector(config, "import", str(small), "--kind", "events"),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            ) as importing:
                assert importing.stdout is not None
                assert "ingested" in importing.stdout.readline()
                committed = time.perf_counter()
                line = json.loads(follower.stdout.readline())
                latencies.append(time.perf_counter() - committed)
                assert line["path"] == str(small), line
        follower.send_signal(signal.SIGTERM)
        return latencies, follower.wait(30)
    finally:
        follower.kill()
        follower.wait()


def run(backend: str, url: str, rows: int, repeat: int, work: Path) -> bool:
    config = work / f"{backend}.toml"
    config.write_text(
        f"[store]\nurl = {json.dumps(url)}\n[paths]\nstaging = {json.dumps(str(work / 'st'))}\n"
        f"archive = {json.dumps(str(work / 'ar'))}\n"
    )
    csv_path = events_file(rows)
    subprocess.run(
        connector(config, "import", str(csv_path), "--kind", "events"),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lines, size = output_size(config)
    runs: dict[str, list[tuple[float, float]]] = {"f": [], "d": []}
    null = Path("/dev/null")
    for _ in range(repeat):
        for key, command in (("f", ["feed", "events"]), ("d", ["dump", "events"])):
            seconds, rss, code = measure(Job(connector(config, *command)), null, TIMEOUT)
            if code != 0:
                raise RuntimeError(f"{backend} {' '.join(command)}: exit {code}")
            runs[key].append((seconds, rss))
    latencies, code = follow_latency(config, work)

    print(f"\n{backend}: {rows:,} events; `feed events` prints {lines:,} lines, {size / MB:.1f} MB")
    print("command                       seconds    lines/s    MB/s  peak RSS MB  runs (s)")
    best = {}
    for key, label in (("f", "(f) feed events"), ("d", "(d) dump events")):
        seconds = min(s for s, _ in runs[key])
        rss = max(r for _, r in runs[key])
        best[key] = seconds, rss
        times = " ".join(f"{s:.2f}" for s, _ in runs[key])
        print(
            f"{label:<28} {seconds:>8.2f} {lines / seconds:>10,.0f} {size / MB / seconds:>7.1f}"
            f" {rss:>12.1f}  {times}"
        )
    seconds, rss = best["f"]
    speed_ok = lines == rows and lines / seconds >= MIN_LINES_PER_S[backend]
    print(f"f/d {best['d'][0] / seconds:.2f}x (the baseline's time over the feed's)")
    print(
        f"f lines/s   {lines / seconds:>10,.0f}  target >= {MIN_LINES_PER_S[backend]:,}"
        f"  {verdict(speed_ok)}"
    )
    rss_ok = rss <= MAX_RSS_MB
    print(f"f RSS       {rss:>7.1f} MB  target <= {MAX_RSS_MB:.0f} MB  {verdict(rss_ok)}")
    worst = max(latencies)
    latency_ok = worst <= MAX_LATENCY_S and code == 0
    print(
        f"follow latency: median {statistics.median(latencies) * 1000:.0f} ms, worst"
        f" {worst * 1000:.0f} ms over {len(latencies)} files; target <= {MAX_LATENCY_S:g} s;"
        f" SIGTERM: exit {code}  {verdict(latency_ok)}"
    )
    return speed_ok and rss_ok and latency_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", default="sqlite,postgres")
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}; MB = 10^6 bytes")
    with (
        tempfile.TemporaryDirectory(prefix="connector-feed-bench-") as tmp,
        stores(set(args.only.split(",")), Path(tmp)) as found,
    ):
        for backend, url in found:
            (Path(tmp) / backend).mkdir()
            run(backend, url, args.rows, args.repeat, Path(tmp) / backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
