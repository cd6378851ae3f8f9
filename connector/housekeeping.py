"""What the daemon made and no longer needs: archive copies past `paths.archive_keep`,
temporary files that a crash or a changed file abandoned, and what the store no longer
keeps (`[store] keep`, expired idempotency keys: ``connector.store.retention``). Run hourly
by `run` and at the start of each `once`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path

import structlog

from connector.config import Config, PathsConfig
from connector.errors import TransientError
from connector.store.port import Store

# A temporary untouched this long is abandoned: one in use is written to (a download, an
# archive copy) or was touched when taken up again (a resumed download), and a download
# left for a day is not worth resuming.
ABANDONED_SECONDS = 24 * 3600
# Only names we make are removed, whatever else lives in those folders.
_STAGED = re.compile(r"[0-9a-f]{40}\.(part|csv)")  # download.staging_name
_ARCHIVING = re.compile(r"\.[0-9a-f]{64}\..+\.part")  # archive.archive's temporaries


def _remove_older(paths: Iterable[Path], cutoff: float) -> int:
    removed = 0
    for path in paths:
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # (gone meanwhile: a download finished, say)
            continue
        except OSError as exc:  # one file we may not remove does not stop the rest
            structlog.get_logger().warning(
                "housekeeping_failed", file=str(path), cause=exc.strerror
            )
    return removed


def _named(paths: Iterable[Path], pattern: re.Pattern[str]) -> list[Path]:
    return [path for path in paths if pattern.fullmatch(path.name)]


def sweep(paths: PathsConfig, now: float | None = None) -> dict[str, int]:
    """Remove what is no longer needed; how many files of each kind went.

    - ``archived``: copies older than ``archive_keep`` (when set), counted from the last
      arrival of their bytes;
    - ``abandoned``: archive copies never finished (``.<sha256>.*.part``) and staged
      downloads (complete or not) untouched for a day. A provisional entry whose staged
      bytes are gone is not resumed but started over (see docs/guarantees.md)."""
    now = time.time() if now is None else now
    removed = {"archived": 0, "abandoned": 0}
    if paths.archive_keep is not None:
        cutoff = now - paths.archive_keep
        removed["archived"] = _remove_older(paths.archive.glob("*.csv.gz"), cutoff)
    temporaries = [
        *_named(paths.archive.glob(".*.part"), _ARCHIVING),
        *_named(paths.staging.glob("*/*"), _STAGED),
    ]
    removed["abandoned"] = _remove_older(temporaries, now - ABANDONED_SECONDS)
    return removed


def sweep_logged(paths: PathsConfig) -> None:
    """``sweep``, logged when it removed anything; shaped as a scheduler job (returns None:
    no backoff)."""
    removed = sweep(paths)  # (a missing folder globs to nothing)
    if any(removed.values()):
        structlog.get_logger().info("housekeeping", **removed)


def tidy(config: Config, store: Store) -> None:
    """``sweep_logged``, then the store's retention, logged when it removed anything; a
    store too busy or away now is tried again next time. A scheduler job, as above."""
    sweep_logged(config.paths)
    keep = config.store.keep
    try:
        pruned = store.prune(keep, time.time())
    except TransientError as exc:
        structlog.get_logger().warning("retention_failed", cause=str(exc))
        return
    if pruned:
        structlog.get_logger().info("retention", **vars(pruned))
