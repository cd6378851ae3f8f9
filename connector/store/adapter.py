"""What every adapter's Store does alike: it hands transactions and the dump's reads to
its database, and claims to its claims (lock files, or leases), so that an adapter writes
only what differs (its database, claims, sink and SQL for the dump)."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, Self, TypeVar

from connector.store.erasure import Erased, erase
from connector.store.feed import Cursor, FeedWaiter, Kind, Rows, feed
from connector.store.ledger import SQL, Ledger
from connector.store.listings import Listings
from connector.store.port import Group, Sink, Stop, Table, never
from connector.store.reports import BY_FILE, shaped
from connector.store.retention import Pruned, prune


class Database(SQL, Protocol):
    """What the shared methods need of an adapter's database."""

    def grouped(self, seconds: float) -> AbstractContextManager[Group]: ...

    def rolled_back(self) -> AbstractContextManager[None]: ...

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]: ...

    def reading(self) -> AbstractContextManager[Rows]: ...

    def listening(self) -> FeedWaiter: ...

    def close(self) -> None: ...


class Claims(Protocol):
    """An adapter's claims (see ``port.Store.claim`` and ``claim_place``)."""

    def claim(self, sha256: str, *, stop: Stop = never) -> AbstractContextManager[None]: ...

    def claim_place(
        self, source: str, path: str, *, wait: bool = True
    ) -> AbstractContextManager[None]: ...

    def confirm(self) -> None: ...


DB = TypeVar("DB", bound=Database)


class Adapter(Generic[DB]):
    """The methods of the Store port that every adapter delegates the same way. ``db`` keeps
    its adapter's type: tests and tools reach into it."""

    def __init__(
        self,
        db: DB,
        claims: Claims,
        sink: Sink,
        queries: Mapping[Table, str],
        *,
        file_ids: str | None = None,
    ) -> None:
        """``queries``: the dump's SELECT per table (``reports.queries``); ``file_ids``:
        see ``Ledger``."""
        self.db = db
        self.ledger = Ledger(db, file_ids=file_ids)
        self.listings = Listings(db)
        self.sink = sink
        self._claims = claims
        self._queries = queries

    def transaction(self) -> AbstractContextManager[None]:
        return self.db.transaction()

    def grouped(self, seconds: float) -> AbstractContextManager[Group]:
        return self.db.grouped(seconds)

    def rolled_back(self) -> AbstractContextManager[None]:
        return self.db.rolled_back()

    def claim(self, sha256: str, *, stop: Stop = never) -> AbstractContextManager[None]:
        return self._claims.claim(sha256, stop=stop)

    def claim_place(
        self, source: str, path: str, *, wait: bool = True
    ) -> AbstractContextManager[None]:
        return self._claims.claim_place(source, path, wait=wait)

    def confirm(self) -> None:
        self._claims.confirm()

    def records(
        self,
        table: Table,
        tenant: str | None = None,
        *,
        source: str | None = None,
        file: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        # (a store that fails mid-read is a StoreError here, not a traceback)
        scope = (tenant, source, file) if table in BY_FILE else (tenant,)
        return shaped(table, self.db.rows(self._queries[table], scope))

    def feed(
        self,
        kind: Kind,
        after: Cursor,
        tenant: str | None = None,
        *,
        source: str | None = None,
        file: str | None = None,
    ) -> Generator[dict[str, Any]]:
        return feed(self.db.reading, kind, after, (tenant, source, file))

    def listening(self) -> FeedWaiter:
        return self.db.listening()

    def prune(self, keep: float | None, now: float) -> Pruned:
        self.sink.sweep(never)  # (what files taken back left, first)
        return prune(self.db, keep, now)

    def erase(
        self, tenant: str, identifiers: list[str], reason: str, user: str, now: float
    ) -> Erased:
        self.sink.sweep(never)  # (rows of files taken back are erased by going first)
        return erase(self.db, tenant, identifiers, reason, user, now)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """SQL on this store (for tests and tools that inspect it)."""
        return self.db.query(sql, params)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
