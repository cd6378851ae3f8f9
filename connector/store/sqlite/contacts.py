"""A file's contact upserts on the SQLite store, shown together by its final entry without
a long write transaction (docs/guarantees.md, "How they are kept").

SQLite has one writer at a time: a file's final transaction must stay short, however many
contacts the file touches. So its upserts are applied to the contacts before it, yet kept
out of sight:

1. **As batches are stored**, each batch's upserts are appended to ``pending_contacts`` in
   file order (``add``): an append, as cheap as the events beside it.
2. **Once the last batch is stored** (``settle``), they are staged onto the contacts' rows
   in identifier order, a chunk per short transaction: what the file's rows set, merged in
   file order, goes to ``staged`` beside the attributes, marked with the file
   (``staged_by``); a contact the file creates is a row marked ``staged_new``; and the
   line the change feed will give for each contact the file changes is written, as the
   contact will be after the file. In identifier order, each page of the contacts is
   written once, where staging batch by batch rewrote most of them at every commit.
   ``files.staged_through`` says how far it got: a stop or a crash resumes from there.
3. **The final transaction** (``finish``) shows them all at once: readers see a contact
   staged by a file whose entry is final as ``json_patch(attributes, staged)`` (the view
   ``contacts_now``), and the next file to stage on it folds that in first.
4. **Afterwards** (``tidy``), its pending upserts are removed, a chunk at a time (those a
   crash left are removed by the next sweep: ``SQLiteSink.sweep``).

A contact staged by another file still in progress cannot be staged on: its upserts wait
(``pending_contacts.waits``) and the final transaction applies them to the attributes, as
every upsert was applied before, so that whichever file ends last wins for what it sets.
Such contacts are the only work of a final transaction that grows with the file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import apsw

from connector import crashpoints
from connector.store.retention import by_file
from connector.store.sqlite.db import Database, unbind

# Pending upserts staged per transaction: at first, and at least (then sized to take
# CHUNK_SECONDS, as the last chunk took; each commit costs a sync, so not fewer).
CHUNK_ROWS = 10_000
MAX_CHUNK_ROWS = 200_000
CHUNK_BYTES = 8_000_000  # ... and at most this much of their attributes
CHUNK_SECONDS = 0.4

_TENANT = "(SELECT tenant FROM files WHERE id = ?1)"
_STATUS_OF_STAGER = "(SELECT status FROM files WHERE id = {}.staged_by)"

_PENDING = "INSERT INTO pending_contacts(file_id, identifier, attributes) VALUES (?, ?, ?)"
# An events file's contacts that are not stored yet, created with no attributes.
_PENDING_MISSING = (
    "INSERT INTO pending_contacts(file_id, identifier, attributes)"
    " SELECT ?1, value, '{}' FROM carray(?2) WHERE NOT EXISTS (SELECT 1 FROM contacts c"
    f" WHERE c.tenant = {_TENANT} AND c.identifier = value"
    f" AND (NOT c.staged_new OR {_STATUS_OF_STAGER.format('c')} = 'ingested'))"
)

# The file's pending upserts not staged yet, in identifier order, copied once per run of
# ``settle`` (a read of the store: no write lock is held while they are sorted), with the
# size of their attributes, and the attributes themselves up to ?2 bytes (larger ones, a
# record may be megabytes, are read at their chunk: SQLite's sorter holds each row whole).
_SORTED = (
    "CREATE TEMP TABLE IF NOT EXISTS settling(identifier TEXT NOT NULL, seq INTEGER NOT NULL,"
    " bytes INTEGER NOT NULL, attributes TEXT)"
)
_SORT = (
    "INSERT INTO temp.settling(identifier, seq, bytes, attributes)"
    " SELECT identifier, seq, octet_length(attributes),"
    " CASE WHEN octet_length(attributes) <= ?2 THEN attributes END"
    " FROM pending_contacts WHERE file_id = ?1"
    " AND identifier > coalesce((SELECT staged_through FROM files WHERE id = ?1), '')"
    " ORDER BY identifier, seq"
)
SORTED_BYTES = 4096  # attributes sorted with their upsert, at most
# Where a chunk from row ?1 ends: at most ?2 rows and ?3 bytes of attributes (a row at
# least: a record may be megabytes, and SQLite holds each one whole as it works). Summed
# first, the usual case: counted row by row only when that is over.
_CHUNK_ROWS = "FROM temp.settling WHERE rowid BETWEEN ?1 AND ?1 + ?2 - 1"
_CHUNK_END = (
    f"SELECT CASE WHEN (SELECT sum(bytes) {_CHUNK_ROWS}) <= ?3"
    f" THEN (SELECT max(rowid) {_CHUNK_ROWS}) ELSE (SELECT coalesce(max(rowid), ?1) FROM"
    f" (SELECT rowid, sum(bytes) OVER (ORDER BY rowid) AS upto {_CHUNK_ROWS})"
    " WHERE upto <= ?3) END"
)
# One chunk: the rows from ?2 on, up to the end of the identifier at row ?3 (the rows are
# in identifier order: the chunk ends before the first row of another one).
_CHUNK = (
    "INSERT INTO temp.chunk(identifier, attributes, seq) SELECT s.identifier, coalesce("
    "s.attributes, (SELECT p.attributes FROM pending_contacts p WHERE p.seq = s.seq)), s.seq"
    " FROM temp.settling s WHERE s.rowid BETWEEN ?2 AND coalesce("
    "(SELECT n.rowid - 1 FROM temp.settling n WHERE n.rowid > ?3 AND n.identifier <>"
    " (SELECT identifier FROM temp.settling WHERE rowid = ?3) ORDER BY n.rowid LIMIT 1),"
    " (SELECT max(rowid) FROM temp.settling)) ORDER BY s.rowid"
)
_CHUNK_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS chunk(identifier TEXT NOT NULL, attributes TEXT NOT NULL,"
    " seq INTEGER NOT NULL, waits INTEGER NOT NULL DEFAULT 0)"
)
_IN_CHUNK = "SELECT identifier FROM temp.chunk WHERE NOT waits"
# Contacts staged by another file still in progress: their upserts wait for the end.
_WAITING = (
    "UPDATE temp.chunk SET waits = 1 WHERE identifier IN (SELECT c.identifier FROM contacts c"
    f" WHERE c.tenant = {_TENANT} AND c.identifier IN (SELECT identifier FROM temp.chunk)"
    f" AND c.staged_by <> ?1 AND {_STATUS_OF_STAGER.format('c')} IN ('ingesting', 'failed'))"
)
# What a final file staged, folded into the attributes: the contact reads the same.
_FOLD = (
    "UPDATE contacts SET attributes = json_patch(attributes, staged), changed_by = staged_by,"
    " staged_by = NULL, staged = NULL, staged_new = 0, staged_change = NULL"
    f" WHERE tenant = {_TENANT} AND identifier IN ({{}}) AND staged_by <> ?1"
    f" AND {_STATUS_OF_STAGER.format('contacts')} = 'ingested'"
)
# Staged in file order; a slot left by a file that will never be final (taken back) is
# taken over as a free one.
_STAGE = (
    "INSERT INTO contacts(tenant, identifier, attributes, staged_by, staged, staged_new)"
    f" SELECT {_TENANT}, identifier, '{{}}', ?1, attributes, 1 FROM temp.chunk"
    " WHERE NOT waits ORDER BY rowid ON CONFLICT(tenant, identifier) DO UPDATE"
    " SET staged = CASE WHEN staged_by = ?1 THEN json_patch(staged, excluded.staged)"
    " ELSE excluded.staged END,"
    " staged_change = CASE WHEN staged_by = ?1 THEN staged_change END, staged_by = ?1"
)
# The feed's line for each contact the file creates or changes, as it will be after it;
# ``staged_change`` leads to it when it must be brought up to date.
_CHANGES = (
    "INSERT INTO contact_changes(file_id, identifier, attributes)"
    " SELECT ?1, identifier, json_patch(attributes, staged) FROM contacts"
    f" WHERE tenant = {_TENANT} AND identifier IN ({_IN_CHUNK}) AND staged_by = ?1"
    " AND staged_change IS NULL AND (staged_new OR json_patch(attributes, staged) <> attributes)"
    " ORDER BY identifier"
)
# ... each line made after line ?2, found from its contact.
_CHANGE_OF = (
    "UPDATE contacts SET staged_change = made.id FROM contact_changes made"
    f" WHERE made.id > ?2 AND made.file_id = ?1 AND contacts.tenant = {_TENANT}"
    " AND contacts.identifier = made.identifier"
)
_WAIT = (
    "UPDATE pending_contacts SET waits = 1 WHERE seq IN (SELECT seq FROM temp.chunk WHERE waits)"
)
_THROUGH = "UPDATE files SET staged_through = ?2 WHERE id = ?1"

_WAITED = "SELECT identifier FROM pending_contacts WHERE file_id = ?1 AND waits"
# The final transaction's share: the upserts that waited, in file order, onto the
# attributes (later rows win; a contact another file created but has not shown yet is this
# one's to show). Those it changed get their feed line as they are now, and files still
# staging on them get theirs brought up to date.
_APPLY_WAITED = (
    "INSERT INTO contacts(tenant, identifier, attributes, changed_by)"
    f" SELECT {_TENANT}, identifier, attributes, ?1 FROM pending_contacts"
    " WHERE file_id = ?1 AND waits ORDER BY seq ON CONFLICT(tenant, identifier) DO UPDATE"
    " SET attributes = json_patch(attributes, excluded.attributes),"
    " changed_by = excluded.changed_by, staged_new = 0"
    " WHERE json_patch(attributes, excluded.attributes) <> attributes OR staged_new"
)
_WAITED_CHANGES = (
    "INSERT INTO contact_changes(file_id, identifier, attributes)"
    f" SELECT ?1, identifier, attributes FROM contacts WHERE tenant = {_TENANT}"
    f" AND identifier IN ({_WAITED}) AND changed_by = ?1 ORDER BY identifier"
)
# Feed lines of files staging on contacts, brought up to date: for the identifiers {0},
# staged by a file {1}.
_RESTAGED = (
    "UPDATE contact_changes SET attributes = json_patch(c.attributes, c.staged)"
    f" FROM contacts c WHERE c.tenant = {_TENANT} AND c.identifier IN ({{0}})"
    " AND c.staged_by {1} AND contact_changes.id = c.staged_change"
)
# A file taken back (``takeback.py``), a chunk of its pending upserts at a time, up to seq
# ?3: the contacts it created with them go, those it staged on are given up, then the
# upserts themselves (each contact it staged has one: they go last).
_TAKEN_BACK = (
    "DELETE FROM contacts WHERE tenant = ?2 AND identifier IN (SELECT identifier FROM"
    " pending_contacts WHERE file_id = ?1 AND seq <= ?3) AND staged_by = ?1 AND staged_new",
    "UPDATE contacts SET staged_by = NULL, staged = NULL, staged_change = NULL"
    " WHERE tenant = ?2 AND identifier IN (SELECT identifier FROM pending_contacts"
    " WHERE file_id = ?1 AND seq <= ?3) AND staged_by = ?1",
    "DELETE FROM pending_contacts WHERE file_id = ?1 AND seq <= ?3",
)
_TAKEN_BACK_CHUNK = (
    "SELECT max(seq) FROM (SELECT seq FROM pending_contacts WHERE file_id = ? ORDER BY seq LIMIT ?)"
)
_TAKEN_BACK_ROWS = 50_000  # (each with a look-up of its contact: about 0.2 s)
# Final files whose pending upserts a crash left before ``tidy``.
_LEFT_BY_A_CRASH = (
    "SELECT id FROM files WHERE status = 'ingested'"
    " AND id IN (SELECT DISTINCT file_id FROM pending_contacts)"
)
_TIDY_ROWS = 100_000  # (in file order: a delete of that many takes about 0.1 s)


class Contacts:
    """The contacts side of ``SQLiteSink``: see the module's docstring for the steps."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, file_id: int, contacts: Iterable[tuple[str, str]]) -> None:
        """Step 1 for a contacts file's batch, in the caller's transaction."""
        conn = self.db.conn
        conn.executemany(_PENDING, ((file_id, ident, attrs) for ident, attrs in contacts))
        unbind(conn, _PENDING, 3)

    def add_missing(self, file_id: int, identifiers: Any) -> None:
        """Step 1 for an events file's batch: the contacts it names that are not stored."""
        conn = self.db.conn
        conn.execute(_PENDING_MISSING, (file_id, apsw.carray(identifiers)))
        unbind(conn, _PENDING_MISSING, 2)

    def settle(self, file_id: int, stop: Callable[[], bool]) -> None:
        """Step 2: stage the file's pending upserts, a chunk per transaction, until done
        or ``stop()``. Each chunk ends with an identifier, and moves ``staged_through``
        in its transaction: what a crash leaves is resumed from there."""
        db, conn = self.db, self.db.conn
        # (outside a transaction, it writes only the temporary table: no write lock)
        db.execute(_SORTED)
        db.execute("DELETE FROM temp.settling")
        with db.small_cache():
            db.execute(_SORT, (file_id, SORTED_BYTES))
        (rows,) = db.query("SELECT count(*) FROM temp.settling")[0]
        start, size = 1, CHUNK_ROWS
        while start <= rows and not stop():
            began = time.monotonic()
            with db.transaction():
                conn.execute(_CHUNK_TABLE)
                (end,) = db.query(_CHUNK_END, (start, size, CHUNK_BYTES))[0]
                conn.execute(_CHUNK, (file_id, start, end))
                taken, last = db.query("SELECT count(*), max(identifier) FROM temp.chunk")[0]
                self._stage(file_id, last)
                conn.execute("DELETE FROM temp.chunk")
            # (the next chunk sized to take about CHUNK_SECONDS, as far as this one tells)
            took = max(time.monotonic() - began, 1e-3)
            size = max(CHUNK_ROWS, min(MAX_CHUNK_ROWS, int(taken * CHUNK_SECONDS / took)))
            crashpoints.reached("mid_settle")
            # Crash here: the chunks staged so far are committed with staged_through, and
            # hidden (the entry is not final); a re-run stages the rest and shows them all.
            start += taken
        db.execute("DELETE FROM temp.settling")

    def _stage(self, file_id: int, through: str) -> None:
        conn = self.db.conn
        conn.execute(_WAITING, (file_id,))
        conn.execute(_FOLD.format(_IN_CHUNK), (file_id,))
        conn.execute(_STAGE, (file_id,))
        # (each identifier is staged once per file: its rows are all in one chunk, and a
        # resumed run starts after the last chunk staged)
        (before,) = self.db.query("SELECT coalesce(max(id), 0) FROM contact_changes")[0]
        conn.execute(_CHANGES, (file_id,))
        conn.execute(_CHANGE_OF, (file_id, before))
        conn.execute(_WAIT)
        conn.execute(_THROUGH, (file_id, through))

    def finish(self, file_id: int) -> None:
        """Step 3's share, in the final entry's transaction: the upserts that waited."""
        conn = self.db.conn
        if not self.db.query(f"{_WAITED} LIMIT 1", (file_id,)):
            return  # (the usual case: every upsert was staged)
        conn.execute(_FOLD.format(_WAITED), (file_id,))
        conn.execute(_APPLY_WAITED, (file_id,))
        conn.execute(_WAITED_CHANGES, (file_id,))
        conn.execute(_RESTAGED.format(_WAITED, "<> ?1"), (file_id,))

    def tidy(self, file_id: int) -> None:
        """Step 4: the pending upserts of a final file, removed a chunk per transaction."""
        by_file(self.db, "pending_contacts", file_id, _TIDY_ROWS, key="seq")

    def tidy_left_by_a_crash(self) -> None:
        """Step 4 for the final files whose upserts a crash left before it."""
        for (final,) in self.db.query(_LEFT_BY_A_CRASH):
            self.tidy(final)

    def take_back(self, file_id: int, tenant: str, stop: Callable[[], bool]) -> bool:
        """What a file taken back (its entry forgotten) staged or left pending, removed a
        chunk per transaction; whether all of it went before ``stop()``."""
        while not stop():
            with self.db.transaction():
                [(upto,)] = self.db.query(_TAKEN_BACK_CHUNK, (file_id, _TAKEN_BACK_ROWS))
                if upto is None:
                    return True
                for statement in _TAKEN_BACK:
                    self.db.execute(statement, (file_id, tenant, upto))
        return False
