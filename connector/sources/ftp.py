"""``ftp://`` and ``ftps://`` sources (FTPS: explicit TLS, ``AUTH TLS`` then ``PROT P``).

Built on the stdlib's ftplib, with two fixes a real server needs (see the client classes):
data connections resume the control connection's TLS session, and names are passed through
byte for byte. One FTPSource holds one control connection, opened on enter; a failure that
leaves it in an unknown state (a timeout, a reset, a transfer cut short) drops it, and the
next call opens a new one, so a caller can retry on the same source.
"""

from __future__ import annotations

import builtins  # FTPSource.list hides the builtin in annotations
import contextlib
import ftplib
import io
import posixpath
import socket
import ssl
import sys
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

import structlog

from connector.actions import Action, Delete, Leave
from connector.config import SourceConfig
from connector.errors import ConnectorError, SourceRefused, TransientError
from connector.redaction import mask_echo, mask_quoted
from connector.sources.base import CHUNK, RemoteFile
from connector.sources.ftp_listing import listing_lines, mlsd_entries, parse_ls_line, utc
from connector.sources.naming import REPORT_SUFFIX, clash_free_name, hostile

_UNSUPPORTED = ("500", "502")  # command not understood / not implemented


class _FTPClient(ftplib.FTP):
    """ftplib.FTP that passes names through byte for byte.

    ftplib encodes and decodes strictly as UTF-8: one file named in Latin-1 would make every
    listing of the folder fail. surrogateescape keeps such a name as it came and sends the
    same bytes back (naming.py reads names the same way).
    """

    def putline(self, line: str) -> None:
        if "\r" in line or "\n" in line:  # as ftplib: a name must not smuggle in a command
            raise ValueError("an FTP command must not contain a line break")
        sys.audit("ftplib.sendcmd", self, line)
        assert self.sock is not None  # connected: putline is only called by commands
        self.sock.sendall(line.encode(self.encoding, "surrogateescape") + b"\r\n")

    def connect(
        self,
        host: str = "",
        port: int = 0,
        timeout: float = -999,
        source_address: tuple[str, int] | None = None,
    ) -> str:
        welcome = super().connect(host, port, timeout, source_address)
        self._read_leniently()
        return welcome

    def _read_leniently(self) -> None:
        # ftplib has just made its reply reader, strict; nothing is buffered in it yet, as
        # the server waits for our next command.
        assert self.sock is not None
        if self.file is not None:
            self.file.close()
        self.file = self.sock.makefile("r", encoding=self.encoding, errors="surrogateescape")


class _FTPSClient(_FTPClient, ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session.

    Servers such as vsftpd (``require_ssl_reuse``, on by default) refuse a data connection
    that does not, as proof that it comes from the client that logged in; stock FTP_TLS
    does not offer the session. FTPSource sends PROT P before any transfer, so every data
    connection is wrapped, and its certificate checked against the same host name.
    """

    def auth(self) -> str:
        reply = super().auth()
        self._read_leniently()
        return reply

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        try:
            assert isinstance(self.sock, ssl.SSLSocket)  # auth() ran at connect
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
        except BaseException:
            conn.close()
            raise
        return conn, size


@dataclass
class Capabilities:
    """What an FTP server was found to lack (it answered 500 or 502). Learnt by the first
    source that asks; whoever opens the next one passes it on (see registry.SourceOpener),
    so that a poll does not ask again what the last one learnt."""

    mlsd: bool = True
    mdtm: bool = True


class FTPSource:
    """A folder on an FTP or FTPS server; see the Source protocol for the contract."""

    def __init__(
        self, config: SourceConfig, password: str | None, capabilities: Capabilities | None = None
    ) -> None:
        url = urlsplit(config.url)  # (checked by the config: its port is a number)
        self._port = url.port or 21
        self.name = config.name
        self._host = url.hostname or ""
        self._user = unquote(url.username) if url.username else "anonymous"
        self._password = password or ""
        self._folder = config.remote_path
        self._timeout = config.timeout
        self._context = _tls_context(config) if config.scheme == "ftps" else None
        self._ftp: ftplib.FTP | None = None
        self._can = Capabilities() if capabilities is None else capabilities

    # -- lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Self:
        self._session()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Say goodbye (QUIT) and close; a broken connection is just closed."""
        ftp, self._ftp = self._ftp, None
        if ftp is None:
            return
        try:
            ftp.voidcmd("QUIT")
        except (ftplib.Error, OSError, EOFError):
            pass  # closing anyway: the server ends the session when the socket goes
        finally:
            ftp.close()

    def _session(self) -> ftplib.FTP:
        if self._ftp is None:
            self._ftp = self._connect()
        return self._ftp

    def _connect(self) -> ftplib.FTP:
        tls = self._context is not None
        ftp: ftplib.FTP = (
            _FTPSClient(context=self._context, timeout=self._timeout)
            if tls
            else _FTPClient(timeout=self._timeout)
        )
        address = f"{self._host}:{self._port}"
        try:
            with self._guard(f"connect to {address}", connecting=True):
                ftp.connect(self._host, self._port)
            if isinstance(ftp, _FTPSClient):
                # Before USER/PASS: the password only goes out once the certificate and
                # the host name are verified.
                with self._guard("AUTH TLS", connecting=True):
                    ftp.auth()
            if "\r" in self._password or "\n" in self._password:
                raise SourceRefused(
                    f"source {self.name}: FTP cannot send a password with a line break"
                )
            with self._guard(f"login as {self._user}", connecting=True):
                ftp.login(self._user, self._password)
            with self._guard("PROT P / TYPE I", connecting=True):
                if isinstance(ftp, _FTPSClient):
                    ftp.prot_p()  # encrypt data connections too
                ftp.voidcmd("TYPE I")  # bytes as stored; SIZE answers in bytes
            # A missing folder is transient, as for a local source: it may yet be created.
            with self._guard(f"open folder {self._folder}"):
                ftp.cwd(self._folder)
        except BaseException:
            ftp.close()
            raise
        structlog.get_logger().debug(
            "source_connected", source=self.name, host=address, user=self._user, tls=tls
        )
        return ftp

    def _drop(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is not None:
            ftp.close()

    # -- errors: translated here and nowhere else ------------------------------------

    @contextlib.contextmanager
    def _guard(self, doing: str, *, connecting: bool = False) -> Iterator[None]:
        try:
            yield
        except (ftplib.Error, OSError, EOFError) as exc:
            raise self._translate(exc, doing, connecting=connecting) from exc

    def _translate(
        self, exc: BaseException, doing: str, *, connecting: bool = False
    ) -> ConnectorError:
        """ftplib's, socket's and ssl's exceptions → TransientError or SourceRefused."""
        reply = isinstance(exc, ftplib.error_temp | ftplib.error_perm)
        if not reply or str(exc).startswith("421"):
            # Anything but a complete reply (a timeout, a reset, a garbled line) leaves the
            # control connection out of step; 421 means the server is closing it.
            self._drop()
        kind: type[ConnectorError] = SourceRefused
        if isinstance(exc, ssl.SSLCertVerificationError):
            message = f"TLS certificate of {self._host} not trusted: {exc.verify_message}"
        elif isinstance(exc, ftplib.error_perm) and str(exc).startswith("530"):
            message = f"authentication failed for user {self._user}: {exc}"
        elif isinstance(exc, ftplib.error_perm) and connecting:
            # A 5xx while setting up (AUTH TLS or PROT P refused…) will not change by itself.
            message = f"{doing} refused: {exc}"
        else:
            # 4xx, a 550 on a file (gone: retried later), resets, timeouts, TLS errors.
            kind = TransientError
            if isinstance(exc, TimeoutError):
                message = f"{doing}: no answer for {self._timeout:g}s"
            elif isinstance(exc, EOFError):
                message = f"{doing}: the server closed the connection"
            else:
                message = f"{doing}: {str(exc) or type(exc).__name__}"
        message = f"source {self.name}: {message}"
        if isinstance(exc, ftplib.Error) and self._password:
            # The server's words: a server may quote a command back, and PASS carries the
            # password. Masked in its reply alone, whatever the password's length in the
            # answer to the login; ftplib's error too, which goes on as this one's cause.
            said, login = str(exc), doing.startswith("login as ")
            message = mask_quoted(message, said, self._password, answering=login)
            exc.args = (mask_echo(said, self._password, answering=login),)
        return kind(message)

    # -- the Source protocol ---------------------------------------------------------

    def list(self) -> list[RemoteFile]:
        with self._guard(f"list {self._folder}"):
            if self._can.mlsd:
                try:
                    return self._list_mlsd()
                except ftplib.error_perm as exc:
                    if str(exc)[:3] not in _UNSUPPORTED:
                        raise
                    self._can.mlsd = False
                    structlog.get_logger().info(
                        "mlsd_refused", source=self.name, reply=str(exc), fallback="LIST"
                    )
            return self._list_ls()

    def read(self, name: str, offset: int = 0) -> Generator[bytes, None, None]:
        doing = f"RETR {name}" + (f" from byte {offset}" if offset else "")
        with self._guard(doing):
            ftp = self._session()
            conn = ftp.transfercmd(f"RETR {name}", rest=offset or None)
        awaiting_reply = True
        # One buffer, filled by recv_into: a chunk costs one copy, not an allocation per
        # recv (a TLS recv returns at most one 16 KiB record).
        buffer = memoryview(bytearray(CHUNK))
        filled = 0
        try:
            while True:
                try:
                    received = conn.recv_into(buffer[filled:])
                except OSError as exc:
                    error = self._translate(exc, doing)  # drops the connection first
                    if filled:  # bytes received are valid: a resumed read starts after them
                        yield bytes(buffer[:filled])
                    raise error from exc
                filled += received
                if filled == CHUNK or (received == 0 and filled):
                    yield bytes(buffer[:filled])
                    filled = 0
                if received == 0:
                    break
            _end_tls(conn)
            conn.close()
            awaiting_reply = False
            with self._guard(doing):
                ftp.voidresp()
        finally:
            conn.close()
            if awaiting_reply:
                self._abandon(ftp)

    def complete(self, name: str, action: Action, report: bytes | None = None) -> str | None:
        if isinstance(action, Leave):
            if report is not None:
                self.put("", name + REPORT_SUFFIX, report)
            return None
        with self._guard(f"{action} {name}"):
            ftp = self._session()
            if isinstance(action, Delete):
                ftp.delete(name)
                return None
            folder = action.folder.rstrip("/") or "/"
            # RNTO replaces an existing file on most servers, so look first. Another client
            # could still take the name in between: FTP has no rename that refuses.
            target = clash_free_name(name, lambda n: self._exists(posixpath.join(folder, n)))

            def move() -> None:
                if report is not None:
                    self._store(posixpath.join(folder, target + REPORT_SUFFIX), report)
                ftp.rename(name, posixpath.join(folder, target))

            self._into(folder, move)
        return posixpath.join(self._folder, folder, target)

    def put(self, folder: str, name: str, data: bytes) -> str:
        path = posixpath.join(folder, name) if folder else name
        with self._guard(f"write {path}"):
            self._into(folder, lambda: self._store(path, data))
        return posixpath.join(self._folder, path)

    def remove(self, folder: str, name: str) -> None:
        path = posixpath.join(folder, name) if folder else name
        with self._guard(f"remove {path}"):
            self._session().delete(path)

    # -- helpers ---------------------------------------------------------------------

    def _abandon(self, ftp: ftplib.FTP) -> None:
        """A read ended early (the consumer stopped, or the data connection failed): the
        data connection is closed, so the server ends the transfer with 426 (or 226 if it
        had sent everything). Read that reply to keep the session; else drop it."""
        if self._ftp is not ftp:
            return  # already dropped
        try:
            ftp.getresp()
        except (ftplib.error_temp, ftplib.error_perm):
            pass  # "426 transfer aborted": what closing the data connection asked for
        except (ftplib.Error, OSError, EOFError):
            self._drop()

    def _lines(self, command: str) -> tuple[builtins.list[str], str]:
        """The lines a listing command sends over a data connection, and their line break."""
        ftp = self._session()
        conn = ftp.transfercmd(command)
        data = bytearray()
        try:
            while chunk := conn.recv(1 << 16):
                data += chunk
            _end_tls(conn)
        finally:
            conn.close()
        ftp.voidresp()
        return listing_lines(bytes(data), ftp.encoding)

    def _list_mlsd(self) -> builtins.list[RemoteFile]:
        files = []
        for facts, name in mlsd_entries(*self._lines("MLSD")):
            kind = facts.get("type", "").lower()
            link = kind.startswith(("os.unix=slink", "os.unix=symlink"))
            if (kind != "file" and not link) or not name:
                continue  # folders, the folder itself ("cdir") and its parent ("pdir")
            try:
                size = -1 if link else int(facts["size"])
                mtime: float | None = utc(facts["modify"])
            except (KeyError, ValueError):
                size, mtime = -1, None  # a fact left out: ask for this file's directly
            if hostile(name) is not None:
                # Selection refuses it: listed as it is, without a round trip to size or
                # date it (no FTP command could name some of them anyway).
                files.append(RemoteFile(name, max(size, 0), mtime or 0.0))
                continue
            if size < 0:
                found = self._size(name)
                if found is None:
                    continue  # a link to a folder, or gone since the listing
                size = found
            if mtime is None:
                mtime = self._mdtm(name) or 0.0  # 0: unknown, but at least it stays still
            files.append(RemoteFile(name, size, mtime))
        return files

    def _list_ls(self) -> builtins.list[RemoteFile]:
        """LIST, for servers without MLSD (vsftpd). Its times are server-local and to the
        minute at best, so MDTM (UTC, to the second) gives each file's time when it can."""
        files = []
        now = datetime.now(UTC)
        lines, _ = self._lines("LIST")
        for line in lines:
            entry = parse_ls_line(line, now)
            if entry is None:
                continue  # "total 12", folders, devices, lines in another format
            if hostile(entry.name) is not None:  # selection refuses it: no round trip
                files.append(RemoteFile(entry.name, max(entry.size, 0), entry.mtime))
                continue
            if entry.size < 0:  # a link: only a link to a file has a SIZE
                size = self._size(entry.name)
                if size is None:
                    continue
                entry = RemoteFile(entry.name, size, entry.mtime)
            mtime = self._mdtm(entry.name)
            files.append(entry if mtime is None else RemoteFile(entry.name, entry.size, mtime))
        return files

    def _size(self, path: str) -> int | None:
        """The size of a file, or None for a folder or nothing there (550)."""
        try:
            return self._session().size(path)
        except ValueError as exc:  # (ftplib's int() of a reply that holds no size)
            raise TransientError(
                f"source {self.name}: SIZE {path!r}: the server's reply is not a size"
            ) from exc
        except ftplib.error_perm as exc:
            if str(exc)[:3] in _UNSUPPORTED:
                raise SourceRefused(
                    f"source {self.name}: the server has no SIZE command, needed to list "
                    "links and to move a file without overwriting another"
                ) from exc
            return None

    def _exists(self, path: str) -> bool:
        return self._size(path) is not None

    def _mdtm(self, name: str) -> float | None:
        """A file's UTC modification time, or None if the server cannot say."""
        if not self._can.mdtm:
            return None
        try:
            reply = self._session().sendcmd(f"MDTM {name}")
        except ftplib.error_perm as exc:
            if str(exc)[:3] in _UNSUPPORTED:
                self._can.mdtm = False
            return None  # 550: gone since the listing; its listed time will do
        code, _, stamp = reply.partition(" ")
        try:
            return utc(stamp.strip()) if code == "213" else None
        except ValueError:
            return None

    def _make_folder(self, folder: str) -> str | None:
        """Make ``folder`` and its parents; the server's last refusal, if any. "550 exists"
        is the usual answer after the first move, and FTP cannot tell it from a real
        refusal: a real one shows at the next step (RNTO, STOR), which then says this."""
        path = PurePosixPath(folder)
        refusal = None
        for part in [*reversed(path.parents), path]:
            if str(part) in (".", "/"):
                continue
            try:
                self._session().voidcmd(f"MKD {part}")
            except ftplib.error_perm as exc:
                refusal = str(exc)
        return refusal

    def _into(self, folder: str, write: Callable[[], object]) -> None:
        """``write`` into ``folder``, made first if missing. When making it was refused
        and the write fails, the refusal is the likely cause, and is said first (the
        server's answer to RNTO or STOR into a folder it would not make says little)."""
        refusal = self._make_folder(folder) if folder else None
        try:
            write()
        except ftplib.error_perm as exc:
            if refusal is None:
                raise
            raise ftplib.error_perm(f"making folder {folder}: {refusal} (then: {exc})") from exc

    def _store(self, path: str, data: bytes) -> None:
        self._session().storbinary(f"STOR {path}", io.BytesIO(data))


def _tls_context(config: SourceConfig) -> ssl.SSLContext:
    """Certificate and host name checked, against ca_file or else the system's CAs."""
    try:
        return ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    except OSError as exc:  # (checked at start-up: changed since, it is the operator's to fix)
        raise SourceRefused(f"source {config.name}: ca_file: cannot load: {exc}") from None


def _end_tls(conn: socket.socket) -> None:
    # As ftplib does after a transfer: answer the server's close_notify. The data is all
    # in by now and the server's reply has the last word, so a failure here is moot.
    if isinstance(conn, ssl.SSLSocket):
        with contextlib.suppress(OSError):
            conn.unwrap()
