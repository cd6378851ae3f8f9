"""A file's status in the ledger, as `dump files` and the feed show it."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where a file is. Final (decided, never changed but by `forget`): INGESTED,
    DUPLICATE, REJECTED; the others are taken again by the next poll or run."""

    INGESTING = "ingesting"  # rows being stored, or stored as the bytes arrive
    FAILED = "failed"  # stopped or failed part-way: resumed or retried later
    INGESTED = "ingested"
    DUPLICATE = "duplicate"  # the same bytes were ingested before, for the same tenant
    REJECTED = "rejected"  # refused whole: the reason is its one reject, line null

    @property
    def accepted(self) -> bool:
        """Decided as the customer meant it (ingested, or already so): the source's
        `after` action applies, not its `error_dir`."""
        return self in (Status.INGESTED, Status.DUPLICATE)
