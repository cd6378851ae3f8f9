"""The PostgreSQL store: one database shared by replicas, on one host or several, that
keep apart through leases in it (``leases``)."""

from __future__ import annotations

from connector.config import StoreConfig
from connector.errors import ConfigError, StoreRefused
from connector.secrets import Secret, store_password
from connector.store.adapter import Adapter
from connector.store.postgres.db import Database
from connector.store.postgres.leases import Leases
from connector.store.postgres.schema import migrate, readable
from connector.store.postgres.sink import PostgresSink
from connector.store.reports import queries

_QUERIES = queries(lambda column: f"{column}::text")  # (jsonb as text: no parse, no dump)


class PostgresStore(Adapter[Database]):
    """The Store port on a PostgreSQL database (see ``Database`` for its durability and
    errors, ``leases`` for its claims)."""

    def __init__(
        self,
        url: str,
        *,
        password: Secret | None = None,
        lease: float = 30.0,
        readonly: bool = False,
    ) -> None:
        """Connect, and create or migrate the schema (unless ``readonly``: nothing is
        made, and every transaction is read-only; see ``open``). A store that cannot be
        reached is a StoreError naming it and the cause."""
        db = Database(url, password, readonly=readonly, idle_seconds=lease)
        try:
            db.conn  # noqa: B018 (opens this thread's connection: faults show at once)
            if not readonly:
                migrate(db)
        except StoreRefused as exc:  # at start: the config names the wrong store or password
            db.close()
            raise ConfigError([str(exc)]) from None
        except BaseException:
            db.close()
            raise
        self._leases = Leases(db, lease)
        super().__init__(db, self._leases, PostgresSink(db), _QUERIES)
        db.fence = self._leases.fence

    @classmethod
    def open(cls, config: StoreConfig, *, readonly: bool) -> PostgresStore | None:
        """The store of ``config``; ``readonly``: as it is (``connector check`` changes
        nothing), None if it has no schema yet, FatalError if not this connector's."""
        assert config.url is not None
        store = cls(
            config.url, password=store_password(config), lease=config.lease, readonly=readonly
        )
        try:
            if readonly and not readable(store.db):
                store.close()
                return None
        except BaseException:
            store.close()
            raise
        return store

    @property
    def name(self) -> str:
        return self.db.name

    def close(self) -> None:
        self._leases.close()  # (its heartbeat and connection: the database knows neither)
        super().close()
