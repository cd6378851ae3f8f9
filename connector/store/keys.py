"""Idempotency keys, the part both adapters decide alike: each records a batch's new (or
expired) keys in one statement of its own; which events that keeps, in file order, and
dropping those whose key was taken, are decided here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from connector.store.ledger import SQL, Delivered, stored_rows

# Events whose keys are claimed per call of ``decided``, by id (a file's events have
# consecutive ids, but for those of a file stored at the same time): one unit of a group.
DECIDED_EVENTS = 20_000
_KEYED_EVENTS = (
    "SELECT id, idempotency_key FROM events WHERE id >= ? AND id < ? AND file_id = ?"
    " AND idempotency_key IS NOT NULL ORDER BY id"
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
    start: int,
    first_uses: Callable[[list[str]], list[bool] | None],
    delete: Callable[[list[int]], None],
) -> Delivered:
    """``Sink.decide`` for both adapters: the keys of a file's provisional events with ids
    from ``start`` to before ``start + DECIDED_EVENTS`` are claimed in file order through
    the adapter's ``first_uses``; the events whose key was taken are ``delete``d and
    counted as duplicates."""
    rows = db.query(_KEYED_EVENTS, (start, start + DECIDED_EVENTS, file_id))
    keep = first_uses([key for _, key in rows]) if rows else None
    if keep is None:
        return Delivered(0, 0, None)
    gone = [event for (event, _), k in zip(rows, keep, strict=True) if not k]
    delete(gone)
    return Delivered(stored_rows(kind, 0, len(gone)), len(gone), None)
