"""The change feed: what became visible, oldest first, from a cursor (docs/feed.md,
"Consuming ingested data"). Read the same way from every adapter, in the SQL both databases speak.

The order is that of files becoming final. A file's final entry takes the next number of
the feed clock (``files.feed_seq``) as the last step of its final transaction: the clock's
one row stays locked until that transaction commits, so a later number is never visible
before an earlier one, on either database. (An id from a sequence would not do: on
PostgreSQL a transaction that took a higher id may commit first, and a reader who had
passed it would never see the lower one.) Within a file, records come in the order of
their ids. A cursor says where a reader is: ``"<file's number>:<last record's id>"``, or
``"<file's number>"`` in the files feed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from connector.errors import UnknownCursor

Kind = Literal["events", "contacts", "rejects", "files"]
KINDS: tuple[Kind, ...] = ("events", "contacts", "rejects", "files")

# A store made before the feed: its final files numbered in the order they were recorded,
# each file's events bounded by their ids (both schemas run it).
FEED_NUMBERING = """
    UPDATE files SET feed_seq = numbered.n FROM (
        SELECT id, row_number() OVER (ORDER BY id) AS n FROM files
        WHERE status IN ('ingested', 'duplicate', 'rejected')
    ) AS numbered WHERE files.id = numbered.id;
    UPDATE files SET first_event = coalesce(first_event, bounds.first), last_event = bounds.last
    FROM (
        SELECT file_id, min(id) AS first, max(id) AS last FROM events GROUP BY file_id
    ) AS bounds WHERE files.id = bounds.file_id;
"""

# The feed for who reads the store directly: stable views, in the feed's order (feed_seq,
# then the record's id), created by both schemas.
FEED_VIEWS = """
    CREATE VIEW feed_files AS
        SELECT feed_seq, tenant, source, path, sha256, size, status, rows, rejected,
            duplicates, processed_at
        FROM files WHERE feed_seq IS NOT NULL;
    CREATE VIEW feed_events AS
        SELECT f.feed_seq, e.id AS event_id, f.tenant, e.identifier, e.name, e.timestamp,
            e.idempotency_key, e.data, f.source, f.path AS file, f.sha256, e.line
        FROM files f JOIN events e ON e.file_id = f.id
            AND e.id BETWEEN f.first_event AND f.last_event
        WHERE f.feed_seq IS NOT NULL AND f.status = 'ingested';
    CREATE VIEW feed_rejects AS
        SELECT f.feed_seq, r.id AS reject_id, f.tenant, f.source, f.path AS file, f.sha256,
            r.line, r.reason
        FROM files f JOIN rejects r ON r.file_id = f.id
        WHERE f.feed_seq IS NOT NULL AND f.status IN ('ingested', 'rejected');
    CREATE VIEW feed_contacts AS
        SELECT f.feed_seq, c.id AS change_id, f.tenant, c.identifier, c.attributes,
            f.processed_at AS updated_at
        FROM files f JOIN contact_changes c ON c.file_id = f.id
        WHERE f.feed_seq IS NOT NULL AND f.status = 'ingested';
"""

Rows = Callable[[str, tuple[Any, ...]], Iterator[tuple[Any, ...]]]

# Records of files of one tenant, source and path, each where its `?` is given (NULL:
# any); `{0}`: the files table's alias and a dot, if any. (The dumps' too.)
FROM = (
    "{0}tenant = coalesce(?, {0}tenant) AND {0}source = coalesce(?, {0}source)"
    " AND {0}path = coalesce(?, {0}path)"
)
# Which files' records a feed shows: of one tenant, source and path, each where given.
Scope = tuple[str | None, str | None, str | None]
_SCOPE = FROM.format("")
# The files whose records a feed shows, from a number on, in feed order.
_FILES = (
    "SELECT feed_seq, id, tenant, source, path, sha256, first_event, last_event FROM files"
    f" WHERE feed_seq >= ? AND status IN ({{}}) AND {_SCOPE} ORDER BY feed_seq"
)
# A file's records after an id, in order. Events are found between the file's first and
# last event's ids (events has no index by file: it would slow every insert).
_RECORDS = {
    "events": (
        "SELECT id, identifier, name, timestamp, idempotency_key, data, line FROM events"
        " WHERE id BETWEEN ? AND ? AND file_id = ? AND id > ? ORDER BY id"
    ),
    "rejects": "SELECT id, line, reason FROM rejects WHERE file_id = ? AND id > ? ORDER BY id",
    "contacts": (
        "SELECT c.id, c.identifier, c.attributes, f.processed_at"
        " FROM contact_changes c JOIN files f ON f.id = c.file_id"
        " WHERE c.file_id = ? AND c.id > ? ORDER BY c.id"
    ),
}
_SHOWN = {"events": "'ingested'", "contacts": "'ingested'", "rejects": "'ingested', 'rejected'"}
_WHOLE_FILES = (
    "SELECT feed_seq, tenant, source, path, sha256, size, status, rows, rejected, duplicates,"
    f" processed_at FROM files WHERE feed_seq > ? AND {_SCOPE}"
    " ORDER BY feed_seq"
)
_CLOCK = "SELECT seq, pruned FROM feed_clock"
# Whether records of a kind were removed after a cursor (file, item) up to file `pruned`:
# params (file, pruned, *scope, file, item).
_REMOVED_AFTER = (
    f"SELECT 1 FROM files WHERE feed_seq >= ? AND feed_seq <= ? AND {_SCOPE}"
    " AND ({}) AND (feed_seq > ? OR {}) LIMIT 1"
)
_MISSED = {
    "events": _REMOVED_AFTER.format(
        "status = 'ingested' AND first_event IS NOT NULL", "last_event > ?"
    ),
    "rejects": _REMOVED_AFTER.format("status = 'rejected' OR rejected > 0", "? >= 0"),
    "contacts": _REMOVED_AFTER.format("status = 'ingested'", "? >= 0"),
}
_CURSOR = re.compile(r"(0|[1-9][0-9]{0,18})(?::(0|[1-9][0-9]{0,18}))?")


@dataclass(frozen=True)
class Cursor:
    seq: int  # the number of the file of the last record read (0: none yet)
    item: int = 0  # the last record's id in that file (0: none of it yet)

    def text(self, kind: Kind) -> str:
        return str(self.seq) if kind == "files" else f"{self.seq}:{self.item}"


START = Cursor(0)


def parse_cursor(text: str, kind: Kind) -> Cursor:
    """A cursor as printed by the feed of ``kind``; UnknownCursor if it is not one."""
    found = _CURSOR.fullmatch(text)
    if found is None or (kind == "files") != (found[2] is None):
        raise UnknownCursor(f"unknown cursor {text!r}: not one that `feed {kind}` prints")
    return Cursor(int(found[1]), int(found[2] or 0))


class FeedWaiter(Protocol):
    """Waits for the feed to move (a file becoming final), as an adapter can tell it."""

    def wait(self, seconds: float) -> bool:
        """Return once the feed may have moved (True) or after ``seconds`` (False)."""
        ...

    def close(self) -> None: ...


def feed(
    reading: Callable[[], AbstractContextManager[Rows]],
    kind: Kind,
    after: Cursor,
    scope: Scope = (None, None, None),
) -> Generator[dict[str, Any]]:
    """The records of ``kind`` that became visible after ``after``, oldest first, each
    with its ``"cursor"``; ``scope``: of that tenant, source and path only (None: any).
    Read from one snapshot (of the
    moment the reading begins), as they come: flat memory however many there are."""
    return (_files if kind == "files" else _records)(reading, kind, after, scope)


def _check(rows: Rows, kind: Kind, after: Cursor, scope: Scope) -> int:
    """UnknownCursor unless the feed can go on from ``after``; the number of the last file
    whose records retention removed (``[store] keep``: 0, none)."""
    [(seq, pruned)] = list(rows(_CLOCK, ()))
    if after.seq > seq:
        raise UnknownCursor(
            f"unknown cursor {after.text(kind)!r}: this store's feed has"
            f" not reached it (a cursor of another store?)"
        )
    # A reader before records since removed would miss them: its own file's after its
    # cursor (events: known by the file's last event's id; others: assumed), or those of
    # a later file that had some (as the ledger, which keeps every entry, tells).
    if kind != "files" and after != START and after.seq <= pruned:
        missed = list(rows(_MISSED[kind], (after.seq, pruned, *scope, after.seq, after.item)))
        if missed:
            raise UnknownCursor(
                f"cursor {after.text(kind)!r} is older than what the store keeps ([store]"
                " keep): records after it were removed; start again without --after"
            )
    return int(pruned)


def _files(
    reading: Callable[[], AbstractContextManager[Rows]],
    kind: Kind,
    after: Cursor,
    scope: Scope,
) -> Generator[dict[str, Any]]:
    keys = (
        "tenant",
        "source",
        "path",
        "sha256",
        "size",
        "status",
        "rows",
        "rejected",
        "duplicates",
        "processed_at",
    )
    with reading() as rows:
        _check(rows, kind, after, scope)
        for seq, *values in rows(_WHOLE_FILES, (after.seq, *scope)):
            record = dict(zip(keys, values, strict=True))
            record["cursor"] = str(seq)
            yield record


def _records(
    reading: Callable[[], AbstractContextManager[Rows]],
    kind: Kind,
    after: Cursor,
    scope: Scope,
) -> Generator[dict[str, Any]]:
    """Each file's records in turn, by a query of its own (events have no index by file:
    a file's are found between its first and last event's ids)."""
    fragment = orjson.Fragment  # (looked up once: this loop runs a million times a second)
    with reading() as rows:
        pruned = _check(rows, kind, after, scope)
        # (from the first file whose records are kept, for a reader from the start)
        files = rows(_FILES.format(_SHOWN[kind]), (max(after.seq, pruned + 1), *scope))
        for seq, file_id, file_tenant, source, path, sha256, first, last in files:
            since = after.item if seq == after.seq else 0  # (ids start at 1)
            if kind == "events":
                if first is None:
                    continue
                for event_id, identifier, name, timestamp, key, data, line in rows(
                    _RECORDS["events"], (first, last, file_id, since)
                ):
                    yield {
                        "tenant": file_tenant,
                        "identifier": identifier,
                        "name": name,
                        "timestamp": timestamp,
                        "idempotencyKey": key,
                        "data": fragment(data),
                        "source": source,
                        "file": path,
                        "sha256": sha256,
                        "line": line,
                        "cursor": f"{seq}:{event_id}",
                    }
            elif kind == "rejects":
                for reject_id, line, reason in rows(_RECORDS["rejects"], (file_id, since)):
                    yield {
                        "tenant": file_tenant,
                        "source": source,
                        "file": path,
                        "sha256": sha256,
                        "line": line,
                        "reason": reason,
                        "cursor": f"{seq}:{reject_id}",
                    }
            else:
                for change_id, identifier, attributes, updated_at in rows(
                    _RECORDS["contacts"], (file_id, since)
                ):
                    yield {
                        "tenant": file_tenant,
                        "identifier": identifier,
                        "attributes": fragment(attributes),
                        "updated_at": updated_at,
                        "cursor": f"{seq}:{change_id}",
                    }
