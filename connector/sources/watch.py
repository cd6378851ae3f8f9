"""For ``file://`` sources: a watchdog observer that signals a new or finished file at
once, so the daemon need not wait for the next scheduled poll. It only says "look now";
the poll still decides (readiness, ledger), so a missed or repeated signal is harmless."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from connector.sources.naming import temporary

# Events that may complete a file: created, written and closed, or renamed into place
# (the usual end of an upload to "x.csv.part").
_SIGNALS = ("created", "closed", "moved")


class _Handler(FileSystemEventHandler):
    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in _SIGNALS:
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        if not temporary(Path(str(path)).name):
            self.on_change()


class FolderWatch:
    """Calls ``on_change()`` (from the observer's thread) when a file may be ready.

    A folder that cannot be watched (not there yet, an unmounted share, the system's
    inotify limit reached) is logged once and left to the scheduled polls: a watch only
    speeds things up, and the polls report the folder's problems as they go."""

    def __init__(self, folder: Path, on_change: Callable[[], None]) -> None:
        self.folder = folder
        self._observer = Observer()
        self._observer.schedule(_Handler(on_change), str(folder), recursive=False)
        self.watching = False

    def __enter__(self) -> Self:
        try:
            self._observer.start()
        except OSError as exc:
            structlog.get_logger().warning(
                "watch_unavailable", folder=str(self.folder), cause=exc.strerror or str(exc)
            )
        else:
            self.watching = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.watching:
            self._observer.stop()
            self._observer.join(timeout=5)
