"""The embedded SQLite store: one file holding contacts, events, rejects, accepted
idempotency keys and the files ledger, so that all of them change in one transaction.

The schema is versioned with ``PRAGMA user_version``; pending migrations run once, in
order, in one transaction, so a crash mid-upgrade leaves the previous version intact.

SQLite's errors are translated here alone (``Database._faults``): a store kept locked by
another process is StoreBusy; a full disk, a read-only file system, missing permissions or
a damaged file is StoreError, one line naming the store and the cause. Both are transient:
the file in hand fails and is taken up again later, from its last commit.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from connector.errors import FatalError, StoreBusy, StoreError
from connector.localfs import cause, errno_cause, make_folder, open_private
from connector.store.feed import FEED_NUMBERING, FEED_VIEWS, FeedWaiter, Rows
from connector.store.port import Group

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
    # rows, contacts and the ledger entry become visible together (docs/guarantees.md).
    """
    CREATE TABLE pending_contacts(
        seq INTEGER PRIMARY KEY,              -- the order they are applied in
        file_id INTEGER NOT NULL,
        identifier TEXT NOT NULL,
        attributes TEXT NOT NULL              -- JSON object to merge; '{}': create if missing
    );
    CREATE INDEX pending_contacts_by_file ON pending_contacts(file_id);
    """,
    # 5: what a file delivered before its checksum was known is decided, or taken back,
    # once it is. Its events are found from its first one: an index of events by file
    # would slow every insert.
    """
    ALTER TABLE files ADD COLUMN first_event INTEGER;
    CREATE INDEX rejects_by_file ON rejects(file_id);
    """,
    # 6: failed tries of a listed file in a row, so that one failing the same way again
    # and again is set aside (quarantined) rather than retried for ever; and the remote
    # action done, so that a file moved away and then back is taken again.
    """
    ALTER TABLE files ADD COLUMN action TEXT;  -- NULL: not done, or done before v6
    -- The file that accepted a key, so that a file taken back gives back its own claims
    -- only (NULL: accepted before v6).
    ALTER TABLE idempotency_keys ADD COLUMN file_id INTEGER;
    CREATE TABLE tries(
        source TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,                -- the listing tried: a new one starts again
        mtime REAL,
        tries INTEGER NOT NULL,
        cause TEXT NOT NULL,                  -- the last failure's
        PRIMARY KEY (source, path)
    ) WITHOUT ROWID;
    """,
    # 7: processes sharing a source take turns listing it (connector.store.listings).
    """
    CREATE TABLE listings(
        source TEXT PRIMARY KEY,
        listed_at REAL NOT NULL,              -- Unix seconds, the lister's clock
        listed_by TEXT NOT NULL,              -- the process (replica) whose turn it is
        files TEXT NOT NULL                   -- JSON [[name, size, mtime], ...]: ready ones
    ) WITHOUT ROWID;
    """,
    # 8: the bytes a provisional entry's committed records were read from, so that another
    # run (or replica) that downloads the file again may go on from its cursor.
    """
    ALTER TABLE files ADD COLUMN prefix_size INTEGER;
    ALTER TABLE files ADD COLUMN prefix_sha256 TEXT;
    """,
    # 9: tenants (customer accounts): a file's checksum, the idempotency keys and the
    # contacts are known within their tenant. What was stored before belongs to "default".
    # SQLite cannot change a primary key: those tables are rebuilt.
    """
    ALTER TABLE files ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    CREATE TABLE contacts_v9(
        tenant TEXT NOT NULL,
        identifier TEXT NOT NULL,
        attributes TEXT NOT NULL,             -- JSON object
        PRIMARY KEY (tenant, identifier)
    ) WITHOUT ROWID;
    INSERT INTO contacts_v9 SELECT 'default', identifier, attributes FROM contacts;
    DROP TABLE contacts;
    ALTER TABLE contacts_v9 RENAME TO contacts;
    CREATE TABLE idempotency_keys_v9(
        tenant TEXT NOT NULL,
        key TEXT NOT NULL,
        accepted_at INTEGER NOT NULL,         -- Unix seconds, processing time
        file_id INTEGER,                      -- the file that accepted it
        PRIMARY KEY (tenant, key)
    ) WITHOUT ROWID;
    INSERT INTO idempotency_keys_v9 SELECT 'default', key, accepted_at, file_id
        FROM idempotency_keys;
    DROP TABLE idempotency_keys;
    ALTER TABLE idempotency_keys_v9 RENAME TO idempotency_keys;
    """,
    # 10: the change feed (connector.store.feed): a file takes the next number of the feed
    # clock when its entry becomes final; its events are found between its first and last
    # event's ids; the contacts it changed are kept as they were after it. Files already
    # final are numbered in the order they were recorded, and each tenant's contacts as
    # they are now are its last ingested file's changes.
    """
    ALTER TABLE files ADD COLUMN feed_seq INTEGER;
    ALTER TABLE files ADD COLUMN last_event INTEGER;
    """
    + FEED_NUMBERING
    + """
    CREATE UNIQUE INDEX files_by_feed ON files(feed_seq) WHERE feed_seq IS NOT NULL;
    CREATE TABLE feed_clock(
        seq INTEGER NOT NULL,                 -- the last number taken
        pruned INTEGER NOT NULL               -- the last number whose records were removed
    );
    INSERT INTO feed_clock SELECT coalesce(max(feed_seq), 0), 0 FROM files;
    ALTER TABLE contacts ADD COLUMN changed_by INTEGER;  -- the last file that changed it
    CREATE TABLE contact_changes(
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL,             -- the file that changed it (and its tenant)
        identifier TEXT NOT NULL,
        attributes TEXT NOT NULL              -- JSON object: all of them, after the change
    );
    CREATE INDEX contact_changes_by_file ON contact_changes(file_id);
    INSERT INTO contact_changes(file_id, identifier, attributes)
        SELECT last.id, c.identifier, c.attributes FROM contacts c JOIN (
            SELECT tenant, max(id) AS id FROM files WHERE status = 'ingested' GROUP BY tenant
        ) AS last ON last.tenant = c.tenant ORDER BY c.tenant, c.identifier;
    """
    + FEED_VIEWS,
    # 11: what operators did to the store by hand (connector.store.erasure): when, what,
    # for which tenant, why and by whom; never the data it touched.
    """
    CREATE TABLE audit(
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        tenant TEXT NOT NULL,
        sha256 TEXT,                          -- the bytes acted on, if it was a file
        reason TEXT NOT NULL,
        by_user TEXT NOT NULL                 -- the operating-system user
    );
    """,
    # 12: bytes the ledger was told to forget (`connector forget`, `replay`): their entries
    # stay, with their rows, but no longer make the same bytes a duplicate.
    """
    ALTER TABLE files ADD COLUMN forgotten_at TEXT;
    """,
    # 13: the cell (or line) that rejected a row, for the reject report (NULL: rejected
    # before the value was kept, or a file rejected whole).
    """
    ALTER TABLE rejects ADD COLUMN value TEXT;
    """,
    # 14: a file's contact upserts are staged on the contacts' rows in short
    # transactions, and shown by its final entry (connector.store.sqlite.contacts);
    # contacts_now is what readers see.
    """
    ALTER TABLE contacts ADD COLUMN staged_by INTEGER;  -- a file not yet final, maybe
    ALTER TABLE contacts ADD COLUMN staged TEXT;        -- JSON object: what it sets
    ALTER TABLE contacts ADD COLUMN staged_new INTEGER NOT NULL DEFAULT 0;  -- it creates it
    ALTER TABLE contacts ADD COLUMN staged_change INTEGER;  -- its line in contact_changes
    ALTER TABLE files ADD COLUMN staged_through TEXT;   -- its last identifier staged
    ALTER TABLE pending_contacts ADD COLUMN waits INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX pending_contacts_waiting ON pending_contacts(file_id, seq) WHERE waits;
    CREATE VIEW contacts_now AS
        SELECT tenant, identifier,
            CASE WHEN staged_by IS NOT NULL
                AND (SELECT status FROM files WHERE id = staged_by) = 'ingested'
            THEN json_patch(attributes, staged) ELSE attributes END AS attributes
        FROM contacts
        WHERE NOT staged_new OR (SELECT status FROM files WHERE id = staged_by) = 'ingested';
    """,
    # 15: a provisional file's keys are claimed in short transactions once its checksum is
    # known; from which of its events they are still to be claimed (NULL: none).
    """
    ALTER TABLE files ADD COLUMN unclaimed_from INTEGER;
    """,
    # 16: a file taken back is out of sight at once; its rows are removed afterwards, in
    # short transactions (connector.store.sqlite.takeback).
    """
    CREATE TABLE taken_back(
        file_id INTEGER PRIMARY KEY,          -- its entry is forgotten; no other gets its id
        tenant TEXT NOT NULL,
        first_event INTEGER,                  -- its events' ids, from
        last_event INTEGER,                   -- ... to
        claimed INTEGER NOT NULL,             -- its keys were claimed: given back too
        swept INTEGER NOT NULL DEFAULT 0      -- its rows are gone (the id stays taken)
    );
    """,
)


CACHE_KIB = 16_000  # each connection's page cache (a negative cache_size counts KiB)
SORT_CACHE_KIB = 2_000  # ... while it sorts a large set (see Database.small_cache)

# How long a writer waits for another process's (an `import` beside the daemon).
# Transactions last about a commit interval; a minute covers a slow disk's worst.
BUSY_TIMEOUT_MS = 60_000

# SQLite's answers that describe the store's file or disk, not a defect of ours: told as
# StoreError. Others (a constraint, SQL that does not parse) are bugs and stay as they are.
_FAULTS = (
    apsw.FullError,
    apsw.CorruptError,
    apsw.NotADBError,
    apsw.CantOpenError,
    apsw.ReadOnlyError,
    apsw.IOError,
    apsw.PermissionsError,
    apsw.NoLFSError,
    apsw.ProtocolError,
)
_BUSY = apsw.BusyError  # (LockedError is a conflict within one connection: a defect)


class _Turns:
    """First come, first served among this process's connections to one store (each
    source polls on its own): every write transaction waits its turn here. SQLite's own
    busy wait polls in sleeps of up to 100 ms, so a thread that commits and at once begins
    again (a large file, batch after batch) would otherwise starve the others."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._next = self._serving = 0

    def take(self) -> None:
        with self._changed:
            ticket = self._next
            self._next += 1
            self._changed.wait_for(lambda: self._serving == ticket)

    def give_back(self) -> None:
        with self._changed:
            self._serving += 1
            self._changed.notify_all()


_turns: dict[Path, _Turns] = {}
_turns_lock = threading.Lock()


def _turns_of(path: Path) -> _Turns:
    with _turns_lock:
        return _turns.setdefault(path.resolve(), _Turns())


def _unusable(path: Path, *, readonly: bool) -> str | None:
    """What about the file system keeps SQLite from using ``path``, if anything."""
    try:
        if path.is_dir():
            return "is a folder, not a file"
        for level in path.parents:
            if level.exists():
                if not level.is_dir():
                    return f"{level} is not a folder"
                break
        folder = path.parent
        if not folder.exists():
            return f"its folder {folder} does not exist"
        if readonly and not path.exists():
            return "no such file"
        # Even a reader needs the folder writable, for the -shm file of a WAL store.
        disk = os.statvfs(folder)
        if disk.f_flag & os.ST_RDONLY:
            return "the file system is read-only"
        access = os.R_OK | (0 if readonly else os.W_OK)
        if not os.access(folder, os.X_OK | access) or (
            path.exists() and not os.access(path, access)
        ):
            return "permission denied"
        if disk.f_bavail == 0:
            return "the disk is full"
    except OSError as exc:  # (a folder on the way we may not even look into)
        return cause(exc)
    return None


class _DataVersion:
    def __init__(self, db: Database) -> None:
        self._faults = db._faults  # (the store's own words for what fails)
        with self._faults():
            self.conn = apsw.Connection(str(db.path), flags=apsw.SQLITE_OPEN_READONLY)
            self.conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        self.version = self._version()

    def _version(self) -> int:
        with self._faults():
            [(version,)] = self.conn.execute("PRAGMA data_version").fetchall()
        assert isinstance(version, int)
        return version

    def wait(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if (version := self._version()) != self.version:
                self.version = version
                return True
            time.sleep(min(left, 0.05))
        return False

    def close(self) -> None:
        self.conn.close()


class Database:
    """An open store, shared by the threads of a process: each thread that uses it gets a
    connection of its own (an SQLite connection carries one transaction at a time).
    Durability: WAL with ``synchronous=FULL``, so a commit that returned survives power
    loss, not just a crash of this process — the remote side may delete a file as soon as
    its commit returns."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """``readonly`` opens an existing store as it is: no folder, file or migration is
        made (for `check`, which must change nothing). A store that cannot be opened is a
        StoreError naming the path and the cause."""
        self.path = path
        self._readonly = readonly
        self._turns = _turns_of(path)
        self._local = threading.local()
        self._opened: list[apsw.Connection] = []
        self._opened_lock = threading.Lock()
        with self._faults():
            if not readonly:
                make_folder(path.parent, "store folder")
                # Customer data: the file is made 0600 before SQLite opens it, whatever the
                # umask; SQLite gives its -wal and -shm files the mode of the main file.
                if not path.exists():
                    try:
                        os.close(open_private(path, os.O_RDWR))
                    except OSError as exc:
                        raise StoreError(path, cause(exc)) from exc
            if readonly:
                self._readable()
            else:
                self._migrate()

    @property
    def conn(self) -> apsw.Connection:
        """This thread's connection, opened on first use."""
        conn: apsw.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._faults():
                conn = self._connect()
            self._local.conn = conn
            with self._opened_lock:
                self._opened.append(conn)
        return conn

    def _connect(self) -> apsw.Connection:
        if self._readonly:
            conn = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READONLY)
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            return conn
        conn = apsw.Connection(str(self.path))
        conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        # Turning a new file to WAL needs it alone, and SQLite answers "locked" at once
        # rather than waiting when another process is creating it too.
        for attempt in Retrying(
            stop=stop_after_delay(10),
            wait=wait_fixed(0.05),
            retry=retry_if_exception_type(_BUSY),
            reraise=True,
        ):
            with attempt:
                conn.execute("PRAGMA journal_mode=WAL")
        # temp_store stays FILE: a multi-row statement's undo journal holds a copy of
        # every page it changes, which for the keys of a batch of a big file is most of
        # their table (25 MB on 5M rows) — better in a temp file's page cache than in
        # our memory. The page cache: 16 MB (measured: 8 MB made the writer 10% slower).
        for pragma in ("synchronous=FULL", f"cache_size=-{CACHE_KIB}"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    @contextmanager
    def _faults(self) -> Iterator[None]:
        """The one place where SQLite's errors become ours: a busy store StoreBusy, a
        file or disk fault StoreError."""
        try:
            yield
        except _BUSY as exc:
            raise StoreBusy(f"the store {self.path} stayed locked by another writer") from exc
        except _FAULTS as exc:
            raise StoreError(self.path, self._cause(exc)) from exc

    def _cause(self, exc: apsw.Error) -> str:
        """Why SQLite failed, in the user's terms. SQLite's own words for an open that
        failed are vague ("unable to open database file", even with a read-only file
        system or a file where a folder should be), so the file system is asked first."""
        if isinstance(exc, apsw.FullError):
            return "the disk is full"
        if isinstance(exc, apsw.CorruptError):
            return "the file is damaged (database disk image is malformed)"
        if isinstance(exc, apsw.NotADBError):
            return "the file is not an SQLite database"
        found = _unusable(self.path, readonly=self._readonly)
        if found is not None:
            return found
        conn = getattr(self._local, "conn", None)  # (none yet if the open itself failed)
        number = conn.system_errno if conn is not None else 0
        return errno_cause(number) if number else str(exc)

    def _readable(self) -> None:
        """A store opened as it is must have this connector's schema: a newer one is not
        understood, an older one is upgraded by the next command that may change it."""
        version = self.query("PRAGMA user_version")[0][0]
        if version > len(MIGRATIONS):
            raise FatalError(f"the store's schema v{version} is newer than this connector's")
        if version < len(MIGRATIONS):
            raise FatalError(
                f"the store's schema v{version} is older than this connector's"
                f" (v{len(MIGRATIONS)}); any command but check upgrades it"
            )

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
            if self.conn.in_transaction:  # (SQLite rolls back by itself on a full disk)
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._faults():
            return list(self.conn.execute(sql, params))

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement; returns how many rows it changed."""
        conn = self.conn
        with self._faults():
            conn.execute(sql, params)
            return conn.changes()

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of a query as they come: a table of any size in flat memory."""
        with self._faults():
            yield from self.conn.execute(sql, params)

    @contextmanager
    def reading(self) -> Iterator[Rows]:
        """Queries that read from one snapshot, each row as it comes: a read transaction
        on a read-only connection of its own, so that nothing this thread writes meanwhile
        is caught in it (writers go on, into the WAL)."""
        with self._faults():  # (around the reader's code too: its reads fail in there)
            conn = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READONLY)
            try:
                conn.set_busy_timeout(BUSY_TIMEOUT_MS)
                conn.execute("BEGIN")
                yield conn.execute
            finally:
                conn.close()  # (ends the read transaction)

    def listening(self) -> FeedWaiter:
        """Told when another connection commits: SQLite cannot announce it, so its
        data_version (a counter in shared memory: no disk read) is looked at every 50 ms."""
        return _DataVersion(self)

    @contextmanager
    def small_cache(self) -> Iterator[None]:
        """A page cache of SORT_CACHE_KIB meanwhile: SQLite's sorter takes as much memory
        as the page cache, on top of it, for a large ORDER BY."""
        self.execute(f"PRAGMA cache_size=-{SORT_CACHE_KIB}")
        try:
            yield
        finally:
            self.execute(f"PRAGMA cache_size=-{CACHE_KIB}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``with db.transaction():`` commits on success and rolls back on any exception.
        It takes the write lock at once (see ``_begin``). Nested in another transaction,
        it is a savepoint."""
        with self._faults():
            if self.conn.in_transaction:
                with self.conn:
                    yield
                return
            self._begin()
            try:
                yield
            except BaseException:
                self._end(commit=False)
                raise
            self._end(commit=True)

    def _begin(self) -> None:
        """Our turn among this process's writers, then BEGIN IMMEDIATE: the write lock at
        once, since a transaction that reads, then writes, would be refused outright (not
        made to wait) should another connection commit in between. StoreBusy if another
        process keeps the store past BUSY_TIMEOUT_MS."""
        self._turns.take()
        try:
            with self._faults():
                self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._turns.give_back()
            raise

    def _end(self, *, commit: bool) -> None:
        try:
            if commit:
                self.conn.execute("COMMIT")
        finally:
            # SQLite may have rolled back by itself (an I/O error, say): only what is open.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._turns.give_back()

    @contextmanager
    def grouped(self, seconds: float) -> Iterator[Group]:
        """Many small units of work in fewer commits (see ``Group``): the write lock is
        taken by its ``begin`` and let go by each commit, so no group holds the store much
        longer than ``seconds``. Nested in another transaction (a dry run), its commits
        are savepoints released into it."""
        with self._faults():
            if self.conn.in_transaction:
                group = Group(self._savepoint, self._release, seconds)
            else:
                group = Group(self._begin, self._end, seconds)
            with group:
                yield group

    def _savepoint(self) -> None:
        self.conn.execute("SAVEPOINT grouped")

    def _release(self, *, commit: bool) -> None:
        if not commit:
            self.conn.execute("ROLLBACK TO grouped")
        self.conn.execute("RELEASE grouped")

    @contextmanager
    def rolled_back(self) -> Iterator[None]:
        """Everything inside runs for real and is then undone: the ``--dry-run``."""
        with self._faults():
            self._begin()
            try:
                yield
            finally:
                self._end(commit=False)

    def close(self) -> None:
        """Close every thread's connection (call once the threads are done with it)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        with self._faults():
            for conn in opened:
                conn.close()


def _abort(*_: object) -> bool:
    return False


def unbind(conn: apsw.Connection, sql: str, width: int) -> None:
    """Bind NULLs to the cached statement of ``sql``, without running it.

    SQLite keeps a statement's last bindings until it is bound again, and apsw's cache keeps
    the statement: the last row of a batch (a record may be megabytes) or a batch's keys
    would stay in memory while the writer waits. A cursor's exec tracer that returns False
    stops the statement after it is bound and before it runs."""
    cursor = conn.cursor()
    cursor.exec_trace = _abort
    with contextlib.suppress(apsw.ExecTraceAbort):
        cursor.execute(sql, (None,) * width)
