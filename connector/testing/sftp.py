"""An embedded SFTP server (paramiko) on loopback, rooted in a folder.

    with EmbeddedSFTPServer() as server:
        server.write_known_hosts(tmp_path / "known_hosts")
        ... connect to server.host:server.port as server.user/server.password

One thread accepts connections; each gets a paramiko `Transport` (its own
thread) with an Ed25519 host key made for this server, and each SFTP session
runs in a subsystem thread. Clients see the root folder as `/`; no path, `..`
or symlink leads outside it.
"""

# paramiko ships no type information: its names are Any to mypy, and its
# server interfaces must still be subclassed.
# mypy: disable-error-code="import-untyped"
# mypy: disallow-subclassing-any=False

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import socket
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import paramiko

from connector.testing._listener import Listener
from connector.testing._sftp_fs import RootedSFTP
from connector.testing.sshkeys import new_ed25519_key

__all__ = ["EmbeddedSFTPServer"]

_LOG_CHANNEL = "connector.testing.sftp"
_JOIN_SECONDS = 5.0


class _SFTPSubsystem(paramiko.SFTPServer):
    """paramiko's SFTP subsystem, registered so that close() can join it."""

    def __init__(self, channel: Any, name: str, server: _SSHServer, *args: Any) -> None:
        super().__init__(channel, name, server, *args)
        self.name = f"{server.harness._thread_name}-session"
        server.harness._track(self)


class _SSHServer(paramiko.ServerInterface):
    """Authentication and channel policy for one connection."""

    def __init__(self, harness: EmbeddedSFTPServer) -> None:
        self.harness = harness
        self.root = harness.root  # read by RootedSFTP

    def get_allowed_auths(self, username: str) -> str:
        return "password,publickey"

    def check_auth_password(self, username: str, password: str) -> int:
        harness = self.harness
        harness._count_auth()
        ok = username == harness.user and hmac.compare_digest(
            password.encode(), harness.password.encode()
        )
        return int(paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED)

    def check_auth_publickey(self, username: str, key: Any) -> int:
        harness = self.harness
        harness._count_auth()
        blob = key.asbytes()
        ok = username == harness.user and any(k.asbytes() == blob for k in harness.authorized_keys)
        return int(paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return int(paramiko.OPEN_SUCCEEDED)
        return int(paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)


class EmbeddedSFTPServer:
    """paramiko on 127.0.0.1 (a free port), serving `root` to one user.

    `root` defaults to a temporary folder removed on exit. The user logs in
    with `password` (made up when not given) or any key in
    `authorized_keys` (see `authorize`). `auth_attempts` counts every
    credential the server checked: a password, a signed key, and a key
    offered without signature (OpenSSH clients probe keys that way first).
    `algorithms` restricts what the server offers, by paramiko's
    `SecurityOptions` attribute (`{"ciphers": ["aes128-cbc"]}`): an old
    server, to test a client's policy against.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        user: str = "ingest",
        password: str | None = None,
        authorized_keys: Iterable[paramiko.PKey] = (),
        algorithms: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="connector-sftp-")
            root = Path(self._tempdir.name)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.authorized_keys: list[paramiko.PKey] = list(authorized_keys)
        self.algorithms = dict(algorithms or {})
        self.host_key: paramiko.PKey = new_ed25519_key()
        self._lock = threading.Lock()
        self._auth_attempts = 0
        self._transports: list[paramiko.Transport] = []
        self._sessions: list[threading.Thread] = []
        self._listener = Listener("connector-testing-sftp", self._accept)
        self.host = self._listener.host
        self.port = self._listener.port
        self._thread_name = f"connector-testing-sftp-{self.port}"
        _quiet_paramiko_server_logging()

    # -- what a client needs ---------------------------------------------------

    @property
    def url(self) -> str:
        return f"sftp://{self.user}@{self.host}:{self.port}/"

    @property
    def fingerprint(self) -> str:
        """The host key's fingerprint as OpenSSH prints it: `SHA256:...`."""
        return str(self.host_key.fingerprint)

    def known_hosts_line(self, port: int | None = None) -> str:
        """The known_hosts line OpenSSH would write for this server.

        `port` files the key under another port on 127.0.0.1, for a client
        that reaches this server through a `FaultProxy`.
        """
        key = f"{self.host_key.get_name()} {self.host_key.get_base64()}"
        return f"[{self.host}]:{port or self.port} {key}"

    def write_known_hosts(self, path: Path, *, port: int | None = None) -> Path:
        """Write a known_hosts file that trusts this server (only)."""
        path.write_text(self.known_hosts_line(port) + "\n", encoding="ascii")
        return path

    @property
    def auth_attempts(self) -> int:
        with self._lock:
            return self._auth_attempts

    def authorize(self, key: paramiko.PKey) -> None:
        """Let `key` (a paramiko key, e.g. `SSHKeyPair.key`) log in."""
        self.authorized_keys.append(key)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> EmbeddedSFTPServer:
        self._listener.start()
        return self

    def close(self) -> None:
        """Drop every connection, join every thread, remove a temporary root."""
        self._listener.close()
        with self._lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            # shutdown() wakes the transport's thread at once; close() alone
            # leaves it to notice at its next 0.1 s socket timeout.
            with contextlib.suppress(OSError):
                transport.sock.shutdown(socket.SHUT_RDWR)
            transport.close()
        for transport in transports:
            # Transport.close() does not wait for its thread; we must, or it
            # outlives the test that started it.
            if transport.is_alive():
                transport.join(_JOIN_SECONDS)
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            if session.is_alive():
                session.join(_JOIN_SECONDS)
        if self._tempdir is not None:
            self._tempdir.cleanup()

    def __enter__(self) -> EmbeddedSFTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        transport = paramiko.Transport(sock)
        transport.name = f"{self._thread_name}-transport"
        transport.set_log_channel(f"{_LOG_CHANNEL}.transport")
        transport.add_server_key(self.host_key)
        options = transport.get_security_options()
        for attribute, names in self.algorithms.items():
            setattr(options, attribute, tuple(names))
        transport.set_subsystem_handler("sftp", _SFTPSubsystem, RootedSFTP)
        with self._lock:
            self._transports.append(transport)
        # With an event, start_server() returns at once and the handshake
        # runs on the transport's thread; the accept loop stays free.
        transport.start_server(event=threading.Event(), server=_SSHServer(self))

    def _track(self, session: threading.Thread) -> None:
        with self._lock:
            self._sessions.append(session)

    def _count_auth(self) -> None:
        with self._lock:
            self._auth_attempts += 1


class _DropDisconnects(logging.Filter):
    """Drop "Socket exception: Connection reset by peer" and its kin.

    paramiko logs a client that hangs up without a goodbye at ERROR; for a
    test server that is routine (and what the fault proxy is for).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Socket exception:")


def _quiet_paramiko_server_logging() -> None:
    """Drop the server's INFO lines ("Auth granted", ...) and hang-ups.

    The server's transports log under their own channel, so a client's logs
    (paramiko.transport) are left as the application configured them.
    """
    logger = logging.getLogger(_LOG_CHANNEL)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    transport_logger = logging.getLogger(f"{_LOG_CHANNEL}.transport")
    if not any(isinstance(f, _DropDisconnects) for f in transport_logger.filters):
        transport_logger.addFilter(_DropDisconnects())
