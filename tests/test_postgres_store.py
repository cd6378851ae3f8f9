"""What only the PostgreSQL store has (the Store contract, tests/store_contract.py, runs on
it too): its schema's versions, its connection faults, its COPY-fed rows compared with
SQLite's, and its claims as leases with fencing, across processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from structlog.testing import capture_logs

from connector import replica
from connector.cli import main
from connector.config import StoreConfig
from connector.csvrules.rules import FileRules
from connector.errors import ClaimLost, ConfigError, FatalError, PlaceBusy, StoreError
from connector.ingest import Ingestor
from connector.store import open_existing, open_store
from connector.store.feed import FEED_NUMBERING
from connector.store.ledger import Arrival
from connector.store.port import TABLES, Store
from connector.store.postgres import PostgresStore
from connector.store.postgres.db import cause
from connector.store.postgres.schema import MIGRATIONS
from connector.store.sqlite import SQLiteStore
from connector.testing.postgres import EmbeddedPostgres
from tests.helpers import write_config
from tests.store_contract import fed

# Slow (pyproject's `slow` marker): a PostgreSQL server, restarted and raced by subprocesses.
pytestmark = pytest.mark.slow

EVENTS = FileRules(kind="events")
CONTACTS = FileRules(kind="contacts")
T0 = 1_764_000_000.0
ARRIVAL = Arrival("s", "/in/a.csv", "ab" * 32, 1, "events")


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresStore]:
    with PostgresStore(postgres_url) as opened:
        yield opened


def _admin(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def _python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _dump(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Every table as `connector dump` prints it, its JSON read back as values."""
    return {t: [orjson.loads(orjson.dumps(r)) for r in store.records(t)] for t in TABLES}


# -- Opening -------------------------------------------------------------------------------


def test_four_processes_opening_a_new_database_create_it_once(postgres_url: str) -> None:
    """Processes starting together against an empty database migrate it once (the others
    wait, then find nothing to do); opening it again changes nothing."""
    opening = "import sys; from connector.store.postgres import PostgresStore\n" + (
        "PostgresStore(sys.argv[1]).close()"
    )
    children = [_python(opening, postgres_url) for _ in range(4)]
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    with PostgresStore(postgres_url) as store:
        assert store.query("SELECT version FROM schema_version") == [(len(MIGRATIONS),)]


def test_a_schema_not_this_connectors_is_refused(postgres_url: str) -> None:
    """A newer schema by every command; an older one by `check` only, which does not
    upgrade it (any other command would)."""
    config = StoreConfig.model_validate({"url": postgres_url})
    open_store(config).close()
    _admin(postgres_url, "UPDATE schema_version SET version = 99")
    newer = "the store's schema v99 is newer than this connector's"
    for opening in (open_store, open_existing):
        with pytest.raises(FatalError, match=newer):
            opening(config)
    _admin(postgres_url, "UPDATE schema_version SET version = 0")
    older = rf"schema v0 is older than this connector's \(v{len(MIGRATIONS)}\)"
    with pytest.raises(FatalError, match=older):
        open_existing(config)


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))
def test_a_store_of_every_earlier_version_is_upgraded_with_its_rows(
    postgres_url: str, version: int
) -> None:
    """A store made by an earlier release (its schema, a file and its events in it) is
    brought up to date when opened, its rows kept."""
    _admin(postgres_url, "CREATE TABLE schema_version(version integer NOT NULL)")
    for script in MIGRATIONS[:version]:
        _admin(postgres_url, script)
    _admin(postgres_url, f"INSERT INTO schema_version VALUES ({version})")
    tenant, default = ("tenant, ", "'default', ") if version >= 3 else ("", "")  # (from v3)
    _admin(
        postgres_url,
        f"INSERT INTO files({tenant}source, path, sha256, size, kind, status, rows, started_at,"
        f" processed_at) VALUES ({default}'s', 'a.csv', 'ab', 9, 'events', 'ingested', 1, 't',"
        " 't')",
    )
    _admin(
        postgres_url,
        "INSERT INTO events(file_id, line, identifier, name, timestamp, data)"
        " SELECT id, 2, 'u1', 'buy', 7, '{}' FROM files",
    )
    if version >= 4:  # (what that connector did as files became final)
        _admin(postgres_url, FEED_NUMBERING)
        _admin(postgres_url, "UPDATE feed_clock SET seq = (SELECT max(feed_seq) FROM files)")

    with open_store(StoreConfig.model_validate({"url": postgres_url})) as store:
        assert store.query("SELECT version FROM schema_version") == [(len(MIGRATIONS),)]
        [file] = store.records("files")
        assert (file["path"], file["status"], file["rows"]) == ("a.csv", "ingested", 1)
        assert [e["identifier"] for e in store.records("events")] == ["u1"]
        assert [(e["identifier"], e["cursor"]) for e in fed(store, "events")] == [("u1", "1:1")]


def test_a_read_only_open_makes_nothing_and_writes_nothing(postgres_url: str) -> None:
    """`connector check` opens the store as it is: a database without the schema is no
    store yet (nothing is created); an existing one is read in read-only transactions."""
    config = StoreConfig.model_validate({"url": postgres_url})
    assert open_existing(config) is None
    assert _admin(postgres_url, "SELECT to_regclass('files')") == [(None,)]
    open_store(config).close()
    reader = open_existing(config)
    assert reader is not None
    with reader:
        assert reader.ledger.known("s") == {}
        with pytest.raises(StoreError, match="read-only transaction"), reader.transaction():
            reader.ledger.record(ARRIVAL, "duplicate", T0)


# -- Faults --------------------------------------------------------------------------------


def test_a_missing_database_is_a_config_error_in_one_line(
    postgres_server: EmbeddedPostgres, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At start, a store that refuses us is the config's mistake: exit 78, like a bad key
    (systemd does not restart into it)."""
    url = postgres_server.url_for("no_such_database")
    with pytest.raises(ConfigError) as caught:
        open_store(StoreConfig.model_validate({"url": url}))
    assert caught.value.problems == [f'store {url}: database "no_such_database" does not exist']
    config = write_config(tmp_path, store={"url": url})
    assert main(["--config", str(config), "dump", "files"]) == 78
    err = capsys.readouterr().err
    assert err == f'connector: config: store {url}: database "no_such_database" does not exist\n'


def test_a_refused_connection_is_one_line() -> None:
    port = _closed_port()
    url = f"postgresql://connector@127.0.0.1:{port}/connector"
    with pytest.raises(StoreError) as caught:
        open_store(StoreConfig.model_validate({"url": url}))
    assert str(caught.value) == f"store {url}: Connection refused"


def test_the_urls_connect_timeout_and_application_name_are_honoured(postgres_url: str) -> None:
    """Ours are defaults: an operator's ``?connect_timeout=30`` is not overridden."""
    with PostgresStore(postgres_url) as store:
        assert store.db.conn.info.get_parameters()["connect_timeout"] == "10"
        assert store.query("SHOW application_name")[0][0].startswith("connector ")
    sep = "&" if "?" in postgres_url else "?"
    url = f"{postgres_url}{sep}connect_timeout=30&application_name=ours"
    with PostgresStore(url) as store:
        assert store.db.conn.info.get_parameters()["connect_timeout"] == "30"
        assert store.query("SHOW application_name") == [("ours",)]


@pytest.mark.parametrize(
    "text",
    [
        "connection is bad: server closed the connection",
        "connection failed: connection is bad: server closed the connection\nmore",
    ],
)
def test_a_bad_connection_is_said_without_libpqs_prefix(text: str) -> None:
    assert cause(psycopg.OperationalError(text)) == "server closed the connection"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # (closed again: nothing listens there)


@pytest.fixture
def password_role(postgres_server: EmbeddedPostgres) -> Iterator[str]:
    """A role that must give its password (scram) over TCP: the server trusts everyone
    else. Its line in pg_hba.conf goes first, and is taken out afterwards."""
    role = f"pw_{os.getpid()}"
    hba = postgres_server.data_dir / "pg_hba.conf"
    before = hba.read_text()
    _admin(postgres_server.url, f"CREATE ROLE {role} LOGIN PASSWORD 'right-horse-battery'")
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{before}")
    _admin(postgres_server.url, "SELECT pg_reload_conf()")
    try:
        yield role
    finally:
        hba.write_text(before)
        _admin(postgres_server.url, "SELECT pg_reload_conf()")
        _admin(postgres_server.url, f"DROP ROLE {role}")


def test_a_wrong_password_is_one_line_without_it(
    postgres_server: EmbeddedPostgres, password_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql://{password_role}@127.0.0.1:{postgres_server.port}/postgres"
    config = StoreConfig.model_validate({"url": url, "password_env": "STORE_PASSWORD"})
    monkeypatch.setenv("STORE_PASSWORD", "wrong-horse-battery")
    with pytest.raises(ConfigError) as caught:
        open_existing(config)
    message = f'store {url}: password authentication failed for user "{password_role}"'
    assert caught.value.problems == [message]
    assert "wrong-horse" not in repr(caught.value) + repr(caught.value.__context__)
    monkeypatch.setenv("STORE_PASSWORD", "right-horse-battery")
    assert open_existing(config) is None  # (in, and nothing made: no schema yet)


def test_a_lost_connection_is_a_store_error_then_made_anew(store: PostgresStore) -> None:
    """The server ends our session mid-transaction (a restart, an administrator): that
    transaction fails as StoreError, nothing of it is kept, and the next one runs on a
    new connection."""
    backend = store.db.conn.info.backend_pid

    def ended_midway() -> None:
        with store.transaction():
            store.ledger.record(ARRIVAL, "duplicate", T0)
            _admin(store.name, "SELECT pg_terminate_backend(%s)", (backend,))
            store.ledger.known("s")

    with pytest.raises(StoreError, match="terminating connection"):
        ended_midway()
    assert store.ledger.known("s") == {}
    store.ledger.record(ARRIVAL, "duplicate", T0)
    assert list(store.ledger.known("s")) == ["/in/a.csv"]


def test_a_restarted_server_is_a_store_error_then_reconnected(tmp_path: Path) -> None:
    with EmbeddedPostgres() as server, PostgresStore(server.create_database()) as store:
        store.ledger.record(ARRIVAL, "duplicate", T0)
        server.restart()
        with pytest.raises(StoreError):
            store.ledger.known("s")
        assert list(store.ledger.known("s")) == ["/in/a.csv"]


# -- Rows ----------------------------------------------------------------------------------

# Text that COPY's format must escape (tab, line breaks, backslash), quotes, non-ASCII, a
# key used twice (in one batch and across batches), a rejected row.
EVENTS_CSV = (
    "identifier,name,timestamp,idempotencyKey,data.note,amount\n"
    'u1,buy,1700000000,K1,"tab\there",1.5\n'
    '"u\\2",view,,K2,"line\nbreak \\ and ""q""",007\n'
    "u1,buy,2023-10-02T13:08:41Z,K1,again,3\n"
    "u3,,5,K3,no name,1\n"
    'ü-ñ,click,5,,"{""a"":1}",true\n'
    "u4,buy,6,K2,third,\n"
    'u5,"b\r\nuy",7,K5,crlf,-0.25\n'
)
CONTACTS_CSV = (
    "identifier,email,plan,score\n"
    "u1,a@example.com,free,1\n"
    '"u\t6",,gold,\n'
    "u1,,pro,2.5\n"
    "u7,,,\n"
    "u7,bad-email,x,1\n"
    "ü-ñ,n@example.com,,\n"
)


def test_ingests_dump_as_sqlite_does(tmp_path: Path, store: PostgresStore) -> None:
    """The same files into both stores, batch by batch: the same dumps (contacts'
    attributes compared as JSON: PostgreSQL writes jsonb in its own layout)."""
    events, contacts = tmp_path / "events.csv", tmp_path / "contacts.csv"
    events.write_text(EVENTS_CSV, encoding="utf-8")
    contacts.write_text(CONTACTS_CSV, encoding="utf-8")
    with SQLiteStore(tmp_path / "c.db") as sqlite:
        dumps = []
        for target in (sqlite, store):
            ingestor = Ingestor(target, clock=lambda: T0, batch_records=2)
            ingestor.ingest(events, EVENTS, source="s", name="events.csv")
            ingestor.ingest(contacts, CONTACTS, source="s", name="contacts.csv")
            dumps.append(_dump(target))
    assert dumps[1] == dumps[0]
    assert len(dumps[0]["events"]) == 4  # (a reject; a key's second use, twice)
    identifiers = [c["identifier"] for c in dumps[1]["contacts"]]
    assert identifiers == sorted(identifiers, key=lambda i: i.encode())  # (as SQLite sorts)


# -- Claims --------------------------------------------------------------------------------


def _expire(store: PostgresStore) -> None:
    """Every claim's lease runs out now (as if its holder had been silent that long)."""
    _admin(store.name, "UPDATE claims SET expires_at = now() - interval '1 second'")


def test_a_claim_outlives_its_lease_while_its_holder_lives(postgres_url: str) -> None:
    with (
        PostgresStore(postgres_url, lease=0.6) as one,
        PostgresStore(postgres_url) as two,
        one.claim_place("s", "/in/a.csv"),
    ):
        time.sleep(1.5)  # (renewed every 0.2 s)
        shown = two.query("SELECT what, owner FROM claims")  # (for the operator)
        assert shown == [("place s:/in/a.csv", replica.identity())]
        busy = pytest.raises(PlaceBusy, match="in hand in")
        with busy, two.claim_place("s", "/in/a.csv", wait=False):
            pytest.fail("claimed twice")


def test_a_write_after_a_takeover_is_refused_and_stores_nothing(postgres_url: str) -> None:
    """A run whose lease ran out and was taken over comes back: its next transaction is
    refused (ClaimLost, logged), however often it tries, while the new holder writes."""
    with PostgresStore(postgres_url) as old, PostgresStore(postgres_url) as new:
        with capture_logs() as logs, old.claim_place("s", "/in/a.csv"):
            _expire(old)
            with new.claim_place("s", "/in/a.csv", wait=False):
                for _ in range(2):
                    with pytest.raises(ClaimLost, match=r"place s:/in/a\.csv was lost"):
                        old.ledger.record(ARRIVAL, "duplicate", T0)
                new.ledger.record(ARRIVAL, "rejected", T0, "taken over")
        assert [e["event"] for e in logs if e["event"].startswith("claim_")] == [
            "claim_taken_over",
            "claim_lost",
        ]
        assert [f["status"] for f in new.records("files")] == ["rejected"]
        with old.claim_place("s", "/in/a.csv", wait=False):  # (let go by the new holder)
            pass


def test_confirm_refuses_a_claim_taken_over_before_the_remote_action(postgres_url: str) -> None:
    """The remote action is no store write, so no transaction fences it: a run woken after
    its place was taken over learns it from ``confirm`` (ClaimLost, logged once)."""
    with PostgresStore(postgres_url) as old, PostgresStore(postgres_url) as new:
        with capture_logs() as logs, old.claim_place("s", "/in/a.csv"):
            _expire(old)  # (frozen past its lease: the heartbeat has not renewed it)
            with new.claim_place("s", "/in/a.csv", wait=False):
                for _ in range(2):
                    with pytest.raises(ClaimLost, match=r"place s:/in/a\.csv was lost"):
                        old.confirm()
                new.confirm()  # (the new holder's is live)
        assert [e["event"] for e in logs if e["event"] == "claim_lost"] == ["claim_lost"]


def test_confirm_renews_a_live_claim(postgres_url: str) -> None:
    with PostgresStore(postgres_url) as store, store.claim_place("s", "/in/a.csv"):
        (before,) = store.query("SELECT expires_at FROM claims")[0]
        time.sleep(0.05)
        store.confirm()
        (after,) = store.query("SELECT expires_at FROM claims")[0]
        assert after > before
    store.confirm()  # (none held: nothing to renew)


def test_a_claim_lost_without_a_write_is_told_when_let_go(postgres_url: str) -> None:
    """A run frozen past its lease, then stopped before it wrote again, still says what
    it lost."""
    with PostgresStore(postgres_url) as old, PostgresStore(postgres_url) as new:
        with capture_logs() as logs:
            with old.claim_place("s", "/in/a.csv"):
                _expire(old)
                with new.claim_place("s", "/in/a.csv", wait=False):
                    pass
            with old.claim_place("s", "/in/b.csv"):  # (one let go in time: nothing to say)
                pass
        lost = [e for e in logs if e["event"] == "claim_lost"]
        assert [e["claim"] for e in lost] == ["place s:/in/a.csv"]


def test_a_takeover_waits_for_the_holders_transaction(postgres_url: str) -> None:
    """A transaction begun while the claim held goes on to its commit, even if the lease
    runs out meanwhile: no other run takes the claim over before it ends."""
    with (
        PostgresStore(postgres_url) as old,
        PostgresStore(postgres_url) as new,
        old.claim_place("s", "/in/a.csv"),
    ):
        with old.transaction():
            _expire(old)
            with pytest.raises(PlaceBusy), new.claim_place("s", "/in/a.csv", wait=False):
                pytest.fail("taken over mid-transaction")
            old.ledger.record(ARRIVAL, "duplicate", T0)
        with new.claim_place("s", "/in/a.csv", wait=False):
            assert [f["status"] for f in new.records("files")] == ["duplicate"]


# A run that claims a place, begins a transaction and waits: frozen there (SIGSTOP) past its
# lease, then woken, it tries to write.
FROZEN = """
    import sys
    from connector.errors import ClaimLost, StoreError
    from connector.store.ledger import Arrival
    from connector.store.postgres import PostgresStore

    arrival = Arrival("s", "/in/a.csv", "ab" * 32, 1, "events")
    with PostgresStore(sys.argv[1], lease=1.0) as store, store.claim_place("s", "/in/a.csv"):
        try:
            with store.transaction():
                print("held", flush=True)
                sys.stdin.readline()
                store.ledger.record(arrival, "duplicate", 0.0)
        except StoreError as exc:
            # (one write: the lease keeper's log line may come from another thread)
            print(f"store error: {exc}", flush=True)
        try:
            store.ledger.record(arrival, "duplicate", 0.0)
        except ClaimLost:
            print("claim lost", flush=True)
"""


def test_a_frozen_run_loses_its_claim_and_writes_nothing(postgres_url: str) -> None:
    """A run frozen past its lease, mid-transaction, holds nothing for ever: the server
    ends its idle session, another run takes the place over; woken, it stores nothing."""
    PostgresStore(postgres_url).close()  # (the schema, before the child's lease runs)
    child = _python(FROZEN, postgres_url)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "held\n"
        os.kill(child.pid, signal.SIGSTOP)
        with PostgresStore(postgres_url) as other:
            started = time.monotonic()
            with other.claim_place("s", "/in/a.csv"):
                waited = time.monotonic() - started
                os.kill(child.pid, signal.SIGCONT)
                out, err = child.communicate("go\n", timeout=30)
            assert list(other.records("files")) == []
    finally:
        if child.poll() is None:  # (a failed assertion: it may still be stopped)
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
    assert 0.5 < waited < 10
    said = [line for line in out.splitlines() if line.startswith(("store error:", "claim"))]
    assert said[0].startswith("store error:") and "idle-in-transaction" in said[0]
    assert said[1:] == ["claim lost"]
    assert "claim_lost" in out + err
