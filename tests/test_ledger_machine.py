"""The ledger's rule, by a hypothesis state machine on a real SQLite store: bytes recorded
once are never yielded again. Files arrive under any name, again and again, are stopped
part-way (their batches committed, as a crash after a commit leaves them), resumed,
forgotten on purpose, and the store is closed and opened again between any two steps;
after every step, each ingested file's events are in the dump exactly once."""

from __future__ import annotations

import hashlib
import itertools
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from connector.csvrules.rules import FileRules
from connector.errors import Interrupted
from connector.ingest import Ingestor
from connector.store.sqlite import SQLiteStore

EVENTS = FileRules(kind="events", event_name="e")
# Files of 1 to 7 rows, two of them the same bytes under every name they are sent as.
CONTENTS = [b"identifier\n" + b"".join(b"u%d-%d\n" % (f, r) for r in range(f)) for f in range(1, 8)]
NAMES = ["a.csv", "b.csv", "renamed.csv"]
BATCH = 2  # records a batch: a file of 7 rows is 4 batches, stoppable between any two


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="ledger-machine-"))
        self.store = SQLiteStore(self.folder / "c.db")
        self.names = itertools.count()
        self.ingested: set[str] = set()  # checksums whose events must show once
        self.forgotten: Counter[str] = Counter()  # times each was forgotten: shown again

    def _ingest(self, content: bytes, name: str, stop_after: int | None) -> None:
        path = self.folder / f"{next(self.names)}.csv"
        path.write_bytes(content)
        batches = itertools.count(1)

        def stop() -> bool:  # asked before each batch: past ``stop_after``, a stop
            return stop_after is not None and next(batches) > stop_after

        ingestor = Ingestor(self.store, batch_records=BATCH, commit_seconds=0, stop=stop)
        try:
            outcome = ingestor.ingest(path, EVENTS, source="s", name=name)
        except Interrupted:
            return  # what was committed stays, invisible, for the next run to resume
        if outcome.entry.status == "ingested":
            self.ingested.add(_sha256(content))

    @rule(
        content=st.sampled_from(CONTENTS),
        name=st.sampled_from(NAMES),
        stop_after=st.none() | st.integers(0, 3),
    )
    def arrive(self, content: bytes, name: str, stop_after: int | None) -> None:
        """A file arrives (maybe again, maybe renamed), maybe stopped part-way."""
        self._ingest(content, name, stop_after)

    @rule()
    def restart(self) -> None:
        """The process ends and starts again: a new connection to the same file."""
        self.store.close()
        self.store = SQLiteStore(self.folder / "c.db")

    @precondition(lambda self: bool(self.ingested))
    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        """An operator forgets bytes: their next arrival is ingested as new."""
        sha256 = data.draw(st.sampled_from(sorted(self.ingested)))
        with self.store.transaction():
            self.store.ledger.forget_bytes("default", sha256, 1_700_000_000.0)
        self.ingested.discard(sha256)
        self.forgotten[sha256] += 1

    @invariant()
    def each_file_once(self) -> None:
        events = Counter(e["sha256"] for e in self.store.records("events"))
        for content in CONTENTS:
            sha256 = _sha256(content)
            rows = content.count(b"\n") - 1
            # Once for each time it was ingested: the first time, and again after each
            # forget (the rows stored before stay: forgetting removes nothing).
            times = self.forgotten[sha256] + (sha256 in self.ingested)
            assert events[sha256] == rows * times, (sha256[:8], events[sha256], rows, times)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.folder)


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(max_examples=40, stateful_step_count=12, deadline=None)
