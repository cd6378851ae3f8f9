"""``connector feed``: the change feed as JSON Lines (docs/feed.md),
from a cursor on, and with ``--follow`` as files become final, until a stop request."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from typing import BinaryIO

import orjson
import structlog

from connector.errors import TransientError
from connector.retries import MAX_WAIT
from connector.store.feed import Cursor, FeedWaiter, Kind, parse_cursor
from connector.store.port import Store

WAKE_SECONDS = 0.5  # how long a follower waits at a time, to notice a stop request


def print_feed(
    store: Store,
    kind: Kind,
    after: Cursor,
    out: BinaryIO,
    *,
    tenant: str | None = None,
    source: str | None = None,
    file: str | None = None,
    limit: int | None = None,
    stopping: Callable[[], bool] | None = None,
) -> int:
    """Write the feed of ``kind`` after ``after`` to ``out`` (of that ``tenant``,
    ``source`` and ``file`` only, where given), at most ``limit`` lines; ``stopping``:
    follow it, until ``stopping()``. Returns the lines written."""
    printed = 0
    write, dumps, newline = out.write, orjson.dumps, orjson.OPT_APPEND_NEWLINE  # (hot loop)
    waiter = _Waiter(store) if stopping is not None else None
    try:  # (listening before the first read: a file final meanwhile is not missed)
        while True:
            record = None
            try:
                reading = store.feed(kind, after, tenant, source=source, file=file)
                with contextlib.closing(reading) as records:
                    # (closed early, at the limit, the read ends with it)
                    done = printed
                    wanted = records if limit is None else itertools.islice(records, limit - done)
                    for printed, record in enumerate(wanted, done + 1):  # noqa: B007
                        write(dumps(record, option=newline))
                if printed == limit:
                    return printed
            except TransientError as exc:
                if waiter is None or stopping is None:
                    raise
                waiter.lost(exc, stopping)
            out.flush()
            if record is not None:
                after = parse_cursor(record["cursor"], kind)
            if waiter is None or stopping is None or not waiter.moved(stopping):
                return printed
    finally:
        out.flush()
        if waiter is not None:
            waiter.close()


class _Waiter:
    """The store's waiter for a follower, made anew after the store was lost (the feed
    goes on from its cursor once the store answers again)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.log = structlog.get_logger()
        self.waiter: FeedWaiter | None = store.listening()
        self.pause = 1.0

    def moved(self, stopping: Callable[[], bool]) -> bool:
        """Wait until the feed may have moved (True), or a stop request (False)."""
        while not stopping():
            try:
                if self.waiter is None:
                    self.waiter = self.store.listening()
                    return True  # (what was missed while it was away is read now)
                if self.waiter.wait(WAKE_SECONDS):
                    self.pause = 1.0
                    return True
            except TransientError as exc:
                self.lost(exc, stopping)
        return False

    def lost(self, exc: TransientError, stopping: Callable[[], bool]) -> None:
        """The store failed: say so, and wait (longer each time, and for a stop request)
        before the next try."""
        self.log.warning("feed_store_failed", cause=str(exc), retry_in=self.pause)
        self.close()
        waited = 0.0
        while waited < self.pause and not stopping():
            time.sleep(min(WAKE_SECONDS, self.pause - waited))
            waited += WAKE_SECONDS
        self.pause = min(self.pause * 2, MAX_WAIT)

    def close(self) -> None:
        if self.waiter is not None:
            with contextlib.suppress(Exception):  # (a lost connection may fail to close)
                self.waiter.close()
            self.waiter = None
