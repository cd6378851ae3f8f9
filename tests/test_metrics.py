"""Tests for connector/metrics.py: the counters, and /metrics and /healthz over real HTTP."""

from __future__ import annotations

import http.client
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from structlog.testing import capture_logs

from connector.errors import ConfigError
from connector.metrics import MAX_CONNECTIONS, Metrics, MetricsServer
from connector.store.ledger import Entry
from tests.helpers import wait_until


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


def _entry(
    source: str,
    kind: str,
    status: str,
    rows: int = 0,
    rejected: int = 0,
    duplicates: int = 0,
    tenant: str = "acme",
) -> Entry:
    return Entry(
        1,
        source,
        "f.csv",
        "ab" * 32,
        9,
        kind,
        status,
        rows,
        rejected,
        duplicates,
        0,
        None,
        tenant=tenant,
    )


def test_file_finished_moves_file_and_row_counters(metrics: Metrics) -> None:
    """file_finished counts the file by source, tenant and status, its rows by source,
    tenant, kind and outcome; the bytes are counted as they arrive."""
    metrics.file_finished(_entry("alpha", "contacts", "ingested", 10, 2, 1))
    metrics.file_finished(_entry("alpha", "contacts", "duplicate"))
    metrics.file_finished(_entry("beta", "contacts", "ingested", 5, tenant="globex"))
    metrics.received("alpha", 500)
    metrics.received("alpha", 70)
    alpha, beta = {"source": "alpha", "tenant": "acme"}, {"source": "beta", "tenant": "globex"}
    assert value(metrics, "connector_files_total", **alpha, status="ingested") == 1
    assert value(metrics, "connector_files_total", **alpha, status="duplicate") == 1
    assert value(metrics, "connector_files_total", **beta, status="ingested") == 1
    assert value(metrics, "connector_rows_total", **alpha, kind="contacts", outcome="stored") == 10
    assert value(metrics, "connector_rows_total", **alpha, kind="contacts", outcome="rejected") == 2
    assert (
        value(metrics, "connector_rows_total", **alpha, kind="contacts", outcome="duplicate") == 1
    )
    assert value(metrics, "connector_rows_total", **beta, kind="contacts", outcome="stored") == 5
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
    first.file_finished(_entry("a", "events", "ingested", rows=1))
    assert value(first, "connector_files_total", source="a", tenant="acme", status="ingested") == 1
    assert (
        value(second, "connector_files_total", source="a", tenant="acme", status="ingested") is None
    )


def test_metrics_endpoint_serves_labelled_series(metrics: Metrics, server: MetricsServer) -> None:
    """GET /metrics on a real socket returns the text exposition with the labelled series."""
    metrics.file_finished(_entry("alpha", "events", "ingested", rows=3))
    metrics.received("alpha", 9)
    metrics.poll_finished("beta", 1.5, ok=False)
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert 'connector_files_total{source="alpha",status="ingested",tenant="acme"} 1.0' in body
    assert (
        'connector_rows_total{kind="events",outcome="stored",source="alpha",tenant="acme"} 3.0'
        in body
    )
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


def test_healthz_turns_503_when_the_store_fails_not_when_a_source_does(
    metrics: Metrics, server: MetricsServer
) -> None:
    """A source down for ever leaves the daemon healthy (its metrics say it); polls that
    fail on the store, more than max_missed_polls in a row, make it 503; a poll that
    succeeds brings 200 back."""
    metrics.scheduler_running(True)
    for _ in range(5):
        metrics.poll_finished("beta", 0.1, ok=False)
    assert get(server, "/healthz")[::2] == (200, "ok\n")
    assert value(metrics, "connector_source_up", source="beta") == 0
    for _ in range(2):
        metrics.poll_finished("alpha", 0.1, ok=False, store_failed=True)
    assert get(server, "/healthz")[0] == 200
    metrics.poll_finished("beta", 0.1, ok=False, store_failed=True)
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert body == "the store (or a local folder) failed 3 polls in a row (max_missed_polls = 2)\n"
    metrics.poll_finished("alpha", 0.1, ok=True)
    assert get(server, "/healthz")[::2] == (200, "ok\n")
    assert value(metrics, "connector_source_up", source="alpha") == 1


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


# -- connections: idle clients, a bound, clients that leave ---------------------------------


def server_side_sockets(port: int) -> int:
    """Descriptors this process holds for connections accepted on ``port`` (the listening
    socket and the clients' own ends excluded), from /proc: what the server really keeps."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == port and fields[3] != "0A":  # 0A: LISTEN
            inodes.add(fields[9])
    links = (os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.exists())
    return sum(link.startswith("socket:[") and link[8:-1] in inodes for link in links)


def client_threads() -> int:
    return sum(t.name == "metrics-client" for t in threading.enumerate())


def replying(server: MetricsServer) -> int:
    """Connections whose request is in and whose reply is under way."""
    with server._server._lock:
        return sum(c.state == "replying" for c in server._server._open.values())


def closed_by_server(client: socket.socket) -> bool:
    """True once the server has closed ``client``'s connection (end of file, or a reset)."""
    if not select.select([client], [], [], 0)[0]:
        return False
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True


def test_idle_connections_do_not_starve_healthz(metrics: Metrics) -> None:
    """59 idle connections: 16 kept, /healthz answers at once, fds and threads stay 16."""
    # The incident: 59 idle connections under a 64-descriptor limit. The newest 16 are kept,
    # older ones dropped before their request.
    assert MAX_CONNECTIONS == 16
    clients: list[socket.socket] = []
    # A long idle timeout: the bound alone must keep things in hand here.
    with MetricsServer(metrics, "127.0.0.1:0", idle_timeout=60) as server:
        try:
            for _ in range(59):
                clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=2))
            assert wait_until(lambda: sum(map(closed_by_server, clients[:43])) == 43)
            assert wait_until(lambda: server_side_sockets(server.port) == 16)
            assert not any(map(closed_by_server, clients[43:]))
            assert wait_until(lambda: client_threads() == 16)
            started = time.monotonic()
            assert get(server, "/healthz")[0] == 503  # answered: the scheduler is not running
            assert time.monotonic() - started < 0.5
            assert wait_until(lambda: server_side_sockets(server.port) <= 16)
            assert wait_until(lambda: client_threads() <= 16)
        finally:
            for client in clients:
                client.close()
    assert client_threads() == 0


def test_idle_clients_time_out_with_one_line(metrics: Metrics) -> None:
    """Silent and half-request clients are closed after idle_timeout, one debug line each."""
    with (
        capture_logs() as logs,
        MetricsServer(metrics, "127.0.0.1:0", idle_timeout=0.3) as server,
        socket.create_connection(("127.0.0.1", server.port)) as silent,
        socket.create_connection(("127.0.0.1", server.port)) as halting,
    ):
        halting.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert get(server, "/healthz")[0] == 503
        started = time.monotonic()
        assert wait_until(lambda: closed_by_server(silent) and closed_by_server(halting), 3)
        assert time.monotonic() - started < 2
        server.close()  # its threads joined: no event can come after
    failed = [e for e in logs if e["event"] == "metrics_client_failed"]
    assert len(failed) == 2, logs
    assert all(e["log_level"] == "debug" and "timed out" in e["cause"] for e in failed)


def test_a_client_leaving_mid_request_logs_one_line_and_no_traceback(
    metrics: Metrics, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client leaving mid-request: one metrics_client_failed line, nothing on stderr."""
    with capture_logs() as logs, metrics.serve("127.0.0.1:0") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.sendall(b"GET /metr")
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            # SO_LINGER 0: close() sends a reset, as a client killed mid-request may.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert wait_until(lambda: sum(e["event"] == "metrics_client_failed" for e in logs) == 2)
        server.close()
    causes = sorted(e["cause"] for e in logs)
    assert [e["event"] for e in logs] == ["metrics_client_failed"] * 2, logs
    assert "Connection reset by peer" in causes[0]
    assert causes[1] == "request cut short: b'GET /metr'"
    assert capsys.readouterr().err == ""


def test_new_connection_is_refused_while_all_are_answered(metrics: Metrics) -> None:
    """With every connection mid-reply, a new one is closed at once, with a warning."""
    with (
        capture_logs() as logs,
        MetricsServer(metrics, "127.0.0.1:0", max_connections=1) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=2) as first,
    ):
        with metrics._lock:  # /healthz waits for it: the first connection stays in its reply
            first.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert wait_until(lambda: replying(server) == 1)
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as second:
                second.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                assert second.recv(100) == b""
        assert first.recv(100).startswith(b"HTTP/1.0 503")
    [refused] = [e for e in logs if e["event"] == "metrics_client_refused"]
    assert refused["log_level"] == "warning"
    assert refused["cause"] == "all 1 connections are being answered"


def test_close_ends_open_connections_at_once(metrics: Metrics) -> None:
    """close() ends idle connections at once and leaves no connection thread behind."""
    with (
        MetricsServer(metrics, "127.0.0.1:0", idle_timeout=60) as server,
        socket.create_connection(("127.0.0.1", server.port)) as idle,
    ):
        assert wait_until(lambda: client_threads() == 1)
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 1
        assert client_threads() == 0
        assert closed_by_server(idle)


class _Broken(Collector):
    def collect(self) -> Iterable[Metric]:
        raise RuntimeError("collector failed")


def test_a_crash_while_answering_is_logged_with_its_traceback(
    metrics: Metrics, server: MetricsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fault of ours (a collector raising) is an error event with its exception."""
    metrics.registry.register(_Broken())
    with capture_logs() as logs:
        with pytest.raises(http.client.RemoteDisconnected):
            get(server, "/metrics")
        assert wait_until(lambda: any(e["event"] == "metrics_request_crashed" for e in logs))
    [crashed] = [e for e in logs if e["event"] == "metrics_request_crashed"]
    assert crashed["log_level"] == "error" and crashed["exc_info"] is True
    assert capsys.readouterr().err == ""
    assert get(server, "/healthz")[0] == 503


def test_the_shipped_alert_rules_use_metrics_the_daemon_serves(metrics: Metrics) -> None:
    """config/prometheus-alerts.yml is valid YAML of Prometheus rule groups, each rule
    with its summary and severity, and every connector metric it names exists."""
    import re

    import yaml
    from prometheus_client import generate_latest

    rules_file = Path(__file__).parent.parent / "config" / "prometheus-alerts.yml"
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    metrics.poll_finished("alpha", 0.1, ok=True)  # (labelled series exist once used)
    metrics.file_finished(_entry("alpha", "events", "rejected"))
    metrics.source_overdue("alpha", False)
    served = set(
        re.findall(
            r"^(connector_\w+?)(?:_total|_created)?[{ ]",
            generate_latest(metrics.registry).decode(),
            re.M,
        )
    )
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 5
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        for name in re.findall(r"\b(connector_\w+)", rule["expr"]):
            assert name.removesuffix("_total") in served, (rule["alert"], name)
