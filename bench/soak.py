"""Soak benchmark: the daemon under a steady trickle of files, good and bad, for minutes.

    python bench/soak.py [--duration 180] [--every 0.5] [--sample 3] [--keep]
                         [--rss-slack-mb 10] [--fd-slack 4] [--thread-slack 2]

`connector run` runs as a real subprocess on one `file://` source (a folder in a temporary
directory under bench/out/, git-ignored) with `[metrics] listen` on a free loopback port.
Every `--every` seconds a file is dropped there (written under a dot name, then renamed, so
that no half-written file is taken), in a fixed cycle of ten:

    good events; good contacts; events with rejected rows (empty identifier, a timestamp
    that is a word, one of 5,000 digits); huge-digit cells (100,000 digits, 5,000 with a
    sign); a whole-file reject (no identifier column); an undecodable file (bytes that are
    not UTF-8); good events; an empty file; a byte-for-byte copy of an earlier good file
    (a duplicate); contacts with bad addresses and a 6,000-digit cell.

Every `--sample` seconds the daemon's resident memory (VmRSS, /proc/PID/status), open
descriptors (/proc/PID/fd) and threads (/proc/PID/task) are read and printed, with the
status of /healthz, a scrape of /metrics (so the HTTP endpoint is exercised too) and the
size of the store. Sizes are in MiB.

At the end the trickle stops, the daemon is given time to take what is left, then SIGTERM.
The run FAILS (exit 1) when:
- the median of the last third of the samples exceeds the median of the first third by
  more than the slack (RSS `--rss-slack-mb`, descriptors `--fd-slack`, threads
  `--thread-slack`): growth that a steady load does not explain. RSS may grow by what
  SQLite's page cache took meanwhile as well: the cache holds pages of the store as it
  grows, up to its cap (16,000 KiB), then stays there;
- a dropped file is not decided as its kind should be (`connector dump files`: ingested,
  rejected or duplicate; not failed, not missing);
- /healthz was not 200 at some sample, the daemon did not exit 0 on SIGTERM, or a line of
  its log is not a JSON event (a traceback, a library's plain text).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from connector.store.sqlite.db import CACHE_KIB

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
MB = 1024 * 1024
# The store's page cache, on the one connection of the one source.
SQLITE_CACHE_MB = CACHE_KIB * 1024 / MB
NOW = 1_767_000_000  # event timestamps: a fixed recent second


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    fds: int
    threads: int
    health: int
    store_mb: float  # the store's files: SQLite's page cache grows with it, up to its cap


@dataclass
class Dropped:
    """The files dropped so far, and the status each must end with."""

    expected: dict[str, str] = field(default_factory=dict)  # file name -> status
    good: list[bytes] = field(default_factory=list)  # contents to copy as duplicates


def _events(n: int, rows: int) -> str:
    # n in every identifier: each file's bytes differ, so none is taken as a duplicate.
    lines = (f"user{n}_{i}@example.com,{NOW + i},{i * 7 % 1000},page{i % 13}" for i in range(rows))
    return "identifier,timestamp,amount,page\n" + "\n".join(lines) + "\n"


def _contacts(n: int, rows: int, bad: bool = False) -> str:
    lines = [f"c{n}_{i},c{n}_{i}@example.com,{20 + i % 60}" for i in range(rows)]
    if bad:
        lines += [f"c{n}_bad,not-an-address,{'7' * 6000}", f"c{n}_odd,odd@,-1"]
    return "identifier,email,age\n" + "\n".join(lines) + "\n"


def next_file(n: int, dropped: Dropped) -> tuple[str, bytes, str]:
    """The n-th file of the trickle: (name, bytes, the status it must end with)."""
    kind = n % 10
    if kind in (0, 6):
        data = _events(n, 50 + n * 37 % 450).encode()
        dropped.good.append(data)
        return f"events_{n:06d}_good.csv", data, "ingested"
    if kind == 1:
        return f"contacts_{n:06d}_good.csv", _contacts(n, 40).encode(), "ingested"
    if kind == 2:
        rows = _events(n, 30) + f",{NOW},1,x\nu{n}@example.com,soon,2,x\n"
        rows += f"v{n}@example.com,{'9' * 5000},3,x\n"
        return f"events_{n:06d}_rejects.csv", rows.encode(), "ingested"
    if kind == 3:
        rows = _events(n, 10) + f"w{n}@example.com,{NOW},{'9' * 100_000},x\n"
        rows += f"x{n}@example.com,{NOW},-{'1' * 5000},{'8' * 4301}\n"
        return f"events_{n:06d}_digits.csv", rows.encode(), "ingested"
    if kind == 4:
        return f"events_{n:06d}_noid.csv", f"name,timestamp\nu{n},{NOW}\n".encode(), "rejected"
    if kind == 5:
        data = _events(n, 20).encode() + b"u\xff\xfe@example.com,1,2,3\n"
        return f"events_{n:06d}_undecodable.csv", data, "rejected"
    if kind == 7:
        return f"events_{n:06d}_empty.csv", b"", "rejected"
    if kind == 8:
        return f"events_{n:06d}_copy.csv", dropped.good[n * 7 % len(dropped.good)], "duplicate"
    return f"contacts_{n:06d}_bad.csv", _contacts(n, 20, bad=True).encode(), "ingested"


def write_config(root: Path, port: int) -> Path:
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    config = root / "connector.toml"
    config.write_text(
        f"""[store]
path = "{root / "store" / "c.db"}"
[paths]
staging = "{root / "staging"}"
archive = "{root / "archive"}"
[metrics]
listen = "127.0.0.1:{port}"
[[sources]]
name = "drop"
url = "file://{inbox}"
interval = "5s"
min_age = "0s"
after = "move:processed"
[[sources.files]]
kind = "events"
pattern = "events_*.csv"
event_name = "visit"
[[sources.files]]
kind = "contacts"
pattern = "contacts_*.csv"
"""
    )
    return config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def sample(pid: int, started: float, port: int, store: Path) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    http_get(port, "/metrics")
    health = http_get(port, "/healthz")
    store_mb = sum(p.stat().st_size for p in store.glob("c.db*")) / MB
    return Sample(time.monotonic() - started, rss_kb * 1024 / MB, fds, threads, health, store_mb)


def pending(inbox: Path) -> list[Path]:
    return [p for p in inbox.iterdir() if p.is_file() and not p.name.startswith(".")]


def growth(samples: list[Sample], slack: dict[str, float]) -> list[str]:
    """Failures: a measure whose last-third median exceeds its first-third one by more
    than its slack. Medians: a poll in flight (a file open, a thread) is not growth. RSS
    may also grow by what SQLite's page cache took of the store meanwhile, up to its cap."""
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    failures = []
    for name, allowed in slack.items():
        before = statistics.median(getattr(s, name) for s in first)
        after = statistics.median(getattr(s, name) for s in last)
        shown = f"slack {allowed:g}"
        if name == "rss_mb":
            stores = (statistics.median(s.store_mb for s in part) for part in (first, last))
            cache = [min(size, SQLITE_CACHE_MB) for size in stores]
            allowed += cache[1] - cache[0]
            shown += f" + page cache {cache[1] - cache[0]:.1f}"
        verdict = "ok" if after - before <= allowed else "FAIL"
        print(
            f"  {name:8} first third {before:6.1f}  last third {after:6.1f}  "
            f"growth {after - before:+6.1f}  ({shown})  {verdict}"
        )
        if verdict == "FAIL":
            failures.append(f"{name} grew by {after - before:.1f} ({shown})")
    return failures


def decided(config: Path, dropped: Dropped, inbox: Path) -> list[str]:
    """Failures: a dropped file without the ledger entry its kind calls for."""
    out = subprocess.run(
        [sys.executable, "-m", "connector", "--config", str(config), "dump", "files"],
        capture_output=True,
        text=True,
        check=True,
        cwd=BENCH.parent,
    ).stdout
    entries: dict[str, list[str]] = {}
    for line in out.splitlines():
        entry = json.loads(line)
        entries.setdefault(Path(entry["path"]).name, []).append(entry["status"])
    failures = []
    for name, status in dropped.expected.items():
        if entries.get(name) != [status]:
            failures.append(f"{name}: expected [{status!r}], ledger says {entries.get(name)}")
    counts: dict[str, int] = {}
    for statuses in entries.values():
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
    print(f"  ledger: {len(entries)} files, {counts}; {len(pending(inbox))} left in the inbox")
    return failures


def log_lines(path: Path) -> tuple[dict[str, int], list[str]]:
    """Counts of the daemon's log lines by level, and the lines that are not JSON events."""
    levels: dict[str, int] = {}
    bad = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
            levels[event["level"]] = levels.get(event["level"], 0) + 1
        except (ValueError, KeyError, TypeError):
            bad.append(line)
    return levels, bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of trickle")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between files")
    parser.add_argument("--sample", type=float, default=3.0, help="seconds between samples")
    parser.add_argument("--rss-slack-mb", type=float, default=10.0)
    parser.add_argument("--fd-slack", type=float, default=4)
    parser.add_argument("--thread-slack", type=float, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    OUT.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="soak-", dir=OUT))
    port = free_port()
    config = write_config(root, port)
    inbox, store = root / "inbox", root / "store"
    log = root / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "CONNECTOR_CRASH_AT")}
    failures: list[str] = []
    samples: list[Sample] = []
    dropped = Dropped()
    with log.open("w") as err:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "connector", "--config", str(config), "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=BENCH.parent,
        )
    try:
        deadline = time.monotonic() + 30
        while http_get(port, "/healthz") != 200:
            if time.monotonic() > deadline or daemon.poll() is not None:
                print(f"the daemon did not come up; its log:\n{log.read_text()}")
                return 1
            time.sleep(0.2)
        print(
            f"connector run, pid {daemon.pid}, in {root}; {args.duration:g} s, a file every "
            f"{args.every:g} s, a sample every {args.sample:g} s"
        )
        print(
            f"{'t(s)':>6} {'rss(MiB)':>8} {'fds':>4} {'threads':>7} {'health':>6} "
            f"{'dropped':>7} {'pending':>7} {'store(MiB)':>10}"
        )
        started = time.monotonic()
        next_drop = next_sample = started
        n = 0
        while (now := time.monotonic()) < started + args.duration:
            if now >= next_drop:
                name, data, status = next_file(n, dropped)
                (inbox / f".{name}").write_bytes(data)
                (inbox / f".{name}").rename(inbox / name)
                dropped.expected[name] = status
                n += 1
                next_drop += args.every
            if now >= next_sample:
                s = sample(daemon.pid, started, port, store)
                samples.append(s)
                print(
                    f"{s.seconds:6.0f} {s.rss_mb:8.1f} {s.fds:4d} {s.threads:7d} "
                    f"{s.health:6d} {n:7d} {len(pending(inbox)):7d} {s.store_mb:10.1f}",
                    flush=True,
                )
                next_sample += args.sample
            time.sleep(max(0.0, min(next_drop, next_sample) - time.monotonic()))
        # What is left is taken within a poll or two; a minute is ample.
        deadline = time.monotonic() + 60
        while pending(inbox) and time.monotonic() < deadline:
            time.sleep(0.5)
        samples.append(sample(daemon.pid, started, port, store))
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
    if code != 0:
        failures.append(f"the daemon exited {code} on SIGTERM")

    print(f"\n{n} files dropped in {args.duration:g} s; {len(samples)} samples")
    failures += growth(
        samples, {"rss_mb": args.rss_slack_mb, "fds": args.fd_slack, "threads": args.thread_slack}
    )
    peaks = (max(getattr(s, k) for s in samples) for k in ("rss_mb", "fds", "threads"))
    print("  peak: rss {:.1f} MiB, {} fds, {} threads".format(*peaks))
    unhealthy = [s for s in samples if s.health != 200]
    if unhealthy:
        failures.append(f"/healthz not 200 at {len(unhealthy)} sample(s): {unhealthy[:3]}")
    failures += decided(config, dropped, inbox)
    levels, bad = log_lines(log)
    print(f"  log: {sum(levels.values())} JSON events {levels}, {len(bad)} other line(s)")
    if bad:
        failures.append(f"{len(bad)} log line(s) not JSON, e.g. {bad[0][:200]!r}")

    if args.keep:
        print(f"  kept: {root}")
    else:
        shutil.rmtree(root)
    for failure in failures:
        print(f"FAIL: {failure}")
    print("PASS" if not failures else f"FAIL ({len(failures)})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
