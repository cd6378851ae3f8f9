"""A file taken back on the SQLite store: out of sight at once, its rows removed in short
transactions afterwards (docs/guarantees.md, "How they are kept").

SQLite lets one writer in at a time, and removing a large file's rows takes seconds (a
duplicate stored while it downloaded: a million events, their keys, its contact upserts).
So ``retire``, in the caller's transaction, records the file in ``taken_back`` and does
nothing that grows with it. With its ledger entry forgotten in that same transaction, its
rows are out of sight already: events and rejects are shown only through a final entry; a
contact it staged is a free slot to the next file (``contacts.py``), and one it created is
not shown; and its idempotency keys, if it claimed them, no longer count (a key accepted by
a file taken back is taken over as an expired one is: ``sink._CLAIM_KEYS``).

``sweep`` then removes those rows, a span per transaction, and marks the record swept
last. A crash in between leaves it unswept, and the next sweep (the next file's settle,
housekeeping, an erasure) goes on; every step removes only what is left, so doing one again
(or two sweeps at once, from two threads) is harmless. The record stays once swept: its id
is given to no other file (``FILE_IDS``: SQLite would give the largest id again once its
row is gone), so no later file's rows can ever be taken for its own.
"""

from __future__ import annotations

from collections.abc import Callable

from connector import crashpoints
from connector.store.retention import ROWS_AT_A_TIME, by_file
from connector.store.sqlite.contacts import Contacts
from connector.store.sqlite.db import Database

# A new ledger entry's id: past every entry's, and every file's taken back.
FILE_IDS = (
    "SELECT max(coalesce((SELECT max(id) FROM files), 0),"
    " coalesce((SELECT max(file_id) FROM taken_back), 0)) + 1"
)
EVENTS_AT_A_TIME = 50_000  # events removed per transaction, by id (0.3 s at most, measured)

_RETIRE = (
    "INSERT INTO taken_back(file_id, tenant, first_event, last_event, claimed)"
    " SELECT id, tenant, first_event, coalesce(last_event, (SELECT max(id) FROM events)), ?2"
    " FROM files WHERE id = ?1"
)
# Keys the file's events in a span claimed, given back (each stored event with a key is
# the one that claimed it; a key accepted before its file was recorded with it goes by its
# text), then those events.
_GIVE_BACK = (
    "DELETE FROM idempotency_keys WHERE (file_id = ?1 OR file_id IS NULL) AND tenant = ?2"
    " AND key IN (SELECT idempotency_key FROM events WHERE id >= ?3 AND id < ?4"
    " AND file_id = ?1 AND idempotency_key NOT NULL)"
)
_EVENTS = "DELETE FROM events WHERE id >= ?2 AND id < ?3 AND file_id = ?1"


def retire(db: Database, file_id: int, *, claimed: bool) -> None:
    """Record a file to be swept; call in the transaction that forgets its entry
    (``claimed``: its keys were claimed, and are given back)."""
    db.execute(_RETIRE, (file_id, claimed))


def sweep(db: Database, contacts: Contacts, stop: Callable[[], bool]) -> bool:
    """Remove the rows of the files taken back, a span per transaction; whether it was
    done before ``stop()`` (and not in a transaction)."""
    if db.conn.in_transaction:
        return False  # (a dry run's: what it would remove, it would roll back)
    for file_id, tenant, first, last, claimed in db.query(
        "SELECT file_id, tenant, first_event, last_event, claimed FROM taken_back WHERE NOT swept"
    ):
        if first is not None and last is not None:
            for low in range(first, last + 1, EVENTS_AT_A_TIME):
                if stop():
                    return False
                with db.transaction():
                    span = (file_id, low, low + EVENTS_AT_A_TIME)
                    if claimed:
                        db.execute(_GIVE_BACK, (file_id, tenant, *span[1:]))
                    db.execute(_EVENTS, span)
                crashpoints.reached("mid_sweep")
                # Crash here: the spans removed so far are gone with their keys; the
                # record stays, and the next sweep goes over the file again.
        if not contacts.take_back(file_id, tenant, stop):
            return False
        by_file(db, "rejects", file_id, ROWS_AT_A_TIME)
        by_file(db, "contact_changes", file_id, ROWS_AT_A_TIME)
        with db.transaction():
            db.execute("UPDATE taken_back SET swept = 1 WHERE file_id = ?", (file_id,))
    return True
