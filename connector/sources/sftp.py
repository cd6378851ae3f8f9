"""SFTP sources: ``sftp://user@host:port/folder``, over paramiko.

The server is checked before it is trusted with anything: its host key must be in
``known_hosts`` (OpenSSH format: ``[host]:port`` entries, hashed names, wildcards,
``@revoked``) and/or match the pinned ``host_key`` fingerprint, and only then is a key or a
password sent. (A pin is compared with the key the server offers first, in OpenSSH's
order: Ed25519, ECDSA, RSA.) Credentials: ``key_file`` (Ed25519, ECDSA or RSA), the source
password, or both (the key is tried first). **If the key file is encrypted, the source
password is its passphrase** and is then never sent to the server as a login password.

Downloads are pipelined by hand (``_download``): up to ``_WINDOW`` READ requests are in
flight, sent in batches of ``_BATCH`` per SSH packet, and the replies are read on the
caller's thread. paramiko's own ``prefetch()`` (which ``getfo`` and ``readv`` use) is
fast too, but issues its requests from a background thread, which dies with an unhandled
EOFError when the connection drops (paramiko #2379), and now and then falls back to one
request per round trip for a whole file (measured: ~1 MB/s instead of ~100). This costs a few
private names of ``SFTPClient`` (``_lock``, ``request_number``, ``_expecting``,
``_request``, ``_read_response``), unchanged since paramiko 1.x and exercised by every
read test; see ``bench/sftp_bench.py`` for the measurements.

A session that failed at the network level (timeout, reset, protocol confusion) is dropped
at once, and the next call connects again. One Source is used by one thread at a time.
"""

# paramiko ships no type information: its names are Any to mypy.
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import base64
import hashlib
import logging
import posixpath
import re
import socket
import stat
import struct
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import paramiko
from paramiko.hostkeys import HostKeyEntry
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_HANDLE,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    SFTP_EOF,
    SFTP_FLAG_READ,
)

from connector.config import SourceConfig, parse_duration
from connector.errors import ConfigError, TransientError
from connector.sources.base import CHUNK, RemoteFile, SourceRefused
from connector.sources.naming import clash_free_name

__all__ = ["SFTPSource"]

_REQUEST = 32 * 1024  # bytes per READ: the most every server answers in full (paramiko's cap)
_WINDOW = 128  # READs in flight (4 MiB): enough to keep a server busy; bounds our memory
_BATCH = 32  # READs per SSH packet: fewer packets, less CPU on both ends (measured)
_JOIN_SECONDS = 5.0

# The keys known_hosts has for a host, and every revoked key. (Named out here: inside
# SFTPSource, "list" is the method.)
_KnownKeys = tuple[list[Any], set[bytes]]

# Failures after which the SFTP stream cannot be trusted: the session is dropped.
_BROKEN = (TimeoutError, ConnectionError, EOFError, paramiko.SSHException, paramiko.SFTPError)


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
        url = urlsplit(config.url)
        try:
            port = url.port or 22
        except ValueError:
            port = 0
        if not url.hostname or not url.username or not port:
            raise ConfigError(
                [f"source {config.name}: url must look like sftp://user@host[:port]/folder"]
            )
        self.name = config.name
        self._host = url.hostname
        self._port = port
        self._user = unquote(url.username)
        self._where = f"[{self._host}]:{port}" if ":" in self._host else f"{self._host}:{port}"
        # sftp://host/~/in is "in" under the login folder; any other path is absolute.
        path = config.remote_path
        self._folder = "." if path in ("/~", "/~/") else path.removeprefix("/~/")
        self._timeout = parse_duration(config.timeout)
        self._timeout_text = config.timeout
        self._key_file = config.key_file
        self._known_hosts = config.known_hosts
        self._pin = config.host_key.rstrip("=") if config.host_key else None
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
            for entry in sftp.listdir_attr(self._folder):
                attrs = entry
                if attrs.st_mode is not None and stat.S_ISLNK(attrs.st_mode):
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
        """The file from ``offset`` to its end, in chunks of up to 1 MiB.

        The end is where the server says EOF, not the size stat() gave: a file that grew
        since is read to its new end, so the bytes yielded are the bytes hashed."""
        doing = f"read {name}"
        path = self._path(name)
        with self._failures(doing):
            sftp = self._session()
            size = int(sftp.stat(path).st_size or 0)
            handle = _open_for_read(sftp, path)
        try:
            with self._failures(doing):
                yield from _download(sftp, handle, offset, size)
        finally:
            # A failure above dropped the session, and the server closed the handle with it.
            if self._sftp is sftp:
                with self._failures(doing):
                    _close_handle(sftp, handle)

    def complete(self, name: str, action: str) -> str | None:
        """leave, delete, or move:<folder> (relative to the source's folder)."""
        if action == "leave":
            return None
        path = self._path(name)
        with self._failures(f"{action} {name}"):
            sftp = self._session()
            sftp.lstat(path)  # a vanished file fails here, before any folder is made
            if action == "delete":
                sftp.remove(path)
                return None
            if not action.startswith("move:"):
                raise ValueError(f"unknown after action {action!r}")
            folder = posixpath.normpath(posixpath.join(self._folder, action.removeprefix("move:")))
            _make_folders(sftp, folder)
            target = self._free_name(sftp, folder, name)
            # SFTP v3 RENAME refuses an existing target (OpenSSH's server does), so a file
            # that appeared since _free_name looked is never overwritten.
            sftp.rename(path, target)
            return target

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
            self._transport = transport = paramiko.Transport(sock)
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
                self._prefer_known_key_types(transport)
                transport.start_client(timeout=self._timeout)
                if not transport.is_active() or not transport.initial_kex_done:
                    raise TimeoutError  # start_client returns quietly when it times out
                self._check_host_key(transport.get_remote_server_key())
                self._authenticate(transport, key, key_is_encrypted)
                self._sftp = self._open_sftp(transport)
        except BaseException:
            self._drop()
            raise

    def _check_host_key(self, offered: Any) -> None:
        """Refuse a server whose key is not the one we know: before any credential is sent."""
        fingerprint = _fingerprint(offered)
        kind = offered.get_name()
        if self._pin is not None and fingerprint != self._pin:
            raise SourceRefused(
                f"source {self.name}: host key of {self._where} changed (possible "
                f"man-in-the-middle): offered {kind} {fingerprint}, pinned {self._pin}"
            )
        if self._known_hosts is None:
            return
        known, revoked = self._read_known_hosts()
        blob = offered.asbytes()
        if blob in revoked:
            raise SourceRefused(
                f"source {self.name}: host key of {self._where} is revoked in "
                f"{self._known_hosts} (offered {kind} {fingerprint})"
            )
        if not known:
            raise SourceRefused(
                f"source {self.name}: host key of {self._where} is not in {self._known_hosts} "
                f"(offered {kind} {fingerprint})"
            )
        if all(k.asbytes() != blob for k in known):
            expected = ", ".join(f"{k.get_name()} {_fingerprint(k)}" for k in known)
            raise SourceRefused(
                f"source {self.name}: host key of {self._where} changed (possible "
                f"man-in-the-middle): offered {kind} {fingerprint}, {self._known_hosts} "
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

    def _read_known_hosts(self) -> _KnownKeys:
        assert self._known_hosts is not None
        try:
            text = self._known_hosts.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise SourceRefused(
                f"source {self.name}: cannot read known_hosts {self._known_hosts}: {exc.strerror}"
            ) from None
        # OpenSSH files non-default ports as "[host]:port", and compares names lowercased.
        name = self._host.lower() if self._port == 22 else f"[{self._host.lower()}]:{self._port}"
        return _known_keys(text, name)

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
            wanted += ["rsa-sha2-512", "rsa-sha2-256"] if kind == "ssh-rsa" else [kind]
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
    """paramiko's words for a connection that went away under it."""
    text = str(exc).lower()
    return isinstance(exc, paramiko.SSHException) and (
        "dropped" in text or "closed" in text or "eof" in text
    )


def _fingerprint(key: Any) -> str:
    """``SHA256:<base64, unpadded>``, as OpenSSH prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _known_keys(text: str, name: str) -> _KnownKeys:
    """The keys a known_hosts text has for ``name``, and every revoked key.

    paramiko's HostKeys returns one key per type and host, so a host listed with an old and
    a new key of the same type would fail half the time; it also skips ``@revoked`` and
    wildcards. This reads the lines itself and uses paramiko only to parse each one."""
    keys = []
    revoked = set()
    for raw in text.splitlines():
        line = " ".join(raw.split())  # paramiko splits on single spaces only
        if not line or line.startswith("#"):
            continue
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
        try:
            entry = HostKeyEntry.from_line(line)
        except Exception:
            # A line we cannot read trusts nothing, as with OpenSSH. (paramiko raises
            # InvalidHostKey, SSHException, binascii and struct errors, depending on the flaw.)
            continue
        if entry is None or entry.key is None:
            continue  # a key type paramiko does not know
        if marker == "@revoked":
            revoked.add(entry.key.asbytes())
        elif marker is None and _host_matches(entry.hostnames, name):
            keys.append(entry.key)
        # @cert-authority lines are skipped: host certificates are not supported.
    return keys, revoked


def _host_matches(patterns: list[str], name: str) -> bool:
    """OpenSSH's rule: some pattern matches and no negated (``!``) pattern does."""
    matched = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            # A damaged hashed name (bad base64, wrong salt size) matches nothing.
            with suppress(ValueError, AssertionError):
                matched |= paramiko.HostKeys.hash_host(name, pattern) == pattern
            continue
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").lower()
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
        if re.fullmatch(regex, name):
            if negated:
                return False
            matched = True
    return matched


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
    except OSError:
        sftp.stat(folder)  # made meanwhile by someone else: fine; else this raises


def _open_for_read(sftp: Any, path: str) -> bytes:
    """OPEN by hand rather than sftp.open(): SFTPFile.close() swallows socket errors, a
    timeout included, which would leave half a reply in the channel unnoticed."""
    kind, msg = sftp._request(CMD_OPEN, path, SFTP_FLAG_READ, paramiko.SFTPAttributes())
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("expected a handle")
    handle: bytes = msg.get_binary()
    return handle


def _close_handle(sftp: Any, handle: bytes) -> None:
    sftp._request(CMD_CLOSE, handle)


class _Replies:
    """Collects the replies to our READs. SFTPClient hands each reply to the object it has
    registered for the request number, through a weak reference: once a download is
    abandoned and this object is gone, late replies are dropped."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, Any]] = {}

    def _async_response(self, kind: int, msg: Any, num: int) -> None:
        self.got[num] = (kind, msg)


def _send_reads(
    sftp: Any, replies: _Replies, handle: bytes, reads: list[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """Send READ requests for ``(offset, length)`` pairs in one channel write; return
    ``(request number, offset, length)`` for each. SFTPClient._async_request would send
    one SSH packet per request."""
    packets = []
    sent = []
    with sftp._lock:  # request numbers are shared with SFTPClient's own requests
        for offset, length in reads:
            num = sftp.request_number
            sftp.request_number += 1
            sftp._expecting[num] = replies
            body = (
                struct.pack(">BII", CMD_READ, num, len(handle))
                + handle
                + struct.pack(">QI", offset, length)
            )
            packets.append(struct.pack(">I", len(body)) + body)
            sent.append((num, offset, length))
    sftp.sock.sendall(b"".join(packets))
    return sent


def _download(sftp: Any, handle: bytes, offset: int, size: int) -> Generator[bytes, None, None]:
    """The bytes of an open file from ``offset`` to EOF, with READs pipelined.

    Replies are used in file order. A short reply (allowed by the protocol) is followed by
    a READ for the rest, ahead of the queue; past ``size``, one READ at a time looks for
    EOF. Up to CHUNK bytes are gathered per yield."""
    replies = _Replies()
    pending: deque[tuple[int, int, int]] = deque()
    asked = offset  # where the next READ starts
    gathered: list[bytes] = []
    gathered_size = 0
    while True:
        if len(pending) <= _WINDOW - _BATCH:
            reads: list[tuple[int, int]] = []
            while len(pending) + len(reads) < _WINDOW and asked < size:
                length = min(_REQUEST, size - asked)
                reads.append((asked, length))
                asked += length
            if not pending and not reads:
                reads.append((asked, _REQUEST))
                asked += _REQUEST
            if reads:
                pending.extend(_send_reads(sftp, replies, handle, reads))
        num, at, length = pending.popleft()
        while num not in replies.got:
            sftp._read_response()  # one reply, to whichever request it answers
        kind, msg = replies.got.pop(num)
        if kind == CMD_STATUS:
            code, text = msg.get_int(), msg.get_text()
            if code == SFTP_EOF:
                break
            raise OSError(f"server error: {text}")
        if kind != CMD_DATA:
            raise paramiko.SFTPError(f"unexpected reply {kind} to a READ")
        data: bytes = msg.get_string()
        if len(data) > length:
            raise paramiko.SFTPError(f"server sent {len(data)} bytes for a READ of {length}")
        if not data:
            break
        if len(data) < length:
            pending.extendleft(
                _send_reads(sftp, replies, handle, [(at + len(data), length - len(data))])
            )
        gathered.append(data)
        gathered_size += len(data)
        if gathered_size >= CHUNK:
            yield b"".join(gathered)
            gathered, gathered_size = [], 0
    if gathered:
        yield b"".join(gathered)
