"""Prometheus metrics and ``/healthz``, served when ``[metrics] listen`` is set.

The daemon reports what happened (``poll_finished``, ``file_finished``, …); this module owns
how that is counted and exposed. Each ``Metrics`` has its own registry: the global default
one would make a second instance (every test makes one) fail on duplicate names.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase

from connector.errors import ConfigError
from connector.replica import identity

if TYPE_CHECKING:
    from connector.store.ledger import Entry

# From a local folder listed in milliseconds to a slow FTPS server sending many files.
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# Each connection holds a thread and a descriptor: one that stays silent this long is dropped,
# and only so many are open at a time (see _Server). Prometheus and health probes need one.
IDLE_TIMEOUT = 5.0
MAX_CONNECTIONS = 16


class Metrics:
    """Counters for one daemon, and its health. Methods may be called from any thread."""

    def __init__(self, max_missed_polls: int = 3, *, clock: Callable[[], float] = time.time):
        self.max_missed_polls = max_missed_polls
        self.clock = clock
        self.registry = CollectorRegistry()
        reg = self.registry
        self.files = Counter(
            "connector_files",
            "Files decided, by final status.",
            ["source", "tenant", "status"],
            registry=reg,
        )
        self.rows = Counter(
            "connector_rows",
            "Rows read, by outcome.",
            ["source", "tenant", "kind", "outcome"],
            registry=reg,
        )
        self.downloaded = Counter(
            "connector_downloaded_bytes", "Bytes downloaded.", ["source"], registry=reg
        )
        # A remote action (move, delete) or reject report that failed: the file stays
        # ingested, but lingers on the server and is acted on again at every poll.
        self.action_failures = Counter(
            "connector_remote_action_failures",
            "Remote actions (or reports) that failed.",
            ["source"],
            registry=reg,
        )
        self.poll_duration = Histogram(
            "connector_poll_duration_seconds",
            "Duration of a poll, failed or not.",
            ["source"],
            buckets=POLL_BUCKETS,
            registry=reg,
        )
        self.last_success = Gauge(
            "connector_last_successful_poll_timestamp_seconds",
            "Unix time of the last poll that succeeded (0: none yet).",
            ["source"],
            registry=reg,
        )
        self.failures = Gauge(
            "connector_consecutive_poll_failures",
            "Polls failed in a row since the last success.",
            ["source"],
            registry=reg,
        )
        # For alerting on one customer's server (config/prometheus-alerts.yml): /healthz
        # does not, as a daemon is not unhealthy because one source is down.
        self.up = Gauge(
            "connector_source_up",
            "1: its last poll succeeded; 0: it failed.",
            ["source"],
            registry=reg,
        )
        self.overdue = Gauge(
            "connector_source_overdue",
            "1: no new file within its expect_every.",
            ["source"],
            registry=reg,
        )
        # Which process this is among the replicas sharing a store (host:pid by default).
        Info("connector_replica", "This process among those sharing the store.", registry=reg).info(
            {"replica": identity()}
        )
        # Health is decided from these, not from the gauges: prometheus_client has no public
        # read API, and a lock keeps the count and its gauge in step across scheduler threads.
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._store_failures = 0  # polls failed in a row on the store (any source's)
        self._running = False

    def register_sources(self, names: Iterable[str]) -> None:
        """Create every per-source series at 0, so a source never polled is still visible
        (and ``absent()`` alerts do not fire merely because nothing happened yet)."""
        for name in names:
            self._ensure(name)

    def forget_sources(self, names: Iterable[str]) -> None:
        """Remove every series of these sources (gone from the config): a source that no
        longer exists is not reported, not even as down or overdue."""
        # Each metric kept here has a source label (the replica's Info is not kept).
        metrics = [m for m in vars(self).values() if isinstance(m, MetricWrapperBase)]
        for name in names:
            with self._lock:  # (the failure count and its gauge go together)
                self._failures.pop(name, None)
                for metric in metrics:
                    metric.remove_by_labels({"source": name})

    def _ensure(self, source: str) -> None:
        self.downloaded.labels(source)
        self.action_failures.labels(source)
        self.poll_duration.labels(source)
        self.last_success.labels(source)
        with self._lock:
            if source not in self._failures:
                self._failures[source] = 0
                self.failures.labels(source).set(0)

    def poll_finished(
        self, source: str, seconds: float, ok: bool, *, store_failed: bool = False
    ) -> int:
        """Returns the source's failed polls in a row (0 after a success): the service
        backs off by it, so the count exists once, here. ``store_failed``: the poll
        failed on the store (or a local folder of ours), not on the source."""
        self.poll_duration.labels(source).observe(seconds)
        with self._lock:
            count = 0 if ok else self._failures.get(source, 0) + 1
            self._failures[source] = count
            self.failures.labels(source).set(count)
            self.up.labels(source).set(1 if ok else 0)
            if ok:
                self.last_success.labels(source).set(self.clock())
                self._store_failures = 0  # (a poll that succeeded wrote to the store)
            elif store_failed:
                self._store_failures += 1
        return count

    def source_overdue(self, source: str, overdue: bool) -> None:
        self.overdue.labels(source).set(1 if overdue else 0)

    def received(self, source: str, size: int) -> None:
        """Bytes downloaded, as they arrive (files that fail or turn out duplicates too)."""
        self.downloaded.labels(source).inc(size)

    def action_failed(self, source: str) -> None:
        self.action_failures.labels(source).inc()

    def file_finished(self, entry: Entry) -> None:
        """A file decided (its ledger entry): its rows stored, rejected and duplicates."""
        self.files.labels(entry.source, entry.tenant, entry.status).inc()
        # inc(0) still creates the series, so rate() works from the first file of a kind.
        rows = self.rows
        for outcome, count in (
            ("stored", entry.rows),
            ("rejected", entry.rejected),
            ("duplicate", entry.duplicates),
        ):
            rows.labels(entry.source, entry.tenant, entry.kind, outcome).inc(count)

    def scheduler_running(self, running: bool) -> None:
        with self._lock:
            self._running = running

    def healthy(self) -> tuple[bool, str]:
        """(True, "ok"), or (False, why): whether the daemon works. Not so when the
        scheduler is not running, or when more than ``max_missed_polls`` polls in a row
        failed on the store or a local folder. A source that fails (its server down, a
        wrong password) does not make the daemon unhealthy: a restart would not mend it,
        and the others go on; ``connector_source_up`` and the failure counts say it."""
        with self._lock:
            if not self._running:
                return False, "scheduler not running"
            failed = self._store_failures
        if failed > self.max_missed_polls:
            return False, (
                f"the store (or a local folder) failed {failed} polls in a row"
                f" (max_missed_polls = {self.max_missed_polls})"
            )
        return True, "ok"

    def serve(self, listen: str) -> MetricsServer:
        """Bind ``host:port`` now (port 0: any free one); serve inside ``with``."""
        return MetricsServer(self, listen)


class _Handler(BaseHTTPRequestHandler):
    """GET /metrics and /healthz. The metrics come in as an argument, the way
    ``SimpleHTTPRequestHandler`` takes ``directory``, because the handler is made per request."""

    server: _Server
    raw_requestline: bytes  # set by the base class before parse_request

    def __init__(self, *args: Any, metrics: Metrics, idle_timeout: float, **kwargs: Any) -> None:
        self.metrics = metrics
        self.idle_timeout = idle_timeout
        super().__init__(*args, **kwargs)  # handles the request: set attributes before

    def setup(self) -> None:
        super().setup()
        # Every read and write: a client that stops sending or reading is dropped.
        self.connection.settimeout(self.idle_timeout)

    def parse_request(self) -> bool:
        if not self.raw_requestline.endswith(b"\n"):
            # The client closed in the middle of its request line: answering would only fail.
            self.close_connection = True
            self.log_error("request cut short: %r", self.raw_requestline[:80])
            return False
        return super().parse_request()

    def do_GET(self) -> None:
        self.server.replying(self.connection)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            # Prometheus asks for OpenMetrics in Accept; plain text for everyone else.
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, encoder(self.metrics.registry), content_type)
        elif path == "/healthz":
            ok, reason = self.metrics.healthy()
            self._reply(200 if ok else 503, f"{reason}\n".encode(), "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")

    def _reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # A scrape every 15 s would flood stderr; keep it for whoever turns on debug.
        structlog.get_logger().debug("metrics_request_served", line=format % args)

    def log_error(self, format: str, *args: Any) -> None:
        # Timed out, malformed or cut short: the client's trouble, routine for port scanners
        # and probes that gave up, so debug like the access log.
        _client_failed(self.client_address, format % args)


def _client_failed(client: Any, cause: str) -> None:
    structlog.get_logger().debug("metrics_client_failed", client=_peer(client), cause=cause)


def _peer(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


@dataclass
class _Connection:
    thread: threading.Thread
    peer: Any
    # "reading" until the request is in; "replying" after; "dropped" once shut down for a newer one.
    state: str = "reading"


class _Server(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with its connections counted: at most ``max_connections`` at a
    time, each in its thread. Past that, a new connection pushes out the oldest one that has
    not sent its request yet (a health probe sends its request at once, so idle connections
    piling up cannot starve it); if every one is being answered, the new one is closed."""

    daemon_threads = True
    request_queue_size = 64  # a burst of connections waits in the kernel's queue, unrefused

    def __init__(
        self,
        address: tuple[str, int],
        handler: Callable[..., _Handler],
        *,
        max_connections: int,
        join_timeout: float,
    ) -> None:
        self.max_connections = max_connections
        self.join_timeout = join_timeout
        self._lock = threading.Lock()
        self._open: dict[socket.socket, _Connection] = {}  # oldest first
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="metrics-client",
            daemon=True,
        )
        dropped = None
        with self._lock:
            live = sum(c.state != "dropped" for c in self._open.values())
            if live >= self.max_connections:
                dropped = self._drop_oldest_reading()
            admitted = live < self.max_connections or dropped is not None
            if admitted:
                self._open[request] = _Connection(thread, client_address)
        if dropped is not None:
            _client_failed(dropped, "dropped for a newer connection before its request")
        if not admitted:
            structlog.get_logger().warning(
                "metrics_client_refused",
                client=_peer(client_address),
                cause=f"all {self.max_connections} connections are being answered",
            )
            self.shutdown_request(request)
            return
        thread.start()

    def _drop_oldest_reading(self) -> Any:
        """With the lock held: shut down the oldest connection still waiting for its
        request (its thread wakes on end-of-file and closes it) and return its address;
        None if there is none."""
        for sock, connection in self._open.items():
            if connection.state == "reading":
                connection.state = "dropped"
                # The lock keeps its thread from closing it meanwhile (shutdown_request), so
                # the descriptor cannot have been reused by another socket.
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                return connection.peer
        return None

    def replying(self, request: socket.socket) -> None:
        """The request is in: the connection can no longer be dropped for a newer one."""
        with self._lock:
            connection = self._open.get(request)
            if connection is not None and connection.state == "reading":
                connection.state = "replying"

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Instead of socketserver's traceback on stderr: one event.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # reset, broken pipe, timed out: the client's doing
            _client_failed(client_address, str(exc) or type(exc).__name__)
        else:
            structlog.get_logger().exception(
                "metrics_request_crashed", client=_peer(client_address)
            )

    def server_close(self) -> None:
        """Close the listening socket, then every connection, and wait for their threads."""
        super().server_close()
        with self._lock:
            for sock in self._open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            threads = [c.thread for c in self._open.values()]
        for thread in threads:  # woken by the shutdown: a bound only against the unforeseen
            thread.join(self.join_timeout)


class MetricsServer:
    """The HTTP endpoint, on stdlib ``ThreadingHTTPServer`` in a daemon thread (see _Server).
    prometheus_client's ``start_http_server`` serves its registry only (no ``/healthz``), and
    a wsgiref server answers one request at a time: a stuck scraper would block health checks."""

    def __init__(
        self,
        metrics: Metrics,
        listen: str,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        host, _, port = listen.rpartition(":")
        handler = partial(_Handler, metrics=metrics, idle_timeout=idle_timeout)
        try:
            self._server = _Server(
                (host, int(port)),
                handler,
                max_connections=max_connections,
                join_timeout=idle_timeout,
            )
        except (OSError, OverflowError) as exc:  # taken, not ours, > 65535: fix the config
            raise ConfigError([f"metrics.listen: cannot listen on {listen}: {exc}"]) from None
        self.host = host
        self.port: int = self._server.server_address[1]
        # poll_interval bounds how long close() waits for the loop to notice; an idle
        # select() waking ten times a second costs nothing measurable.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="metrics-http", daemon=True
        )

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, join the threads and close the sockets. Safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()  # returns once serve_forever has left its loop
            self._thread.join()
        self._server.server_close()
