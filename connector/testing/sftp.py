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
import functools
import hmac
import logging
import os
import posixpath
import secrets
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Concatenate, ParamSpec, TypeVar

import paramiko

from connector.testing._listener import Listener
from connector.testing.sshkeys import new_ed25519_key

__all__ = ["EmbeddedSFTPServer"]

_LOG_CHANNEL = "connector.testing.sftp"
_JOIN_SECONDS = 5.0

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _sftp_errors(
    method: Callable[Concatenate[_RootedSFTP, _P], _R],
) -> Callable[Concatenate[_RootedSFTP, _P], _R | int]:
    """Answer an OSError with the matching SFTP status code.

    paramiko turns any other exception into a bare SSH_FX_FAILURE, which
    would hide "no such file" from the client.
    """

    @functools.wraps(method)
    def wrapper(self: _RootedSFTP, /, *args: _P.args, **kwargs: _P.kwargs) -> _R | int:
        try:
            return method(self, *args, **kwargs)
        except OSError as error:
            return int(paramiko.SFTPServer.convert_errno(error.errno))

    return wrapper


class _Handle(paramiko.SFTPHandle):
    """An open file; paramiko's base class reads and writes at offsets."""

    def __init__(self, flags: int, path: Path, file: IO[bytes]) -> None:
        super().__init__(flags)
        self._path = path
        # The base class looks these two names up; one file serves both.
        self.readfile = file
        self.writefile = file

    def stat(self) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as error:
            return paramiko.SFTPServer.convert_errno(error.errno)

    def chattr(self, attr: Any) -> int:
        try:
            paramiko.SFTPServer.set_file_attr(str(self._path), attr)
        except OSError as error:
            return int(paramiko.SFTPServer.convert_errno(error.errno))
        return int(paramiko.SFTP_OK)


class _RootedSFTP(paramiko.SFTPServerInterface):
    """SFTP operations on the server's root folder, which clients see as `/`."""

    def __init__(self, server: _SSHServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        self._root = server.harness.root

    def _real(self, path: str) -> Path:
        # normpath on an absolute path drops leading "..", so no name can
        # climb above "/"; resolve() then catches symlinks that lead out.
        virtual = posixpath.normpath("/" + path).lstrip("/")
        real = self._root / virtual
        if not real.resolve().is_relative_to(self._root):
            raise PermissionError(13, "outside the server root", virtual)
        return real

    def canonicalize(self, path: str) -> str:
        return "/" + posixpath.normpath("/" + path).lstrip("/")

    @_sftp_errors
    def open(self, path: str, flags: int, attr: Any) -> Any:
        real = self._real(path)
        fd = os.open(real, flags | getattr(os, "O_BINARY", 0), 0o644)
        if flags & os.O_CREAT and attr is not None:
            paramiko.SFTPServer.set_file_attr(str(real), attr)
        if flags & os.O_WRONLY:
            mode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            mode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            mode = "rb"
        return _Handle(flags, real, os.fdopen(fd, mode))

    @_sftp_errors
    def list_folder(self, path: str) -> Any:
        real = self._real(path)
        entries = []
        with os.scandir(real) as names:
            for entry in names:
                # lstat, as OpenSSH's sftp-server does for READDIR.
                stat = entry.stat(follow_symlinks=False)
                entries.append(paramiko.SFTPAttributes.from_stat(stat, entry.name))
        return entries

    @_sftp_errors
    def stat(self, path: str) -> Any:
        return paramiko.SFTPAttributes.from_stat(os.stat(self._real(path)))

    @_sftp_errors
    def lstat(self, path: str) -> Any:
        return paramiko.SFTPAttributes.from_stat(os.lstat(self._real(path)))

    @_sftp_errors
    def remove(self, path: str) -> int:
        os.remove(self._real(path))
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def rename(self, oldpath: str, newpath: str) -> int:
        # SFTP v3 RENAME refuses to overwrite (OpenSSH's server too);
        # overwriting is what the posix-rename extension below is for.
        old, new = self._real(oldpath), self._real(newpath)
        if new.exists():
            return int(paramiko.SFTP_FAILURE)
        os.rename(old, new)
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def posix_rename(self, oldpath: str, newpath: str) -> int:
        os.replace(self._real(oldpath), self._real(newpath))
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def mkdir(self, path: str, attr: Any) -> int:
        real = self._real(path)
        os.mkdir(real)
        if attr is not None:
            paramiko.SFTPServer.set_file_attr(str(real), attr)
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def rmdir(self, path: str) -> int:
        os.rmdir(self._real(path))
        return int(paramiko.SFTP_OK)

    @_sftp_errors
    def chattr(self, path: str, attr: Any) -> int:
        paramiko.SFTPServer.set_file_attr(str(self._real(path)), attr)
        return int(paramiko.SFTP_OK)


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
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        user: str = "ingest",
        password: str | None = None,
        authorized_keys: Iterable[paramiko.PKey] = (),
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

    @property
    def known_hosts_line(self) -> str:
        """The known_hosts line OpenSSH would write for this server."""
        return f"[{self.host}]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}"

    def write_known_hosts(self, path: Path) -> Path:
        """Write a known_hosts file that trusts this server (only)."""
        path.write_text(self.known_hosts_line + "\n", encoding="ascii")
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
        transport.set_subsystem_handler("sftp", _SFTPSubsystem, _RootedSFTP)
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
