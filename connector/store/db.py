"""The embedded SQLite store: one file holding contacts, events, rejects, accepted
idempotency keys and the files ledger, so that all of them change in one transaction.

The schema is versioned with ``PRAGMA user_version``; pending migrations run once, in
order, in one transaction, so a crash mid-upgrade leaves the previous version intact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from connector.errors import FatalError

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE files(
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime REAL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('ingesting', 'ingested', 'duplicate', 'rejected', 'failed')),
        rows INTEGER NOT NULL DEFAULT 0,
        rejected INTEGER NOT NULL DEFAULT 0,
        duplicates INTEGER NOT NULL DEFAULT 0,
        cursor INTEGER NOT NULL DEFAULT 0,   -- records already committed, for a resume
        started_at TEXT NOT NULL,
        processed_at TEXT
    );
    CREATE INDEX files_by_sha256 ON files(sha256, status);
    CREATE INDEX files_by_source_path ON files(source, path);
    CREATE TABLE contacts(
        identifier TEXT PRIMARY KEY,
        attributes TEXT NOT NULL              -- JSON object
    ) WITHOUT ROWID;
    CREATE TABLE events(
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL,             -- files.id: source, path and sha256
        line INTEGER NOT NULL,
        identifier TEXT NOT NULL,
        name TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        idempotency_key TEXT,
        data TEXT NOT NULL                    -- JSON object
    );
    CREATE TABLE rejects(
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL,
        line INTEGER,                         -- NULL: the whole file was rejected
        reason TEXT NOT NULL
    );
    CREATE TABLE idempotency_keys(
        key TEXT PRIMARY KEY,
        accepted_at INTEGER NOT NULL          -- Unix seconds, processing time
    ) WITHOUT ROWID;
    """,
    # 2: when a file's remote action (after / error_dir) was done.
    """
    ALTER TABLE files ADD COLUMN completed_at TEXT;
    """,
    # 3: a file that failed before its bytes were read (a download) has no checksum yet.
    # SQLite cannot drop a NOT NULL: the table is rebuilt, ids kept.
    """
    CREATE TABLE files_v3(
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT,                          -- NULL: failed before its bytes were read
        size INTEGER NOT NULL,
        mtime REAL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('ingesting', 'ingested', 'duplicate', 'rejected', 'failed')),
        rows INTEGER NOT NULL DEFAULT 0,
        rejected INTEGER NOT NULL DEFAULT 0,
        duplicates INTEGER NOT NULL DEFAULT 0,
        cursor INTEGER NOT NULL DEFAULT 0,
        started_at TEXT NOT NULL,
        processed_at TEXT,
        completed_at TEXT
    );
    INSERT INTO files_v3 SELECT id, source, path, sha256, size, mtime, kind, status, rows,
        rejected, duplicates, cursor, started_at, processed_at, completed_at FROM files;
    DROP TABLE files;
    ALTER TABLE files_v3 RENAME TO files;
    CREATE INDEX files_by_sha256 ON files(sha256, status);
    CREATE INDEX files_by_source_path ON files(source, path);
    """,
    # 4: contact upserts wait here, in order, until their file's final entry applies them:
    # rows, contacts and the ledger entry become visible together (CONTRACT §5).
    """
    CREATE TABLE pending_contacts(
        seq INTEGER PRIMARY KEY,              -- the order they are applied in
        file_id INTEGER NOT NULL,
        identifier TEXT NOT NULL,
        attributes TEXT NOT NULL              -- JSON object to merge; '{}': create if missing
    );
    CREATE INDEX pending_contacts_by_file ON pending_contacts(file_id);
    """,
)


# How long a writer waits for another (each source polls on its own connection, and an
# `import` may run beside the daemon). Transactions last about a commit interval, except a
# file's final one, which applies all its contact upserts: a minute covers millions.
BUSY_TIMEOUT_MS = 60_000


class Database:
    """An open store. Durability: WAL with ``synchronous=FULL``, so a commit that returned
    survives power loss, not just a crash of this process — the remote side may delete a
    file as soon as its commit returns."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """``readonly`` opens an existing store as it is: no folder, file or migration is
        made (for `check`, which must change nothing)."""
        self.path = path
        try:
            if readonly:
                self.conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
                self.conn.set_busy_timeout(BUSY_TIMEOUT_MS)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = apsw.Connection(str(path))
            self.conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            # Turning a new file to WAL needs it alone, and SQLite answers "locked" at once
            # rather than waiting when another process is creating it too.
            for attempt in Retrying(
                stop=stop_after_delay(10),
                wait=wait_fixed(0.05),
                retry=retry_if_exception_type(apsw.BusyError),
                reraise=True,
            ):
                with attempt:
                    self.query("PRAGMA journal_mode=WAL")
            # temp_store stays FILE: a multi-row statement's undo journal holds a copy of
            # every page it changes, which for the keys of a batch of a big file is most of
            # their table (25 MB on 5M rows) — better in a temp file's page cache than in
            # our memory. The page cache: 16 MB (measured: 8 MB made the writer 10% slower).
            for pragma in ("synchronous=FULL", "cache_size=-16000"):
                self.conn.execute(f"PRAGMA {pragma}")
            self._migrate()
        except (apsw.Error, OSError) as exc:
            raise FatalError(f"store {path}: {exc}") from exc

    def _migrate(self) -> None:
        if self.query("PRAGMA user_version")[0][0] == len(MIGRATIONS):
            return
        # The version is read again under the write lock: two processes opening a new
        # store at once must not both create its tables.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            version = self.query("PRAGMA user_version")[0][0]
            if version > len(MIGRATIONS):
                raise FatalError(f"the store's schema v{version} is newer than this connector's")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                self.conn.execute(script)
                self.conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``with db.transaction():`` commits on success and rolls back on any exception.
        It takes the write lock at once (BEGIN IMMEDIATE): a transaction that reads, then
        writes, would otherwise be refused at once, not made to wait, should another
        connection commit in between. Nested in another transaction, it is a savepoint."""
        if self.conn.in_transaction:
            with self.conn:
                yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def grouped(self, seconds: float) -> Iterator[Callable[[], bool]]:
        """Group many small transactions into fewer commits: call ``tick()`` after each
        unit of work; it commits (and says so) once ``seconds`` have passed since the last
        commit. On an exception, everything since the last commit is rolled back. Nested
        in another transaction (a dry run), its commits are savepoints released into it."""
        conn = self.conn
        if conn.in_transaction:
            begin, commit = "SAVEPOINT grouped", "RELEASE grouped"
            rollback = "ROLLBACK TO grouped; RELEASE grouped"
        else:  # the write lock at once, as in transaction()
            begin, commit, rollback = "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"
        conn.execute(begin)
        last = time.monotonic()

        def tick() -> bool:
            nonlocal last
            if time.monotonic() - last < seconds:
                return False
            conn.execute(commit)
            conn.execute(begin)
            last = time.monotonic()
            return True

        try:
            yield tick
        except BaseException:
            conn.execute(rollback)
            raise
        conn.execute(commit)

    @contextmanager
    def rolled_back(self) -> Iterator[None]:
        """Everything inside runs for real and is then undone: the ``--dry-run``."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
