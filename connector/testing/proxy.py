"""A TCP proxy on loopback that breaks connections on purpose.

`FaultProxy` listens on 127.0.0.1 (a free port) and forwards every
connection to a target. A `Fault` decides what goes wrong on the way back
from the server to the client, which is the direction a download reads:

- `reset_after=N`: forward N bytes from the server, then reset the client's
  connection (RST, via SO_LINGER 0), as a dropped NAT entry or a crashed
  middlebox does. The server side is closed quietly.
- `stall_after=N`: forward N bytes, then forward nothing more in either
  direction while keeping both sockets open, as a dead path does; only the
  client's own timeout gets it out.
- `latency=S`: wait S seconds before forwarding each chunk from the server.

By default only the first connection is faulty, so that a client which
retries succeeds; `every_connection=True` breaks them all. Byte counts include
everything the server sends: the SSH banner and key exchange, the FTP
greeting, TLS handshakes.

What this means per protocol:

- SFTP: everything runs over the one connection, so put the proxy in front
  of `EmbeddedSFTPServer` and point the client at the proxy.
- FTP and FTPS control connection: the same, but a PASV reply names the
  server's own data port, so data connections bypass the proxy. (For FTPS
  the control channel is encrypted, so no proxy can rewrite that reply.)
- FTP and FTPS data connections: use `EmbeddedFTPServer.set_data_fault`. The
  server then answers each PASV/EPSV with the port of a one-connection
  `FaultProxy` in front of its real data port, so the fault hits the data
  transfer itself, TLS included, for the commands chosen (RETR by default).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from connector.testing._listener import Listener

__all__ = ["Fault", "FaultPlan", "FaultProxy"]

_log = logging.getLogger(__name__)
_CHUNK = 64 * 1024
# How often a connection's pump looks at the stop flag while both sides are
# quiet; close() also shuts the sockets down, which wakes it at once.
_POLL_SECONDS = 0.1
_JOIN_SECONDS = 5.0


@dataclass(frozen=True)
class Fault:
    """What goes wrong on a faulty connection (server-to-client direction)."""

    reset_after: int | None = None
    """Reset the client's connection after this many bytes from the server."""
    stall_after: int | None = None
    """Stop forwarding after this many bytes from the server."""
    latency: float = 0.0
    """Seconds to wait before forwarding each chunk from the server."""
    every_connection: bool = False
    """Fault every connection, not only the first."""

    def __post_init__(self) -> None:
        if self.reset_after is not None and self.stall_after is not None:
            raise ValueError("a connection can reset or stall, not both")
        for limit in (self.reset_after, self.stall_after):
            if limit is not None and limit < 0:
                raise ValueError("byte counts must be >= 0")
        if self.latency < 0:
            raise ValueError("latency must be >= 0")


class FaultPlan:
    """Decides, thread-safely, which connections get the fault.

    Several proxies may share one plan, so that "the first connection" means
    the first of them all (the FTP server's per-transfer data proxies do).
    """

    def __init__(self, fault: Fault | None = None) -> None:
        self._lock = threading.Lock()
        self._fault = fault
        self._used = False
        self.faults_applied = 0
        """How many connections received the fault so far."""

    @property
    def fault(self) -> Fault | None:
        return self._fault

    def replace(self, fault: Fault | None) -> None:
        """Use `fault` from the next connection on; "first" counts anew."""
        with self._lock:
            self._fault = fault
            self._used = False

    def claim(self) -> Fault | None:
        """The fault for a new connection, or None if it should pass intact."""
        with self._lock:
            if self._fault is None or (self._used and not self._fault.every_connection):
                return None
            self._used = True
            self.faults_applied += 1
            return self._fault


class FaultProxy:
    """Forward 127.0.0.1:`port` to `target_host`:`target_port`, with faults.

    A context manager; `close()` ends every connection and joins every thread.
    `applies` narrows which connections may claim the fault: it is asked
    when the server sends its first byte on a connection.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        fault: Fault | None = None,
        *,
        plan: FaultPlan | None = None,
        applies: Callable[[], bool] | None = None,
        single_use: bool = False,
    ) -> None:
        if fault is not None and plan is not None:
            raise ValueError("give a fault or a plan, not both")
        self.target = (target_host, target_port)
        self.plan = plan if plan is not None else FaultPlan(fault)
        self._applies = applies
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self.connections = 0
        """How many client connections were accepted so far."""
        self._listener = Listener("connector-testing-proxy", self._accept, single_use=single_use)
        self.host = self._listener.host
        self.port = self._listener.port

    @property
    def faults_applied(self) -> int:
        return self.plan.faults_applied

    def set_fault(self, fault: Fault | None) -> None:
        """Change the fault for connections accepted from now on."""
        self.plan.replace(fault)

    def start(self) -> FaultProxy:
        self._listener.start()
        return self

    def close(self) -> None:
        """Stop accepting, cut every open connection, join every thread."""
        self._listener.close()
        self._stop.set()
        with self._lock:
            for sock in self._open:
                # shutdown() wakes a pump blocked in recv() or sendall();
                # the pump itself closes the socket.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            pumps = list(self._pumps)
        for pump in pumps:
            pump.join(_JOIN_SECONDS)
            if pump.is_alive():  # pragma: no cover - would be a bug in _pump
                _log.error("proxy connection thread did not stop: %s", pump.name)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------

    def _accept(self, client: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            number = self.connections
            pump = threading.Thread(
                target=self._pump,
                args=(client,),
                name=f"connector-testing-proxy-{self.port}-{number}",
                daemon=True,
            )
            self._pumps.append(pump)
            self._open.add(client)
        pump.start()

    def _pump(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            try:
                upstream = socket.create_connection(self.target, timeout=_JOIN_SECONDS)
            except OSError:
                _reset(client)
                return
            upstream.settimeout(None)
            with self._lock:
                self._open.add(upstream)
                stopping = self._stop.is_set()
            if not stopping:
                _Pump(client, upstream, self._claim, self._stop).run()
        except OSError:
            pass  # one side went away: the pump is done either way
        finally:
            with self._lock:
                self._open.discard(client)
                if upstream is not None:
                    self._open.discard(upstream)
            client.close()
            if upstream is not None:
                upstream.close()

    def _claim(self) -> Fault | None:
        if self._applies is not None and not self._applies():
            return None
        return self.plan.claim()


class _Pump:
    """Copies bytes both ways on one connection and applies the fault."""

    def __init__(
        self,
        client: socket.socket,
        upstream: socket.socket,
        claim: Callable[[], Fault | None],
        stop: threading.Event,
    ) -> None:
        self._client = client
        self._upstream = upstream
        self._claim = claim
        self._stop = stop
        self._fault: Fault | None = None
        self._decided = False
        self._sent = 0  # bytes forwarded from the server to the client
        self._stalled = False
        self._client_open = True
        self._upstream_open = True

    def run(self) -> None:
        while not self._stop.is_set():
            sources = []
            if self._client_open:
                sources.append(self._client)
            if self._upstream_open and not self._stalled:
                sources.append(self._upstream)
            if not sources:
                return
            readable, _, _ = select.select(sources, [], [], _POLL_SECONDS)
            for sock in readable:
                data = sock.recv(_CHUNK)
                if sock is self._client:
                    self._from_client(data)
                elif not self._from_server(data):
                    return

    def _from_client(self, data: bytes) -> None:
        if not data:
            self._client_open = False
            # Half-close: an FTP upload ends with the client's EOF, and the
            # server must still be able to answer.
            with contextlib.suppress(OSError):
                self._upstream.shutdown(socket.SHUT_WR)
        elif not self._stalled:
            self._upstream.sendall(data)
        # While stalled the client's bytes are read only to notice when it
        # gives up and closes; they are dropped, as a dead path would.

    def _from_server(self, data: bytes) -> bool:
        """Forward `data` to the client; False once the connection is done."""
        if not data:
            self._upstream_open = False
            with contextlib.suppress(OSError):
                self._client.shutdown(socket.SHUT_WR)
            return True
        if not self._decided:
            self._decided = True
            self._fault = self._claim()
        fault = self._fault
        if fault is None:
            self._client.sendall(data)
            return True
        if fault.latency and self._stop.wait(fault.latency):
            return False
        limit = fault.reset_after if fault.reset_after is not None else fault.stall_after
        if limit is None or self._sent + len(data) < limit:
            self._client.sendall(data)
            self._sent += len(data)
            return True
        if limit > self._sent:
            self._client.sendall(data[: limit - self._sent])
            self._sent = limit
        if fault.reset_after is not None:
            _reset(self._client)
            return False
        self._stalled = True
        return True


def _reset(sock: socket.socket) -> None:
    """Close `sock` with an RST instead of a FIN: SO_LINGER on, timeout 0."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
