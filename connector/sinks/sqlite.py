"""The embedded SQLite store as a sink: a batch, its idempotency keys, its rejects and the
ledger's cursor are committed in one transaction — all of it is stored, or none of it."""

from __future__ import annotations

from dataclasses import dataclass

from connector.csvrules.records import Batch, EventRow
from connector.csvrules.rules import KEY_WINDOW_SECONDS
from connector.store.db import Database
from connector.store.ledger import Ledger

# Identifiers known to exist, so that events of the same contacts do not re-insert them on
# every batch; cleared when it grows past this, to keep memory flat on huge files.
_KNOWN_CONTACTS_CAP = 200_000


@dataclass(frozen=True)
class Delivered:
    rows: int
    rejected: int
    duplicates: int


class SQLiteSink:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger
        self._known: set[str] = set()

    def deliver(self, file_id: int, kind: str, batch: Batch, now: int) -> Delivered:
        """Store one batch and advance the file's cursor, atomically. Not idempotent by
        itself: the cursor is what keeps a resumed file from delivering a batch twice."""
        conn = self.db.conn
        fresh = [c for c in batch.contacts if c[0] not in self._known]
        with self.db.transaction():
            events, duplicates = self._first_use_of_keys(batch.events, now)
            # file_id and now are integers of ours: as literals they save a bind per row.
            conn.executemany(
                "INSERT INTO events(file_id, line, identifier, name, timestamp,"
                f" idempotency_key, data) VALUES ({int(file_id)}, ?, ?, ?, coalesce(?, {now}),"
                " ?, CAST(? AS TEXT))",
                events,
            )
            conn.executemany(
                "INSERT INTO contacts(identifier, attributes) VALUES (?, CAST(? AS TEXT))"
                " ON CONFLICT(identifier) DO UPDATE"
                " SET attributes = json_patch(attributes, excluded.attributes)"
                " WHERE excluded.attributes <> '{}'",
                fresh,
            )
            conn.executemany(
                f"INSERT INTO rejects(file_id, line, reason) VALUES ({int(file_id)}, ?, ?)",
                batch.rejects,
            )
            valid = batch.records - len(batch.rejects)
            rows = valid - duplicates if kind == "events" else valid
            self.ledger.advance(file_id, batch.records, rows, len(batch.rejects), duplicates)
        if len(self._known) > _KNOWN_CONTACTS_CAP:
            self._known.clear()
        self._known.update(c[0] for c in fresh if c[1] == b"{}")
        return Delivered(rows, len(batch.rejects), duplicates)

    def _first_use_of_keys(self, events: list[EventRow], now: int) -> tuple[list[EventRow], int]:
        """Drop events whose key was accepted in the last 24 hours (in this batch too), and
        record the keys of the others as accepted now."""
        keyed = [(e[4],) for e in events if e[4] is not None]
        if not keyed:
            return events, 0
        cutoff = now - KEY_WINDOW_SECONDS
        accepted = {
            key
            for (key,) in self.db.conn.executemany(
                f"INSERT INTO idempotency_keys(key, accepted_at) VALUES (?, {now})"
                " ON CONFLICT(key) DO UPDATE SET accepted_at = excluded.accepted_at"
                f" WHERE accepted_at <= {cutoff} RETURNING key",
                keyed,
            )
        }
        kept = []
        for event in events:
            key = event[4]
            if key is None:
                kept.append(event)
            elif key in accepted:  # the first use in this batch; later ones are duplicates
                kept.append(event)
                accepted.discard(key)
        return kept, len(events) - len(kept)
