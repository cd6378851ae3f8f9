"""Idempotency keys, the part both adapters decide alike: each records a batch's new (or
expired) keys in one statement of its own; which events that keeps, in file order, and
dropping those whose key was taken, are decided here."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


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


def drop_taken(
    chunks: Iterable[list[tuple[int, str]]],
    first_uses: Callable[[list[str]], list[bool] | None],
    delete: Callable[[list[int]], None],
) -> int:
    """Claim the keys of a file's events, given as (id, key) in file order a chunk at a time,
    through the adapter's ``first_uses``; ``delete`` the events whose key was taken. Returns
    how many were."""
    dropped = 0
    for rows in chunks:
        keep = first_uses([key for _, key in rows])
        if keep is not None:
            gone = [event for (event, _), k in zip(rows, keep, strict=True) if not k]
            delete(gone)
            dropped += len(gone)
    return dropped
