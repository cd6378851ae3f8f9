"""Listing turns: processes that share a store and a source (replicas) take turns listing
it, rather than each listing it at every poll; the others take files from what the last
listing published. The turn is a compare-and-set on the source's row, so one process wins
however many ask at once; a process that dies mid-listing only delays the next turn.

Written in the SQL both databases speak (see ``ledger.SQL``), with the callers' clocks:
hosts kept in step by NTP differ by far less than a poll interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from connector.errors import StoreBusy
from connector.sources.base import RemoteFile
from connector.store.ledger import SQL


class Listings:
    """Called holding no claim (a poll takes its turn and publishes before it takes any
    file): no transaction here is fenced, and none can be refused as ClaimLost."""

    def __init__(self, db: SQL) -> None:
        self.db = db

    def turn(self, source: str, every: float, now: float, by: str) -> list[RemoteFile] | None:
        """None when it is ``by``'s turn to list ``source`` (no turn begun in the last
        ``every`` seconds; ``every == 0``: always, whatever another host's clock wrote);
        the turn, ``(by, now)``, is recorded at once. Else the files the last listing
        published: while the current turn's listing runs, the previous one's. A store too
        busy to say makes it our turn: an extra listing costs less than a missed poll."""
        try:
            return self._turn(source, every, now, by)
        except StoreBusy:
            return None

    def _turn(self, source: str, every: float, now: float, by: str) -> list[RemoteFile] | None:
        cutoff = float("inf") if every == 0 else now - every
        with self.db.transaction():
            won = self.db.query(
                "INSERT INTO listings(source, listed_at, listed_by, files) VALUES (?, ?, ?, '[]')"
                " ON CONFLICT(source) DO UPDATE SET listed_at = excluded.listed_at,"
                " listed_by = excluded.listed_by WHERE listings.listed_at <= ? RETURNING source",
                (source, now, by, cutoff),
            )
            if won:
                return None
            rows = self.db.query("SELECT files FROM listings WHERE source = ?", (source,))
        return [RemoteFile(name, size, mtime) for name, size, mtime in orjson.loads(rows[0][0])]

    def publish(self, source: str, files: Sequence[RemoteFile], by: str, at: float) -> None:
        """What the turn ``(by, at)`` (``turn``'s ``by`` and ``now``) found ready to take;
        the other processes take from it until the next turn's listing publishes. A turn
        since taken by another (this lister was slow, or frozen) keeps its own listing:
        nothing is written."""
        text = orjson.dumps([(f.name, f.size, f.mtime) for f in files]).decode()
        try:
            with self.db.transaction():
                self.db.execute(
                    "UPDATE listings SET files = ?"
                    " WHERE source = ? AND listed_by = ? AND listed_at = ?",
                    (text, source, by, at),
                )
        except StoreBusy:
            return  # (as for the turn: the others wait for the next listing)
