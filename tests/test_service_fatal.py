"""What the daemon does with each kind of error met in a poll (connector/errors.py): a
FatalError stops it with exit status 1; a parse that dies fails its file only."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connector.config import load_config
from connector.errors import FatalError, ParseFailed
from connector.pipeline import Poller
from connector.service import Service
from connector.store import open_store
from tests.helpers import drop_config

EVENTS = [{"kind": "events", "pattern": "*.csv", "event_name": "buy"}]


def test_a_fatal_error_stops_the_daemon_with_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing can go on (the store is not this connector's): no backoff, a stop."""
    config = load_config(drop_config(tmp_path, files=EVENTS, min_age="0s"))
    service = Service(config)

    def fatal(self: Poller, stop: object = None) -> None:
        raise FatalError("the store's schema v99 is newer than this connector's")

    monkeypatch.setattr(Poller, "poll", fatal)
    with open_store(config.store) as store, capture_logs() as logs:
        assert service._poll(Poller(config, config.sources[0], store)) is None
    assert service.stopping.is_set() and service.status == 1
    assert [e["event"] for e in logs] == ["service_fatal"]


def test_a_parse_that_dies_fails_its_file_and_the_poll_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser process dying on one file (memory, a signal) fails that file, counted
    towards its max_tries; the next file of the poll is ingested."""
    config = load_config(drop_config(tmp_path, files=EVENTS, min_age="0s"))
    (tmp_path / "inbox" / "a.csv").write_text("identifier\nu1\n")
    (tmp_path / "inbox" / "b.csv").write_text("identifier\nu2\n")
    from connector.ingest import Ingestor

    ingest = Ingestor.ingest

    def dies_on_a(self: Ingestor, path: Path, *args: object, **kwargs: object) -> object:
        if kwargs.get("name", "").endswith("/a.csv"):  # type: ignore[union-attr]
            raise ParseFailed(f"the parser process of {path} died (exit -9)")
        return ingest(self, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Ingestor, "ingest", dies_on_a)
    with open_store(config.store) as store:
        summary = Poller(config, config.sources[0], store, sleep=lambda _: None).poll()
        tries = store.query("SELECT path, tries FROM tries")  # type: ignore[attr-defined]
    assert list(summary.failed) == [str(tmp_path / "inbox" / "a.csv")]
    assert [e.status for e in summary.taken.values()] == ["ingested"]
    assert tries == [(str(tmp_path / "inbox" / "a.csv"), 1)]
