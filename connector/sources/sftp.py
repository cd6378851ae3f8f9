"""SFTP sources: ``sftp://user@host:port/folder``, over paramiko.

The server is checked before it is trusted with anything: its host key must be in
``known_hosts`` (OpenSSH format: ``[host]:port`` entries, hashed names, wildcards,
``@revoked``) and/or match the pinned ``host_key`` fingerprint, and only then is a key or a
password sent. (A pin is compared with the key the server offers first, in OpenSSH's
order: Ed25519, ECDSA, RSA.) Credentials: ``key_file`` (Ed25519, ECDSA or RSA), the source
password, or both (the key is tried first). **If the key file is encrypted, the source
password is its passphrase** and is then never sent to the server as a login password.

Reads are pipelined by hand: see ``sftp_reads``.

A session that failed at the network level (timeout, reset, protocol confusion) is dropped
at once, and the next call connects again. One Source is used by one thread at a time.
"""

# paramiko ships no type information: its names are Any to mypy.
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import logging
import posixpath
import socket
import stat
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import paramiko
import structlog

from connector.actions import Action, Delete, Leave
from connector.config import SourceConfig
from connector.errors import SourceRefused, TransientError
from connector.sources.base import RemoteFile
from connector.sources.known_hosts import KnownKeys, fingerprint, known_keys
from connector.sources.naming import REPORT_SUFFIX, clash_free_name, hostile
from connector.sources.sftp_algorithms import Transport, negotiated, refusal, restrict
from connector.sources.sftp_reads import close_handle, download, list_folder, open_for_read

__all__ = ["SFTPSource"]

_JOIN_SECONDS = 5.0

# Failures after which the SFTP stream cannot be trusted: the session is dropped. (paramiko
# decodes some of a server's text as strict UTF-8: a UnicodeError is the server's, too.)
_BROKEN = (
    TimeoutError,
    ConnectionError,
    EOFError,
    UnicodeError,
    paramiko.SSHException,
    paramiko.SFTPError,
)


# paramiko logs each failure it meets (at ERROR, some with a traceback) before raising it;
# we raise it once more, translated, with the source named. Its records go to this logger,
# which has the NullHandler a library should have: they reach the application's handlers
# if it configured any, and are never printed raw on stderr by logging's last resort.
_LOG_CHANNEL = "connector.sources.sftp.paramiko"
logging.getLogger(_LOG_CHANNEL).addHandler(logging.NullHandler())


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SFTPSource:
    """A folder on an SFTP server. See the module docstring for trust and credentials."""

    def __init__(
        self,
        config: SourceConfig,
        password: str | None,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        url = urlsplit(config.url)  # (checked by the config: a host, a user, a port)
        port = url.port or 22
        assert url.hostname is not None and url.username is not None
        self.name = config.name
        self._host = url.hostname
        self._port = port
        self._user = unquote(url.username)
        self._where = f"[{self._host}]:{port}" if ":" in self._host else f"{self._host}:{port}"
        # sftp://host/~/in is "in" under the login folder; any other path is absolute.
        path = config.remote_path
        self._folder = "." if path in ("/~", "/~/") else path.removeprefix("/~/")
        self._timeout = config.timeout
        self._timeout_text = config.timeout
        self._key_file = config.key_file
        self._known_hosts = config.known_hosts
        self._pin = config.host_key.rstrip("=") if config.host_key else None
        self._legacy = config.sftp_legacy_algorithms
        self._password = password  # a connector.secrets.Secret: its repr shows nothing
        self._clock = clock
        self._transport: Any = None
        self._sftp: Any = None
        self._entered = False

    # -- the Source protocol ---------------------------------------------------------------

    def __enter__(self) -> Self:
        self._entered = True
        try:
            self._session()
        except BaseException:
            self._entered = False
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entered = False
        self._drop()

    def list(self) -> list[RemoteFile]:
        """Regular files, and links to regular files, directly in the folder."""
        with self._failures(f"list {self._folder}"):
            sftp = self._session()
            files = []
            for entry in list_folder(sftp, self._folder):
                attrs = entry
                link = attrs.st_mode is not None and stat.S_ISLNK(attrs.st_mode)
                if link and hostile(entry.filename) is not None:
                    # Not followed: a request cannot name it safely (paramiko sends names
                    # as strict UTF-8). Listed as it is, for selection to refuse.
                    files.append(RemoteFile(entry.filename, 0, float(attrs.st_mtime or 0)))
                    continue
                if link:
                    try:
                        attrs = sftp.stat(self._path(entry.filename))
                    except FileNotFoundError:
                        continue  # a dangling link
                if attrs.st_mode is None or not stat.S_ISREG(attrs.st_mode):
                    continue
                files.append(
                    RemoteFile(
                        name=entry.filename,
                        size=int(attrs.st_size or 0),
                        mtime=float(attrs.st_mtime or 0),
                    )
                )
            return files

    def read(self, name: str, offset: int = 0) -> Generator[bytes, None, None]:
        """The file from ``offset`` to its end, in chunks of about 1 MiB.

        The end is where the server says EOF, not the size stat() gave: a file that grew
        since is read to its new end, so the bytes yielded are the bytes hashed."""
        doing = f"read {name}"
        path = self._path(name)
        with self._failures(doing):
            sftp = self._session()
            size = int(sftp.stat(path).st_size or 0)
            handle = open_for_read(sftp, path)
        try:
            with self._failures(doing):
                yield from download(sftp, handle, offset, size)
        finally:
            # A failure above dropped the session, and the server closed the handle with it.
            if self._sftp is sftp:
                with self._failures(doing):
                    close_handle(sftp, handle)

    def complete(self, name: str, action: Action, report: bytes | None = None) -> str | None:
        """leave, delete, or move:<folder> (relative to the source's folder)."""
        if isinstance(action, Leave):
            if report is not None:
                self.put("", name + REPORT_SUFFIX, report)
            return None
        path = self._path(name)
        with self._failures(f"{action} {name}"):
            sftp = self._session()
            sftp.lstat(path)  # a vanished file fails here, before any folder is made
            if isinstance(action, Delete):
                sftp.remove(path)
                return None
            folder = posixpath.normpath(posixpath.join(self._folder, action.folder))
            _make_folders(sftp, folder)
            target = self._free_name(sftp, folder, name)
            if report is not None:
                _write(sftp, target + REPORT_SUFFIX, report)
            # SFTP v3 RENAME refuses an existing target (OpenSSH's server does), so a file
            # that appeared since _free_name looked is never overwritten.
            sftp.rename(path, target)
            return target

    def put(self, folder: str, name: str, data: bytes) -> str:
        path = posixpath.normpath(posixpath.join(self._folder, folder, name))
        with self._failures(f"write {path}"):
            sftp = self._session()
            _make_folders(sftp, posixpath.dirname(path))
            _write(sftp, path, data)
        return path

    def remove(self, folder: str, name: str) -> None:
        path = posixpath.normpath(posixpath.join(self._folder, folder, name))
        with self._failures(f"remove {path}"):
            self._session().remove(path)

    # -- connecting ------------------------------------------------------------------------

    def _session(self) -> Any:
        """The SFTP client, connecting first if the last session was dropped."""
        if not self._entered:
            raise RuntimeError(f"source {self.name}: use the source in a with block")
        if self._sftp is None:
            self._connect()
        return self._sftp

    def _connect(self) -> None:
        doing = f"connect to {self._where}"
        key, key_is_encrypted = self._load_key()
        with self._failures(doing):
            sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        try:
            self._transport = transport = Transport(sock)
        except BaseException:
            sock.close()
            raise
        try:
            with self._failures(doing):
                transport.name = f"connector-sftp-{self.name}"
                transport.set_log_channel(_LOG_CHANNEL)
                transport.banner_timeout = self._timeout
                transport.handshake_timeout = self._timeout
                transport.auth_timeout = self._timeout
                restrict(transport, legacy=self._legacy)
                self._prefer_known_key_types(transport)
                self._start(transport)
                self._check_host_key(transport.get_remote_server_key())
                self._authenticate(transport, key, key_is_encrypted)
                self._sftp = self._open_sftp(transport)
        except BaseException:
            self._drop()
            raise

    def _start(self, transport: Any) -> None:
        """The SSH handshake: key exchange on algorithms both sides accept."""
        try:
            transport.start_client(timeout=self._timeout)
        except paramiko.IncompatiblePeer as exc:
            reason = refusal(transport, legacy=self._legacy) or str(exc)
            raise SourceRefused(f"source {self.name}: {self._where}: {reason}") from None
        if not transport.is_active() or not transport.initial_kex_done:
            raise TimeoutError  # start_client returns quietly when it times out
        structlog.get_logger().debug(
            "sftp_negotiated", source=self.name, host=self._where, **negotiated(transport)
        )

    def _check_host_key(self, offered: Any) -> None:
        """Refuse a server whose key is not the one we know: before any credential is sent."""
        offered_print = fingerprint(offered)
        kind = offered.get_name()
        if self._pin is not None and offered_print != self._pin:
            raise SourceRefused(
                f"source {self.name}: host key of {self._where} changed (possible "
                f"man-in-the-middle): offered {kind} {offered_print}, pinned {self._pin}"
            )
        if self._known_hosts is None:
            return
        known, revoked = self._read_known_hosts()
        blob = offered.asbytes()
        if blob in revoked:
            raise SourceRefused(
                f"source {self.name}: host key of {self._where} is revoked in "
                f"{self._known_hosts} (offered {kind} {offered_print})"
            )
        if not known:
            raise SourceRefused(
                f"source {self.name}: host key of {self._where} is not in {self._known_hosts} "
                f"(offered {kind} {offered_print})"
            )
        if all(k.asbytes() != blob for k in known):
            expected = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in known)
            raise SourceRefused(
                f"source {self.name}: host key of {self._where} changed (possible "
                f"man-in-the-middle): offered {kind} {offered_print}, {self._known_hosts} "
                f"has {expected}"
            )

    def _authenticate(self, transport: Any, key: Any, key_is_encrypted: bool) -> None:
        tried = []
        if key is not None:
            tried.append(f"key {self._key_file}")
            _attempt(transport, lambda: transport.auth_publickey(self._user, key))
        # The passphrase of an encrypted key is not a login password: never send it.
        use_password = self._password is not None and not key_is_encrypted
        if use_password and not transport.is_authenticated():
            tried.append("password")
            _attempt(transport, lambda: transport.auth_password(self._user, self._password))
        if not transport.is_authenticated():
            methods = ", ".join(tried) or "nothing: set key_file, password_env or password_file"
            raise SourceRefused(
                f"source {self.name}: authentication failed for user {self._user} at "
                f"{self._where} (tried {methods})"
            )

    def _open_sftp(self, transport: Any) -> Any:
        channel = transport.open_session(timeout=self._timeout)
        # Every read and write on the channel waits at most this long: a stalled server
        # raises socket.timeout instead of hanging the poll.
        channel.settimeout(self._timeout)
        # invoke_subsystem() waits for the server's answer without a timeout; closing the
        # transport from a timer wakes it with an error instead.
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            transport.close()

        watchdog = threading.Timer(self._timeout, expire)
        watchdog.name = f"connector-sftp-{self.name}-watchdog"
        watchdog.start()
        try:
            channel.invoke_subsystem("sftp")
        except (paramiko.SSHException, EOFError) as exc:
            if expired.is_set():
                raise TimeoutError from exc
            raise
        finally:
            watchdog.cancel()
            watchdog.join()
        return paramiko.SFTPClient(channel)

    def _load_key(self) -> tuple[Any, bool]:
        """The key_file as a paramiko key, and whether it was encrypted."""
        if self._key_file is None:
            return None, False
        path = self._key_file
        try:
            return paramiko.PKey.from_path(path), False
        except TypeError:
            pass  # cryptography's way of saying "encrypted, and no passphrase given"
        except (OSError, ValueError, paramiko.SSHException, paramiko.UnknownKeyType) as exc:
            raise SourceRefused(f"source {self.name}: cannot load key_file {path}: {exc}") from None
        if self._password is None:
            raise SourceRefused(
                f"source {self.name}: key_file {path} is encrypted; its passphrase is the "
                "source password (password_env or password_file)"
            )
        try:
            # paramiko hands the passphrase to cryptography, which wants bytes.
            return paramiko.PKey.from_path(path, self._password.encode()), True
        except (OSError, ValueError, TypeError, paramiko.SSHException):
            raise SourceRefused(
                f"source {self.name}: cannot decrypt key_file {path} with the source password"
            ) from None

    def _read_known_hosts(self) -> KnownKeys:
        assert self._known_hosts is not None
        try:
            text = self._known_hosts.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise SourceRefused(
                f"source {self.name}: cannot read known_hosts {self._known_hosts}: {exc.strerror}"
            ) from None
        # OpenSSH files non-default ports as "[host]:port", and compares names lowercased.
        name = self._host.lower() if self._port == 22 else f"[{self._host.lower()}]:{self._port}"
        return known_keys(text, name)

    def _prefer_known_key_types(self, transport: Any) -> None:
        """Ask for a host key of a type known_hosts has, as OpenSSH does: a server with an
        Ed25519 and an RSA key must not be refused for showing the one we do not know."""
        if self._known_hosts is None:
            return
        try:
            known, _ = self._read_known_hosts()
        except SourceRefused:
            return  # reported by _check_host_key, once the server is reached
        wanted = []
        for key in known:
            kind = key.get_name()
            # An RSA key is signed over SHA-2, or (legacy only: else not offered) SHA-1.
            wanted += ["rsa-sha2-512", "rsa-sha2-256", kind] if kind == "ssh-rsa" else [kind]
        options = transport.get_security_options()
        offered = list(options.key_types)
        first = [k for k in offered if k in wanted]
        options.key_types = first + [k for k in offered if k not in first]

    # -- failures --------------------------------------------------------------------------

    @contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        """Translate paramiko's and the network's exceptions: the one place that does."""
        try:
            yield
        except (TransientError, SourceRefused):
            raise
        except (OSError, *_BROKEN) as exc:
            # An SFTP status ("no such file") leaves the session usable; anything else,
            # a plain OSError from a closed channel included, does not.
            if isinstance(exc, _BROKEN) or not self._healthy():
                self._drop()
            raise TransientError(f"source {self.name}: {doing}: {self._cause(exc)}") from exc

    def _cause(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError) or _timed_out(exc):
            return f"no answer for {self._timeout_text}"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve {self._host}"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, ConnectionResetError) or "reset by peer" in str(exc):
            return "connection reset"
        if isinstance(exc, (ConnectionError, EOFError)) or _dropped(exc):
            return "connection lost"
        if isinstance(exc, FileNotFoundError):
            return "no such file"
        if isinstance(exc, PermissionError):
            return "permission denied"
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror
        return str(exc) or type(exc).__name__

    def _healthy(self) -> bool:
        return (
            self._transport is not None
            and self._transport.is_active()
            and self._sftp is not None
            and not self._sftp.sock.closed
        )

    def _drop(self) -> None:
        """Close the connection and wait for paramiko's thread to end."""
        transport, self._transport, self._sftp = self._transport, None, None
        if transport is None:
            return
        # shutdown() wakes the transport's thread now; close() alone leaves it to notice at
        # its next 0.1 s poll. (OSError: the socket is already gone.)
        with suppress(OSError):
            transport.sock.shutdown(socket.SHUT_RDWR)
        transport.close()
        if transport.is_alive() and transport is not threading.current_thread():
            transport.join(_JOIN_SECONDS)

    # -- names -----------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
        return posixpath.join(self._folder, name)

    def _free_name(self, sftp: Any, folder: str, name: str) -> str:
        """``folder/name``, or on a clash the name with a UTC timestamp before its extension
        (``a.20261128T101500Z.csv``), named as every adapter names it."""

        def exists(candidate: str) -> bool:
            try:
                sftp.lstat(posixpath.join(folder, candidate))
            except FileNotFoundError:
                return False
            return True

        return posixpath.join(folder, clash_free_name(name, exists, self._clock()))


def _attempt(transport: Any, method: Callable[[], object]) -> None:
    """One authentication attempt. A refusal is no error here (the next method may do), but
    paramiko also reports its timeout and a lost connection as AuthenticationException:
    those are raised as what they are, so that they are retried, not refused."""
    try:
        method()
    except paramiko.AuthenticationException as exc:
        if not transport.is_active():
            raise EOFError("connection lost while authenticating") from exc
        if _timed_out(exc):
            raise TimeoutError from exc


def _timed_out(exc: BaseException) -> bool:
    """paramiko's ways of saying "timed out": its own words (opening a channel,
    authenticating), or a socket timeout it wrapped (reading the banner)."""
    text = str(exc).lower()
    return isinstance(exc, paramiko.SSHException) and (
        "timeout" in text or "timed out" in text or isinstance(exc.__context__, TimeoutError)
    )


def _dropped(exc: BaseException) -> bool:
    """paramiko's words for a connection that went away under it: an SSHException, or an
    OSError of its own making, without an errno ("Socket is closed", when its transport
    thread saw the reset before our read did)."""
    text = str(exc).lower()
    theirs = isinstance(exc, paramiko.SSHException) or (
        isinstance(exc, OSError) and exc.errno is None
    )
    return theirs and ("dropped" in text or "closed" in text or "eof" in text)


def _make_folders(sftp: Any, folder: str) -> None:
    """mkdir -p: create ``folder`` and any missing parent."""
    try:
        sftp.stat(folder)
        return
    except FileNotFoundError:
        pass
    parent = posixpath.dirname(folder)
    if parent and parent != folder:
        _make_folders(sftp, parent)
    try:
        sftp.mkdir(folder)
    except OSError as exc:
        try:
            sftp.stat(folder)  # made meanwhile by someone else: fine
        except FileNotFoundError:
            raise exc from None  # why it could not be made (permission denied, say)


def _write(sftp: Any, path: str, data: bytes) -> None:
    """``path`` holds ``data`` (created or truncated), flushed to the server on close."""
    with sftp.open(path, "wb") as remote:
        remote.write(data)
