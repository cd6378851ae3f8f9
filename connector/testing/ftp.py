"""An embedded FTP/FTPS server (pyftpdlib) on loopback, in a thread.

    with EmbeddedFTPServer(tls=True) as server:
        ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=server.ca_file))
        ftp.connect(server.host, server.port)

The server serves one user with full permissions on its root folder. Each
instance builds its own handler subclass and its own IO loop: pyftpdlib keeps
handler options (authorizer, certificate, cached SSL context) in class
attributes and has a process-wide default IO loop, so sharing them would leak
one server's settings into the next.

TLS session reuse: pyftpdlib does not require a data connection to resume the
control connection's TLS session (unlike vsftpd's `require_ssl_reuse`), so
stock `ftplib.FTP_TLS` works; it does resume a session when the client offers
one. `require_session_reuse=True` makes this server strict like vsftpd, to
test clients against such servers.
"""

# pyftpdlib ships no type information: its names are Any to mypy, and the
# handler classes must still be subclassed.
# mypy: disable-error-code="import-untyped"
# mypy: disallow-subclassing-any=False

from __future__ import annotations

import logging
import re
import secrets
import tempfile
import threading
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

from OpenSSL._util import lib as _openssl  # only for SSL_session_reused, see below

from connector.testing.certs import TLSFiles, make_tls_files
from connector.testing.proxy import Fault, FaultPlan, FaultProxy

with warnings.catch_warnings():
    # pyftpdlib imports asyncore and asynchat, deprecated since Python 3.11;
    # the warning is about pyftpdlib, and our tests turn warnings into errors.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
    from pyftpdlib.handlers.ftps.data import TLS_DTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

__all__ = ["EmbeddedFTPServer"]

_POLL_SECONDS = 0.05
_TRANSFER_COMMANDS = frozenset({"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"})
_PASV = re.compile(r"^227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")
_EPSV = re.compile(r"^229 .*\(\|\|\|(\d+)\|\)")


def _quiet_pyftpdlib_logging() -> None:
    """Keep pyftpdlib from printing a line per command.

    Without a handler of its own, pyftpdlib installs a stderr handler at
    start-up. A NullHandler stops that, and WARNING (unless someone chose a
    level) drops the per-command INFO lines; warnings and errors still reach
    the root logger, where pytest captures them.
    """
    logger = logging.getLogger("pyftpdlib")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


class _CountingAuthorizer(DummyAuthorizer):
    """A DummyAuthorizer that counts login attempts, like the SFTP server."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        self.attempts += 1
        super().validate_authentication(username, password, handler)


class _HarnessHandler(FTPHandler):
    """Mixed in front of FTPHandler or TLS_FTPHandler for each server."""

    harness: EmbeddedFTPServer
    _transfer_command: str | None = None

    def process_command(self, cmd: str, *args: Any, **kwargs: Any) -> None:
        # The data proxy asks for this once the transfer starts, to fault
        # only the commands chosen by set_data_fault().
        if cmd in _TRANSFER_COMMANDS:
            self._transfer_command = cmd
        super().process_command(cmd, *args, **kwargs)

    def respond(self, resp: str, *args: Any, **kwargs: Any) -> None:
        super().respond(self.harness._advertise(resp, self), *args, **kwargs)


class _StrictTLSDataHandler(TLS_DTPHandler):
    """Refuses a protected data connection that did not resume the session.

    This is vsftpd's `require_ssl_reuse`: it proves the data connection comes
    from the client that authenticated on the control connection. pyOpenSSL
    has no public call for "was this session resumed", hence the binding.
    """

    def handle_ssl_established(self) -> None:
        if not _openssl.SSL_session_reused(self.socket._ssl):
            self.cmd_channel.respond("522 SSL connection failed: session reuse required")
            self.close()
            return
        super().handle_ssl_established()


class EmbeddedFTPServer:
    """pyftpdlib on 127.0.0.1 (a free port), serving `root` to one user.

    `root` defaults to a temporary folder removed on exit. With `tls=True`
    the server requires TLS on the control and the data connections (explicit
    FTPS: AUTH TLS, PBSZ 0, PROT P), using `tls_files` or a fresh certificate
    for localhost/127.0.0.1 whose CA is `ca_file`.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        user: str = "ingest",
        password: str | None = None,
        tls: bool = False,
        tls_files: TLSFiles | None = None,
        require_session_reuse: bool = False,
    ) -> None:
        if (tls_files is not None or require_session_reuse) and not tls:
            raise ValueError("tls_files and require_session_reuse need tls=True")
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="connector-ftp-")
            root = Path(self._tempdir.name)
        root.mkdir(parents=True, exist_ok=True)
        # pyftpdlib compares real paths to keep clients inside the root.
        self.root = root.resolve()
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.tls = tls
        self.host = "127.0.0.1"
        self.port = 0
        self._cert_dir: tempfile.TemporaryDirectory[str] | None = None
        if tls and tls_files is None:
            # Keys live outside the served root, so no client can download them.
            self._cert_dir = tempfile.TemporaryDirectory(prefix="connector-ftp-tls-")
            tls_files = make_tls_files(Path(self._cert_dir.name))
        self._tls_files = tls_files
        self._require_session_reuse = require_session_reuse
        self._authorizer = _CountingAuthorizer()
        self._data_plan = FaultPlan()
        self._data_commands: frozenset[str] = frozenset()
        self._data_proxies: list[FaultProxy] = []
        self._proxies_lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- what a client needs ---------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """The CA file a client should trust (TLS servers only)."""
        if self._tls_files is None:
            raise AttributeError("ca_file: this server does not use TLS")
        return self._tls_files.ca_file

    @property
    def url(self) -> str:
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/"

    @property
    def auth_attempts(self) -> int:
        """How many USER/PASS pairs the server has checked."""
        return int(self._authorizer.attempts)

    # -- faults on data connections -------------------------------------------

    def set_data_fault(self, fault: Fault | None, *, commands: Collection[str] = ("RETR",)) -> None:
        """Apply `fault` to passive data connections serving `commands`.

        From now on each PASV/EPSV reply names a one-connection `FaultProxy`
        in front of the real data port (see `connector.testing.proxy`).
        "First connection" counts only data connections of those commands.
        `None` turns it off.
        """
        self._data_commands = frozenset(c.upper() for c in commands)
        self._data_plan.replace(fault)

    @property
    def data_faults_applied(self) -> int:
        return self._data_plan.faults_applied

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> EmbeddedFTPServer:
        _quiet_pyftpdlib_logging()
        self._authorizer.add_user(self.user, self.password, str(self.root), perm="elradfmwMT")
        self._server = FTPServer((self.host, 0), self._handler_class(), ioloop=IOLoop())
        self.port = int(self._server.address[1])
        self._thread = threading.Thread(
            target=self._serve, name=f"connector-testing-ftp-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Disconnect every client, stop the thread, remove a temporary root."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        elif self._server is not None:
            self._server.close_all()
        with self._proxies_lock:
            proxies, self._data_proxies = self._data_proxies, []
        for proxy in proxies:
            proxy.close()
        for tempdir in (self._tempdir, self._cert_dir):
            if tempdir is not None:
                tempdir.cleanup()

    def __enter__(self) -> EmbeddedFTPServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _handler_class(self) -> type[Any]:
        attributes: dict[str, Any] = {
            "harness": self,
            "authorizer": self._authorizer,
            "banner": "connector test FTP server ready.",
            # pyftpdlib waits 3 s before answering a wrong password, to slow
            # down guessing; tests of bad credentials should not wait.
            "auth_failed_timeout": 0,
            # Names byte for byte, as vsftpd and ProFTPD send them: pyftpdlib would
            # otherwise replace bytes that are not UTF-8, and a client could never be
            # tested against such a name.
            "unicode_errors": "surrogateescape",
        }
        base: type[Any] = FTPHandler
        if self._tls_files is not None:
            base = TLS_FTPHandler
            attributes |= {
                "certfile": str(self._tls_files.cert_file),
                "keyfile": str(self._tls_files.key_file),
                "ssl_context": None,  # built (and cached) per subclass
                "tls_control_required": True,
                "tls_data_required": True,
            }
            if self._require_session_reuse:
                attributes["dtp_handler"] = _StrictTLSDataHandler
        return type(f"Handler{id(self):x}", (_HarnessHandler, base), attributes)

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                self._server.serve_forever(timeout=_POLL_SECONDS, blocking=False, handle_exit=False)
            # One last turn runs callbacks already due (a login failure
            # answer re-registers its socket), so close_all() sees them all.
            self._server.serve_forever(timeout=0, blocking=False, handle_exit=False)
        finally:
            self._server.close_all()

    def _advertise(self, resp: str, handler: _HarnessHandler) -> str:
        """Rewrite a passive-mode reply to go through a data FaultProxy."""
        if self._data_plan.fault is None:
            return resp
        if match := _PASV.match(resp):
            port = int(match[5]) * 256 + int(match[6])
        elif match := _EPSV.match(resp):
            port = int(match[1])
        else:
            return resp
        commands = self._data_commands
        proxy = FaultProxy(
            self.host,
            port,
            plan=self._data_plan,
            applies=lambda: handler._transfer_command in commands,
            single_use=True,
        ).start()
        with self._proxies_lock:
            self._data_proxies.append(proxy)
        if match.re is _PASV:
            return f"227 Entering passive mode (127,0,0,1,{proxy.port // 256},{proxy.port % 256})."
        return f"229 Entering extended passive mode (|||{proxy.port}|)."
