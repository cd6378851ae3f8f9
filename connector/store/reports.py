"""The records behind ``connector dump``, in its formats (docs/commands.md, "What the
dumps show"), read the same way from every adapter.

Events and rejects of a file still being ingested (or failed part-way) are not shown: they
appear with its final ledger entry, which also applies its contact upserts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from connector.store.feed import FROM
from connector.store.port import Table

Shape = Callable[[tuple[Any, ...]], dict[str, Any]]


BY_FILE: tuple[Table, ...] = ("events", "rejects", "files")  # (their queries take FROM)

# A file rejected whole that was ingested since (the same bytes, say with the source's
# settings fixed; or a file set aside unread, put back as it was: same place, size and
# mtime): its rejection is over, and `dump rejects` no longer shows it. (The change feed
# is history: it was handed out.)
_INGESTED_SINCE = (
    "EXISTS (SELECT 1 FROM files g WHERE g.status = 'ingested' AND g.id > f.id"
    " AND g.tenant = f.tenant AND (g.sha256 = f.sha256"
    " OR (f.sha256 IS NULL AND g.source = f.source AND g.path = f.path"
    " AND g.size = f.size AND g.mtime IS NOT DISTINCT FROM f.mtime)))"
)


def queries(json_text: Callable[[str], str], contacts: str = "contacts") -> dict[Table, str]:
    """Each table's query: of one tenant's records where its first ``?`` is a tenant's
    name, of every tenant's where it is NULL (and so for the source and the path of the
    tables of ``BY_FILE``); ``json_text(column)`` reads a JSON column as its text (so that
    it is written out as it is, not parsed and dumped again); ``contacts``: the relation
    that holds the contacts as readers see them."""
    return {
        "contacts": (
            f"SELECT tenant, identifier, {json_text('attributes')} FROM {contacts}"
            " WHERE tenant = coalesce(?, tenant) ORDER BY tenant, identifier"
        ),
        "events": (
            "SELECT f.tenant, e.identifier, e.name, e.timestamp, e.idempotency_key,"
            f" {json_text('e.data')}, f.source, f.path, f.sha256, e.line"
            " FROM events e JOIN files f ON f.id = e.file_id"
            f" WHERE f.status = 'ingested' AND {FROM.format('f.')} ORDER BY e.id"
        ),
        "rejects": (
            "SELECT f.tenant, f.source, f.path, f.sha256, r.line, r.reason"
            " FROM rejects r JOIN files f ON f.id = r.file_id"
            f" WHERE f.status IN ('ingested', 'rejected') AND {FROM.format('f.')}"
            f" AND NOT (f.status = 'rejected' AND {_INGESTED_SINCE}) ORDER BY r.id"
        ),
        "files": (
            "SELECT tenant, source, path, sha256, size, status, rows, rejected, duplicates,"
            " processed_at FROM files"
            f" WHERE status <> 'ingesting' AND {FROM.format('')} ORDER BY id"
        ),
        "audit": (
            "SELECT at, action, tenant, sha256, reason, by_user FROM audit"
            " WHERE tenant = coalesce(?, tenant) ORDER BY id"
        ),
    }


def _contact(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"tenant": row[0], "identifier": row[1], "attributes": orjson.Fragment(row[2])}


def _event(row: tuple[Any, ...]) -> dict[str, Any]:
    tenant, identifier, name, timestamp, key, data, source, path, sha256, line = row
    return {
        "tenant": tenant,
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
    return dict(zip(("tenant", "source", "file", "sha256", "line", "reason"), row, strict=True))


def _file(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("tenant", "source", "path", "sha256", "size", "status", "rows", "rejected")
    return dict(zip((*keys, "duplicates", "processed_at"), row, strict=True))


def _audit(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(("at", "action", "tenant", "sha256", "reason", "user"), row, strict=True))


SHAPES: dict[Table, Shape] = {
    "contacts": _contact,
    "events": _event,
    "rejects": _reject,
    "files": _file,
    "audit": _audit,
}


def shaped(table: Table, rows: Iterable[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    shape = SHAPES[table]
    for row in rows:
        yield shape(row)
