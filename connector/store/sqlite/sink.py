"""The SQLite store's rows: a batch, its idempotency keys and its rejects are written in
the caller's transaction, with the ledger's cursor — all of it is stored, or none of it.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import compress
from typing import Any

import apsw

from connector.csvrules.records import Batch
from connector.csvrules.rules import KEY_WINDOW_SECONDS, NO_TIMESTAMP
from connector.store.keys import decided, kept_events
from connector.store.ledger import Delivered, stored_rows
from connector.store.sqlite.contacts import Contacts
from connector.store.sqlite.db import Database, unbind
from connector.store.sqlite.takeback import retire, sweep

# Constant texts, one for every file and moment, so the statement cache keeps each prepared
# (literals in the text made a new statement per file and per second); the file id and the
# time are bound like the rest.
_INSERT_EVENTS = (
    "INSERT INTO events(file_id, line, identifier, name, timestamp, idempotency_key, data)"
    f" VALUES (?, ?, ?, ?, coalesce(nullif(?, {NO_TIMESTAMP}), ?), nullif(?, ''), ?)"
)
# Keys are the file's tenant's (the ledger holds it: one place says whose).
_TENANT_OF = "(SELECT tenant FROM files WHERE id = {})"
# Records every key that is new or expired (accepted before the cutoff, ?3) or accepted by
# a file taken back (takeback.py), as accepted at ?2 by file ?4, and returns those it
# recorded.
_CLAIM_KEYS = (
    "INSERT INTO idempotency_keys(tenant, key, accepted_at, file_id)"
    f" SELECT {_TENANT_OF.format('?4')}, value, ?2, ?4 FROM carray(?1) WHERE true"
    " ON CONFLICT(tenant, key) DO UPDATE SET accepted_at = excluded.accepted_at,"
    " file_id = excluded.file_id WHERE accepted_at <= ?3"
    " OR file_id IN (SELECT file_id FROM taken_back) RETURNING key"
)


class SQLiteSink:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.contacts = Contacts(db)

    def deliver(
        self, file_id: int, kind: str, batch: Batch, now: int, *, provisional: bool = False
    ) -> Delivered:
        """Store one batch inside the caller's transaction (``Database.grouped``, which
        rolls back all of it on an error). Not idempotent by itself: the ledger's cursor,
        moved in the same transaction, keeps a resumed file from delivering it twice.
        ``provisional``: the file's checksum is not known yet, so its idempotency keys are
        not claimed (``decide`` does it, or ``discard`` takes the rows back).

        No savepoint of its own: a nested one makes SQLite keep a copy of every page it
        changes, for nothing, as any error fails the whole group."""
        conn = self.db.conn
        assert conn.in_transaction, "deliver() belongs in a transaction"
        events: Iterable[Any]
        if provisional:
            events, duplicates = batch.stored_rows(file_id, now), 0
        else:
            events, duplicates = self._first_use_of_keys(file_id, batch, now)
        before = conn.total_changes()
        conn.executemany(_INSERT_EVENTS, events)
        inserted = conn.total_changes() - before  # (one executemany: consecutive ids)
        last_event = conn.last_insert_rowid() if inserted else None
        first_event = last_event - inserted + 1 if last_event is not None else None
        unbind(conn, _INSERT_EVENTS, 8)
        if batch.contacts is not None:  # (shown by finish: see contacts.py)
            self.contacts.add(file_id, batch.contacts)
        elif batch.new_identifiers:  # an events file: each contact must exist
            self.contacts.add_missing(file_id, batch.new_identifiers)
        if batch.rejects:
            conn.executemany(
                "INSERT INTO rejects(file_id, line, reason, value) VALUES (?, ?, ?, ?)",
                ((file_id, *reject) for reject in batch.rejects),
            )
        valid = batch.records - len(batch.rejects)
        return Delivered(stored_rows(kind, valid, duplicates), duplicates, first_event, last_event)

    def decide(self, file_id: int, kind: str, start: int, now: int) -> Delivered:
        """Claim the idempotency keys of the events a file delivered provisionally, from
        event ``start`` on (``keys.decided``), in file order, as ``deliver`` would have at
        this moment; drop the events whose key was taken (by another file, or earlier in
        this one), and count them as duplicates."""
        assert self.db.conn.in_transaction, "decide() belongs in a transaction"
        return decided(
            self.db,
            file_id,
            kind,
            start,
            lambda keys: self._first_uses(keys, now, file_id),
            self._delete_events,
        )

    def _delete_events(self, ids: list[int]) -> None:
        carray = apsw.carray(array("q", ids))  # (int64: a tuple is taken as text)
        self.db.conn.execute("DELETE FROM events WHERE id IN carray(?)", (carray,))

    def discard(self, file_id: int, first_event: int | None, *, claimed: bool = False) -> None:
        """Take back everything a file delivered: provisionally (no key was claimed), or,
        ``claimed``, with the keys of its events, which are given back. Out of sight with
        its entry, forgotten in the caller's transaction; removed by ``sweep``
        (takeback.py: it may be a million rows, and SQLite has one writer)."""
        assert self.db.conn.in_transaction, "discard() belongs in a transaction"
        retire(self.db, file_id, claimed=claimed)

    def sweep(self, stop: Callable[[], bool]) -> None:
        """Remove what is left over, in short transactions: the rows of files taken back
        (takeback.py), then the pending upserts of final files that a crash left."""
        if sweep(self.db, self.contacts, stop):
            self.contacts.tidy_left_by_a_crash()

    def settle(self, file_id: int, stop: Callable[[], bool]) -> None:
        """Before the file's final entry: what files taken back left, removed, then its
        contact upserts staged, in short transactions (see contacts.py); it may stop early
        if ``stop()``."""
        self.sweep(stop)
        self.contacts.settle(file_id, stop)

    def finish(self, file_id: int) -> None:
        """In the transaction that records the file's final entry: its contact upserts
        that could not be staged, applied; the entry shows the others."""
        assert self.db.conn.in_transaction, "finish() belongs in the final entry's transaction"
        self.contacts.finish(file_id)

    def tidy(self, file_id: int) -> None:
        """After the file's final entry: what served its contact upserts, removed."""
        self.contacts.tidy(file_id)

    def _first_use_of_keys(self, file_id: int, batch: Batch, now: int) -> tuple[Iterable[Any], int]:
        """The batch's events less those whose key was accepted in the last 24 hours (in
        this batch too); the keys of the others are recorded as accepted now.

        One statement per batch records every key that is new or expired and returns those
        it recorded (a statement per key costs ten times more): a key it does not return
        was accepted recently. A key used twice in the batch is recorded once (its second
        use finds it recent), in whatever order the keys are given; ``kept_events`` keeps
        its first use in file order."""
        rows = batch.stored_rows(file_id, now)
        if batch.keys is None or not batch.events:
            return rows, 0
        kept = self._first_uses(batch.keys.split("\0"), now, file_id)
        if kept is None:
            return rows, 0
        return compress(rows, kept), kept.count(False)

    def _first_uses(self, keys: Sequence[str], now: int, file_id: int) -> list[bool] | None:
        """Record the keys of these events (in order, '' for none) as accepted now by file
        ``file_id`` where they are new or expired; which events to keep, or None for all."""
        # (in key order: SQLite adds them to its index about 15 % faster than in file
        # order, and which are recorded does not depend on it: see _first_use_of_keys)
        present = tuple(sorted(k for k in keys if k))
        if not present:
            return None
        conn = self.db.conn
        bindings = (apsw.carray(present), now, now - KEY_WINDOW_SECONDS, file_id)
        recorded = {key for (key,) in conn.execute(_CLAIM_KEYS, bindings)}
        unbind(conn, _CLAIM_KEYS, 4)
        return kept_events(keys, recorded, len(present))
