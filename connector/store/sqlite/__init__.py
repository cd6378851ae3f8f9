"""The embedded SQLite store, the default: one file on one host, with the lock files that
keep that host's runs apart beside it."""

from __future__ import annotations

from pathlib import Path

from connector.store.adapter import Adapter
from connector.store.reports import queries
from connector.store.sqlite.db import Database
from connector.store.sqlite.locks import FileLocks
from connector.store.sqlite.sink import SQLiteSink
from connector.store.sqlite.takeback import FILE_IDS

# (JSON is kept as text; a file's contacts are shown once it is final: db.py, v14)
_QUERIES = queries(lambda column: column, "contacts_now")


class SQLiteStore(Adapter[Database]):
    """The Store port on an SQLite file (see ``Database`` for its durability and errors)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        db = Database(path, readonly=readonly)
        super().__init__(
            db,
            FileLocks((path.parent / ".locks").resolve()),
            SQLiteSink(db),
            _QUERIES,
            file_ids=FILE_IDS,
        )

    @property
    def name(self) -> str:
        return str(self.db.path)
