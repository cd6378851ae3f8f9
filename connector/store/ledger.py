"""The files ledger: which bytes were seen, from where, and what became of them.

A file's identity is the SHA-256 of its bytes. An ``ingesting`` entry is a file in hand,
with a cursor (records committed so far) that moves in the same transaction as its rows, so
a crash leaves an entry that a re-run resumes rather than starts over. While a download is
still arriving, its entry has no checksum yet (provisional): it is known by its place and
listing until ``decide`` gives it one, or ``forget`` takes it back. A ``failed`` entry
is one whose ingestion stopped on an error or a stop request (resumed the same way), or a
note that a file could not be fetched (replaced by whatever the next try decides).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import structlog

from connector.config import DEFAULT_TENANT
from connector.csvrules.reader import Prefix
from connector.errors import StorageError, StoreBusy
from connector.sources.base import RemoteFile
from connector.status import Status

_COLUMNS = (
    "id, source, path, sha256, size, kind, status, rows, rejected, duplicates, cursor,"
    " first_event, prefix_size, prefix_sha256, tenant, unclaimed_from"
)
_UNFINISHED = "status IN ('ingesting', 'failed')"
_LISTING = "size = ? AND mtime IS NOT DISTINCT FROM ?"  # (mtime may be unknown: NULL)


@dataclass(frozen=True)
class Arrival:
    """A file as it arrived: where from, and its bytes' identity."""

    source: str
    path: str
    sha256: str | None  # None: the bytes could not be read (a failed download)
    size: int
    kind: str
    mtime: float | None = None  # the remote modification time, to know it again unread
    tenant: str = DEFAULT_TENANT  # whose bytes: a checksum is known within its tenant


@dataclass(frozen=True)
class Known:
    """A file already decided, as the ledger remembers it by its place and listing."""

    id: int
    size: int
    mtime: float | None
    status: Status
    completed: bool  # its `after` (or error_dir) action was done
    sent_away: bool = False  # that action moved or deleted it: listed again, it came back

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # (as read: its text)

    def same_listing(self, file: RemoteFile) -> bool:
        return (self.size, self.mtime) == (file.size, file.mtime)

    def matches(self, file: RemoteFile) -> bool:
        """Whether ``file`` is the listing decided: else it has changed, or it was moved
        away or deleted and is listed again (moved back by hand: to be taken again)."""
        return not self.sent_away and self.same_listing(file)


class Reject(NamedTuple):
    """A rejected row of a file (``line`` None: the file was rejected whole), with the cell
    or line that rejected it ("" when none is kept)."""

    line: int | None
    reason: str
    value: str


@dataclass(frozen=True)
class Entry:
    id: int
    source: str
    path: str
    sha256: str | None
    size: int
    kind: str
    status: Status
    rows: int
    rejected: int
    duplicates: int
    cursor: int
    first_event: int | None  # the id of its first stored event (events has no file index)
    # Provisional: the bytes its committed records were read from (at most these).
    prefix_size: int | None = None
    prefix_sha256: str | None = None
    tenant: str = DEFAULT_TENANT
    # Decided once provisional: the event from which its keys are still to be claimed.
    unclaimed_from: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # (as read: its text)

    @property
    def prefix(self) -> Prefix | None:
        if self.prefix_size is None or self.prefix_sha256 is None:
            return None
        return Prefix(self.prefix_size, self.prefix_sha256)


@dataclass(frozen=True)
class Delivered:
    """What one batch added to its file: the ledger's counts move by this."""

    rows: int  # records stored (an events file's events less those skipped for their key)
    duplicates: int  # events skipped: their idempotency key was accepted within 24 hours
    first_event: int | None  # the id of the batch's first stored event, if any
    last_event: int | None = None  # ... and of its last


def stored_rows(kind: str, valid: int, duplicates: int) -> int:
    """The ledger's `rows` for valid records: an events file's stored events (less those
    skipped for their key), a contacts file's contacts (its events are extra)."""
    return valid - duplicates if kind == "events" else valid


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    """``iso``'s text back to Unix seconds."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class SQL(Protocol):
    """What the ledger needs of an adapter: statements in the SQL that SQLite and
    PostgreSQL share (``?`` placeholders), run in the calling thread's transaction."""

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run a statement; returns how many rows it changed."""
        ...

    def transaction(self) -> AbstractContextManager[None]: ...


class Ledger:
    """The files ledger, one implementation for every adapter: its statements are written
    in the SQL that both databases speak."""

    def __init__(self, db: SQL, *, file_ids: str | None = None) -> None:
        """``file_ids``: a query for a new entry's id, for a store whose own choice may
        be an id still in use (SQLite gives the largest one again once its row is gone);
        None: the store's own."""
        self.db = db
        self._insert_id = ("id, ", f"({file_ids}), ") if file_ids else ("", "")

    def _one(self, where: str, params: tuple[Any, ...]) -> Entry | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM files WHERE {where} LIMIT 1", params)
        return Entry(*rows[0]) if rows else None

    def get(self, entry_id: int) -> Entry:
        entry = self._one("id = ?", (entry_id,))
        assert entry is not None, entry_id
        return entry

    def ingested(self, tenant: str, sha256: str) -> Entry | None:
        """The entry under which these bytes were ingested for ``tenant``, if they were."""
        return self._one(
            "sha256 = ? AND tenant = ? AND status = 'ingested' AND forgotten_at IS NULL"
            " ORDER BY id",
            (sha256, tenant),
        )

    def latest(self, tenant: str, sha256: str) -> Entry | None:
        """The last final entry of these bytes for ``tenant``, forgotten or not."""
        return self._one(
            "sha256 = ? AND tenant = ? AND feed_seq IS NOT NULL ORDER BY id DESC",
            (sha256, tenant),
        )

    def audit(
        self, action: str, tenant: str, sha256: str | None, reason: str, user: str, now: float
    ) -> None:
        """An entry of the audit trail (`dump audit`): what an operator did, for whom,
        why, by whom; never the data it touched. Call inside the transaction that does it."""
        self.db.execute(
            "INSERT INTO audit(at, action, tenant, sha256, reason, by_user)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (iso(now), action, tenant, sha256, reason, user),
        )

    def forget_bytes(self, tenant: str, sha256: str, now: float) -> int:
        """Make these bytes unknown to ``tenant``'s ledger: their next arrival is ingested
        as new. Their entries and rows stay. Call inside the transaction that audits it;
        returns how many entries it marked."""
        return self.db.execute(
            "UPDATE files SET forgotten_at = ? WHERE sha256 = ? AND tenant = ?"
            " AND forgotten_at IS NULL AND status IN ('ingested', 'duplicate', 'rejected')",
            (iso(now), sha256, tenant),
        )

    def unfinished(self, arrival: Arrival) -> Entry | None:
        """The entry a run left unfinished (died, failed or stopped) for these bytes: by
        checksum; or, their checksum not known yet, the provisional one of this listing."""
        a = arrival
        if a.sha256 is not None:
            return self._one(
                f"sha256 = ? AND tenant = ? AND {_UNFINISHED} ORDER BY id", (a.sha256, a.tenant)
            )
        return self._one(
            f"source = ? AND path = ? AND {_LISTING} AND sha256 IS NULL"
            f" AND {_UNFINISHED} ORDER BY id",
            (a.source, a.path, a.size, a.mtime),
        )

    def decided_unfinished(self, arrival: Arrival) -> bool:
        """Whether this listing of this place has an unfinished entry with a checksum (a
        run stopped or died after deciding its bytes): it is resumed by that checksum."""
        a = arrival
        return bool(
            self.db.query(
                f"SELECT 1 FROM files WHERE source = ? AND path = ? AND {_LISTING}"
                f" AND sha256 IS NOT NULL AND {_UNFINISHED} LIMIT 1",
                (a.source, a.path, a.size, a.mtime),
            )
        )

    def stale(self, arrival: Arrival) -> list[int]:
        """Provisional entries of this place for another listing: bytes since replaced,
        that will never get a checksum (their rows are to be taken back)."""
        a = arrival
        rows = self.db.query(
            f"SELECT id FROM files WHERE source = ? AND path = ? AND sha256 IS NULL"
            f" AND {_UNFINISHED} AND NOT ({_LISTING})",
            (a.source, a.path, a.size, a.mtime),
        )
        return [row[0] for row in rows]

    def begin(self, arrival: Arrival, now: float) -> Entry:
        """The ``ingesting`` entry of these bytes (or, without a checksum, the provisional
        one of this listing): the one a run left ``unfinished``, resumed from its cursor and
        now recorded as this arrival, else a new one. Committed at once, so that a crash
        leaves a trace."""
        with self.db.transaction():
            entry = self.unfinished(arrival)
            if entry is None:
                self._supersede(arrival)
                entry_id = self._insert(arrival, Status.INGESTING, now, finished=False)
            else:
                entry_id = entry.id
                self._supersede(arrival, keep=entry_id)
                a = arrival
                self.db.execute(
                    "UPDATE files SET status = 'ingesting', source = ?, path = ?, size = ?,"
                    " mtime = ?, tenant = ? WHERE id = ?",
                    (a.source, a.path, a.size, a.mtime, a.tenant, entry_id),
                )
        return self.get(entry_id)

    def _supersede(self, arrival: Arrival, keep: int | None = None) -> None:
        """Drop the notes of failed tries of this file that stored nothing: the decision
        being recorded replaces them (one entry per file)."""
        self.db.execute(
            "DELETE FROM files WHERE source = ? AND path = ? AND status = 'failed'"
            " AND cursor = 0 AND id IS DISTINCT FROM ?",
            (arrival.source, arrival.path, keep),
        )

    def fail(self, entry_id: int, now: float) -> None:
        """The ingestion in hand stopped before its end: ``failed``, resumed by a later run.
        If the store itself is what fails, the entry stays ``ingesting``, which a later run
        resumes just the same."""
        try:
            with self.db.transaction():
                self.db.execute(
                    "UPDATE files SET status = 'failed', processed_at = ?"
                    " WHERE id = ? AND status = 'ingesting'",
                    (iso(now), entry_id),
                )
        except (StorageError, StoreBusy) as exc:
            structlog.get_logger().warning("ledger_unwritable", entry=entry_id, cause=str(exc))

    def note_failure(self, arrival: Arrival, now: float) -> None:
        """A file that could not be fetched or staged: a ``failed`` entry, replacing that
        of an earlier failed try, so that the ledger shows it until a try succeeds. Best
        effort, like ``fail``: the file is retried whether or not the note is written."""
        try:
            with self.db.transaction():
                # A try that stored part of the file already says it failed: it is dated.
                dated = self.db.execute(
                    "UPDATE files SET processed_at = ? WHERE source = ? AND path = ?"
                    " AND status = 'failed' AND cursor > 0",
                    (iso(now), arrival.source, arrival.path),
                )
                if not dated:
                    self._supersede(arrival)
                    self._insert(arrival, Status.FAILED, now, finished=True)
        except (StorageError, StoreBusy) as exc:
            structlog.get_logger().warning("ledger_unwritable", file=arrival.path, cause=str(exc))

    def _insert(self, arrival: Arrival, status: Status, now: float, *, finished: bool) -> int:
        a = arrival
        column, value = self._insert_id
        rows = self.db.query(
            f"INSERT INTO files({column}tenant, source, path, sha256, size, mtime, kind,"
            f" status, started_at, processed_at) VALUES ({value}?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            (
                a.tenant,
                a.source,
                a.path,
                a.sha256,
                a.size,
                a.mtime,
                a.kind,
                status,
                iso(now),
                iso(now) if finished else None,
            ),
        )
        return int(rows[0][0])

    def advance(
        self,
        entry_id: int,
        records: int,
        rejected: int,
        delivered: Delivered,
        prefix: Prefix | None = None,
    ) -> None:
        """Move the cursor past ``records`` and the counts by what they ``delivered`` (its
        ``rows`` may be negative: events dropped when a provisional file is decided); call
        inside the transaction that stores them. ``prefix``: the bytes of a provisional
        file read so far, which hold every record up to the cursor; another run checks its
        own download against them before it goes on from there."""
        d, p = delivered, prefix
        self.db.execute(
            "UPDATE files SET cursor = cursor + ?, rows = rows + ?, rejected = rejected + ?,"
            " duplicates = duplicates + ?, first_event = coalesce(first_event, ?),"
            " last_event = coalesce(?, last_event), prefix_size = coalesce(?, prefix_size),"
            " prefix_sha256 = coalesce(?, prefix_sha256) WHERE id = ?",
            (
                records,
                d.rows,
                rejected,
                d.duplicates,
                d.first_event,
                d.last_event,
                p and p.size,
                p and p.sha256,
                entry_id,
            ),
        )

    def decide(self, entry_id: int, sha256: str) -> None:
        """A provisional entry gets its checksum; the keys of its events are to be claimed
        from its first one on (``Sink.decide``, then ``claimed``)."""
        with self.db.transaction():
            self.db.execute(
                "UPDATE files SET sha256 = ?, unclaimed_from = first_event"
                " WHERE id = ? AND sha256 IS NULL",
                (sha256, entry_id),
            )

    def claimed(self, entry_id: int, before: int) -> None:
        """The keys of the entry's events before event ``before`` are claimed; call inside
        the transaction that claims them. Past its last event, none is left."""
        self.db.execute(
            "UPDATE files SET unclaimed_from = CASE WHEN ? <= last_event THEN ? END WHERE id = ?",
            (before, before, entry_id),
        )

    def forget(self, entry_id: int) -> None:
        """Drop an entry; call inside the transaction that takes back its rows."""
        self.db.execute("DELETE FROM files WHERE id = ?", (entry_id,))

    def finish(self, entry_id: int, now: float) -> Entry:
        with self.db.transaction():
            self.db.execute(
                "UPDATE files SET status = 'ingested', processed_at = ? WHERE id = ?",
                (iso(now), entry_id),
            )
            self._final(entry_id)
        return self.get(entry_id)

    def _final(self, entry_id: int) -> None:
        """The file's place in the change feed (``connector.store.feed``): the next number
        of its clock. Last in the final transaction: the clock's row stays locked until the
        commit, so that numbers become visible in the order they are taken."""
        [(seq,)] = self.db.query("UPDATE feed_clock SET seq = seq + 1 RETURNING seq")
        self.db.execute("UPDATE files SET feed_seq = ? WHERE id = ?", (seq, entry_id))

    def record(
        self,
        arrival: Arrival,
        status: Status,
        now: float,
        reason: str | None = None,
        *,
        done: str | None = None,
    ) -> Entry:
        """A final entry in one step: ``duplicate``, or ``rejected`` with its reason;
        ``done``: its remote action too, already done (nothing to do for ``leave``)."""
        with self.db.transaction():
            self._supersede(arrival)
            entry_id = self._insert(arrival, status, now, finished=True)
            if reason is not None:
                self.db.execute(
                    "INSERT INTO rejects(file_id, line, reason) VALUES (?, NULL, ?)",
                    (entry_id, reason),
                )
            if done is not None:
                self.db.execute(
                    "UPDATE files SET completed_at = ?, action = ? WHERE id = ?",
                    (iso(now), done, entry_id),
                )
            self._final(entry_id)
        return self.get(entry_id)

    def first_taken(self, tenant: str, sha256: str) -> float:
        """When these bytes were first taken for ``tenant`` (Unix seconds), whatever came
        of them since (duplicates, replays, forgets)."""
        [(started,)] = self.db.query(
            "SELECT min(started_at) FROM files WHERE tenant = ? AND sha256 = ?", (tenant, sha256)
        )
        return parse_iso(started)

    def last_arrival(self, source: str) -> float | None:
        """When the newest file of ``source`` was first taken (Unix seconds), if any."""
        [(started,)] = self.db.query(
            "SELECT max(started_at) FROM files WHERE source = ?"
            " AND status IN ('ingested', 'duplicate', 'rejected')",
            (source,),
        )
        return None if started is None else parse_iso(started)

    def known(self, source: str) -> dict[str, Known]:
        """Files of ``source`` already decided, by path: a poll skips them unread. (The
        latest decision of a path counts.)"""
        return self._known("source = ?", (source,))

    def known_at(self, source: str, path: str) -> Known | None:
        """The latest decision on one path (by the index: no scan of the source's)."""
        return self._known("source = ? AND path = ?", (source, path)).get(path)

    def _known(self, where: str, params: tuple[Any, ...]) -> dict[str, Known]:
        rows = self.db.query(
            "SELECT path, id, size, mtime, status, completed_at IS NOT NULL,"
            " coalesce(action, 'leave') <> 'leave' FROM files"
            f" WHERE {where} AND status IN ('ingested', 'duplicate', 'rejected') ORDER BY id",
            params,
        )
        return {
            path: Known(entry_id, size, mtime, status, bool(done), bool(away))
            for path, entry_id, size, mtime, status, done, away in rows
        }

    def mark_completed(self, source: str, path: str, action: str, now: float) -> None:
        """The remote ``action`` for this file is done: later polls need not touch it
        again, unless it moved or deleted the file and the same listing shows up again
        (moved back by hand, say: it is then taken again)."""
        with self.db.transaction():
            self.db.execute(
                "UPDATE files SET completed_at = ?, action = ? WHERE source = ? AND path = ?"
                " AND completed_at IS NULL",
                (iso(now), action, source, path),
            )
            self.db.execute("DELETE FROM tries WHERE source = ? AND path = ?", (source, path))

    def tried(self, arrival: Arrival, cause: str) -> int:
        """Note a failed try of this listing; returns how many tries of it failed in a row
        (a new listing of the path starts again at 1). Best effort, like ``note_failure``:
        0 when the store cannot note it, so that a store fault never sets a file aside."""
        a = arrival
        try:
            with self.db.transaction():
                rows = self.db.query(
                    "INSERT INTO tries(source, path, size, mtime, tries, cause)"
                    " VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(source, path) DO UPDATE SET"
                    " tries = CASE WHEN tries.size = excluded.size"
                    " AND tries.mtime IS NOT DISTINCT FROM excluded.mtime"
                    " THEN tries.tries + 1 ELSE 1 END,"
                    " size = excluded.size, mtime = excluded.mtime, cause = excluded.cause"
                    " RETURNING tries",
                    (a.source, a.path, a.size, a.mtime, cause),
                )
        except (StorageError, StoreBusy) as exc:
            structlog.get_logger().warning("ledger_unwritable", file=a.path, cause=str(exc))
            return 0
        return int(rows[0][0])

    def unfinished_at(self, source: str, path: str) -> list[Entry]:
        """The entries of this place that are not final: rows stored as its bytes
        arrived (no checksum yet), or bytes begun here and stopped, failed or died."""
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM files WHERE source = ? AND path = ? AND {_UNFINISHED}",
            (source, path),
        )
        return [Entry(*row) for row in rows]

    def first_reject(self, entry_id: int) -> Reject | None:
        """The file's first stored reject, if it has one."""
        rejects = self.rejects(entry_id, 1)
        return rejects[0] if rejects else None

    def rejects_saying(self, entry_id: int, words: str) -> int:
        """How many of the file's rejects give a reason with ``words`` in it (words with
        no LIKE wildcard but "_", which stands for itself too)."""
        [(count,)] = self.db.query(
            "SELECT count(*) FROM rejects WHERE file_id = ? AND reason LIKE ?",
            (entry_id, f"%{words}%"),
        )
        return int(count)

    def rejects(self, entry_id: int, limit: int | None = None) -> list[Reject]:
        """The file's first ``limit`` stored rejects (all: None), in file order, in this
        thread's transaction (a dry run's, say)."""
        rows = self.db.query(
            "SELECT line, reason, coalesce(value, '') FROM rejects WHERE file_id = ?"
            " ORDER BY id LIMIT ?",
            (entry_id, 2**62 if limit is None else limit),  # (no LIMIT form both know)
        )
        return [Reject(*row) for row in rows]
