"""One local file through the ledger, the CSV rules and the store, exactly once.

Used by ``connector import`` and by the daemon for each downloaded file; a large one is
stored while it downloads by ``arriving.ingest_arriving``, which shares the steps here.
Batches are committed in groups, at most every `[ingest].commit_interval` (sooner when the
parse keeps us waiting), with the ledger's cursor in the same transaction: a crash loses
at most that interval's batches, and a re-run resumes after the last commit. One
transaction for a whole file would also be exactly-once, but a 5-million-row file would
then redo all its work after a crash near the end and hold a write lock for its whole
duration.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from connector import crashpoints
from connector.config import DEFAULT_TENANT, Config, IngestConfig
from connector.csvrules.reader import CHUNK, Inspector, Prefix, inspect_file
from connector.csvrules.records import Batch
from connector.csvrules.rules import FileRules, Limits
from connector.errors import (
    FileRejected,
    Interrupted,
    StorageError,
    StoreBusy,
    TooManyRejects,
)
from connector.localfs import make_folder
from connector.parsing import PARALLEL_MIN_BYTES, ParseJob
from connector.status import Status
from connector.store.keys import DECIDED_EVENTS
from connector.store.ledger import Arrival, Entry
from connector.store.port import Store
from connector.unpack import UnpackLimits, packed, unpacked

# The defaults of `[ingest]`, for runs without a config file (import with --store, tests).
_DEFAULTS = IngestConfig()
IDLE_SECONDS = 0.05  # a wait for the next batch longer than this commits what is done first
Clock = Callable[[], float]
Progress = Callable[[int], None]  # called with the bytes of the file read so far


@dataclass(frozen=True)
class Given:
    """The bytes given for a compressed file: its identity, not its content's."""

    sha256: str
    size: int

    @classmethod
    def of(cls, path: Path) -> Given:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return cls(digest.hexdigest(), path.stat().st_size)


def _in_given(progress: Progress | None, given: Given, content: Path) -> Progress | None:
    """``progress`` through a compressed file's content, told in bytes of the file as given
    (in proportion): whoever shows it knows that file's size, and sees it reached."""
    if progress is None:
        return None
    ratio = given.size / max(content.stat().st_size, 1)
    return lambda read: progress(round(read * ratio))


@dataclass(frozen=True)
class Outcome:
    entry: Entry
    reason: str | None = None  # why the file was rejected whole


@dataclass
class Ingestor:
    """Ingests local files into one store; ``clock`` gives the processing time."""

    store: Store
    clock: Clock = time.time
    batch_records: int = _DEFAULTS.batch_records
    commit_seconds: float = _DEFAULTS.commit_interval
    stop: Callable[[], bool] = lambda: False  # checked between batches
    limits: Limits = field(default_factory=Limits)
    max_rejects: int = _DEFAULTS.max_rejects
    # Where a parse in a child process spools its batches (a private file, unlinked at
    # once); None: the system's temporary folder.
    spool_dir: Path | None = None
    # A file this large is parsed in a child process, and one arriving from a source is
    # parsed (and stored) as it downloads; below it, a parse process costs more than it saves.
    parallel_min_bytes: int = PARALLEL_MIN_BYTES

    @classmethod
    def configured(
        cls, store: Store, config: Config, stop: Callable[[], bool] = lambda: False
    ) -> Ingestor:
        """An Ingestor with the `[ingest]` settings of a config, spooling under staging."""
        ingest = config.ingest
        make_folder(config.paths.staging, "staging folder")
        return cls(
            store,
            batch_records=ingest.batch_records,
            commit_seconds=ingest.commit_interval,
            stop=stop,
            limits=Limits(ingest.max_record_chars, ingest.max_columns),
            max_rejects=ingest.max_rejects,
            spool_dir=config.paths.staging,
        )

    def __post_init__(self) -> None:
        self.ledger = self.store.ledger
        self.sink = self.store.sink

    def ingest_given(
        self,
        path: Path,
        rules: FileRules,
        *,
        source: str,
        name: str,
        tenant: str,
        unpacking: UnpackLimits,
        progress: Progress | None = None,
    ) -> Outcome:
        """``ingest`` a file as given to `import`: a compressed one (.gz, .zip) is read as
        its content, and is rejected whole if that cannot be read or is a decompression
        bomb (``unpacking``)."""
        if not packed(path):
            return self.ingest(
                path, rules, source=source, name=name, tenant=tenant, progress=progress
            )
        given = Given.of(path)
        folder = self.spool_dir or Path(tempfile.gettempdir())
        with ExitStack() as stack:
            try:
                content = stack.enter_context(unpacked(path, folder, unpacking))
            except FileRejected as exc:
                arrival = Arrival(source, name, given.sha256, given.size, rules.kind, None, tenant)
                return self._refused_given(arrival, exc.reason)
            return self.ingest(
                content,
                rules,
                source=source,
                name=name,
                tenant=tenant,
                progress=_in_given(progress, given, content),
                given=given,
            )

    def _refused_given(self, arrival: Arrival, reason: str) -> Outcome:
        """A compressed file whose content cannot be had: rejected whole (or, the same
        bytes ingested before, a duplicate)."""
        assert arrival.sha256 is not None
        log = structlog.get_logger().bind(
            tenant=arrival.tenant, source=arrival.source, file=arrival.path, sha256=arrival.sha256
        )
        with self.store.claim(arrival.sha256, stop=self.stop):
            if self.ledger.ingested(arrival.tenant, arrival.sha256) is not None:
                log.info("file_duplicate")
                return Outcome(self.ledger.record(arrival, Status.DUPLICATE, self.clock()))
            log.warning("file_rejected", reason=reason)
            return Outcome(
                self.ledger.record(arrival, Status.REJECTED, self.clock(), reason), reason
            )

    def parse_job(self, path: Path, rules: FileRules, *, growing_to: int | None = None) -> ParseJob:
        """The parse of ``path`` (in a child process if it is large); ``growing_to``: the
        file is still being written up to that size, and the parse follows it."""
        size = growing_to if growing_to is not None else path.stat().st_size
        if rules.not_before is None:  # (a replay's rules count from the first arrival)
            rules = rules.with_age_counted_from(self.clock())
        return ParseJob(
            path,
            rules,
            batch_records=self.batch_records,
            in_child=size >= self.parallel_min_bytes,
            spool_dir=self.spool_dir,
            growing_to=growing_to,
            limits=self.limits,
        )

    def ingest(
        self,
        path: Path,
        rules: FileRules,
        *,
        source: str,
        name: str,
        tenant: str = DEFAULT_TENANT,
        inspector: Inspector | None = None,
        progress: Progress | None = None,
        mtime: float | None = None,
        before_final: Callable[[], None] = lambda: None,
        given: Given | None = None,
    ) -> Outcome:
        """Ingest ``path`` (recorded as ``name`` from ``source`` of ``tenant``, listed with
        ``mtime``).
        ``inspector`` is given when the bytes were already inspected (a download).
        ``given``: ``path`` is the content of a compressed file, whose bytes (their
        checksum, their size) are the file's identity.
        ``before_final()`` runs before the file's final entry is written, whatever it is:
        the daemon waits there for its archive copy, made meanwhile."""
        log = structlog.get_logger().bind(tenant=tenant, source=source, file=name)
        started = time.monotonic()
        with self.parse_job(path, rules) as job:  # a large file is parsed while we hash it
            inspector = inspector or inspect_file(path, rules.encoding)
            sha256 = inspector.hexdigest() if given is None else given.sha256
            size = path.stat().st_size if given is None else given.size
            arrival = Arrival(source, name, sha256, size, rules.kind, mtime, tenant)
            log = log.bind(sha256=sha256)
            crashpoints.reached("after_inspect")
            # Crash before here: nothing was recorded; a re-run starts from scratch.
            with self.store.claim(sha256, stop=self.stop):  # another run with these bytes waits
                outcome = self.ingest_claimed(
                    path, rules, job, inspector, log, progress, arrival, before_final
                )
        return self.reported(outcome, log, started)

    def set_aside(self, arrival: Arrival, reason: str, *, done: str | None = None) -> Entry:
        """Record a file that failed too often as ``rejected`` with ``reason`` (a
        quarantine; ``done``: with its remote action, as ``Ledger.record``). What was
        stored of it, never to be shown, is taken back first, keys given back: rows stored
        as it arrived, and bytes begun under this place (those under their checksum's
        claim: another run may be resuming them from another place). Call with the place
        claimed, outside a transaction."""
        for entry in self.ledger.unfinished_at(arrival.source, arrival.path):
            with ExitStack() as held:
                if entry.sha256 is not None:
                    held.enter_context(self.store.claim(entry.sha256, stop=self.stop))
                with self.store.transaction():
                    still = self.ledger.unfinished_at(arrival.source, arrival.path)
                    for current in still:
                        if current.id == entry.id:  # (not finished meanwhile)
                            self.take_back(current, claimed=entry.sha256 is not None)
        # Crash before here: some of it is taken back, the file is not recorded: the next
        # poll tries it again (its tries are kept), and sets it aside again if it fails.
        entry = self.ledger.record(arrival, Status.REJECTED, self.clock(), reason, done=done)
        self.sweep()
        return entry

    def sweep(self) -> None:
        """Remove the rows of files taken back (``Sink.sweep``), after the transaction that
        took them back. Best effort: they are out of sight already, and the outcome is
        committed; a store fault leaves them to the next sweep (settle, housekeeping)."""
        try:
            self.sink.sweep(self.stop)
        except (StorageError, StoreBusy) as exc:
            structlog.get_logger().warning("sweep_deferred", cause=str(exc))

    def take_back(self, entry: Entry, *, claimed: bool = False) -> None:
        """Remove an entry and what it stored; ``claimed``: its idempotency keys were
        claimed (its checksum was known), and are given back. ``entry`` as read in the
        caller's transaction."""
        self.sink.discard(entry.id, entry.first_event, claimed=claimed)
        self.ledger.forget(entry.id)

    def reject_stored(
        self,
        entry_id: int,
        arrival: Arrival,
        reason: str,
        log: structlog.typing.FilteringBoundLogger,
        before_final: Callable[[], None],
    ) -> Outcome:
        """A file refused whole once rows of it were stored (too many rejects): they are
        taken back, its keys given back, in the transaction that records it rejected."""
        before_final()
        with self.store.transaction():
            self.take_back(self.ledger.get(entry_id), claimed=True)
            entry = self.ledger.record(arrival, Status.REJECTED, self.clock(), reason)
        # Crash before that commit: the entry stays as it was, with its cursor; a re-run
        # resumes it and reaches the same number of rejects. After it: its rows, out of
        # sight, are removed by this sweep or the next.
        self.sweep()
        log.warning("file_rejected", reason=reason)
        return Outcome(entry, reason)

    def reported(
        self, outcome: Outcome, log: structlog.typing.FilteringBoundLogger, started: float
    ) -> Outcome:
        if outcome.entry.status is Status.INGESTED:
            elapsed = max(time.monotonic() - started, 1e-9)
            log.info(
                "file_ingested",
                rows=outcome.entry.rows,
                rejected=outcome.entry.rejected,
                duplicates=outcome.entry.duplicates,
                seconds=round(elapsed, 3),
                mb_per_s=round(outcome.entry.size / elapsed / 1e6, 1),
            )
        return outcome

    def ingest_claimed(
        self,
        path: Path,
        rules: FileRules,
        job: ParseJob,
        inspector: Inspector,
        log: structlog.typing.FilteringBoundLogger,
        progress: Progress | None,
        arrival: Arrival,
        before_final: Callable[[], None],
    ) -> Outcome:
        """The file's fate, its checksum known: duplicate, rejected, or ingested. Call
        with the checksum claimed."""
        assert arrival.sha256 is not None
        if self.ledger.ingested(arrival.tenant, arrival.sha256) is not None:
            before_final()
            entry = self.ledger.record(arrival, Status.DUPLICATE, self.clock())
            log.info("file_duplicate")
            return Outcome(entry)
        try:
            reason = inspector.rejection(path)
            if reason is not None:
                raise FileRejected(reason)
            job.header()
        except FileRejected as exc:
            before_final()
            entry = self.ledger.record(arrival, Status.REJECTED, self.clock(), exc.reason)
            log.warning("file_rejected", reason=exc.reason)
            return Outcome(entry, exc.reason)
        entry = self.ledger.begin(arrival, self.clock())
        crashpoints.reached("after_start")
        # Crash from here on: the entry stays 'ingesting' with its cursor; a re-run
        # finds it by checksum, skips the committed records and goes on. An error or a
        # stop leaves it 'failed', resumed the same way.
        with self.failing(entry.id):
            if entry.cursor:
                log.info("file_resumed", cursor=entry.cursor)
                job.resume_at(entry.cursor)
                job.header()
            self.claim_keys(entry.id, rules.kind)  # (a provisional file's, if decided)
            try:
                self.store_batches(entry.id, rules.kind, job, job.batches(), progress)
            except TooManyRejects as exc:
                return self.reject_stored(entry.id, arrival, exc.reason, log, before_final)
            return Outcome(self.finish(entry.id, before_final))

    @contextmanager
    def failing(self, entry_id: int) -> Iterator[None]:
        """An error or a stop leaves the entry ``failed``, resumed by a later run (unless
        the store is busy: it would wait as long again; ``ingesting`` resumes the same)."""
        try:
            yield
        except BaseException as exc:
            if not isinstance(exc, StoreBusy):
                self.ledger.fail(entry_id, self.clock())
            raise

    def finish(self, entry_id: int, before_final: Callable[[], None]) -> Entry:
        """The final entry of a file whose batches are all stored."""
        self.sink.settle(entry_id, self.stop)
        if self.stop():
            raise Interrupted("stopped at the file's end; the next run resumes it")
        crashpoints.reached("after_settle")
        # Crash while settling, or here: the entry stays unfinished, with all its batches;
        # a re-run settles what is left (the store knows how far it got) and goes on.
        before_final()
        crashpoints.reached("before_finish")
        with self.store.transaction():  # its contacts, and with them its rows, show
            self.sink.finish(entry_id)
            entry = self.ledger.finish(entry_id, self.clock())
        crashpoints.reached("after_finish")
        # Crash after finish: the file is complete; its bytes are now a known duplicate
        # (what served its contacts is tidied by the next file's settle).
        self.sink.tidy(entry_id)
        return entry

    def claim_keys(self, entry_id: int, kind: str) -> None:
        """The idempotency keys of the events a file stored provisionally, claimed in file
        order once its checksum is known (``Ledger.decide``), before any later batch
        claims its own: a span of events per unit of a group, so that no transaction
        grows with the file. Goes on from where a stop or a crash left it."""
        with self.store.grouped(self.commit_seconds) as group:
            while (start := self.ledger.get(entry_id).unclaimed_from) is not None:
                if self.stop():
                    group.commit()  # (what is claimed is kept: the next run goes on)
                    raise Interrupted("stopped while claiming the file's keys")
                group.begin()
                delivered = self.sink.decide(entry_id, kind, start, int(self.clock()))
                self.ledger.advance(entry_id, 0, 0, delivered)
                self.ledger.claimed(entry_id, start + DECIDED_EVENTS)
                if group.tick():
                    crashpoints.reached("mid_decide")
                    # Crash here: the keys claimed so far are committed with where to go
                    # on from; the entry, decided, is resumed by checksum, and this first.

    def store_batches(
        self,
        entry_id: int,
        kind: str,
        job: ParseJob,
        batches: Iterator[Batch],
        progress: Progress | None,
        *,
        arrived: Callable[[], Prefix] | None = None,
        until: Callable[[], bool] = lambda: False,
    ) -> None:
        """Deliver ``job``'s ``batches`` until they end, or ``until()`` (asked after each
        batch); provisionally while the file arrives (``arrived()``: its bytes so far).
        TooManyRejects once the file's rejected rows pass `max_rejects`: the batch that
        passes it is not stored, and nothing more is read."""
        rejected = self.ledger.get(entry_id).rejected  # (a resumed file's count goes on)
        with self.store.grouped(self.commit_seconds) as group:
            for batch in batches:  # (waiting here for the parser holds no lock
                if self.stop():  # once the group has been committed)
                    break  # leaving the block commits what is done; the cursor keeps it
                rejected += len(batch.rejects)
                if rejected > self.max_rejects:
                    raise TooManyRejects(self._too_many(entry_id, batch))
                group.begin()
                delivered = self.sink.deliver(
                    entry_id, kind, batch, int(self.clock()), provisional=arrived is not None
                )
                # (the bytes arrived now hold this batch: the parser read it from them)
                self.ledger.advance(
                    entry_id, batch.records, len(batch.rejects), delivered, arrived and arrived()
                )
                crashpoints.reached("after_deliver")
                # Crash here: batches up to the last commit are durable with their cursor;
                # those after it are redone on resume (commits are grouped by time: an
                # fsync per batch would cost more than the batch).
                # A parse that keeps us waiting (for a download, say) must not keep the
                # store from other writers meanwhile: what is done is committed first.
                if group.tick() or (job.idle(IDLE_SECONDS) and group.commit()):
                    crashpoints.reached("after_commit")
                del batch  # (not kept while the next one is read: a record may be megabytes)
                if progress is not None:
                    progress(job.consumed)
                if until():
                    break
        if self.stop():
            raise Interrupted("stopped mid-file; the next run resumes it")

    def _too_many(self, entry_id: int, batch: Batch) -> str:
        """Why a file is refused for its rejects: how many, and the first (stored already,
        or in this batch)."""
        line, reason, _ = self.ledger.first_reject(entry_id) or batch.rejects[0]
        return f"more than {self.max_rejects:,} rows rejected; first at line {line}: {reason}"
