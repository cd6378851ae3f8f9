"""The embedded SQLite store, the default: one file on one host, with the lock files that
keep that host's runs apart beside it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from connector.store.ledger import Ledger
from connector.store.listings import Listings
from connector.store.port import Group, Table
from connector.store.reports import queries, shaped
from connector.store.sqlite.db import Database
from connector.store.sqlite.locks import FileLocks
from connector.store.sqlite.sink import SQLiteSink

_QUERIES = queries(lambda column: column)  # (JSON is kept as text)


class SQLiteStore:
    """The Store port on an SQLite file (see ``Database`` for its durability and errors)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.db = Database(path, readonly=readonly)
        self.ledger = Ledger(self.db)
        self.listings = Listings(self.db)
        self.sink = SQLiteSink(self.db)
        self._locks = FileLocks((path.parent / ".locks").resolve())

    @property
    def name(self) -> str:
        return str(self.db.path)

    def transaction(self) -> AbstractContextManager[None]:
        return self.db.transaction()

    def grouped(self, seconds: float) -> AbstractContextManager[Group]:
        return self.db.grouped(seconds)

    def rolled_back(self) -> AbstractContextManager[None]:
        return self.db.rolled_back()

    def claim(self, sha256: str) -> AbstractContextManager[None]:
        return self._locks.claim(sha256)

    def claim_place(
        self, source: str, path: str, *, wait: bool = True
    ) -> AbstractContextManager[None]:
        return self._locks.claim_place(source, path, wait=wait)

    def records(self, table: Table) -> Iterator[dict[str, Any]]:
        # (a damaged store is a StoreError here, not a traceback)
        return shaped(table, self.db.rows(_QUERIES[table]))

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """SQL on this store (for tests and tools that inspect it)."""
        return self.db.query(sql, params)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
