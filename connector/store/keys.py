"""Idempotency keys, the part both adapters decide alike: each records a batch's new (or
expired) keys in one statement of its own; which events that keeps, in file order, and
dropping those whose key was taken, are decided here."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from connector.store.ledger import SQL, Delivered, stored_rows

_CHUNK = 10_000  # keyed events read back at a time
_KEYED_EVENTS = (
    "SELECT id, idempotency_key FROM events WHERE id > ? AND file_id = ?"
    " AND idempotency_key IS NOT NULL ORDER BY id LIMIT ?"
)


def kept_events(keys: Sequence[str], recorded: set[str], present: int) -> list[bool] | None:
    """Which events to keep, given their keys in file order ('' for none; ``present`` of
    them carry one) and those the adapter recorded as accepted now (``recorded``, used up):
    the events without a key, and the first use of each recorded one. None: all of them."""
    if len(recorded) == present:  # the usual case: every key is new, and none repeats
        return None
    keep = []
    for key in keys:
        keep.append(not key or key in recorded)
        recorded.discard(key)  # (a later use of the key finds it taken)
    return keep


def decided(
    db: SQL,
    file_id: int,
    kind: str,
    first_event: int | None,
    first_uses: Callable[[list[str]], list[bool] | None],
    delete: Callable[[list[int]], None],
) -> Delivered:
    """``Sink.decide`` for both adapters: the keys of a file's provisional events are
    claimed in file order, a chunk at a time, through the adapter's ``first_uses``; the
    events whose key was taken are ``delete``d and counted as duplicates."""
    dropped = 0
    for rows in _keyed_events(db, file_id, first_event):
        keep = first_uses([key for _, key in rows])
        if keep is not None:
            gone = [event for (event, _), k in zip(rows, keep, strict=True) if not k]
            delete(gone)
            dropped += len(gone)
    return Delivered(stored_rows(kind, 0, dropped), dropped, None)


def _keyed_events(db: SQL, file_id: int, first_event: int | None) -> Iterator[list[Any]]:
    """A file's events that carry a key, as (id, key) in file order, a chunk at a time
    (memory stays flat). By id from its first event: events has no index by file."""
    if first_event is None:
        return
    after = first_event - 1
    while rows := db.query(_KEYED_EVENTS, (after, file_id, _CHUNK)):
        yield rows
        after = rows[-1][0]
