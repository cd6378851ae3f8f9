"""Local copies of processed files: gzip, named by SHA-256, written atomically. The same
bytes are archived once, however many times and names they arrive under."""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

import structlog


def archive(staged: Path, sha256: str, folder: Path) -> Path:
    """Copy ``staged`` to ``folder/<sha256>.csv.gz`` unless it is already there."""
    target = folder / f"{sha256}.csv.gz"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    # Crash while writing: a .part remains and is simply overwritten next time.
    with staged.open("rb") as src, partial.open("wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as out:
            shutil.copyfileobj(src, out, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, target)
    return target


def prune(folder: Path, keep_seconds: float, now: float | None = None) -> int:
    """Remove archived copies older than ``keep_seconds``; returns how many."""
    cutoff = (now if now is not None else time.time()) - keep_seconds
    removed = 0
    for path in folder.glob("*.csv.gz"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def prune_logged(folder: Path, keep_seconds: float) -> None:
    """``prune``, logged; shaped as a scheduler job (returns None: no backoff)."""
    removed = prune(folder, keep_seconds) if folder.is_dir() else 0
    if removed:
        structlog.get_logger().info("archive_pruned", removed=removed, folder=str(folder))
