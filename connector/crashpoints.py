"""Named points where tests make the process die, to prove what a crash there leaves.

``CONNECTOR_CRASH_AT=step[:n]`` SIGKILLs this process the n-th time (default: first) it
reaches ``step``. SIGKILL, not an exception: nothing gets to clean up, as in a real crash.
Unset (always, outside tests), a call costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

STEPS = (
    "after_list",  # a poll listed the source; nothing taken yet
    "mid_download",  # a chunk of the file is in its staging .part
    "after_download",  # the file is staged; the ledger has not seen it
    "after_inspect",  # the file is hashed; nothing recorded yet
    "after_start",  # the ledger has an 'ingesting' entry (provisional: no checksum yet)
    "after_decide",  # (daemon, large file) the provisional rows are kept; checksum recorded
    "mid_decide",  # (daemon, large file) a span of the provisional rows' keys is claimed
    "after_deliver",  # a batch is written but maybe not committed
    "after_commit",  # a group of batches is committed with its cursor
    "after_archive",  # (daemon) the local gzip copy is written; no final entry yet
    "mid_settle",  # a chunk of the file's contact upserts is staged (SQLite), not shown
    "mid_sweep",  # a span of the rows of a file taken back is removed (SQLite)
    "after_settle",  # every batch and contact upsert is stored; the entry not final yet
    "before_finish",  # every batch is committed; the entry is still 'ingesting'
    "after_finish",  # the entry is 'ingested'
    "after_remote_action",  # moved or deleted remotely; the ledger not yet told
)
# The steps a `connector import` passes on any store (and mid_settle on SQLite's).
IMPORT_STEPS = (
    "after_inspect",
    "after_start",
    "after_deliver",
    "after_commit",
    "after_settle",
    "before_finish",
    "after_finish",
)
_seen: dict[str, int] = {}


def reached(step: str) -> None:
    spec = os.environ.get("CONNECTOR_CRASH_AT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != step:
        return
    _seen[step] = _seen.get(step, 0) + 1
    if _seen[step] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
