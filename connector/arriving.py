"""A large file stored while it downloads, before its checksum is known: the one entry
point is ``ingest_arriving``.

Its batches are stored provisionally: under a ledger entry known by place and listing (no
checksum yet), their idempotency keys not claimed, as ``ParseJob`` follows the bytes that
have arrived. When the download ends, the checksum decides, as it would for any file:
the rows are kept (their keys claimed in file order, the duplicates dropped) and the rest
of the file stored as usual; or they are taken back, and the file is ingested from its
staged copy: a duplicate, a file rejected whole, or bytes another run has begun. A crash
leaves the provisional entry with its cursor and the bytes it was read from
(``Entry.prefix``); the next try resumes it if its download begins with those bytes, and
takes it back if not (docs/guarantees.md, "How they are kept").

The store's side of it (provisional entries in the ledger, ``Sink.deliver(provisional=)``,
``decide`` and ``discard``) is the store port's; the parse's side (following a growing
file) is ``ParseJob``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from connector import crashpoints
from connector.csvrules.reader import Prefix, prefix_of
from connector.csvrules.rules import FileRules
from connector.download import Staged
from connector.errors import FileChanged, FileRejected, Interrupted, ParseFailed, TooManyRejects
from connector.ingest import IDLE_SECONDS, Ingestor, Outcome
from connector.parsing import ParseJob
from connector.store.ledger import Arrival, Entry


def ingest_arriving(
    ingestor: Ingestor,
    rules: FileRules,
    *,
    arrival: Arrival,
    job: ParseJob,
    fetched: Future[Staged],
    resumed: bool,
    arrived: Callable[[], Prefix],
    before_final: Callable[[], None] = lambda: None,
) -> Outcome:
    """Ingest a file while it downloads (``fetched``; ``arrival`` without a checksum yet),
    as ``job`` parses the bytes that have arrived. ``resumed``: the download went on from
    bytes already staged (by an earlier try). ``arrived()``: the bytes downloaded so far
    (at least those ``job`` has read). ``before_final()`` runs before the file's final
    entry is written. Call with the place claimed (``Store.claim_place``), for the whole
    download."""
    arriving = _Arriving(ingestor, rules, arrival, job, fetched, arrived, before_final)
    started = time.monotonic()

    def ended(download: Future[Staged]) -> None:
        if download.exception() is not None:
            job.abandon()  # the parse must not wait for bytes that will not come

    fetched.add_done_callback(ended)
    with job:
        if ingestor.ledger.decided_unfinished(arrival):
            # Its bytes were decided before a crash or a stop: resumed by checksum.
            job.close()
            staged = fetched.result()
            return ingestor.ingest(
                staged.path,
                rules,
                source=arrival.source,
                name=arrival.path,
                tenant=arrival.tenant,
                inspector=staged.inspector,
                mtime=arrival.mtime,
                before_final=before_final,
            )
        forget_stale(ingestor, arrival)
        outcome = arriving.run(resumed)
    ingestor.sweep()  # (the rows of what it took back, if anything)
    return ingestor.reported(outcome, arriving.log, started)


def forget_stale(ingestor: Ingestor, arrival: Arrival) -> None:
    """Take back the provisional rows of this place's older listings: those bytes were
    replaced (or shrank below the provisional size) and will never be decided. Call with
    the place claimed."""
    stale = ingestor.ledger.stale(arrival)  # (a read first: there usually are none)
    if stale:  # (the place is ours: nobody adds to them meanwhile)
        with ingestor.store.transaction():
            for entry_id in stale:
                ingestor.take_back(ingestor.ledger.get(entry_id))


@dataclass
class _Arriving:
    """One file's provisional ingestion, from its entry to its decision."""

    ingestor: Ingestor
    rules: FileRules
    place: Arrival  # (no checksum yet)
    job: ParseJob
    fetched: Future[Staged]
    arrived: Callable[[], Prefix]
    before_final: Callable[[], None]

    def __post_init__(self) -> None:
        self.ledger = self.ingestor.ledger
        self.store = self.ingestor.store
        self.log = structlog.get_logger().bind(
            tenant=self.place.tenant, source=self.place.source, file=self.place.path
        )

    def run(self, resumed: bool) -> Outcome:
        ingestor = self.ingestor
        entry = self.ledger.begin(self.place, ingestor.clock())
        with ingestor.failing(entry.id):  # (a crash while comparing changes nothing)
            # (bytes staged here before are compared too when they can be: another
            # replica may have committed records past them since)
            alike = not entry.cursor or (self._began_alike(entry) if entry.prefix else resumed)
        if not alike:
            # Its rows came from bytes staged by another run (or replica), or since lost,
            # that this download does not begin with: same listing, other bytes.
            with self.store.transaction():
                ingestor.take_back(self.ledger.get(entry.id))
                entry = self.ledger.begin(self.place, ingestor.clock())
            self._resume_at(0)
        crashpoints.reached("after_start")
        # Crash from here until decided: the provisional entry keeps its cursor; the next
        # poll resumes the download (its staged bytes) and the entry with it.
        with ingestor.failing(entry.id):
            try:
                return self._provisional(entry)
            except FileChanged:  # the bytes stored are not the file's: taken back
                with self.store.transaction():
                    ingestor.take_back(self.ledger.get(entry.id))
                ingestor.sweep()
                raise

    def _provisional(self, entry: Entry) -> Outcome:
        ingestor, job, kind = self.ingestor, self.job, self.rules.kind
        batches, broken = None, None
        try:
            if entry.cursor:
                self.log.info("file_resumed", cursor=entry.cursor)
                job.resume_at(entry.cursor)
            job.header()
            batches = job.batches()
            ingestor.store_batches(
                entry.id, kind, job, batches, None, arrived=self.arrived, until=self.fetched.done
            )
        except (FileRejected, ParseFailed) as exc:
            # Undecodable bytes stop the parser, and a failed download the parse (see
            # ``ended``): the download's outcome and the checksum say which it is. Too many
            # rejects stop it too, rather than let it read on while the rest arrives.
            broken = exc
            job.close()
        staged = self.fetched.result()  # (a download error is raised here)
        sha256 = staged.inspector.hexdigest()
        arrival = replace(self.place, sha256=sha256)
        log = self.log.bind(sha256=sha256)
        with self.store.claim(sha256, stop=ingestor.stop):
            if (
                isinstance(broken, FileRejected)
                or staged.inspector.error is not None
                or self.ledger.ingested(arrival.tenant, sha256) is not None
                or self.ledger.unfinished(arrival) is not None
            ):  # decided as any file would be, once what was stored is taken back
                with self.store.transaction():
                    ingestor.take_back(self.ledger.get(entry.id))
                with ingestor.parse_job(staged.path, self.rules) as again:
                    return ingestor.ingest_claimed(
                        staged.path,
                        self.rules,
                        again,
                        staged.inspector,
                        log,
                        None,
                        arrival,
                        self.before_final,
                    )
            if broken is not None:
                raise broken
            assert batches is not None
            self.ledger.decide(entry.id, sha256)
            crashpoints.reached("after_decide")
            # Crash from here on: the entry has its checksum; a re-run resumes it by that,
            # claiming the keys of its rows that are not claimed yet first.
            ingestor.claim_keys(entry.id, kind)
            try:
                ingestor.store_batches(entry.id, kind, job, batches, None)
            except TooManyRejects as exc:
                return ingestor.reject_stored(entry.id, arrival, exc.reason, log, self.before_final)
            return Outcome(ingestor.finish(entry.id, self.before_final))

    def _began_alike(self, entry: Entry) -> bool:
        """Whether this download begins with the bytes that a provisional ``entry``'s
        committed records were read from (``Entry.prefix``, by another run or replica):
        then its rows stay, and the parse goes on from its cursor. Waits until that many
        bytes have arrived (a download that fails is raised here)."""
        prefix, part, fetched = entry.prefix, self.job.path, self.fetched
        if prefix is None:
            return False
        self._resume_at(entry.cursor)  # (skipping while the bytes to compare arrive)
        while not fetched.done() and _size(part) < prefix.size:
            if self.ingestor.stop():
                raise Interrupted("stopped mid-download; the .part is resumed later")
            time.sleep(IDLE_SECONDS)
        if fetched.done():
            fetched.result()  # (a download that failed says so, and leaves the rows)
        try:
            found = prefix_of(part, prefix.size)
        except FileNotFoundError:  # (renamed once complete, maybe just now)
            found = prefix_of(fetched.result().path, prefix.size)
        return found == prefix

    def _resume_at(self, records: int) -> None:
        """Have the parse start after ``records``. A parse abandoned because its download
        failed raises the download's error."""
        try:
            self.job.resume_at(records)
        except ParseFailed:
            self.fetched.result()
            raise


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # (renamed: the download is done, or failed)
        return 0
