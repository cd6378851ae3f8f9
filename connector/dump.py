"""``connector dump``: the store as JSON Lines, in the shapes of docs/commands.md, "What
the dumps show" (read by the store's ``records``)."""

from __future__ import annotations

from typing import BinaryIO

import orjson

from connector.store.port import Store, Table


def dump(
    store: Store,
    table: Table,
    out: BinaryIO,
    tenant: str | None = None,
    *,
    source: str | None = None,
    file: str | None = None,
) -> int:
    count = 0
    for record in store.records(table, tenant, source=source, file=file):
        out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        count += 1
    out.flush()
    return count
