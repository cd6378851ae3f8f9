"""One file's way in, from the listing to its ledger entry: the download (staged and
hashed as it arrives), the parse that follows a large file while it downloads, and the
local archive copy, made while the rows are written and awaited before the final entry.

Beside each step: what a crash right there leaves, and why the next poll is still right.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from connector import crashpoints
from connector.archive import archive
from connector.arriving import forget_stale, ingest_arriving
from connector.config import Config, SourceConfig
from connector.csvrules.reader import Inspector, Prefix
from connector.download import Staged, Watch, download
from connector.errors import FileChanged
from connector.ingest import Ingestor, Outcome
from connector.parsing import ParseJob
from connector.retries import Retries
from connector.selection import Candidate
from connector.sources.base import Source
from connector.store.ledger import Arrival


@dataclass(frozen=True)
class _Following:
    """The parse that follows a large file as it downloads."""

    job: ParseJob
    resumed: bool  # it resumes bytes staged by an earlier try
    arrived: Callable[[], Prefix]  # the bytes arrived so far, and their checksum


class Transfer:
    """Takes one listed file into the store (``run``), on two threads besides the caller's:
    the download, and the archive copy. A context manager: leaving it stops the download,
    ends the parse and removes the staged copy, whatever happened."""

    def __init__(
        self,
        config: Config,
        source: SourceConfig,
        ingestor: Ingestor,
        candidate: Candidate,
        arrival: Arrival,
        *,
        connect: Callable[[bool], Source],
        stop: Callable[[], bool],
        sleep: Callable[[float], object],
        received: Callable[[int], object],
    ) -> None:
        self.config, self.source, self.ingestor = config, source, ingestor
        self.file, self.rules, self.arrival = candidate.file, candidate.rules, arrival
        self._connect, self._stop, self._sleep, self._received = connect, stop, sleep, received
        self._stack = ExitStack()
        self._staged: Path | None = None
        self._copy: Future[Path] | None = None
        self._following: _Following | None = None
        self._begun = threading.Event()  # the download knows whether a parse follows it
        self._abandoned = threading.Event()  # whatever happens, the download stops

    def __enter__(self) -> Transfer:
        stack = self._stack
        # (left in reverse: the parse, the download, the copy, the staged file)
        stack.callback(self._unstage)  # (on failure too: the next poll fetches anew)
        self._copying = stack.enter_context(ThreadPoolExecutor(1, "archive"))
        self._fetching = stack.enter_context(ThreadPoolExecutor(1, "download"))
        stack.callback(self._abandoned.set)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(self) -> Outcome:
        """The file's rows stored and its entry final (or its rejection)."""
        fetched = self._fetching.submit(self._fetch)
        self._begun.wait()
        following = self._following
        if following is not None:
            return ingest_arriving(
                self.ingestor,
                self.rules,
                arrival=self.arrival,
                job=following.job,
                fetched=fetched,
                resumed=following.resumed,
                arrived=following.arrived,
                before_final=self._archived,
            )
        try:
            done = fetched.result()
        except FileChanged:
            raise  # still being written: not a failure, the file is simply not ready
        except Exception:
            self.ingestor.ledger.note_failure(self.arrival, self.ingestor.clock())
            raise
        forget_stale(self.ingestor, self.arrival)  # (the file was large when last seen)
        return self.ingestor.ingest(
            done.path,
            self.rules,
            source=self.source.name,
            name=self.arrival.path,
            tenant=self.source.tenant,
            inspector=done.inspector,
            mtime=self.file.mtime,
            before_final=self._archived,
        )

    def _fetch(self) -> Staged:
        """The download thread."""
        try:
            done = download(
                self.source.name,
                self._connect,
                self.file,
                self.config.paths.staging / self.source.name,
                self.rules.encoding,
                label=self.arrival.path,
                stop=lambda: self._stop() or self._abandoned.is_set(),
                retries=Retries(sleep=self._sleep),
                watch=Watch(on_part=self._follow, received=self._received),
            )
        finally:
            self._begun.set()
        self._staged = done.path
        crashpoints.reached("after_download")
        # Crash here: the staged copy is complete but unknown to the ledger (unless rows
        # were stored as it arrived: a provisional entry); the next poll reuses it (same
        # staging name: re-hashed, not fetched) and ingests it once.
        self._copy = self._copying.submit(
            archive, done.path, done.inspector.hexdigest(), self.config.paths.archive
        )
        return done

    def _follow(self, part: Path, inspector: Inspector) -> None:
        """The download has its partial file: a large file is parsed, and stored, as its
        bytes arrive (``arriving.ingest_arriving``; how large: ``parallel_min_bytes``)."""
        if self.file.size >= self.ingestor.parallel_min_bytes:
            job = self.ingestor.parse_job(part, self.rules, growing_to=self.file.size)
            resumed = part.stat().st_size > 0
            self._following = _Following(self._stack.enter_context(job), resumed, inspector.prefix)
        self._begun.set()

    def _archived(self) -> None:
        """Before the file's final entry: a file the ledger has decided is archived."""
        assert self._copy is not None  # (made once the download completed, before any end)
        self._copy.result()  # (its faults are StorageError already)
        crashpoints.reached("after_archive")
        # Crash here: the archive is written (idempotent, by checksum); the ledger has no
        # final entry, so the next poll takes the file again (its staged copy reused) and
        # resumes it from the last commit.

    def _unstage(self) -> None:
        if self._staged is not None:
            self._staged.unlink(missing_ok=True)
