"""Which listed files to take: matching a file entry, safely named, not temporary, and
*ready* — no longer being uploaded."""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from connector.config import SourceConfig
from connector.csvrules.rules import FileRules
from connector.sources.base import RemoteFile
from connector.sources.naming import hostile, shown, temporary

MARKER_SUFFIX = ".done"
# How coarse a file system's mtimes may be (FAT's are 2 s; some mounts give whole seconds):
# an mtime may be this much older than the file's last write.
MTIME_GRAIN = 2.0
# Hostile names warned about, per source: a name stays on the server until someone removes
# it, and a warning at every poll would bury the log. Bounded (oldest forgotten first), as
# whoever writes to the server can make any number of names.
_WARNED_MAX = 10_000
_warned: dict[str, dict[str, None]] = {}
_warned_lock = threading.Lock()  # sources are polled on several threads


def _first_warning(source: str, name: str) -> bool:
    """True the first time ``name`` is seen for ``source`` in this process."""
    with _warned_lock:
        names = _warned.setdefault(source, {})
        if name in names:
            return False
        if len(names) >= _WARNED_MAX:
            del names[next(iter(names))]
        names[name] = None
        return True


def refused(files: Iterable[RemoteFile]) -> list[tuple[RemoteFile, str]]:
    """The listed files whose names are never taken, each with the reason."""
    return [(f, reason) for f in files if (reason := hostile(f.name)) is not None]


@dataclass(frozen=True)
class Candidate:
    file: RemoteFile
    rules: FileRules
    marker: str | None = None  # in marker mode, completed together with the file


def select(files: Iterable[RemoteFile], source: SourceConfig) -> list[Candidate]:
    """The files this source may take, oldest first. (The poll caps how many it takes,
    after setting aside those already known: capping here would starve new files.)"""
    log = structlog.get_logger().bind(source=source.name)
    listed = list(files)
    names = {f.name for f in listed}
    chosen = []
    rules = {id(e): source.rules_of(e.kind, e) for e in source.files}  # once, not per file
    skipped = refused(listed)
    for file, reason in skipped:
        if _first_warning(source.name, file.name):
            log.warning("file_skipped", file=shown(file.name), reason=reason)
    unusable = {file.name for file, _ in skipped}
    for file in listed:
        if file.name in unusable or temporary(file.name):
            continue
        marker = None
        if source.ready == "marker":
            if file.name.endswith(MARKER_SUFFIX) or file.name + MARKER_SUFFIX not in names:
                continue
            marker = file.name + MARKER_SUFFIX
        entry = next((e for e in source.files if fnmatch.fnmatchcase(file.name, e.pattern)), None)
        if entry is None:
            continue
        chosen.append(Candidate(file, rules[id(entry)], marker))
    chosen.sort(key=lambda c: (c.file.mtime, c.file.name))
    return chosen


class Readiness:
    """A file is ready once its size and mtime have stayed the same for ``min_age``, as
    seen by us: a server's clock is not trusted, only what we observed and when.

    ``wall_clock``: the files' mtimes are by this clock, ours (a local folder): a file last
    modified at least ``min_age`` ago by it (and ``MTIME_GRAIN`` more) is ready at once; a
    recent one is watched as any other."""

    def __init__(
        self,
        min_age: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self.min_age = min_age
        self.clock = clock
        self.wall_clock = wall_clock
        self._first_seen: dict[str, tuple[int, float, float]] = {}  # name → size, mtime, when

    def split(self, candidates: list[Candidate]) -> tuple[list[Candidate], float | None]:
        """The ready candidates, and how long until the next pending one may be (None if
        none is pending). Names no longer listed are forgotten, so memory stays bounded."""
        now = self.clock()
        settled_before = (
            None if self.wall_clock is None else self.wall_clock() - self.min_age - MTIME_GRAIN
        )
        seen = {}
        ready, wait = [], None
        for candidate in candidates:
            file = candidate.file
            size, mtime, since = self._first_seen.get(file.name, (-1, -1.0, now))
            if (size, mtime) != (file.size, file.mtime):
                since = now
            seen[file.name] = (file.size, file.mtime, since)
            remaining = since + self.min_age - now
            if remaining <= 0 or (settled_before is not None and file.mtime <= settled_before):
                ready.append(candidate)
            else:
                wait = remaining if wait is None else min(wait, remaining)
        self._first_seen = seen
        return ready, wait
