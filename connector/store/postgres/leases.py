"""Claims on a shared PostgreSQL store, as leases with fencing (docs/scaling.md).

A claim is a row of ``claims``: its key, what it holds and who holds it (the replica), for
the operator, a token drawn for this taking, and when it expires. A heartbeat renews every
live claim of the process every third of the lease; a claim whose lease ran out (its
process died, lost its network, or was frozen) is taken over by the next run that wants it.

Fencing: every transaction of a thread that holds claims first reads them back by token,
unexpired, ``FOR KEY SHARE``. A claim found lost refuses the transaction (ClaimLost,
rolled back before it wrote anything); one found keeps its row locked until the commit,
and a takeover, which must delete the row, passes over a locked one (the claim stays
busy): no run ever writes under a claim that another has taken over. A frozen process's
transaction cannot hold the lock for ever: the server ends a session idle in a transaction
past the lease (``Database``). What the store cannot fence (the remote action) is
preceded by ``confirm``: the thread's claims renewed, or ClaimLost.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import structlog

from connector import replica
from connector.errors import ClaimLost, Interrupted, PlaceBusy, StorageError
from connector.store.port import Stop, never
from connector.store.postgres.db import Connection, Database

POLL_SECONDS = 0.1  # how often a waiting claim asks again

# A new claim; or nothing, when the key is held (expired or not: see _TAKE_OVER).
_TAKE = (
    "INSERT INTO claims(key, what, owner, token, expires_at)"
    " VALUES (%(key)s, %(what)s, %(owner)s, nextval('claim_tokens'),"
    " clock_timestamp() + make_interval(secs => %(lease)s))"
    " ON CONFLICT (key) DO NOTHING RETURNING token"
)
# An expired claim removed, unless its holder's transaction still has it locked (it was
# fenced before expiring: its commit, or its session's end, comes first). Never waits.
_TAKE_OVER = (
    "DELETE FROM claims WHERE key IN (SELECT key FROM claims WHERE key = %s"
    " AND expires_at < clock_timestamp() FOR UPDATE SKIP LOCKED) RETURNING owner"
)
# An expired claim stays expired: its holder has lost it, even if no one took it over.
_RENEW = (
    "UPDATE claims SET expires_at = clock_timestamp() + make_interval(secs => %s)"
    " WHERE token = ANY(%s) AND expires_at > clock_timestamp() RETURNING token"
)
_RELEASE = (
    "DELETE FROM claims WHERE key = %s AND token = %s RETURNING expires_at > clock_timestamp()"
)
_FENCE = (
    "SELECT token FROM claims WHERE token = ANY(%s) AND expires_at > clock_timestamp()"
    " FOR KEY SHARE"
)


@dataclass(eq=False)
class _Claim:
    key: str
    what: str  # as messages name it
    token: int
    lost: bool = False


class Leases:
    """The claims of one process on one store (see ``Store.claim``), on a connection of
    their own: a claim is taken and let go at once, whatever transaction the thread is in
    (a dry run's), and is never held up by one."""

    def __init__(self, db: Database, lease: float) -> None:
        self._db, self._lease = db, lease
        self._owner = replica.identity()
        self._conn: Connection | None = None
        self._conn_lock = threading.Lock()  # (heartbeat and claimers share the connection)
        self._live: dict[int, _Claim] = {}  # every thread's, by token
        self._live_lock = threading.Lock()
        self._local = threading.local()  # .held: the thread's own claims
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._heartbeat_lock = threading.Lock()
        self._log = structlog.get_logger()

    def claim(self, sha256: str, *, stop: Stop = never) -> AbstractContextManager[None]:
        return self._hold(f"file:{sha256}", f"file {sha256}", wait=True, stop=stop)

    def claim_place(
        self, source: str, path: str, *, wait: bool = True
    ) -> AbstractContextManager[None]:
        place = f"{source}\0{path}".encode("utf-8", "surrogateescape")
        shown = place.decode("utf-8", "backslashreplace").replace("\0", ":", 1)
        return self._hold(f"place:{hashlib.sha256(place).hexdigest()}", f"place {shown}", wait=wait)

    @contextmanager
    def _hold(self, key: str, what: str, *, wait: bool, stop: Stop = never) -> Iterator[None]:
        claim = _Claim(key, what, self._take(key, what, wait=wait, stop=stop))
        held = self._held()
        with self._live_lock:
            self._live[claim.token] = claim
        held.append(claim)
        self._beating()
        try:
            yield
        finally:
            held.remove(claim)
            with self._live_lock:  # (first: the heartbeat must not count it lost)
                del self._live[claim.token]
            self._release(claim)

    def _held(self) -> list[_Claim]:
        held: list[_Claim] | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = []
        return held

    def _take(self, key: str, what: str, *, wait: bool, stop: Stop) -> int:
        """A new token for ``key``: taken free, or taken over once its lease ran out."""
        while True:
            with self._session() as conn:
                params = {"key": key, "what": what, "owner": self._owner, "lease": self._lease}
                row = conn.execute(_TAKE, params).fetchone()
                if row is None:
                    gone = conn.execute(_TAKE_OVER, (key,)).fetchone()
                    if gone is not None:
                        self._log.warning("claim_taken_over", claim=what, owner=gone[0])
                        row = conn.execute(_TAKE, params).fetchone()
                if row is not None:
                    return int(row[0])
                holder = conn.execute("SELECT owner FROM claims WHERE key = %s", (key,)).fetchone()
            if holder is None:
                continue  # let go meanwhile: at once again
            if not wait:
                raise PlaceBusy(
                    "in hand in another thread of this run"
                    if holder[0] == self._owner
                    else f"in hand in another run ({holder[0]})"
                )
            if stop():
                raise Interrupted("stopped while waiting for a claim another run holds")
            lost = next((c for c in self._held() if c.lost), None)
            if lost is not None:  # (no use waiting: nothing more is stored under it)
                raise ClaimLost(f"the claim on {lost.what} was lost while waiting for another")
            time.sleep(POLL_SECONDS)

    def _release(self, claim: _Claim) -> None:
        """Let a claim go. One found taken over, or run out, was lost: said, should no
        write have told it already (a run frozen, then stopped). Should the store not
        answer, the lease ends it: the error that brought us here, if any, is the one to
        tell."""
        try:
            with self._session() as conn:
                row = conn.execute(_RELEASE, (claim.key, claim.token)).fetchone()
        except StorageError as exc:
            self._log.warning("claim_not_released", claim=claim.what, cause=str(exc))
            return
        if row is None or not row[0]:
            self._lost(claim)

    def fence(self, conn: Connection) -> None:
        """First thing in a transaction of this thread: its claims still hold, and stay
        held until it ends; else ClaimLost (see the module's doc)."""
        held = self._held()
        if not held:
            return
        rows = conn.execute(_FENCE, ([claim.token for claim in held],)).fetchall()
        self._all_alive(held, {token for (token,) in rows})

    def confirm(self) -> None:
        """Renew every claim this thread holds, now; ClaimLost if one was lost (another
        run may hold it). Called just before an act the store cannot fence (the remote
        action): a run frozen past its lease must not act on a file another run took."""
        held = self._held()
        if not held:
            return
        with self._session() as conn:
            rows = conn.execute(_RENEW, (self._lease, [claim.token for claim in held])).fetchall()
        self._all_alive(held, {token for (token,) in rows})

    def _all_alive(self, held: list[_Claim], alive: set[int]) -> None:
        """ClaimLost (told once) for the first of ``held`` whose token is not ``alive``."""
        for claim in held:
            if claim.token not in alive:
                self._lost(claim)
                raise ClaimLost(
                    f"the claim on {claim.what} was lost: its lease ({self._lease:g}s) ran"
                    " out, and another run may have it now; nothing more is done under it"
                )

    def _lost(self, claim: _Claim) -> None:
        if not claim.lost:  # (told once, by the heartbeat or the fence)
            claim.lost = True
            self._log.error("claim_lost", claim=claim.what)

    def _beating(self) -> None:
        with self._heartbeat_lock:  # (two threads' first claims: one heartbeat, joined)
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(target=self._beat, name="leases", daemon=True)
                self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._lease / 3):
            with self._live_lock:
                tokens = list(self._live)
            if not tokens:
                continue
            try:
                with self._session() as conn:
                    rows = conn.execute(_RENEW, (self._lease, tokens)).fetchall()
            except StorageError as exc:  # (tried again at the next beat)
                self._log.warning("lease_not_renewed", cause=str(exc))
                continue
            renewed = {token for (token,) in rows}
            with self._live_lock:
                lost = [c for t, c in self._live.items() if t in tokens and t not in renewed]
            for claim in lost:
                self._lost(claim)

    @contextmanager
    def _session(self) -> Iterator[Connection]:
        """The claims' connection, to themselves while in use; made again if lost. Its
        statements never wait for a lock, and none runs longer than a lease."""
        with self._conn_lock:
            if self._conn is None:
                bound = max(int(self._lease * 1000), 1000)
                self._conn = self._db.connect(setup=f"SET statement_timeout = {bound};")
            conn = self._conn
            try:
                with self._db.faults():
                    yield conn
            except BaseException:
                if conn.broken:
                    conn.close()
                    self._conn = None
                raise

    def close(self) -> None:
        self._stop.set()
        with self._heartbeat_lock:
            heartbeat = self._heartbeat
        if heartbeat is not None:
            heartbeat.join()
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
