"""Expected files (`expect_every` on a source): a customer who sends a file every night and
stops is noticed, by the connector rather than by the platform's users. Said by `run` (the
`file_overdue` log event, `connector_source_overdue`), `once` and `check`."""

from __future__ import annotations

from dataclasses import dataclass

from connector.config import SourceConfig
from connector.store.ledger import Ledger, iso


@dataclass(frozen=True)
class Overdue:
    since: float  # the newest file's arrival (or, with none, when watching began)
    late: float  # seconds past `expect_every`
    known: bool  # whether a file ever arrived

    def text(self, source: SourceConfig) -> str:
        none = "" if self.known else " (none yet)"
        return (
            f"no new file since {iso(self.since)}{none}: overdue by {self.late / 3600:.1f} h"
            f" (expect_every = {source.expect_every})"
        )


def overdue(
    source: SourceConfig, ledger: Ledger, now: float, watching_since: float
) -> Overdue | None:
    """Whether ``source`` is past its `expect_every` at ``now`` (None: it is not, or
    nothing is expected); with no file ever, counted from ``watching_since``."""
    if source.expect_every is None:
        return None
    last = ledger.last_arrival(source.name)
    since = last if last is not None else watching_since
    late = now - since - source.expect_every
    return Overdue(since, late, last is not None) if late > 0 else None
