"""The crash harness over a network source: the daemon (`connector run`) against the
embedded SFTP and FTPS servers, SIGKILLed at each pipeline step, then started again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.parsing import PARALLEL_MIN_BYTES
from connector.testing import EmbeddedFTPServer, EmbeddedSFTPServer
from tests.drop import crash_then_rerun
from tests.golden import toml_value

STEPS = ["after_list", "mid_download", "after_download", "after_commit:2", "after_finish",
         "after_remote_action"]  # fmt: skip
ROWS = 3000


@pytest.fixture(params=["sftp", "ftps"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, object]]:
    if request.param == "sftp":
        with EmbeddedSFTPServer(tmp_path / "server") as sftp:
            yield "sftp", sftp
    else:
        with EmbeddedFTPServer(tmp_path / "server", tls=True) as ftps:
            yield "ftps", ftps


def _config(tmp_path: Path, kind: str, server: EmbeddedSFTPServer | EmbeddedFTPServer) -> Path:
    secret = tmp_path / "password"
    secret.write_text(server.password)
    secret.chmod(0o600)
    trust = (
        {"known_hosts": str(server.write_known_hosts(tmp_path / "known_hosts"))}
        if isinstance(server, EmbeddedSFTPServer)
        else {"ca_file": str(server.ca_file)}
    )
    source = {"name": kind, "url": server.url + "outbox", "password_file": str(secret),
              "min_age": "0s", "after": "move:processed", **trust}  # fmt: skip
    lines = [
        "[store]", f"path = {toml_value(str(tmp_path / 'store' / 'c.db'))}",
        "[paths]", f"staging = {toml_value(str(tmp_path / 'staging'))}",
        f"archive = {toml_value(str(tmp_path / 'archive'))}",
        "[ingest]", "batch_records = 500", 'commit_interval = "0s"',
        "[[sources]]", *(f"{k} = {toml_value(v)}" for k, v in source.items()),
        "[[sources.files]]", 'kind = "events"', 'pattern = "*.csv"', 'event_name = "e"',
    ]  # fmt: skip
    path = tmp_path / "connector.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("step", STEPS)
def test_crash_then_rerun_over_the_network(
    tmp_path: Path, server: tuple[str, EmbeddedSFTPServer | EmbeddedFTPServer], step: str
) -> None:
    """Whatever step dies, the re-run leaves each row stored once and the file moved."""
    kind, remote = server
    outbox = remote.root / "outbox"
    outbox.mkdir()
    (outbox / "events.csv").write_text(
        "identifier,n\n" + "".join(f"u{i},{i}\n" for i in range(ROWS))
    )
    config = _config(tmp_path, kind, remote)
    assert crash_then_rerun(config, step) == list(range(2, ROWS + 2))
    assert sorted(p.name for p in outbox.iterdir()) == ["processed"]
    assert [p.name for p in (outbox / "processed").iterdir()] == ["events.csv"]
    assert not list((tmp_path / "staging").rglob("*.part"))


@pytest.mark.parametrize(
    "step", ["mid_download:3", "after_start", "after_commit:3", "after_decide", "after_deliver:40"]
)
def test_crash_while_a_large_file_is_parsed_as_it_downloads(tmp_path: Path, step: str) -> None:
    """Over 8 MiB, a parser process follows the download and its rows are stored as they
    arrive, under a provisional entry until the checksum decides: killing the daemon at any
    of those steps leaves no process behind (the run would wait for its output) and the
    restart stores each row once."""
    rows = 100_000
    with EmbeddedSFTPServer(tmp_path / "server") as sftp:
        outbox = sftp.root / "outbox"
        outbox.mkdir()
        (outbox / "events.csv").write_text(
            "identifier,n\n" + "".join(f"u{i},{i:080d}\n" for i in range(rows))
        )
        assert (outbox / "events.csv").stat().st_size > PARALLEL_MIN_BYTES
        config = _config(tmp_path, "sftp", sftp)
        assert crash_then_rerun(config, step) == list(range(2, rows + 2))
    assert not list((tmp_path / "staging").rglob("*.part"))
