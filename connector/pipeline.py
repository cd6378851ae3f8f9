"""One poll of one source, the steps in order:

list → select and readiness → skip files already decided (by path, size and mtime,
unread) → the file's transfer (``Transfer``: download with SHA-256 on the way, ledger, CSV
rules and store, the local archive copy made meanwhile and awaited before the file's
final entry) → remote ``after`` action → ledger marks the file completed. A large file is
parsed and stored as it downloads, provisionally until its checksum decides.

Beside each step: what a crash right there leaves, and why the next poll is still right.
This module holds no protocol details; adapters and steps are called through small APIs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import structlog

from connector import crashpoints
from connector.actions import Delete, Leave
from connector.config import Config, SourceConfig
from connector.errors import (
    Interrupted,
    PlaceBusy,
    SourceRefused,
    StorageError,
    TransientError,
)
from connector.ingest import Ingestor
from connector.redaction import logged_failure
from connector.reject_report import reject_report
from connector.replica import identity
from connector.retries import retrying
from connector.selection import Candidate, Readiness, select
from connector.sources.base import RemoteFile, Source
from connector.sources.naming import MAX_NAME_BYTES, REPORT_SUFFIX
from connector.sources.registry import SourceOpener
from connector.status import Status
from connector.store.ledger import Arrival, Entry, Known, Reject
from connector.store.port import Store
from connector.transfer import Transfer

# A report's name: the file's (after a move, with a clash timestamp, ".20261128T101500Z")
# and the report's suffix.
REPORT_ROOM = len(".20261128T101500Z") + len(REPORT_SUFFIX)

# The reason of a file set aside (``Poller._quarantine``), and what its report says instead.
SET_ASIDE = "set aside after"
SET_ASIDE_TOLD = "the file could not be processed; the connector's operator has the details"

# Errors that end the poll rather than fail one file: a stop, a source that refuses us, a
# claim held elsewhere (reported as busy), our own disk or store (every file would meet it).
_NOT_THE_FILES = (Interrupted, SourceRefused, PlaceBusy, StorageError)


@dataclass
class PollSummary:
    """What one poll did, by file."""

    source: str
    taken: dict[str, Entry] = field(default_factory=dict)  # path → its ledger entry
    completed: list[str] = field(default_factory=list)  # known files whose action was redone
    pending: list[str] = field(default_factory=list)  # not ready yet (still changing)
    busy: dict[str, str] = field(default_factory=dict)  # path → why skipped (another run...)
    failed: dict[str, str] = field(default_factory=dict)  # path → why (left for a later poll)


def _published(ready: list[Candidate]) -> list[RemoteFile]:
    """The listing that other processes take ``ready`` files from: the files, and their
    markers (``select`` takes a file in marker mode only beside its marker's name)."""
    files = [c.file for c in ready]
    files += [RemoteFile(c.marker, 0, c.file.mtime) for c in ready if c.marker is not None]
    return files


class _Connection:
    """The source's connection for one poll, re-made when a step reports it broken."""

    def __init__(self, config: SourceConfig, opener: Callable[[SourceConfig], Source]) -> None:
        self.config = config
        self.opener = SourceOpener() if opener is None else opener
        self._stack = ExitStack()
        self._source: Source | None = None

    def get(self, broken: bool = False) -> Source:
        if broken:
            self.close()
        if self._source is None:
            self._source = self._stack.enter_context(self.opener(self.config))
        return self._source

    def close(self) -> None:
        self._source = None
        self._stack.close()


class Poller:
    """Polls one source into the store. Keeps readiness observations between polls."""

    def __init__(
        self,
        config: Config,
        source: SourceConfig,
        store: Store,
        *,
        ingestor: Ingestor | None = None,
        every: float = 0.0,
        sleep: Callable[[float], object] = time.sleep,
        opener: Callable[[SourceConfig], Source] | None = None,
        received: Callable[[int], object] = lambda size: None,
        action_failed: Callable[[], object] = lambda: None,
    ) -> None:
        """``ingestor``: one of ``store`` (default: with the config's `[ingest]`);
        ``every``: list the source only if no process sharing the store listed it in the
        last ``every`` seconds (else take files from what that listing found ready; 0:
        list at every poll); ``received(size)`` counts the bytes downloaded as they arrive,
        ``action_failed()`` a remote action (or report) that failed (for metrics)."""
        self.config = config
        self.source = source
        self.store = store
        self.ledger = store.ledger
        self.ingestor = ingestor or Ingestor.configured(store, config)
        self.every = every
        # Whether this process's last listing of the source succeeded: until one has (its
        # first poll, or after a failure), a poll lists whoever listed last.
        self._listed_ok = False
        self.sleep = sleep
        self.opener = SourceOpener() if opener is None else opener
        self.received = received
        self.action_failed = action_failed
        self.readiness = Readiness(  # (a local folder's mtimes are by our own clock)
            source.min_age,
            wall_clock=time.time if source.scheme == "file" else None,
        )
        self._stop: Callable[[], bool] = lambda: False
        # Path → the ledger's latest entry for it when this poll listed it (None: none), to
        # tell a file decided since (a newer entry) from one that came back after a move.
        self._listed_as: dict[str, int | None] = {}
        self.log = structlog.get_logger().bind(tenant=source.tenant, source=source.name)

    def path_of(self, name: str) -> str:
        return self.source.path_of(name)

    def poll(self, stop: Callable[[], bool] = lambda: False) -> PollSummary:
        """List, take every ready file, and wait (once, within this poll) for files that
        are not ready yet. Raises TransientError or SourceRefused if the source cannot be
        listed; a failing file is logged and left for the next poll. ``stop()`` is checked
        between files, batches and chunks: Interrupted leaves everything resumable."""
        self._stop = stop
        self._listed_as = {}
        summary = PollSummary(self.source.name)
        connection = _Connection(self.source, self.opener)
        try:
            for round_ in range(2):
                ready, wait, pending = self._ready(connection, summary, listing=round_ > 0)
                # Crash after listing: nothing has changed anywhere.
                taken = 0  # (files in hand elsewhere do not count: the next ones are taken)
                for candidate in ready:
                    if stop():
                        return summary
                    if taken == self.source.max_files:
                        break
                    if self.path_of(candidate.file.name) in summary.failed:
                        continue  # (failed in the first round: once a poll is enough)
                    taken += self._claimed(connection, candidate, summary, self._take)
                summary.pending = [c.file.name for c in pending]
                if wait is None or round_ or stop():
                    break
                self.sleep(wait)  # a file first seen now is re-checked in this same poll
        finally:
            connection.close()
        return summary

    def _ready(
        self, connection: _Connection, summary: PollSummary, *, listing: bool
    ) -> tuple[list[Candidate], float | None, list[Candidate]]:
        """(ready, seconds until the next pending one may be, pending). ``listing``: this
        poll lists the source whoever listed it last (its second round)."""
        # The ledger is read before the listing: an entry newer than this read is then a
        # decision taken since the listing (another run's), never mistaken for the one
        # that sent a file away before it came back.
        known = self.ledger.known(self.source.name)
        # Processes sharing the store and the source take turns listing it: when it is
        # not our turn, we take files from what the turn's listing found ready. Our first
        # poll lists (a process that died while listing, this one restarted, published
        # nothing, and the next turn would be a period away), and so does the poll after
        # a listing that failed (its backoff retry must not wait for the next turn).
        now = self.ingestor.clock()
        every = self.every if self._listed_ok else 0.0
        published = (
            None if listing else self.store.listings.turn(self.source.name, every, now, identity())
        )
        if published is None:
            self._listed_ok = False
            listed = self._listed(connection)
            self._listed_ok = True
        else:
            listed = published
        candidates = select(listed, self.source)
        crashpoints.reached("after_list")
        fresh = []
        for candidate in candidates:
            path = self.path_of(candidate.file.name)
            seen = known.get(path)
            # A published listing may predate the ledger read: a file decided and sent
            # away since it was made is gone, not back (the next listing sees it if it is).
            if seen is None or not (
                seen.matches(candidate.file)
                if published is None
                else seen.same_listing(candidate.file)
            ):
                fresh.append(candidate)
                self._listed_as[path] = seen.id if seen is not None else None
            elif not seen.completed:
                # Decided before, but the remote action did not happen (a crash, or the
                # server refused it): do it now, without reading the file again.
                self._claimed(connection, candidate, summary, self._redo)
        if published is not None:  # ready as the listing process saw them
            return fresh, None, []
        ready, wait = self.readiness.split(fresh)
        self.store.listings.publish(self.source.name, _published(ready), identity(), now)
        taken = {id(c) for c in ready}  # by identity: comparing dataclasses is O(n²) here
        not_ready = [c for c in fresh if id(c) not in taken]
        return ready, wait, not_ready

    def _listed(self, connection: _Connection) -> list[RemoteFile]:
        """The folder's files; a reset while connecting or listing is retried as a download
        is (same policy), on a new connection."""
        for attempt in retrying(self.sleep):
            with attempt:
                if self._stop():  # (a host that never answers takes `timeout` an attempt)
                    raise Interrupted("stopped while connecting")
                return connection.get(broken=attempt.retry_state.attempt_number > 1).list()
        raise AssertionError("unreachable: the last attempt's error is raised")

    def _claimed(
        self,
        connection: _Connection,
        candidate: Candidate,
        summary: PollSummary,
        act: Callable[[_Connection, Candidate, PollSummary], None],
    ) -> bool:
        """``act`` on a listed file while no other run touches it: its download, staging,
        store and remote action (two processes may be given one source: a `once` run by
        hand beside the service). Busy: another run has it, skipped for this poll.

        This is the poll's error boundary for one file: whatever goes wrong with it (a
        network fault, a bug, bytes that crash a library) fails this file only, and the
        poll goes on with the next. What concerns the whole source or our disk (refused
        credentials, a stop, a store or staging folder that cannot be written) still ends
        the poll: every other file would fail the same way. Says whether the file was ours
        to act on (False: busy)."""
        path = self.path_of(candidate.file.name)
        try:
            with self.store.claim_place(self.source.name, path, wait=False):
                try:
                    act(connection, candidate, summary)
                except _NOT_THE_FILES:
                    raise
                except Exception as exc:  # the boundary: see the docstring
                    self._failed(connection, candidate, summary, exc)
            summary.busy.pop(path, None)  # (busy in the poll's first round, not now)
        except PlaceBusy as exc:
            summary.busy[path] = str(exc)
            self.log.info("file_busy", file=path, cause=str(exc))
            return False
        return True

    def _decision_on(self, candidate: Candidate) -> Known | None:
        """The ledger's decision on this listing, read again under the claim: the run that
        held it before us may have decided the file since we listed it (a newer entry). An
        entry that had sent the file away before we listed it is no decision on it: the
        file came back."""
        path = self.path_of(candidate.file.name)
        seen = self.ledger.known_at(self.source.name, path)
        if seen is None or not seen.same_listing(candidate.file):
            return None
        if seen.sent_away and seen.id == self._listed_as.get(path, seen.id):
            return None
        return seen

    def _redo(self, connection: _Connection, candidate: Candidate, summary: PollSummary) -> None:
        seen = self._decision_on(candidate)
        if seen is not None and not seen.completed:
            self._complete(connection, candidate, seen.id, seen.status)
            summary.completed.append(candidate.file.name)

    def _take(self, connection: _Connection, candidate: Candidate, summary: PollSummary) -> None:
        if self._decision_on(candidate) is not None:  # taken by another run since we listed it
            self.log.debug("file_decided_meanwhile", file=self.path_of(candidate.file.name))
            return
        path = self.path_of(candidate.file.name)
        with Transfer(
            self.config,
            self.source,
            self.ingestor,
            candidate,
            self._arrival(candidate),
            connect=connection.get,
            stop=self._stop,
            sleep=self.sleep,
            received=self.received,
        ) as transfer:
            outcome = transfer.run()
        summary.taken[path] = outcome.entry
        # Crash here: rows and ledger entry are committed; the next poll knows the file by
        # path, size and mtime, skips it unread and does the remote action below.
        self._complete(connection, candidate, outcome.entry.id, outcome.entry.status)
        self.log.debug("file_done", file=path, status=outcome.entry.status)

    def _failed(
        self, connection: _Connection, candidate: Candidate, summary: PollSummary, exc: Exception
    ) -> None:
        """One file's take failed: it is noted in the ledger and left for a later poll.
        Faults of the network, the server or a busy store (TransientError) say nothing of
        the file, and neither does a failing remote action of a file already
        decided: such a file is tried again at every poll. An error that is not expected
        (a defect met with these bytes, a parse that died) counts: after ``max_tries`` of
        them in a row on one listing, the file is set aside."""
        path = self.path_of(candidate.file.name)
        summary.failed[path] = cause = logged_failure(self.log, "file_failed", exc, file=path)
        if isinstance(exc, TransientError) or self._decision_on(candidate) is not None:
            return
        tries = self.ledger.tried(self._arrival(candidate), cause)
        if tries >= self.source.max_tries:
            self._quarantine(connection, candidate, summary, tries, cause)

    def _quarantine(
        self,
        connection: _Connection,
        candidate: Candidate,
        summary: PollSummary,
        tries: int,
        cause: str,
    ) -> None:
        """Set a file that keeps failing aside: recorded ``rejected`` with the reason, and
        moved where files rejected whole go (``error_dir``), so that it blocks nothing and
        is not tried for ever. With ``error_dir = "delete"`` it is left where it is
        instead: bytes that were never ingested are not deleted on a defect's account.
        Sent again (moved back, or touched), it is a new listing, tried afresh."""
        path = self.path_of(candidate.file.name)
        reason = f"{SET_ASIDE} {tries} failed tries in a row; the last: {cause}"
        left = isinstance(self.source.error_dir, Delete)
        # (not in a transaction: set_aside takes checksum claims, which come before one)
        entry = self.ingestor.set_aside(
            self._arrival(candidate), reason, done=str(Leave()) if left else None
        )
        del summary.failed[path]
        summary.taken[path] = entry
        self.log.error("file_quarantined", file=path, tries=tries, cause=cause)
        if left:
            return
        # Crash here, or the move fails: the entry is decided and not completed, so the
        # next poll redoes the move, as for any rejected file.
        try:
            self._complete(connection, candidate, entry.id, entry.status)
        except (TransientError, SourceRefused) as exc:
            self.log.warning("file_action_failed", file=path, cause=str(exc))

    def _arrival(self, candidate: Candidate) -> Arrival:
        """The ledger's view of a listed file, before its bytes are read."""
        file = candidate.file
        return Arrival(
            self.source.name,
            self.path_of(file.name),
            None,
            file.size,
            candidate.rules.kind,
            file.mtime,
            self.source.tenant,
        )

    def _complete(
        self, connection: _Connection, candidate: Candidate, entry_id: int, status: Status
    ) -> None:
        """The remote action — only ever after the file's commit returned — with the
        file's reject report, if the source writes them."""
        name = candidate.file.name
        action = self.source.action_for(status)
        report = self._report(entry_id, name)
        remote = connection.get()
        # The store cannot fence a move or a delete: our claim on the place is confirmed
        # (and renewed) just before, so that a process frozen past its lease while another
        # took the file over does not act on it (or on new bytes sent since) when it wakes.
        self.store.confirm()
        try:
            if report is not None and isinstance(action, Delete):
                # Before the delete: one redone after a failure writes the same again.
                remote.put(self.source.report_folder(), name + REPORT_SUFFIX, report)
                report = None
            moved = remote.complete(name, action, report)
            if candidate.marker is not None:
                remote.complete(candidate.marker, action)
        except Exception:
            self.action_failed()
            raise
        crashpoints.reached("after_remote_action")
        # Crash here: the file is gone from the folder (moved or deleted), so no poll sees
        # it again; with `leave`, the next poll finds it known, not completed, and redoes
        # `leave` (nothing) before marking it.
        self.ledger.mark_completed(
            self.source.name, self.path_of(name), str(action), self.ingestor.clock()
        )
        if moved is not None:
            self.log.info("file_moved", file=self.path_of(name), moved_to=moved)

    def _report(self, entry_id: int, name: str) -> bytes | None:
        """The file's reject report, when the source writes them and the file has rejects
        (read from the store, so that a remote action redone later writes the same)."""
        if not self.source.reject_report:
            return None
        rejects = self.ledger.rejects(entry_id)
        if not rejects:
            return None
        # (room for the report's suffix after a moved file's clash timestamp)
        if len(name.encode("utf-8", "surrogateescape")) + REPORT_ROOM > MAX_NAME_BYTES:
            self.log.warning(
                "reject_report_skipped",
                file=self.path_of(name),
                reason="the file's name leaves no room for the report's",
            )
            return None
        # (why a file was set aside is a defect's text: the operator's, not the customer's)
        return reject_report(
            Reject(r.line, SET_ASIDE_TOLD, "") if r.reason.startswith(SET_ASIDE) else r
            for r in rejects
        )
