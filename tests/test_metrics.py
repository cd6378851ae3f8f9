"""Tests for connector/metrics.py: the counters, and /metrics and /healthz over real HTTP."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from connector.errors import ConfigError
from connector.metrics import Metrics, MetricsServer


def get(server: MetricsServer, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of one GET, the connection closed after."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def metrics() -> Metrics:
    metrics = Metrics(max_missed_polls=2, clock=lambda: 1_700_000_000.0)
    metrics.register_sources(["alpha", "beta"])
    return metrics


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    with metrics.serve("127.0.0.1:0") as server:
        yield server


LAST_SUCCESS = "connector_last_successful_poll_timestamp_seconds"


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_registered_sources_start_at_zero(metrics: Metrics) -> None:
    """Every registered source has its gauges and byte counter at 0 before any poll."""
    for source in ("alpha", "beta"):
        assert value(metrics, "connector_consecutive_poll_failures", source=source) == 0
        assert value(metrics, LAST_SUCCESS, source=source) == 0
        assert value(metrics, "connector_downloaded_bytes_total", source=source) == 0
        assert value(metrics, "connector_poll_duration_seconds_count", source=source) == 0


def test_file_finished_moves_file_and_row_counters(metrics: Metrics) -> None:
    """file_finished counts the file by status, its rows by kind and outcome; the bytes are
    counted as they arrive."""
    metrics.file_finished("alpha", "contacts", "ingested", rows=10, rejected=2, duplicates=1)
    metrics.file_finished("alpha", "contacts", "duplicate", rows=0, rejected=0, duplicates=0)
    metrics.received("alpha", 500)
    metrics.received("alpha", 70)
    assert value(metrics, "connector_files_total", source="alpha", status="ingested") == 1
    assert value(metrics, "connector_files_total", source="alpha", status="duplicate") == 1
    assert value(metrics, "connector_rows_total", kind="contacts", outcome="stored") == 10
    assert value(metrics, "connector_rows_total", kind="contacts", outcome="rejected") == 2
    assert value(metrics, "connector_rows_total", kind="contacts", outcome="duplicate") == 1
    assert value(metrics, "connector_downloaded_bytes_total", source="alpha") == 570


def test_poll_finished_tracks_duration_failures_and_last_success(metrics: Metrics) -> None:
    """Failures count up in a row, a success resets them and stamps the clock's time."""
    assert metrics.poll_finished("alpha", 0.2, ok=False) == 1
    assert metrics.poll_finished("alpha", 0.3, ok=False) == 2
    assert value(metrics, "connector_consecutive_poll_failures", source="alpha") == 2
    assert value(metrics, LAST_SUCCESS, source="alpha") == 0
    assert metrics.poll_finished("alpha", 40.0, ok=True) == 0
    assert value(metrics, "connector_consecutive_poll_failures", source="alpha") == 0
    assert value(metrics, LAST_SUCCESS, source="alpha") == 1_700_000_000.0
    assert value(metrics, "connector_poll_duration_seconds_count", source="alpha") == 3
    assert value(metrics, "connector_poll_duration_seconds_bucket", source="alpha", le="0.25") == 1
    assert value(metrics, "connector_poll_duration_seconds_bucket", source="alpha", le="60.0") == 3


def test_instances_do_not_share_a_registry() -> None:
    """Two Metrics side by side neither clash on names nor see each other's counts."""
    first, second = Metrics(), Metrics()
    first.file_finished("a", "events", "ingested", rows=1, rejected=0, duplicates=0)
    assert value(first, "connector_files_total", source="a", status="ingested") == 1
    assert value(second, "connector_files_total", source="a", status="ingested") is None


def test_metrics_endpoint_serves_labelled_series(metrics: Metrics, server: MetricsServer) -> None:
    """GET /metrics on a real socket returns the text exposition with the labelled series."""
    metrics.file_finished("alpha", "events", "ingested", rows=3, rejected=0, duplicates=0)
    metrics.received("alpha", 9)
    metrics.poll_finished("beta", 1.5, ok=False)
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'connector_files_total{source="alpha",status="ingested"} 1.0' in body
    assert 'connector_rows_total{kind="events",outcome="stored"} 3.0' in body
    assert 'connector_downloaded_bytes_total{source="alpha"} 9.0' in body
    assert 'connector_consecutive_poll_failures{source="beta"} 1.0' in body
    assert 'connector_poll_duration_seconds_bucket{le="2.5",source="beta"} 1.0' in body
    assert "# TYPE connector_last_successful_poll_timestamp_seconds gauge" in body


def test_healthz_is_503_until_the_scheduler_runs(metrics: Metrics, server: MetricsServer) -> None:
    """/healthz is 503 before the scheduler starts, 200 "ok" while it runs, 503 once stopped."""
    status, content_type, body = get(server, "/healthz")
    assert (status, body) == (503, "scheduler not running\n")
    assert content_type.startswith("text/plain")
    metrics.scheduler_running(True)
    assert get(server, "/healthz")[::2] == (200, "ok\n")
    metrics.scheduler_running(False)
    assert get(server, "/healthz")[0] == 503


def test_healthz_turns_503_past_max_missed_polls(metrics: Metrics, server: MetricsServer) -> None:
    """Up to max_missed_polls failures in a row stay healthy; one more is 503 naming the
    source; a success brings 200 back."""
    metrics.scheduler_running(True)
    for _ in range(2):
        metrics.poll_finished("beta", 0.1, ok=False)
    assert get(server, "/healthz")[0] == 200
    metrics.poll_finished("beta", 0.1, ok=False)
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert "beta: 3 failed polls in a row" in body and "alpha" not in body
    metrics.poll_finished("beta", 0.1, ok=True)
    assert get(server, "/healthz")[::2] == (200, "ok\n")


def test_unknown_path_is_404_and_access_log_goes_to_debug(
    server: MetricsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Other paths are 404; requests are logged at debug through structlog, not on stderr."""
    with capture_logs() as logs:
        assert get(server, "/nope")[0] == 404
    assert capsys.readouterr().err == ""
    assert any(e["event"] == "metrics_request_served" and e["log_level"] == "debug" for e in logs)


def test_server_shuts_down_cleanly(metrics: Metrics) -> None:
    """Leaving the block stops the thread and frees the port; close() again is harmless."""
    with metrics.serve("127.0.0.1:0") as server:
        assert get(server, "/healthz")[0] == 503
        thread = server._thread
    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    server.close()


def test_address_in_use_is_a_config_error(metrics: Metrics, server: MetricsServer) -> None:
    """A port that cannot be bound is reported as metrics.listen, at start-up."""
    with pytest.raises(ConfigError, match=r"metrics\.listen: cannot listen on 127\.0\.0\.1:"):
        metrics.serve(f"127.0.0.1:{server.port}")
