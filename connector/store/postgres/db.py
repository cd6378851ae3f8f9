"""The PostgreSQL store's connections, transactions and errors.

A store is shared by the threads of a process: each thread gets a connection of its own, in
autocommit mode, so that a statement outside ``transaction()`` commits at once and no
thread ever sits idle in an implicit transaction; transactions are begun explicitly.

PostgreSQL's errors are translated here alone (``Database.faults``): a server that cannot
be reached, a connection lost, a server shutting down or restarting, a full disk, missing
privileges, a wrong password or a missing database are StoreError, one line naming the
store and the cause; a deadlock, a serialization failure or a lock held past
``LOCK_TIMEOUT`` is StoreBusy. Both are transient: the file in hand fails and is taken up
again later, from its last commit. A connection found broken is dropped, and the thread's
next use makes a new one. Anything else (a constraint, SQL that does not parse, a value
PostgreSQL cannot index) is a defect or a fault of the file, and stays as it is.
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from connector import replica
from connector.errors import StoreBusy, StoreError, StoreRefused
from connector.secrets import Secret
from connector.store.feed import FeedWaiter, Rows
from connector.store.port import Group

Connection = psycopg.Connection[tuple[Any, ...]]
Fence = Callable[[Connection], None]

CONNECT_TIMEOUT = 10  # seconds: an unreachable server is a StoreError this soon
# How long a writer waits for a row another one holds (a key, a contact) before StoreBusy:
# transactions last about a commit interval, except a file's final one, which applies all
# its contact upserts (as SQLite's busy timeout).
LOCK_TIMEOUT = "60s"
ROWS_AT_A_TIME = 5_000  # what a server-side cursor fetches per round trip

_BUSY = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
# Classes and codes that describe the server, the connection or our rights, not a defect
# of ours: connection exception, insufficient resources, operator intervention, system
# error, internal error (a damaged store); no privilege, a read-only server (a standby),
# a session ended for sitting idle in a transaction.
_FAULT_CLASSES = {"08", "53", "57", "58", "XX"}
_FAULT_CODES = {"42501", "25006", "25P03"}
# The server refused us: wrong credentials, no such database or role. libpq gives a failed
# connection no code, only the server's words (in English unless the server's lc_messages
# says otherwise: then it is a StoreError all the same).
_REFUSED_CODES = {"28000", "28P01", "3D000"}
_REFUSED = re.compile(
    r"password authentication failed|no pg_hba\.conf entry|(database|role) \".*\" does not exist"
)


@functools.lru_cache(maxsize=512)
def placeholders(sql: str) -> str:
    """The shared SQL's ``?`` placeholders as psycopg's ``%s`` (the ledger's statements
    hold no literal ``?`` or ``%``; a ``%`` is escaped all the same)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Listener:
    def __init__(self, conn: Connection, name: str) -> None:
        self.conn, self.name = conn, name
        try:
            conn.execute("LISTEN connector_feed")
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(name, cause(exc)) from exc

    def wait(self, seconds: float) -> bool:
        try:
            return any(True for _ in self.conn.notifies(timeout=seconds, stop_after=1))
        except psycopg.Error as exc:
            raise StoreError(self.name, cause(exc)) from exc

    def close(self) -> None:
        self.conn.close()


def cause(exc: psycopg.Error) -> str:
    """One line saying why: libpq's words for a failed connection are several lines, led
    by the address tried (the store's name says it already)."""
    text = str(exc).removeprefix("connection failed: ").removeprefix("connection is bad: ")
    text = text.strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").strip()


class _Session:
    """A thread's connection and how deep in a transaction it is (0: none)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.depth = 0


class Database:
    """An open PostgreSQL store, shared by the threads of a process. Durability: every
    session commits with ``synchronous_commit=on``, so a commit that returned is on the
    server's disk (the remote side may delete a file as soon as it returns).

    ``fence``, when set, is called first thing in every outermost transaction of a writer
    (see ``leases``): it raises to refuse a write the thread no longer has the right to."""

    def __init__(
        self, url: str, password: Secret | None, *, readonly: bool, idle_seconds: float
    ) -> None:
        """``idle_seconds``: how long a session may sit idle inside a transaction before
        the server ends it, releasing its locks (a frozen process must not hold them)."""
        parts = urlsplit(url)
        self.name = parts._replace(query="", fragment="").geturl()  # (libpq's options: none)
        self._url, self._password, self._readonly = url, password, readonly
        self._idle_ms = max(int(idle_seconds * 1000), 1000)
        self._local = threading.local()
        self._opened: list[_Session] = []
        self._opened_lock = threading.Lock()
        self.fence: Fence | None = None
        # Ours unless the URL sets them (``?connect_timeout=30`` is the operator's choice).
        given = conninfo_to_dict(url)
        # TCP keepalives: a server cut off without a word (a partition, a host gone) is
        # found out within about a lease, not the kernel's two hours.
        probe = max(1, int(idle_seconds / 3))
        defaults: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT,
            "application_name": f"connector {replica.identity()}",
            "keepalives": 1,
            "keepalives_idle": probe,
            "keepalives_interval": probe,
            "keepalives_count": 3,
        }
        self._defaults = {k: v for k, v in defaults.items() if k not in given}

    def connect(self, *, setup: str = "") -> Connection:
        """A new connection to the store, set up for our sessions; ``setup``: more SQL."""
        secret: dict[str, Any] = {} if self._password is None else {"password": self._password}
        with self.faults():
            conn: Connection = psycopg.connect(
                self._url, autocommit=True, client_encoding="utf8", **self._defaults, **secret
            )
            try:
                conn.execute(self._settings() + setup)
            except BaseException:
                conn.close()
                raise
        return conn

    def _settings(self) -> str:
        if self._readonly:
            return "SET default_transaction_read_only = on;"
        return (
            "SET synchronous_commit = on;"
            f" SET lock_timeout = '{LOCK_TIMEOUT}';"
            f" SET idle_in_transaction_session_timeout = {self._idle_ms};"
        )

    def _session(self) -> _Session:
        """This thread's session, its connection made on first use (or anew after one
        was lost)."""
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            session = _Session(self.connect())
            self._local.session = session
            with self._opened_lock:
                self._opened.append(session)
        return session

    @property
    def conn(self) -> Connection:
        """This thread's connection."""
        return self._session().conn

    @property
    def in_transaction(self) -> bool:
        session: _Session | None = getattr(self._local, "session", None)
        return session is not None and session.depth > 0

    @contextmanager
    def faults(self) -> Iterator[None]:
        """The one place where PostgreSQL's errors become ours (see the module's doc)."""
        try:
            yield
        except psycopg.Error as exc:
            translated = self._translated(exc)
            if translated is None:
                raise
            raise translated from exc

    def _translated(self, exc: psycopg.Error) -> Exception | None:
        session: _Session | None = getattr(self._local, "session", None)
        lost = session is not None and session.conn.broken
        if lost:
            self._drop()
        state = exc.sqlstate or ""
        if state in _BUSY and not lost:
            return StoreBusy(f"the store {self.name} stayed locked by another writer ({state})")
        if state in _REFUSED_CODES or (not state and _REFUSED.search(str(exc))):
            return StoreRefused(self.name, cause(exc))
        if (
            lost
            or state[:2] in _FAULT_CLASSES
            or state in _FAULT_CODES
            or (not state and isinstance(exc, psycopg.OperationalError))  # libpq's own
        ):
            return StoreError(self.name, cause(exc))
        return None

    def _drop(self) -> None:
        """Forget this thread's broken connection: its next use makes a new one."""
        session: _Session | None = getattr(self._local, "session", None)
        if session is None:
            return
        self._local.session = None
        with self._opened_lock:
            if session in self._opened:
                self._opened.remove(session)
        session.depth = 0
        session.conn.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The shared SQL (``?`` placeholders), in this thread's transaction if any."""
        with self.faults():
            cursor = self.conn.execute(placeholders(sql), params)
            return cursor.fetchall() if cursor.description is not None else []

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement of the shared SQL; returns how many rows it changed."""
        with self.faults():
            return self.conn.execute(placeholders(sql), params).rowcount

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of a query of the shared SQL (``?`` placeholders) as they come: a
        table of any size in flat memory (see ``reading``)."""
        with self.reading() as rows:
            yield from rows(sql, params)

    @contextmanager
    def reading(self) -> Iterator[Rows]:
        """Queries of the shared SQL that read from one snapshot, each row as it comes
        (server-side cursors). On a connection of its own, in a read-only transaction that
        may stay idle as long as the reader needs (it holds a snapshot, no lock)."""
        with self.faults():
            conn = self.connect(
                setup="SET idle_in_transaction_session_timeout = 0;"
                " SET default_transaction_read_only = on;"
            )
            conn.autocommit = False
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        names = itertools.count()

        def rows(sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
            with self.faults(), conn.cursor(name=f"rows{next(names)}") as cursor:
                cursor.itersize = ROWS_AT_A_TIME
                cursor.execute(placeholders(sql), params)
                yield from cursor

        try:
            yield rows
        finally:
            conn.close()

    def listening(self) -> FeedWaiter:
        """Told when a file becomes final: its number is announced on connector_feed by
        the trigger the schema has on files (delivered when its transaction commits)."""
        return _Listener(self.connect(), self.name)

    @contextmanager
    def streaming(self) -> Iterator[Connection]:
        """This thread's connection for a COPY, inside a transaction. While it streams
        rows the server waits for us, and that wait is not idleness: a process frozen
        mid-COPY would hold its locks for ever. Its statements are bounded as long as a
        session may sit idle."""
        with self.faults():
            conn = self.conn
            conn.execute(f"SET LOCAL statement_timeout = {self._idle_ms}")
            yield conn
            conn.execute("SET LOCAL statement_timeout TO DEFAULT")

    def begin(self) -> None:
        """Enter a transaction: BEGIN, then the fence; nested, a savepoint."""
        with self.faults():
            session = self._session()
            if session.depth:
                session.conn.execute(f"SAVEPOINT s{session.depth}")
                session.depth += 1
                return
            session.conn.execute("BEGIN")
            session.depth = 1
            try:
                if self.fence is not None and not self._readonly:
                    self.fence(session.conn)
            except BaseException:
                self.end(commit=False)
                raise

    def end(self, *, commit: bool) -> None:
        """Leave the innermost transaction: commit (release) or roll back. A connection
        lost meanwhile has nothing left to end (the server rolled it back)."""
        session: _Session | None = getattr(self._local, "session", None)
        if session is None or not session.depth:
            return
        with self.faults():
            session.depth -= 1
            conn = session.conn
            if session.depth:
                savepoint = f"s{session.depth}"
                if not commit:
                    conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                conn.execute(f"RELEASE SAVEPOINT {savepoint}")
            elif not commit:
                conn.execute("ROLLBACK")
            elif conn.execute("COMMIT").statusmessage != "COMMIT":
                # A transaction that failed and went on is rolled back by its COMMIT: it
                # must not look committed (the remote file would be deleted).
                raise StoreError(self.name, "the transaction was rolled back by the server")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Commits on success, rolls back on any exception; nested, a savepoint."""
        self.begin()
        try:
            yield
        except BaseException:
            self.end(commit=False)
            raise
        self.end(commit=True)

    def grouped(self, seconds: float) -> Group:
        """Many small units of work in fewer commits (see ``Group``). Inside another
        transaction (a dry run), its commits are savepoints released into it."""
        return Group(self.begin, self.end, seconds)

    @contextmanager
    def rolled_back(self) -> Iterator[None]:
        """Everything inside runs for real and is then undone: the ``--dry-run``. Its one
        transaction may wait as long as the run (hashing a large file, say) and commits
        nothing: the server is told not to end it for being idle."""
        self.begin()
        try:
            with self.faults():
                self.conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            yield
        finally:
            self.end(commit=False)

    def close(self) -> None:
        """Close every thread's connection (call once the threads are done with it)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for session in opened:
            session.conn.close()
        self._local = threading.local()
