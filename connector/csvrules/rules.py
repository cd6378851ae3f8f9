"""What the shared CSV rules need to know about one file, whichever path it came by."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Kind = Literal["contacts", "events"]

# The CSV rules' limits (docs/csv-rules.md §3, §4), counted in characters after decoding.
MAX_FIELD = 1_048_576
MAX_HEADER = 255
MAX_KEY = 128
MAX_TIMESTAMP = 4_102_444_800  # 2100-01-01T00:00:00Z
KEY_WINDOW_SECONDS = 24 * 3600
NO_TIMESTAMP = -1  # an event without a timestamp: it takes the processing time
TOO_OLD = "older than max_event_age"  # (words `import --dry-run` counts rejects by)

# Our own bounds beyond the contract's (the `[ingest]` defaults), so that a file of any
# shape is parsed in bounded memory. A record's characters count its line breaks. 4 MiB
# still holds a few fields of the contract's 1 MiB; it is what keeps the worst record
# (4-byte characters, copied on its way through typing, JSON, the spool and SQLite) under
# 200 MB in each process. 10,000 columns is well beyond real exports (Excel stops at
# 16,384) while a header, and every row split against it, stays small.
MAX_RECORD = 4 << 20
MAX_COLUMNS = 10_000
# An identifier is a key of every store: PostgreSQL's btree index on it holds no entry over
# about 2,700 bytes (a third of a page), so a longer one that does not compress would fail
# its whole file there at the final commit. 512 characters are at most 2,048 bytes of UTF-8,
# under that limit whatever the characters, and far beyond real identifiers (an email
# address is at most 254). A longer one rejects its row, on every store (§6.2, §11.4).
MAX_IDENTIFIER = 512
# A rejected row keeps this much of the cell (or line) that rejected it: enough to show the
# customer, bounded however long the cell.
MAX_REJECT_VALUE = 200


@dataclass(frozen=True)
class FileRules:
    """The per-file settings of the CSV rules (docs/csv-rules.md), resolved from a source
    and its file entry."""

    kind: Kind
    identifier: str = "identifier"
    delimiter: str | None = None  # None: sniff "," or ";" from the header line
    encoding: str = "utf-8"
    columns: dict[str, str] = field(default_factory=dict)
    event_name: str | None = None
    event_columns: tuple[str, ...] | None = None
    # Off by default (the rules as documented): times without an offset, read in this zone
    # or by these strptime formats; numbers written with a decimal comma ("12,50").
    timezone: str | None = None
    timestamp_formats: tuple[str, ...] = ()
    decimal: str = "."
    max_event_age: int | None = None  # seconds: older events are rejected
    max_event_age_text: str = ""  # as configured ("30d"), for the reason
    # Unix seconds: events from before are older than max_event_age. Set once per file
    # from its processing time (``with_age_counted_from``); unset: from the parse's start.
    not_before: int | None = None

    def with_age_counted_from(self, now: float) -> FileRules:
        """These rules with max_event_age counted from ``now``, the file's processing time
        (a replay's: when the file was first taken)."""
        if self.max_event_age is None:
            return self
        return replace(self, not_before=int(now) - self.max_event_age)


@dataclass(frozen=True)
class Limits:
    """How large a record and how wide a header may be (`[ingest]`): a longer record is
    rejected, a wider header rejects the file."""

    record_chars: int = MAX_RECORD
    columns: int = MAX_COLUMNS
