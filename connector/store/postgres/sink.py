"""The PostgreSQL store's rows, with the semantics of SQLite's (``SQLiteSink``): a batch,
its idempotency keys and its rejects are written in the caller's transaction, with the
ledger's cursor — all of it is stored, or none of it.

Rows go in with COPY in its binary format (measured: a fifth faster than text lines built
from a batch's columns; the server parses no numbers, nothing is escaped); keys and
contacts in one set-based statement each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress, repeat
from typing import Any

from connector.csvrules.records import Batch
from connector.csvrules.rules import KEY_WINDOW_SECONDS, NO_TIMESTAMP
from connector.store.keys import decided, kept_events
from connector.store.ledger import Delivered, stored_rows
from connector.store.postgres.db import Connection, Database

_NEXT_EVENT = "SELECT nextval(pg_get_serial_sequence('events', 'id'))"
_LAST_EVENT = "SELECT currval(pg_get_serial_sequence('events', 'id'))"  # (this session's)
# COPY's targets, with their columns' types (the binary format says none).
_EVENTS = (
    "events(file_id, line, identifier, name, timestamp, idempotency_key, data)",
    ("int8", "int8", "text", "text", "int8", "text", "text"),
)
_PENDING = ("pending_contacts(file_id, identifier, attributes)", ("int8", "text", "text"))
_REJECTS = ("rejects(file_id, line, reason, value)", ("int8", "int8", "text", "text"))
# Keys and contacts are the file's tenant's (the ledger holds it: one place says whose).
_TENANT_OF = "(SELECT tenant FROM files WHERE id = {})"
# Each contact an events file names must exist: those not stored yet (contacts are never
# deleted; usually few) are created when the file is final.
_INSERT_MISSING = (
    "INSERT INTO pending_contacts(file_id, identifier, attributes)"
    " SELECT %(file)s, i, '{}' FROM unnest(%(identifiers)b::text[]) AS i"
    " WHERE NOT EXISTS (SELECT 1 FROM contacts"
    f' WHERE tenant = {_TENANT_OF.format("%(file)s")} AND identifier = i COLLATE "C")'
)
# Records every key given (distinct: PostgreSQL changes a row once per statement) that is
# new or expired (accepted at or before the cutoff) as accepted now by this file. Says
# which it recorded only when it did not record them all: the usual batch travels once.
_CLAIM_KEYS = f"""
    WITH recorded AS (
        INSERT INTO idempotency_keys(tenant, key, accepted_at, file_id)
        SELECT {_TENANT_OF.format("%(file)s")}, k, %(now)s, %(file)s
        FROM unnest(%(keys)b::text[]) AS k
        ON CONFLICT (tenant, key) DO UPDATE SET accepted_at = excluded.accepted_at,
            file_id = excluded.file_id WHERE idempotency_keys.accepted_at <= %(cutoff)s
        RETURNING key
    )
    SELECT count(*) = %(count)s, CASE WHEN count(*) < %(count)s THEN array_agg(key) END
    FROM recorded
"""
# A file's contact upserts, merged per contact in file order (a later row's attribute
# wins: see merged_attributes in the schema), then merged into the stored contact: one
# row per contact, as PostgreSQL updates a row once per statement. Attributes are flat
# objects without nulls (an empty cell is absent, CSV cannot hold an object), so `||`
# merges exactly as SQLite's json_patch; an upsert that changes nothing (of '{}' on a
# contact that exists, say) leaves it as it was. The contacts created or changed are kept,
# as they are now, for the change feed. In identifier order, so that two files finishing
# at once take their contacts' row locks in one order.
_APPLY_CONTACTS = (
    "WITH changed AS ("
    " INSERT INTO contacts(tenant, identifier, attributes)"
    f" SELECT {_TENANT_OF.format('%(file)s')}, identifier,"
    " merged_attributes(attributes::jsonb ORDER BY seq) FROM pending_contacts"
    " WHERE file_id = %(file)s GROUP BY identifier ORDER BY identifier"
    " ON CONFLICT (tenant, identifier) DO UPDATE SET attributes = contacts.attributes"
    " || excluded.attributes WHERE contacts.attributes || excluded.attributes"
    " <> contacts.attributes RETURNING identifier, attributes)"
    " INSERT INTO contact_changes(file_id, identifier, attributes)"
    " SELECT %(file)s, identifier, attributes::text FROM changed ORDER BY identifier"
)


def _scalar(conn: Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _copy(conn: Connection, target: tuple[str, Sequence[str]], rows: Iterable[Any]) -> None:
    """COPY ``rows`` into ``target`` (psycopg sends them in chunks: memory stays flat)."""
    table, types = target
    with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        write = copy.write_row
        for row in rows:
            write(row)


def _event_rows(file_id: int, batch: Batch, now: int) -> Iterator[tuple[Any, ...]]:
    """The batch's events as rows: an event without a timestamp takes the processing
    time, one without a key has NULL."""
    count = batch.events
    stamps: Iterable[int] = (
        repeat(now, count)
        if batch.timestamps is None
        else [now if t == NO_TIMESTAMP else t for t in batch.timestamps]
    )
    keys: Iterable[str | None] = (
        repeat(None, count) if batch.keys is None else [k or None for k in batch.keys.split("\0")]
    )
    return zip(
        repeat(file_id, count),
        batch.lines,
        batch.identifiers.split("\0"),
        batch.names.split("\0"),
        stamps,
        keys,
        batch.data.split("\0"),
        strict=True,
    )


class PostgresSink:
    def __init__(self, db: Database) -> None:
        self.db = db

    def deliver(
        self, file_id: int, kind: str, batch: Batch, now: int, *, provisional: bool = False
    ) -> Delivered:
        """Store one batch inside the caller's transaction (which rolls back all of it on
        an error). Not idempotent by itself: the ledger's cursor, moved in the same
        transaction, keeps a resumed file from delivering it twice. ``provisional``: the
        file's checksum is not known yet, so its keys are not claimed (``decide`` does it,
        or ``discard`` takes the rows back)."""
        assert self.db.in_transaction, "deliver() belongs in a transaction"
        kept, duplicates, first_event, last_event = None, 0, None, None
        if not provisional and batch.keys is not None and batch.events:
            kept = self._first_uses(batch.keys.split("\0"), now, file_id)
            duplicates = kept.count(False) if kept is not None else 0
        with self.db.streaming() as conn:
            if batch.events > duplicates:
                # Every id the sequence gives after this one is larger: a lower bound of
                # the batch's events (found by id from there: events has no file index).
                first_event = _scalar(conn, _NEXT_EVENT)
                rows = _event_rows(file_id, batch, now)
                _copy(conn, _EVENTS, rows if kept is None else compress(rows, kept))
                last_event = _scalar(conn, _LAST_EVENT)  # (the COPY's last row took it)
            if batch.contacts:  # applied when the file is final (see finish)
                _copy(conn, _PENDING, ((file_id, *upsert) for upsert in batch.contacts))
            if batch.rejects:
                _copy(conn, _REJECTS, ((file_id, *reject) for reject in batch.rejects))
        with self.db.faults():
            if batch.contacts is None and batch.new_identifiers:
                self.db.conn.execute(
                    _INSERT_MISSING, {"file": file_id, "identifiers": list(batch.new_identifiers)}
                )
        valid = batch.records - len(batch.rejects)
        return Delivered(stored_rows(kind, valid, duplicates), duplicates, first_event, last_event)

    def decide(self, file_id: int, kind: str, start: int, now: int) -> Delivered:
        """Claim the idempotency keys of the events a file delivered provisionally, from
        event ``start`` on (``keys.decided``), in file order, as ``deliver`` would have at
        this moment; drop the events whose key was taken (by another file, or earlier in
        this one), and count them as duplicates."""
        assert self.db.in_transaction, "decide() belongs in a transaction"
        return decided(
            self.db,
            file_id,
            kind,
            start,
            lambda keys: self._first_uses(keys, now, file_id),
            self._delete_events,
        )

    def _delete_events(self, ids: list[int]) -> None:
        with self.db.faults():
            self.db.conn.execute("DELETE FROM events WHERE id = ANY(%b::bigint[])", (ids,))

    def discard(self, file_id: int, first_event: int | None, *, claimed: bool = False) -> None:
        """Take back everything a file delivered: provisionally (no key was claimed), or,
        ``claimed``, with the keys of its events, which are given back (each stored event
        with a key is the one that claimed it)."""
        assert self.db.in_transaction, "discard() belongs in a transaction"
        with self.db.faults():
            conn = self.db.conn
            if first_event is not None:  # (by id from there, as above)
                if claimed:  # (its own claims only: an expired key may be another's now)
                    conn.execute(
                        "DELETE FROM idempotency_keys WHERE file_id = %(file)s"
                        f" AND tenant = {_TENANT_OF.format('%(file)s')} AND key IN"
                        " (SELECT idempotency_key FROM events WHERE id >= %(first)s"
                        " AND file_id = %(file)s AND idempotency_key IS NOT NULL)",
                        {"file": file_id, "first": first_event},
                    )
                conn.execute(
                    "DELETE FROM events WHERE id >= %s AND file_id = %s", (first_event, file_id)
                )
            conn.execute("DELETE FROM rejects WHERE file_id = %s", (file_id,))
            conn.execute("DELETE FROM pending_contacts WHERE file_id = %s", (file_id,))

    def sweep(self, stop: Callable[[], bool]) -> None:
        """Nothing left: ``discard`` removes it all at once (PostgreSQL locks rows, not the
        store: other files are stored meanwhile)."""

    def settle(self, file_id: int, stop: Callable[[], bool]) -> None:
        """Nothing to make ready: PostgreSQL locks rows, not the store, so the final
        transaction applies the contact upserts itself (docs/scaling.md)."""

    def finish(self, file_id: int) -> None:
        """Apply the file's contact upserts, in file order (later rows win), inside the
        transaction that records its final entry; the contacts they changed are kept, as
        they are now, for the change feed."""
        assert self.db.in_transaction, "finish() belongs in the final entry's transaction"
        with self.db.faults():
            self.db.conn.execute(_APPLY_CONTACTS, {"file": file_id})
            self.db.conn.execute("DELETE FROM pending_contacts WHERE file_id = %s", (file_id,))

    def tidy(self, file_id: int) -> None:
        """Nothing left: ``finish`` removed the upserts it applied."""

    def _first_uses(self, keys: Sequence[str], now: int, file_id: int) -> list[bool] | None:
        """Record the keys of these events (in order, '' for none) as accepted now by file
        ``file_id`` where they are new or expired; which events to keep, or None for all.
        A key not recorded was accepted recently; within the batch, the first use of a
        key recorded is kept, as SQLite's row order gives."""
        present = [k for k in keys if k]
        if not present:
            return None
        distinct = sorted(set(present))  # (sorted: two writers lock the rows in one order)
        params = {
            "keys": distinct,
            "now": now,
            "file": file_id,
            "cutoff": now - KEY_WINDOW_SECONDS,
            "count": len(distinct),
        }
        with self.db.faults():
            row = self.db.conn.execute(_CLAIM_KEYS, params).fetchone()
        assert row is not None
        every, some = row
        return kept_events(keys, set(distinct if every else some or ()), len(present))
