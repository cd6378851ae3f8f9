"""What the store no longer keeps: records of files final longer ago than `[store] keep`,
and idempotency keys past their 24 hours. Run by housekeeping (hourly by `run`, and at each
`once`), in the SQL both databases speak.

The ledger's entries stay, whatever their age: they are what makes a file sent again a
duplicate. A file's events, rejects and contact changes go, in the order files became
final (the change feed's), a few thousand rows per transaction, so that no writer waits
long for the store; the feed clock remembers the last file whose records went, and a feed
cursor from before it is refused rather than silently skipping what was removed. Replicas
that prune at once remove the same rows, and the clock only moves forward.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.csvrules.rules import KEY_WINDOW_SECONDS
from connector.store.ledger import SQL, iso

ROWS_AT_A_TIME = 5_000  # rows removed per transaction (about 10-50 ms of write lock)


@dataclass
class Pruned:
    files: int = 0  # files whose records were removed
    events: int = 0
    rejects: int = 0
    contact_changes: int = 0
    keys: int = 0

    def __bool__(self) -> bool:
        return any(vars(self).values())


def prune(db: SQL, keep: float | None, now: float, rows: int = ROWS_AT_A_TIME) -> Pruned:
    """Remove what is older than ``keep`` seconds (None: keep every record) and the keys
    accepted more than 24 hours before ``now``; say how much went.

    Each file is marked on the feed clock (``pruned``) before its first row goes, in a
    transaction of its own: from then on a reader who might miss its records is refused
    rather than served part of them. The file marked last is gone over again first, as a
    run that stopped (or a replica pruning beside this one) may have left rows of it."""
    pruned = Pruned(keys=_expired_keys(db, now, rows))
    if keep is None:
        return pruned
    cutoff = iso(now - keep)
    [(marked,)] = db.query("SELECT pruned FROM feed_clock")
    after = marked - 1  # (the file marked last is done again)
    while True:
        found = db.query(
            "SELECT feed_seq, id, processed_at, first_event, last_event FROM files"
            " WHERE feed_seq > ? ORDER BY feed_seq LIMIT 1",
            (after,),
        )
        if not found:
            return pruned
        seq, file_id, processed_at, first, last = found[0]
        if seq > marked:  # a file not begun yet: if its time has come, marked first
            if processed_at >= cutoff:
                return pruned
            with db.transaction():
                db.execute("UPDATE feed_clock SET pruned = ? WHERE pruned < ?", (seq, seq))
            marked = seq
            pruned.files += 1
        if first is not None and last is not None:
            for low in range(first, last + 1, rows):
                with db.transaction():
                    pruned.events += db.execute(
                        "DELETE FROM events WHERE id BETWEEN ? AND ? AND file_id = ?",
                        (low, min(low + rows - 1, last), file_id),
                    )
        pruned.rejects += by_file(db, "rejects", file_id, rows)
        pruned.contact_changes += by_file(db, "contact_changes", file_id, rows)
        after = seq


def by_file(db: SQL, table: str, file_id: int, rows: int, key: str = "id") -> int:
    """Remove a file's rows of ``table`` (whose primary key is ``key``), ``rows`` per
    transaction."""
    removed = 0
    while True:
        with db.transaction():
            count = db.execute(
                f"DELETE FROM {table} WHERE {key} IN"
                f" (SELECT {key} FROM {table} WHERE file_id = ? ORDER BY {key} LIMIT ?)",
                (file_id, rows),
            )
        removed += count
        if count < rows:
            return removed


def _expired_keys(db: SQL, now: float, rows: int) -> int:
    """Keys accepted 24 hours ago or more: they no longer skip anything. Walked in the
    order of their primary key, ``rows`` keys a transaction (no index by age: it would
    slow every import)."""
    cutoff, removed = int(now) - KEY_WINDOW_SECONDS, 0
    after: tuple[str, str] = ("", "")
    while True:
        found = db.query(
            "SELECT tenant, key FROM idempotency_keys WHERE (tenant, key) > (?, ?)"
            " ORDER BY tenant, key LIMIT 1 OFFSET ?",
            (*after, rows - 1),
        )
        sql = "DELETE FROM idempotency_keys WHERE accepted_at <= ? AND (tenant, key) > (?, ?)"
        with db.transaction():
            if not found:  # the last range: to the end
                return removed + db.execute(sql, (cutoff, *after))
            upto = (found[0][0], found[0][1])
            removed += db.execute(sql + " AND (tenant, key) <= (?, ?)", (cutoff, *after, *upto))
        after = upto
