"""The Store port: everything the rest of the program asks of its storage.

One store holds the files ledger, contacts, events, rejects and accepted idempotency keys,
so that a file's rows and its ledger entry change in one transaction. Adapters (SQLite, the
embedded default; PostgreSQL, shared by replicas) are chosen by `[store] url`
(``connector.store.open_store``); nothing outside ``connector.store`` knows which database
it talks to.

A store is shared by the threads of a process (each source polls in its own): every thread
works in transactions of its own, which the adapter keeps apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol, Self

from connector.csvrules.records import Batch
from connector.store.erasure import Erased
from connector.store.feed import Cursor, FeedWaiter, Kind
from connector.store.ledger import Delivered, Ledger
from connector.store.listings import Listings
from connector.store.retention import Pruned

Table = Literal["contacts", "events", "rejects", "files", "audit"]
TABLES: tuple[Table, ...] = ("contacts", "events", "rejects", "files", "audit")
Stop = Callable[[], bool]  # asked while waiting for a claim: True gives up


def never() -> bool:
    return False


class End(Protocol):
    """How an adapter ends what ``begin`` began: commit (or release), or roll back."""

    def __call__(self, *, commit: bool) -> None: ...


class Group:
    """Units of work (a file's batches) committed together at most every ``seconds``:
    ``begin()`` before a unit writes, ``tick()`` after it. Between a commit and the next
    ``begin`` nothing is held, so waiting for the parser keeps no other writer out.

    The adapter gives the two ends of its transaction, ``begin`` and ``end`` (within a dry
    run's transaction, a savepoint's). As a context manager, it commits on success; on an
    exception, everything since the last commit is rolled back."""

    def __init__(self, begin: Callable[[], None], end: End, seconds: float) -> None:
        self._begin, self._end, self._seconds = begin, end, seconds
        self._open = False
        self._since = self._last = 0.0  # when the group began; its last tick (or begin)
        # How long the last commit took (writing out, syncing); before one is measured,
        # a tenth of the time is kept for it.
        self._ending = seconds / 10

    def begin(self) -> None:
        if not self._open:
            self._begin()
            self._open = True
            self._since = self._last = time.monotonic()

    def tick(self) -> bool:
        """Commit unless one more unit like the last (the wait for it included), then a
        commit like the last, surely fit in ``seconds`` (twice the unit: units vary): a
        transaction holds the store's write lock and must not overstay. Say whether it
        did."""
        now = time.monotonic()
        unit, self._last = now - self._last, now
        if not self._open or now - self._since + 2 * unit + self._ending < self._seconds:
            return False
        return self.commit()

    def commit(self) -> bool:
        """Commit now (before a wait that must not hold the store); say whether it did."""
        if not self._open:
            return False
        self.close(commit=True)
        return True

    def close(self, *, commit: bool) -> None:
        if self._open:
            self._open = False
            ending = time.monotonic()
            self._end(commit=commit)
            self._ending = time.monotonic() - ending

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self.close(commit=kind is None)


class Sink(Protocol):
    """A file's rows, written inside the caller's transaction: all of a batch, with the
    ledger's cursor that the caller moves in the same transaction, or none of it.

    A daemon stores a large file while it downloads, before its checksum says whether its
    bytes are new: those batches are ``provisional`` (their keys not claimed), then
    ``decide``d, or taken back (``discard``)."""

    def deliver(
        self, file_id: int, kind: str, batch: Batch, now: int, *, provisional: bool = False
    ) -> Delivered:
        """Store one batch: events (less those whose key was accepted within 24 hours,
        unless ``provisional``), keys, contact upserts (applied by ``finish``), rejects."""
        ...

    def decide(self, file_id: int, kind: str, start: int, now: int) -> Delivered:
        """Claim the keys of what was delivered provisionally, in file order, as
        ``deliver`` would have now: of the events with ids from ``start`` to before
        ``start + keys.DECIDED_EVENTS`` (a unit of a group; the caller goes on from there).
        The events whose key was taken are dropped (counted as duplicates, and less
        stored rows)."""
        ...

    def discard(self, file_id: int, first_event: int | None, *, claimed: bool = False) -> None:
        """Take back what the file delivered, out of sight at once; ``claimed``: its keys
        were claimed (its checksum was known), and are given back."""
        ...

    def sweep(self, stop: Callable[[], bool]) -> None:
        """Outside a transaction: remove what files taken back (or a crash) left in the
        store, in short transactions of its own (until done, or ``stop()``: a later call
        goes on)."""
        ...

    def settle(self, file_id: int, stop: Callable[[], bool]) -> None:
        """Before the transaction of the file's final entry, outside a transaction: make
        ready what that transaction shows, in short transactions of its own, so that it
        stays short (until done, or ``stop()``: a later call goes on)."""
        ...

    def finish(self, file_id: int) -> None:
        """Apply the file's contact upserts, in file order, in the transaction of its final
        ledger entry: its rows become visible with it."""
        ...

    def tidy(self, file_id: int) -> None:
        """After the file's final entry, outside a transaction: remove what served only
        to get there."""
        ...


class Store(Protocol):
    """An open store. Every adapter keeps the same guarantees: a commit that returned is
    durable (the remote side may delete a file as soon as it returns); a claim held by a
    process that died is given up; a store that cannot be reached, read or written is a
    StorageError (transient: the file in hand fails and resumes later from its last
    commit), one that stays locked past the wait is StoreBusy."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def sink(self) -> Sink: ...

    @property
    def listings(self) -> Listings:
        """Turns at listing a source shared with other processes."""
        ...

    @property
    def name(self) -> str:
        """The store as messages name it (no secret)."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """Commits on success, rolls back on any exception; nested, a savepoint."""
        ...

    def grouped(self, seconds: float) -> AbstractContextManager[Group]:
        """Many small units of work in fewer commits; on an exception, everything since the
        last commit is rolled back."""
        ...

    def rolled_back(self) -> AbstractContextManager[None]:
        """Everything inside runs for real and is then undone: the ``--dry-run``."""
        ...

    def claim(self, sha256: str, *, stop: Stop = never) -> AbstractContextManager[None]:
        """Hold the right to decide what becomes of these bytes: two runs (a daemon and an
        `import`, two sources receiving the same file) must not both ingest them. Waits
        while another run holds it, until ``stop()`` says to give up (Interrupted)."""
        ...

    def claim_place(
        self, source: str, path: str, *, wait: bool = True
    ) -> AbstractContextManager[None]:
        """Hold the right to take the file at this place: its staged download, its
        provisional entry, its remote action. Taken before any ``claim``, never after, so
        that no two runs wait for each other. ``wait=False``: PlaceBusy at once if another
        run holds it."""
        ...

    def confirm(self) -> None:
        """Renew every claim this thread holds, now; ClaimLost if one was lost (another run
        may hold it). Call just before an act the store cannot fence (the remote action)."""
        ...

    def records(
        self,
        table: Table,
        tenant: str | None = None,
        *,
        source: str | None = None,
        file: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """What ``connector dump`` prints: the table's records in the dump format, oldest
        first, as they are read (a table of any size in flat memory); ``tenant``: only that
        tenant's, else every tenant's; ``source``, ``file``: only those of that source and
        path (events, rejects and files)."""
        ...

    def feed(
        self,
        kind: Kind,
        after: Cursor,
        tenant: str | None = None,
        *,
        source: str | None = None,
        file: str | None = None,
    ) -> Generator[dict[str, Any]]:
        """What ``connector feed`` prints (``connector.store.feed``): the records of
        ``kind`` that became visible after ``after``, each with its cursor, as they are
        read; ``tenant``, ``source``, ``file``: only those of that tenant, source and
        path. UnknownCursor for a cursor it cannot go on from."""
        ...

    def listening(self) -> FeedWaiter:
        """Something to wait on for the feed to move (``feed --follow``); close it."""
        ...

    def prune(self, keep: float | None, now: float) -> Pruned:
        """Remove the records of files final more than ``keep`` seconds before ``now``
        (None: none) and the idempotency keys past their 24 hours
        (``connector.store.retention``), in short transactions."""
        ...

    def erase(
        self, tenant: str, identifiers: list[str], reason: str, user: str, now: float
    ) -> Erased:
        """Remove those contacts of ``tenant`` and their events from everywhere in the
        store, recorded in the audit trail (``connector.store.erasure``)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...
