"""The crash harness over a network source: the daemon (`connector run`) against the
embedded SFTP and FTPS servers, SIGKILLed at each pipeline step, then started again. On
SQLite, every step over both servers; on PostgreSQL (``store_table``), to keep the run
short, the daemon's own steps over SFTP (the store sees the same from either server), and a
large file killed while its rows are stored as it arrives."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.parsing import PARALLEL_MIN_BYTES
from connector.testing import EmbeddedFTPServer, EmbeddedSFTPServer
from tests.helpers import crash_then_rerun, write_config

# Slow (pyproject's `slow` marker): `connector run` subprocesses against embedded SFTP/FTPS servers.
pytestmark = pytest.mark.slow

STEPS = [
    "after_list",
    "mid_download",
    "after_download",
    "after_commit:2",
    "after_finish",
    "after_remote_action",
]
# On PostgreSQL, the daemon's own steps (test_crash.py kills an import at each of its
# steps): a file staged that the ledger has not seen, and one decided and moved whose move
# the ledger has not recorded yet.
POSTGRES_STEPS = ["after_download", "after_remote_action"]
ROWS = 3000
LARGE_STEPS = [
    "mid_download:3",
    "after_start",
    "after_commit:3",
    "after_decide",
    "mid_decide",
    "after_deliver:40",
]


@pytest.fixture(params=["sftp", "ftps"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    if request.param == "sftp":
        with EmbeddedSFTPServer(tmp_path / "server") as sftp:
            yield "sftp", sftp
    else:
        with EmbeddedFTPServer(tmp_path / "server", tls=True) as ftps:
            yield "ftps", ftps


def _config(
    tmp_path: Path,
    kind: str,
    server: EmbeddedSFTPServer | EmbeddedFTPServer,
    store_table: dict[str, str],
) -> Path:
    secret = tmp_path / "password"
    secret.write_text(server.password)
    secret.chmod(0o600)
    trust = (
        {"known_hosts": str(server.write_known_hosts(tmp_path / "known_hosts"))}
        if isinstance(server, EmbeddedSFTPServer)
        else {"ca_file": str(server.ca_file)}
    )
    source = {
        "name": kind,
        "url": server.url + "outbox",
        "password_file": str(secret),
        "min_age": "0s",
        "after": "move:processed",
        **trust,
        "files": [{"kind": "events", "pattern": "*.csv", "event_name": "e"}],
    }
    return write_config(
        tmp_path, source, store=store_table, ingest={"batch_records": 500, "commit_interval": "0s"}
    )


@pytest.mark.parametrize(
    ("server", "store_table", "step"),
    [
        *((kind, "sqlite", step) for kind in ("sftp", "ftps") for step in STEPS),
        *(("sftp", "postgresql", step) for step in POSTGRES_STEPS),
    ],
    indirect=["server", "store_table"],
)
def test_crash_then_rerun_over_the_network(
    tmp_path: Path,
    server: tuple[str, EmbeddedSFTPServer | EmbeddedFTPServer],
    store_table: dict[str, str],
    step: str,
) -> None:
    """Whatever step dies, the re-run leaves each row stored once and the file moved."""
    kind, remote = server
    outbox = remote.root / "outbox"
    outbox.mkdir()
    (outbox / "events.csv").write_text(
        "identifier,n\n" + "".join(f"u{i},{i}\n" for i in range(ROWS))
    )
    config = _config(tmp_path, kind, remote, store_table)
    lines = crash_then_rerun(config, step, lease=store_table.get("lease"))
    assert lines == list(range(2, ROWS + 2))
    assert sorted(p.name for p in outbox.iterdir()) == ["processed"]
    assert [p.name for p in (outbox / "processed").iterdir()] == ["events.csv"]
    assert not list((tmp_path / "staging").rglob("*.part"))


@pytest.mark.parametrize(
    ("store_table", "step"),
    [
        *(("sqlite", step) for step in LARGE_STEPS),
        ("postgresql", "after_deliver:40"),  # rows stored provisionally, not decided
    ],
    indirect=["store_table"],
)
def test_crash_while_a_large_file_is_parsed_as_it_downloads(
    tmp_path: Path, store_table: dict[str, str], step: str
) -> None:
    """Over 8 MiB, a parser process follows the download and its rows are stored as they
    arrive, under a provisional entry until the checksum decides: killing the daemon at any
    of those steps leaves no process behind (the run would wait for its output) and the
    restart stores each row once."""
    rows = 100_000
    with EmbeddedSFTPServer(tmp_path / "server") as sftp:
        outbox = sftp.root / "outbox"
        outbox.mkdir()
        (outbox / "events.csv").write_text(  # (keys: claimed once the checksum is known)
            "identifier,n,idempotencyKey\n" + "".join(f"u{i},{i:080d},k{i}\n" for i in range(rows))
        )
        assert (outbox / "events.csv").stat().st_size > PARALLEL_MIN_BYTES
        config = _config(tmp_path, "sftp", sftp, store_table)
        lines = crash_then_rerun(config, step, lease=store_table.get("lease"))
        assert lines == list(range(2, rows + 2))
    if "path" in store_table:  # and each row's key claimed, once
        with sqlite3.connect(store_table["path"]) as db:
            assert db.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (rows,)
    assert not list((tmp_path / "staging").rglob("*.part"))
