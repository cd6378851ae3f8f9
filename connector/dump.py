"""``connector dump``: the store as JSON Lines, in the shapes of the README's "What the
dumps show".

Events and rejects of a file still being ingested (or failed part-way) are not shown: they
appear with its final ledger entry, which also applies its contact upserts (see the
README's guarantees).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Literal

import orjson

from connector.store.db import Database

Table = Literal["contacts", "events", "rejects", "files"]
TABLES: tuple[Table, ...] = ("contacts", "events", "rejects", "files")

_QUERIES: dict[Table, str] = {
    "contacts": "SELECT identifier, attributes FROM contacts ORDER BY identifier",
    "events": (
        "SELECT e.identifier, e.name, e.timestamp, e.idempotency_key, e.data,"
        " f.source, f.path, f.sha256, e.line"
        " FROM events e JOIN files f ON f.id = e.file_id"
        " WHERE f.status = 'ingested' ORDER BY e.id"
    ),
    "rejects": (
        "SELECT f.source, f.path, f.sha256, r.line, r.reason"
        " FROM rejects r JOIN files f ON f.id = r.file_id"
        " WHERE f.status IN ('ingested', 'rejected') ORDER BY r.id"
    ),
    "files": (
        "SELECT source, path, sha256, size, status, rows, rejected, duplicates, processed_at"
        " FROM files WHERE status <> 'ingesting' ORDER BY id"
    ),
}


def _contact(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"identifier": row[0], "attributes": orjson.Fragment(row[1])}


def _event(row: tuple[Any, ...]) -> dict[str, Any]:
    identifier, name, timestamp, key, data, source, path, sha256, line = row
    return {
        "identifier": identifier,
        "name": name,
        "timestamp": timestamp,
        "idempotencyKey": key,
        "data": orjson.Fragment(data),
        "source": source,
        "file": path,
        "sha256": sha256,
        "line": line,
    }


def _reject(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(("source", "file", "sha256", "line", "reason"), row, strict=True))


def _file(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("source", "path", "sha256", "size", "status", "rows", "rejected", "duplicates")
    return dict(zip((*keys, "processed_at"), row, strict=True))


_SHAPES: dict[Table, Callable[[tuple[Any, ...]], dict[str, Any]]] = {
    "contacts": _contact,
    "events": _event,
    "rejects": _reject,
    "files": _file,
}


def records(db: Database, table: Table) -> Iterator[dict[str, Any]]:
    shape = _SHAPES[table]
    for row in db.rows(_QUERIES[table]):  # (a damaged store is a StoreError, not a traceback)
        yield shape(row)


def dump(db: Database, table: Table, out: BinaryIO) -> int:
    count = 0
    for record in records(db, table):
        out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        count += 1
    out.flush()
    return count
