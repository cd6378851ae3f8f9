"""Where ingested contacts and events go: the Sink port, and its adapters."""

from __future__ import annotations

from typing import Protocol

from connector.csvrules.records import Batch


class Sink(Protocol):
    """Receives a file's batches inside the store's transactions (see ``Ingestor``): a
    batch in the group of commits that moves the file's cursor, ``finish`` in the
    transaction that writes its final ledger entry.

    A daemon delivers a large file while it downloads, before its checksum says whether
    its bytes are new: those batches are ``provisional``, then ``decide``d or taken back
    (``discard``). Only a sink that can take rows back in that transaction can do this."""

    def deliver(
        self, file_id: int, kind: str, batch: Batch, now: int, *, provisional: bool = False
    ) -> None:
        """Store one batch (events, keys, contact upserts, rejects) and advance the cursor;
        ``provisional``: without claiming its idempotency keys yet."""
        ...

    def decide(self, file_id: int, kind: str, now: int) -> None:
        """Claim the keys of what was delivered provisionally (events whose key is taken
        are dropped and counted as duplicates)."""
        ...

    def discard(self, file_id: int, *, claimed: bool = False) -> None:
        """Take back what was delivered provisionally; ``claimed``: what was delivered
        with its keys claimed (a file refused whole midway), the keys given back."""
        ...

    def finish(self, file_id: int) -> None:
        """Make what the file delivered visible, with its final entry."""
        ...
