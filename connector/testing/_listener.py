"""A loopback listening socket with an accept loop in a thread.

Shared by the SFTP server and the fault proxy: both need "accept on
127.0.0.1:<free port> and hand each connection to a callback", plus a
shutdown that is immediate and leaves no thread and no socket behind.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable

_log = logging.getLogger(__name__)


class Listener:
    """Accept connections in a daemon thread and pass each to `on_accept`.

    `on_accept` owns the socket it receives. It runs on the accept thread, so
    it must hand long work to another thread. With `single_use`, the listener
    stops after its first connection (one PASV data connection, for example).
    The thread is named `<name>-<port>`, to be told apart in a thread dump.
    """

    def __init__(
        self,
        name: str,
        on_accept: Callable[[socket.socket], None],
        *,
        host: str = "127.0.0.1",
        single_use: bool = False,
    ) -> None:
        self._on_accept = on_accept
        self._single_use = single_use
        self._stop = threading.Event()
        self._sock = socket.create_server((host, 0))
        # Closing a socket does not wake a thread blocked in accept() on every
        # platform; a byte on this pair does, so close() never waits for a poll.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self.host: str = host
        self.port: int = self._sock.getsockname()[1]
        # A daemon thread: a test that forgets to close a server must not
        # hang the interpreter at exit. close() still joins it.
        self._thread = threading.Thread(target=self._run, name=f"{name}-{self.port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and close the listening socket; idempotent."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")
        if self._thread.is_alive():
            self._thread.join()
        for sock in (self._sock, self._wake_reader, self._wake_writer):
            sock.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([self._sock, self._wake_reader], [], [])
                if self._wake_reader in readable:
                    return
                conn, _ = self._sock.accept()
                try:
                    self._on_accept(conn)
                except Exception:
                    # One bad connection must not stop the server; the log
                    # (captured by pytest) says what went wrong.
                    _log.exception("accept handler failed")
                    conn.close()
                if self._single_use:
                    return
        finally:
            self._sock.close()
