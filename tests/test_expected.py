"""`expect_every`: a source that stops sending files is said to be overdue, by `once`,
`check` and the daemon (`file_overdue` once, `connector_source_overdue` at every poll)."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from connector.cli import EXIT_OK, main
from connector.config import load_config
from connector.pipeline import Poller
from connector.service import Service
from connector.store import open_store
from tests.helpers import drop_config

EVENTS = [{"kind": "events", "pattern": "*.csv", "event_name": "buy"}]


def _backdated(config: Path, days: float) -> None:
    """The files seen so far first arrived ``days`` ago."""
    with open_store(load_config(config).store) as store:
        store.query(  # type: ignore[attr-defined]
            "UPDATE files SET started_at = ?", (f"2000-01-0{1 + int(days)}T00:00:00Z",)
        )


def test_once_and_check_say_a_source_is_overdue_until_a_file_comes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = drop_config(tmp_path, files=EVENTS, min_age="0s", after="delete", expect_every="24h")
    (tmp_path / "inbox" / "a.csv").write_text("identifier\nu1\n")
    assert main(["--config", str(config), "once"]) == EXIT_OK
    assert "OVERDUE" not in capsys.readouterr().out
    _backdated(config, 1)

    assert main(["--config", str(config), "once"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("drop: nothing new; OVERDUE: no new file since 2000-01-02T00:00:00Z:")
    assert out.rstrip().endswith("h (expect_every = 24h)")
    assert main(["--config", str(config), "check"]) == EXIT_OK
    assert "  OVERDUE: no new file since 2000-01-02T00:00:00Z" in capsys.readouterr().out

    (tmp_path / "inbox" / "b.csv").write_text("identifier\nu2\n")
    assert main(["--config", str(config), "once"]) == EXIT_OK
    assert capsys.readouterr().out == "drop: 1 ingested\n"


def test_the_daemon_says_it_once_and_keeps_the_metric(tmp_path: Path) -> None:
    config_path = drop_config(tmp_path, files=EVENTS, min_age="0s", expect_every="1h")
    (tmp_path / "inbox" / "a.csv").write_text("identifier\nu1\n")
    config = load_config(config_path)
    service = Service(config)
    with open_store(config.store) as store:
        poller = Poller(config, config.sources[0], store)
        poller.poll()
        service._expecting(poller)
        assert _overdue(service) == 0
        store.query("UPDATE files SET started_at = '2000-01-01T00:00:00Z'")  # type: ignore[attr-defined]
        with capture_logs() as logs:
            service._expecting(poller)
            service._expecting(poller)
        assert [e["event"] for e in logs] == ["file_overdue"]
        assert "no new file since 2000-01-01T00:00:00Z" in logs[0]["why"]
        assert _overdue(service) == 1


def _overdue(service: Service) -> float | None:
    return service.metrics.registry.get_sample_value("connector_source_overdue", {"source": "drop"})
