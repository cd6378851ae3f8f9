"""Erasure (`connector erase`): some contacts of one tenant, and their events, removed from
everywhere in the store, and the audit trail, in the SQL both databases speak.

Events have no index by identifier (it would slow every import): they are scanned, in
ranges of ids, each range its own short transaction. The contacts, their change history
and their upserts still waiting for an unfinished file go last, with the audit entry, in
one transaction: an erasure cut short by a crash has removed some events and written no
audit entry; run it again. A file still being ingested that names one of them stores it
again when it becomes final: erase again after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from connector.store.ledger import SQL, Ledger

IDS_AT_A_TIME = 50_000  # event ids looked at per transaction


@dataclass
class Erased:
    contacts: int = 0
    events: int = 0
    # The bytes of the files that held them (their archive copies still do), as far as
    # the store knows them: events, and contact changes not yet removed by retention.
    files: set[str] = field(default_factory=set)


def erase(
    db: SQL,
    tenant: str,
    identifiers: list[str],
    reason: str,
    user: str,
    now: float,
    ids: int = IDS_AT_A_TIME,
) -> Erased:
    """Remove the contacts ``identifiers`` of ``tenant`` and everything the store holds
    of them; say how much went, and from which files' bytes."""
    erased = Erased()
    named = f"identifier IN ({', '.join('?' * len(identifiers))})"
    theirs = f"{named} AND file_id IN (SELECT id FROM files WHERE tenant = ?)"
    [(low, high)] = db.query("SELECT min(id), max(id) FROM events")
    for start in range(low or 0, (high or -1) + 1, ids):
        window = (start, start + ids - 1, *identifiers, tenant)
        with db.transaction():
            erased.files.update(_sha256s(db, "events", f"id BETWEEN ? AND ? AND {theirs}", window))
            erased.events += db.execute(
                f"DELETE FROM events WHERE id BETWEEN ? AND ? AND {theirs}", window
            )
    with db.transaction():
        mine = (*identifiers, tenant)
        # (contacts first, as a file's final transaction takes them before its waiting
        # upserts: two writers lock them in one order)
        erased.contacts = db.execute(f"DELETE FROM contacts WHERE {named} AND tenant = ?", mine)
        erased.files.update(_sha256s(db, "contact_changes", theirs, mine))
        for table in ("contact_changes", "pending_contacts"):
            db.execute(f"DELETE FROM {table} WHERE {theirs}", mine)
        Ledger(db).audit("erase", tenant, None, reason, user, now)
    return erased


def _sha256s(db: SQL, table: str, where: str, params: tuple[object, ...]) -> set[str]:
    """The checksums of the files whose rows of ``table`` match (those known: a file
    whose download failed has none)."""
    rows = db.query(
        f"SELECT DISTINCT sha256 FROM files WHERE sha256 IS NOT NULL AND id IN"
        f" (SELECT file_id FROM {table} WHERE {where})",
        params,
    )
    return {sha256 for (sha256,) in rows}
