"""The throwaway PostgreSQL server (`connector.testing.postgres`) and its fixtures,
checked against the real server programs."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from connector.testing.postgres import EmbeddedPostgres, PostgresUnavailable

# Slow (pyproject's `slow` marker): starts PostgreSQL servers.
pytestmark = pytest.mark.slow


def _new_server() -> EmbeddedPostgres:
    """A server of the test's own, for what would disturb the shared one."""
    try:
        return EmbeddedPostgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def own_server() -> Iterator[EmbeddedPostgres]:
    """Shared by the tests that stop or kill PostgreSQL (each leaves it running),
    so that the module pays for one more cluster, not one per test."""
    with _new_server() as server:
        yield server


def _accepts_tcp(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def _gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its parent (Linux's /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_server_answers_on_loopback_and_on_its_socket(
    postgres_server: EmbeddedPostgres, postgres_url: str
) -> None:
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)
    dbname = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(
        host=str(postgres_server.socket_dir),
        port=postgres_server.port,
        user=postgres_server.user,
        dbname=dbname,
    ) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (dbname,)
    assert postgres_server.url == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"


def test_created_databases_are_isolated(postgres_server: EmbeddedPostgres) -> None:
    first = postgres_server.create_database()
    second = postgres_server.create_database("second_db")
    try:
        assert first != second
        assert second == postgres_server.url_for("second_db")
        with psycopg.connect(first) as conn:
            conn.execute("CREATE TABLE only_here (n int)")
        with psycopg.connect(second) as conn:
            tables = conn.execute("SELECT to_regclass('only_here')").fetchone()
            assert tables == (None,)
    finally:
        postgres_server.drop_database(first.rsplit("/", 1)[1])
        postgres_server.drop_database("second_db")
    with psycopg.connect(postgres_server.url) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname = 'second_db'")
        assert left.fetchone() is None


def test_drop_database_disconnects_its_clients(postgres_server: EmbeddedPostgres) -> None:
    url = postgres_server.create_database("dropped_under_a_client")
    with psycopg.connect(url, autocommit=True) as client:
        postgres_server.drop_database("dropped_under_a_client")
        with pytest.raises(psycopg.OperationalError):
            client.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url).close()


def test_restart_keeps_data_and_port(own_server: EmbeddedPostgres) -> None:
    url = own_server.create_database()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE kept AS SELECT 42 AS n")
    port, pid = own_server.port, own_server.pid
    own_server.restart()
    assert own_server.port == port
    assert own_server.pid not in (None, pid)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchone() == (42,)


def test_stop_then_start_again(own_server: EmbeddedPostgres) -> None:
    own_server.stop()
    assert not own_server.running
    assert not _accepts_tcp(own_server.host, own_server.port)
    own_server.stop()  # a no-op when stopped
    own_server.start()
    with psycopg.connect(own_server.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_kill_then_start_recovers(own_server: EmbeddedPostgres) -> None:
    url = own_server.create_database()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE committed AS SELECT 7 AS n")
    client = psycopg.connect(url, autocommit=True)
    try:
        own_server.kill()
        assert not own_server.running
        with pytest.raises(psycopg.OperationalError):
            client.execute("SELECT 1")
    finally:
        client.close()
    assert not _accepts_tcp(own_server.host, own_server.port)
    own_server.start()  # crash recovery, on the same port
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT n FROM committed").fetchone() == (7,)
    assert "database system was interrupted" in own_server.log_file.read_text()


def test_exit_stops_the_server_and_removes_its_folder() -> None:
    with _new_server() as server:
        host, port, pid = server.host, server.port, server.pid
        workdir = server.workdir
        assert pid is not None
        assert _accepts_tcp(host, port)
        assert (server.data_dir / "PG_VERSION").is_file()
    assert not _accepts_tcp(host, port)
    assert not workdir.exists()
    assert _gone(pid)
    server.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        server.start()
