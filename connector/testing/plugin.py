"""pytest plugin: embedded FTP, FTPS, SFTP and PostgreSQL servers, and a fault proxy.

Enable it with `pytest_plugins = ["connector.testing.plugin"]` in a test
module or conftest, or through the `pytest11` entry point when connector is
installed. The file-server fixtures are function-scoped: each test gets
servers of its own with an empty root folder (under pytest's
tmp_path_factory, so a failing test's files can be inspected), shut down when
the test ends. PostgreSQL takes most of a second to set up, so one server
(`postgres_server`) serves the whole session, and each test gets a fresh
database on it (`postgres_url`), dropped when the test ends. Tests that need
PostgreSQL are skipped where its server programs are not installed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Protocol

import pytest

from connector.testing.ftp import EmbeddedFTPServer
from connector.testing.postgres import EmbeddedPostgres, PostgresUnavailable
from connector.testing.proxy import Fault, FaultProxy
from connector.testing.sftp import EmbeddedSFTPServer

__all__ = [
    "FaultProxyFactory",
    "fault_proxy",
    "ftp_server",
    "ftps_server",
    "postgres_server",
    "postgres_url",
    "sftp_server",
]


class _Address(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class FaultProxyFactory(Protocol):
    """`fault_proxy(target, fault)`: a started proxy in front of `target`.

    `target` is anything with `host` and `port` (a server from these
    fixtures, another proxy) or a `(host, port)` pair.
    """

    def __call__(
        self, target: _Address | tuple[str, int], fault: Fault | None = None
    ) -> FaultProxy: ...


@pytest.fixture
def ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedFTPServer]:
    """A plain FTP server on loopback, serving an empty folder."""
    with EmbeddedFTPServer(tmp_path_factory.mktemp("ftp-root")) as server:
        yield server


@pytest.fixture
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedFTPServer]:
    """An explicit-FTPS server (TLS required) on loopback; trust `ca_file`."""
    with EmbeddedFTPServer(tmp_path_factory.mktemp("ftps-root"), tls=True) as server:
        yield server


@pytest.fixture
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSFTPServer]:
    """An SFTP server on loopback, serving an empty folder."""
    with EmbeddedSFTPServer(tmp_path_factory.mktemp("sftp-root")) as server:
        yield server


@pytest.fixture
def fault_proxy() -> Iterator[FaultProxyFactory]:
    """A factory of started `FaultProxy`s, all closed when the test ends."""
    proxies: list[FaultProxy] = []

    def make(target: _Address | tuple[str, int], fault: Fault | None = None) -> FaultProxy:
        host, port = target if isinstance(target, tuple) else (target.host, target.port)
        proxy = FaultProxy(host, port, fault).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """One PostgreSQL server on loopback for the session; skips without PostgreSQL.

    Shared: a test that needs to stop, restart or kill PostgreSQL starts an
    `EmbeddedPostgres` of its own instead.
    """
    try:
        server = EmbeddedPostgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def postgres_url(
    postgres_server: EmbeddedPostgres, request: pytest.FixtureRequest
) -> Iterator[str]:
    """The libpq URL of an empty database of this test's own, dropped afterwards.

    Named after the test (in ASCII: PostgreSQL cuts names at 63 bytes), to tell whose
    database a leftover connection or a server log line belongs to.
    """
    test = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{test}_{secrets.token_hex(4)}"
    url = postgres_server.create_database(name)
    yield url
    # Terminates the connections the test left open, then drops the database.
    postgres_server.drop_database(name)
