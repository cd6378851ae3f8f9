"""The embedded SQLite store as a sink: a batch, its idempotency keys, its rejects and the
ledger's cursor are written in the caller's transaction — all of it is stored, or none of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress
from typing import Any

import apsw

from connector.csvrules.records import Batch
from connector.csvrules.rules import KEY_WINDOW_SECONDS, NO_TIMESTAMP
from connector.store.db import Database
from connector.store.ledger import Ledger


class SQLiteSink:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger

    def deliver(self, file_id: int, kind: str, batch: Batch, now: int) -> None:
        """Store one batch and advance the file's cursor, inside the caller's transaction
        (``Database.grouped``, which rolls back all of it on an error). Not idempotent by
        itself: the cursor is what keeps a resumed file from delivering a batch twice.

        No savepoint of its own: a nested one makes SQLite keep a copy of every page it
        changes, for nothing, as any error fails the whole group."""
        conn = self.db.conn
        assert conn.in_transaction, "deliver() belongs in a transaction"
        events, duplicates = self._first_use_of_keys(batch, now)
        # file_id and now are integers of ours: as literals they save a bind per row.
        conn.executemany(
            "INSERT INTO events(file_id, line, identifier, name, timestamp,"
            f" idempotency_key, data) VALUES ({int(file_id)}, ?, ?, ?,"
            f" coalesce(nullif(?, {NO_TIMESTAMP}), {int(now)}), nullif(?, ''), ?)",
            events,
        )
        # Contact upserts wait for the file's end (see finish).
        if batch.contacts is not None:
            conn.executemany(
                "INSERT INTO pending_contacts(file_id, identifier, attributes)"
                f" VALUES ({int(file_id)}, ?, ?)",
                batch.contacts,
            )
        elif batch.new_identifiers:  # an events file: each contact must exist
            # Only those not stored yet (contacts are never deleted): usually few.
            conn.execute(
                "INSERT INTO pending_contacts(file_id, identifier, attributes)"
                f" SELECT {int(file_id)}, value, '{{}}' FROM carray(?)"
                " WHERE NOT EXISTS (SELECT 1 FROM contacts WHERE identifier = value)",
                (apsw.carray(batch.new_identifiers),),
            )
        conn.executemany(
            f"INSERT INTO rejects(file_id, line, reason) VALUES ({int(file_id)}, ?, ?)",
            batch.rejects,
        )
        valid = batch.records - len(batch.rejects)
        rows = valid - duplicates if kind == "events" else valid
        self.ledger.advance(file_id, batch.records, rows, len(batch.rejects), duplicates)

    def finish(self, file_id: int) -> None:
        """Apply the file's contact upserts, in file order (later rows win), inside the
        transaction that records its final entry."""
        conn = self.db.conn
        assert conn.in_transaction, "finish() belongs in the final entry's transaction"
        conn.execute(
            "INSERT INTO contacts(identifier, attributes)"
            " SELECT identifier, attributes FROM pending_contacts WHERE file_id = ?"
            " ORDER BY seq ON CONFLICT(identifier) DO UPDATE"
            " SET attributes = json_patch(attributes, excluded.attributes)"
            " WHERE excluded.attributes <> '{}';"
            "DELETE FROM pending_contacts WHERE file_id = ?",
            (file_id, file_id),
        )

    def _first_use_of_keys(self, batch: Batch, now: int) -> tuple[Iterable[Any], int]:
        """The batch's events less those whose key was accepted in the last 24 hours (in
        this batch too); the keys of the others are recorded as accepted now.

        One statement per batch records every key that is new or expired and returns those
        it recorded (a statement per key costs ten times more): a key it does not return
        was accepted recently. Within the batch, SQLite takes the rows in order, so the
        first use of a key is the one recorded and a later one finds it recent."""
        if batch.keys is None or not batch.events:
            return batch.event_rows(), 0
        keys = batch.keys.split("\0")
        present = tuple(k for k in keys if k)
        if not present:
            return batch.event_rows(), 0
        recorded = {
            key
            for (key,) in self.db.conn.execute(
                "INSERT INTO idempotency_keys(key, accepted_at)"
                f" SELECT value, {int(now)} FROM carray(?) WHERE true"
                " ON CONFLICT(key) DO UPDATE SET accepted_at = excluded.accepted_at"
                f" WHERE accepted_at <= {int(now - KEY_WINDOW_SECONDS)} RETURNING key",
                (apsw.carray(present),),
            )
        }
        if len(recorded) == len(present):  # the usual case: every key is new
            return batch.event_rows(), 0
        mask = []
        for key in keys:  # the first use of a recorded key is kept, and events without one
            mask.append(not key or key in recorded)
            recorded.discard(key)
        return compress(batch.event_rows(), mask), mask.count(False)
