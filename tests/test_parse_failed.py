"""A parse that dies (connector/errors.py, ParseFailed) fails its file only: the poll
goes on with the next."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ParseFailed
from connector.pipeline import Poller
from connector.store import open_store
from tests.helpers import drop_config

EVENTS = [{"kind": "events", "pattern": "*.csv", "event_name": "buy"}]


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
