"""Where ingested contacts and events go: the Sink port, and its adapters."""

from __future__ import annotations

from typing import Protocol

from connector.csvrules.records import Batch


class Sink(Protocol):
    """Receives a file's batches inside the store's transactions (see ``Ingestor``): a
    batch in the group of commits that moves the file's cursor, ``finish`` in the
    transaction that writes its final ledger entry."""

    def deliver(self, file_id: int, kind: str, batch: Batch, now: int) -> None:
        """Store one batch (events, keys, contact upserts, rejects) and advance the cursor."""
        ...

    def finish(self, file_id: int) -> None:
        """Make what the file delivered visible, with its final entry."""
        ...
