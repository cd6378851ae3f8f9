"""The embedded SQLite store as a sink: a batch, its idempotency keys, its rejects and the
ledger's cursor are written in the caller's transaction — all of it is stored, or none of it.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress
from typing import Any

import apsw

from connector.csvrules.records import Batch
from connector.csvrules.rules import KEY_WINDOW_SECONDS, NO_TIMESTAMP
from connector.store.db import Database
from connector.store.ledger import Ledger

_DECIDE_CHUNK = 10_000  # keyed events read back at a time


def _rows(kind: str, valid: int, duplicates: int) -> int:
    """The ledger's `rows` for valid records: an events file's stored events (less those
    dropped for their key), a contacts file's contacts (its events are extra)."""
    return valid - duplicates if kind == "events" else valid


class SQLiteSink:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger

    def deliver(self, file_id: int, kind: str, batch: Batch, now: int, *,
                provisional: bool = False) -> None:  # fmt: skip
        """Store one batch and advance the file's cursor, inside the caller's transaction
        (``Database.grouped``, which rolls back all of it on an error). Not idempotent by
        itself: the cursor is what keeps a resumed file from delivering a batch twice.
        ``provisional``: the file's checksum is not known yet, so its idempotency keys are
        not claimed (``decide`` does it, or ``discard`` takes the rows back).

        No savepoint of its own: a nested one makes SQLite keep a copy of every page it
        changes, for nothing, as any error fails the whole group."""
        conn = self.db.conn
        assert conn.in_transaction, "deliver() belongs in a transaction"
        events: Iterable[Any]
        if provisional:
            events, duplicates = batch.event_rows(), 0
        else:
            events, duplicates = self._first_use_of_keys(batch, now)
        before = conn.total_changes()
        # file_id and now are integers of ours: as literals they save a bind per row. Not
        # cached: a cached statement keeps its last row's values (up to a record's size)
        # bound, one statement per distinct `now`.
        conn.executemany(
            "INSERT INTO events(file_id, line, identifier, name, timestamp,"
            f" idempotency_key, data) VALUES ({int(file_id)}, ?, ?, ?,"
            f" coalesce(nullif(?, {NO_TIMESTAMP}), {int(now)}), nullif(?, ''), ?)",
            events,
            can_cache=False,
        )
        inserted = conn.total_changes() - before  # (one executemany: consecutive ids)
        first_event = conn.last_insert_rowid() - inserted + 1 if inserted else None
        # Contact upserts wait for the file's end (see finish).
        if batch.contacts is not None:
            conn.executemany(
                "INSERT INTO pending_contacts(file_id, identifier, attributes)"
                f" VALUES ({int(file_id)}, ?, ?)",
                batch.contacts,
                can_cache=False,  # (as above)
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
        self.ledger.advance(
            file_id, batch.records, _rows(kind, valid, duplicates), len(batch.rejects),
            duplicates, first_event,
        )  # fmt: skip

    def decide(self, file_id: int, kind: str, now: int) -> None:
        """Claim the idempotency keys of the events a file delivered provisionally, in file
        order, as ``deliver`` would have at this moment; drop the events whose key was taken
        (by another file, or earlier in this one), and count them as duplicates."""
        conn = self.db.conn
        assert conn.in_transaction, "decide() belongs in a transaction"
        dropped = 0
        for rows in self._keyed_events(file_id):
            kept = self._first_uses([key for _, key in rows], now)
            if kept is not None:
                gone = [event for (event, _), keep in zip(rows, kept, strict=True) if not keep]
                ids = apsw.carray(array("q", gone))  # (int64: a tuple is taken as text)
                conn.execute("DELETE FROM events WHERE id IN carray(?)", (ids,))
                dropped += len(gone)
        self.ledger.advance(file_id, 0, _rows(kind, 0, dropped), 0, dropped, None)

    def _keyed_events(self, file_id: int) -> Iterator[list[tuple[int, str]]]:
        """A file's events that carry a key, as (id, key) in file order, a chunk at a time
        (memory stays flat). By id from its first event: events has no index by file."""
        first = self.ledger.get(file_id).first_event
        if first is None:
            return
        after = first - 1
        while rows := list(
            self.db.conn.execute(
                "SELECT id, idempotency_key FROM events WHERE id > ? AND file_id = ?"
                " AND idempotency_key IS NOT NULL ORDER BY id LIMIT ?",
                (after, file_id, _DECIDE_CHUNK),
            )
        ):
            yield rows
            after = rows[-1][0]

    def discard(self, file_id: int, *, claimed: bool = False) -> None:
        """Take back everything a file delivered: provisionally (no key was claimed), or,
        ``claimed``, with the keys of its events, which are given back (each stored event
        with a key is the one that claimed it)."""
        conn = self.db.conn
        assert conn.in_transaction, "discard() belongs in a transaction"
        first = self.ledger.get(file_id).first_event
        if first is not None:  # (by id from there, as above)
            if claimed:
                conn.execute(
                    "DELETE FROM idempotency_keys WHERE key IN (SELECT idempotency_key"
                    " FROM events WHERE id >= ? AND file_id = ? AND idempotency_key NOT NULL)",
                    (first, file_id),
                )
            conn.execute("DELETE FROM events WHERE id >= ? AND file_id = ?", (first, file_id))
        conn.execute(
            "DELETE FROM rejects WHERE file_id = ?; DELETE FROM pending_contacts WHERE file_id = ?",
            (file_id, file_id),
        )

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
        kept = self._first_uses(batch.keys.split("\0"), now)
        if kept is None:
            return batch.event_rows(), 0
        return compress(batch.event_rows(), kept), kept.count(False)

    def _first_uses(self, keys: Sequence[str], now: int) -> list[bool] | None:
        """Record the keys of these events (in order, '' for none) as accepted now where
        they are new or expired; which events to keep, or None for all of them."""
        present = tuple(k for k in keys if k)
        if not present:
            return None
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
            return None
        kept = []
        for key in keys:  # the first use of a recorded key is kept, and events without one
            kept.append(not key or key in recorded)
            recorded.discard(key)
        return kept
