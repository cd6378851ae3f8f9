"""How long another process holds a SQLite store's write lock, measured from outside it.

    with WriteLockProbe(work / "connector.db") as probe:
        ...  # run the importer
    holds = probe.holds

A thread of the benchmark, not the importer, asks for the write lock the way any other writer
would: `BEGIN IMMEDIATE` with a busy timeout of 0, then `ROLLBACK` at once when it gets it, then
a ~3 ms sleep. A stretch of attempts that all fail with SQLITE_BUSY is a stretch during which
some other connection held the lock; the longest one is what a second writer (the daemon's
next file, an erasure, a replica) would have had to wait. Each stretch runs from its first
failed attempt to the next successful one, so it is right to about one probe interval.

The probe creates nothing: it waits for the store's file to exist in WAL mode and for its
schema, and opens it `mode=rw`. It takes the lock only for a BEGIN+ROLLBACK, so the importer
waits for it (its busy timeout is long) for well under a millisecond now and then. One side
effect: its open connection makes the importer's close not the last one, which spares the
importer the final checkpoint of at most wal_autocheckpoint (1000) pages.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

INTERVAL = 0.003  # seconds between attempts: fine enough for ms figures, ~300 probes a second
WAIT_AT_END = 2.0  # seconds the last stretch may take to end once the importer is gone


@dataclass(frozen=True)
class LockHolds:
    longest: float  # seconds: the longest stretch of busy attempts (0.0 if never busy)
    longest_at: float  # seconds from the probe's start (~ the importer's) to that stretch's
    over: int  # stretches longer than the limit given to the probe
    stretches: int  # stretches of at least one busy attempt
    busy: float  # seconds: all stretches together
    probes: int  # attempts made; 0 if the store never appeared with its schema
    error: str  # the SQLite error that ended the probe early, if any: figures incomplete


class WriteLockProbe:
    """Probe the write lock of the store at `db` from a thread, between enter and exit."""

    def __init__(self, db: Path, *, limit: float = 1.0, interval: float = INTERVAL) -> None:
        self.db = db
        self.limit = limit
        self.interval = interval
        self.holds = LockHolds(0.0, 0.0, 0, 0, 0.0, 0, "not run")
        self._stop = threading.Event()
        self._holds: list[tuple[float, float]] = []  # (start, seconds) of each stretch
        self._started = 0.0
        self._probes = 0
        self._error = ""
        self._thread = threading.Thread(target=self._run, name="write-lock-probe", daemon=True)

    def __enter__(self) -> WriteLockProbe:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        holds = [seconds for _, seconds in self._holds]
        start, longest = max(self._holds, key=lambda hold: hold[1], default=(self._started, 0.0))
        self.holds = LockHolds(
            longest=longest,
            longest_at=start - self._started,
            over=sum(1 for h in holds if h > self.limit),
            stretches=len(holds),
            busy=sum(holds),
            probes=self._probes,
            error=self._error,
        )

    def _run(self) -> None:
        try:
            conn = self._open()
            if conn is not None:
                with contextlib.closing(conn):
                    self._probe(conn)
        except sqlite3.Error as exc:  # reported with the figures, not raised in a thread
            self._error = f"{type(exc).__name__}: {exc}"

    def _open(self) -> sqlite3.Connection | None:
        """A connection to the store once it is in WAL mode with a schema; None if stopped
        first (an importer that failed before making its store)."""
        # mode=rw: the file is the importer's to create, with its own settings.
        uri = f"file:{urllib.parse.quote(str(self.db))}?mode=rw"
        while not self._stop.wait(self.interval):
            if not wal_mode(self.db):
                continue  # not there yet, or still being turned to WAL: leave it alone
            conn = sqlite3.connect(
                uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
            )
            try:
                # A WAL reader does not block the writer, so the wait for the schema is free.
                while not self._stop.is_set():
                    with contextlib.suppress(sqlite3.OperationalError):  # busy: ask again
                        if conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
                            return conn
                    self._stop.wait(self.interval)
            except BaseException:
                conn.close()
                raise
            conn.close()
        return None

    def _probe(self, conn: sqlite3.Connection) -> None:
        busy_since: float | None = None
        stopped_at: float | None = None
        while True:
            if stopped_at is None and self._stop.is_set():
                stopped_at = time.perf_counter()
            at = time.perf_counter()
            self._probes += 1
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                if busy_since is None:
                    busy_since = at
                if stopped_at is not None and at - stopped_at > WAIT_AT_END:
                    # Held past the importer's end (it left a child behind?): a hold all the
                    # same, counted up to now; it is over any limit, so it shows as a FAIL.
                    self._holds.append((busy_since, at - busy_since))
                    return
            else:
                conn.execute("ROLLBACK")
                if busy_since is not None:
                    self._holds.append((busy_since, at - busy_since))
                    busy_since = None
                if stopped_at is not None:
                    return  # the lock is free and the importer gone: nothing more to see
            time.sleep(self.interval)


def wal_mode(db: Path) -> bool:
    """Whether `db` exists and its header says WAL (file format versions 2, bytes 18-19)."""
    try:
        with db.open("rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return head[:16] == b"SQLite format 3\x00" and head[18:20] == b"\x02\x02"


def is_busy(exc: sqlite3.Error) -> bool:
    # SQLITE_BUSY and its extended codes (BUSY_RECOVERY, BUSY_SNAPSHOT, ...) share the low byte.
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "database is locked" in str(exc)
    return bool(code & 0xFF == sqlite3.SQLITE_BUSY)
