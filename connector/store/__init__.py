"""The store: the files ledger and the rows, behind one port (``port.Store``), with an
adapter per database, chosen by `[store] url` as sources are by scheme."""

from __future__ import annotations

from collections.abc import Callable

from connector.config import StoreConfig
from connector.store.port import Store


def _sqlite(config: StoreConfig, readonly: bool) -> Store | None:
    from connector.store.sqlite import SQLiteStore

    assert config.path is not None
    if readonly and not config.path.exists():
        return None
    return SQLiteStore(config.path, readonly=readonly)


def _postgresql(config: StoreConfig, readonly: bool) -> Store | None:
    from connector.store.postgres import PostgresStore

    return PostgresStore.open(config, readonly=readonly)


# Adapters by `StoreConfig.scheme`; each imported only when its store is opened.
ADAPTERS: dict[str, Callable[[StoreConfig, bool], Store | None]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}


def open_store(config: StoreConfig) -> Store:
    """The store, created and migrated as needed. StorageError if it cannot be reached."""
    store = ADAPTERS[config.scheme](config, False)
    assert store is not None
    return store


def open_existing(config: StoreConfig) -> Store | None:
    """The store as it is, to read only (`check` changes nothing): no file, schema or
    migration is made; None when it has not been created yet."""
    return ADAPTERS[config.scheme](config, True)
