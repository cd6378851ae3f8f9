"""The embedded-server harness (`connector.testing`), checked with real clients."""

# paramiko ships no type information.
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import base64
import ftplib
import gc
import hashlib
import io
import os
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import pytest

from connector.testing import (
    EmbeddedFTPServer,
    EmbeddedSFTPServer,
    Fault,
    FaultProxy,
    make_ssh_key,
    make_untrusted_tls_files,
    make_wrong_hostname_tls_files,
)

if TYPE_CHECKING:
    # Imported for typing only: importing the plugin before pytest registers
    # it would stop pytest from rewriting its asserts (and warn).
    from connector.testing.plugin import FaultProxyFactory

# Slow (pyproject's `slow` marker): embedded FTP/FTPS/SFTP servers and fault proxies.
pytestmark = pytest.mark.slow

PAYLOAD = bytes(range(256)) * 1024  # 256 KiB, recognisable at any offset


# -- helpers ---------------------------------------------------------------------


def _harness_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("connector-testing")]


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Every test must leave no harness thread behind (checked after teardown)."""
    yield
    assert _harness_threads() == []


def _ftp(server: EmbeddedFTPServer) -> ftplib.FTP:
    client = ftplib.FTP(timeout=5)
    client.connect(server.host, server.port)
    client.login(server.user, server.password)
    return client


def _ftps(server: EmbeddedFTPServer, cls: type[ftplib.FTP_TLS] = ftplib.FTP_TLS) -> ftplib.FTP_TLS:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    client = cls(context=context, timeout=5)
    client.connect(server.host, server.port)
    client.login(server.user, server.password)
    client.prot_p()
    return client


def _retr(client: ftplib.FTP, name: str) -> bytes:
    buffer = io.BytesIO()
    client.retrbinary(f"RETR {name}", buffer.write)
    return buffer.getvalue()


class _SessionReusingFTP_TLS(ftplib.FTP_TLS):  # noqa: N801 - named after ftplib's class
    """FTP_TLS that resumes the control connection's TLS session on data connections."""

    reused: list[bool | None]

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            assert isinstance(self.sock, ssl.SSLSocket)
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
            self.reused = [*getattr(self, "reused", []), conn.session_reused]
        return conn, size


def _ssh(
    server: EmbeddedSFTPServer,
    known_hosts: Path,
    *,
    port: int | None = None,
    **credentials: str,
) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    credentials = credentials or {"password": server.password}
    try:
        client.connect(
            server.host,
            port or server.port,
            username=server.user,
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
            **credentials,
        )
    except BaseException:
        client.close()
        raise
    return client


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5)
        with self.request:
            while data := self.request.recv(65536):
                self.request.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A plain TCP echo server on loopback."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        yield server.server_address[:2]  # type: ignore[misc]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _echo(port: int, data: bytes, timeout: float = 2.0) -> tuple[bytes, BaseException | None]:
    """Send `data` through an echo server; what came back, and the error that ended it."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while len(received) < len(data):
                chunk = sock.recv(65536)
                if not chunk:
                    return bytes(received), EOFError("closed cleanly")
                received += chunk
        except OSError as error:
            return bytes(received), error
    return bytes(received), None


# -- FTP -----------------------------------------------------------------------------


def test_ftp_login_list_upload_download(ftp_server: EmbeddedFTPServer) -> None:
    """A stock ftplib client logs in, lists, uploads and downloads on the FTP server."""
    (ftp_server.root / "contacts_1.csv").write_bytes(PAYLOAD)
    client = _ftp(ftp_server)
    try:
        assert client.nlst() == ["contacts_1.csv"]
        client.storbinary("STOR up.csv", io.BytesIO(b"a,b\n1,2\n"))
        assert _retr(client, "contacts_1.csv") == PAYLOAD
    finally:
        client.quit()
    assert (ftp_server.root / "up.csv").read_bytes() == b"a,b\n1,2\n"
    assert ftp_server.url == f"ftp://ingest@127.0.0.1:{ftp_server.port}/"


def test_ftp_wrong_password_is_refused_and_counted(ftp_server: EmbeddedFTPServer) -> None:
    """A wrong FTP password gets 530 at once, and the server counts the attempt."""
    client = ftplib.FTP(timeout=5)
    client.connect(ftp_server.host, ftp_server.port)
    try:
        started = time.monotonic()
        with pytest.raises(ftplib.error_perm, match="530"):
            client.login(ftp_server.user, "wrong")
        assert time.monotonic() - started < 1  # pyftpdlib's 3 s delay is off
    finally:
        client.close()
    assert ftp_server.auth_attempts == 1


def test_ftps_refuses_login_without_tls(ftps_server: EmbeddedFTPServer) -> None:
    """The FTPS server refuses USER on a control connection that has not done AUTH TLS."""
    client = ftplib.FTP(timeout=5)
    client.connect(ftps_server.host, ftps_server.port)
    try:
        with pytest.raises(ftplib.error_perm, match="550 SSL/TLS required"):
            client.login(ftps_server.user, ftps_server.password)
    finally:
        client.close()


def test_ftps_refuses_clear_data_connections(ftps_server: EmbeddedFTPServer) -> None:
    """The FTPS server refuses PASV until the client has sent PROT P."""
    context = ssl.create_default_context(cafile=str(ftps_server.ca_file))
    client = ftplib.FTP_TLS(context=context, timeout=5)
    client.connect(ftps_server.host, ftps_server.port)
    try:
        client.login(ftps_server.user, ftps_server.password)
        with pytest.raises(ftplib.error_perm, match="550 SSL/TLS required on the data"):
            client.nlst()
    finally:
        client.close()


def test_ftps_stock_ftplib_lists_and_downloads(ftps_server: EmbeddedFTPServer) -> None:
    """Stock FTP_TLS (no TLS session reuse) verifies 127.0.0.1 against the CA, lists, downloads."""
    (ftps_server.root / "events.csv").write_bytes(PAYLOAD)
    client = _ftps(ftps_server)
    try:
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.getpeercert() is not None  # verified, hostname included
        assert client.nlst() == ["events.csv"]
        assert _retr(client, "events.csv") == PAYLOAD
    finally:
        client.quit()
    assert ftps_server.url.startswith("ftps://ingest@127.0.0.1:")


def test_ftps_resumes_session_when_client_offers_it(ftps_server: EmbeddedFTPServer) -> None:
    """pyftpdlib resumes the control connection's TLS session on data connections when offered."""
    (ftps_server.root / "a.csv").write_bytes(b"x")
    client = _ftps(ftps_server, _SessionReusingFTP_TLS)
    assert isinstance(client, _SessionReusingFTP_TLS)
    try:
        assert client.nlst() == ["a.csv"]
        assert _retr(client, "a.csv") == b"x"
    finally:
        client.quit()
    assert client.reused == [True, True]


def test_ftps_strict_server_requires_session_reuse(tmp_path: Path) -> None:
    """With require_session_reuse, stock FTP_TLS gets 522 and a resuming client succeeds."""
    with EmbeddedFTPServer(tmp_path, tls=True, require_session_reuse=True) as server:
        (server.root / "a.csv").write_bytes(b"x")
        stock = _ftps(server)
        try:
            with pytest.raises(ftplib.error_perm, match="522"):
                stock.nlst()
        finally:
            stock.close()
        resuming = _ftps(server, _SessionReusingFTP_TLS)
        try:
            assert resuming.nlst() == ["a.csv"]
        finally:
            resuming.quit()


def test_ftps_untrusted_certificate_is_rejected(tmp_path: Path) -> None:
    """A client trusting ca_file rejects a server certificate from another CA."""
    files = make_untrusted_tls_files(tmp_path)
    with (
        EmbeddedFTPServer(tmp_path / "root", tls=True, tls_files=files) as server,
        pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
    ):
        _ftps(server).close()


def test_ftps_wrong_hostname_is_rejected(tmp_path: Path) -> None:
    """A client rejects a trusted certificate issued for another host name."""
    files = make_wrong_hostname_tls_files(tmp_path)
    with (
        EmbeddedFTPServer(tmp_path / "root", tls=True, tls_files=files) as server,
        pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"),
    ):
        _ftps(server).close()


def test_ftp_handler_options_do_not_leak_between_servers(tmp_path: Path) -> None:
    """Two FTPS servers and a plain one run at once, each with its own certificate and rules."""
    with (
        EmbeddedFTPServer(tls=True) as first,
        EmbeddedFTPServer(tls=True) as second,
        EmbeddedFTPServer() as plain,
    ):
        for server in (first, second):
            (server.root / "f").write_bytes(b"x")
            client = _ftps(server)  # verifies against this server's own CA
            try:
                assert client.nlst() == ["f"]
            finally:
                client.quit()
        _ftp(plain).quit()  # no TLS demanded: the TLS options stayed in their classes
        assert first.ca_file.read_bytes() != second.ca_file.read_bytes()


def test_ftp_data_fault_resets_first_download_only(ftp_server: EmbeddedFTPServer) -> None:
    """A RETR data fault resets the first download, spares LIST, and lets a retry succeed."""
    (ftp_server.root / "big.csv").write_bytes(PAYLOAD)
    ftp_server.set_data_fault(Fault(reset_after=10_000))
    client = _ftp(ftp_server)
    try:
        assert client.nlst() == ["big.csv"]  # LIST is not a RETR: untouched
        with pytest.raises(ConnectionResetError):
            _retr(client, "big.csv")
    finally:
        client.close()
    retry = _ftp(ftp_server)
    try:
        assert _retr(retry, "big.csv") == PAYLOAD
    finally:
        retry.quit()
    assert ftp_server.data_faults_applied == 1


def test_ftps_data_fault_stalls_download(ftps_server: EmbeddedFTPServer) -> None:
    """An FTPS data stall leaves the client waiting until its own timeout fires."""
    (ftps_server.root / "big.csv").write_bytes(PAYLOAD)
    ftps_server.set_data_fault(Fault(stall_after=20_000))
    client = _ftps(ftps_server)
    client.timeout = 0.4  # data connections get this timeout
    try:
        with pytest.raises(TimeoutError):
            _retr(client, "big.csv")
    finally:
        client.close()
    assert ftps_server.data_faults_applied == 1


# -- SFTP ----------------------------------------------------------------------------


def test_sftp_list_read_at_offset_rename_remove(
    sftp_server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """paramiko with RejectPolicy and the server's known_hosts lists, seeks, renames, removes."""
    target = sftp_server.root / "contacts.csv"
    target.write_bytes(PAYLOAD)
    os.utime(target, (1_700_000_000, 1_700_000_000))
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    with _ssh(sftp_server, known_hosts) as client, client.open_sftp() as sftp:
        [entry] = sftp.listdir_attr("/")
        assert (entry.filename, entry.st_size, entry.st_mtime) == (
            "contacts.csv",
            len(PAYLOAD),
            1_700_000_000,
        )
        with sftp.open("contacts.csv", "rb") as remote:
            remote.seek(100_000)
            assert remote.read(1000) == PAYLOAD[100_000:101_000]
        sftp.mkdir("processed")
        sftp.rename("contacts.csv", "processed/contacts.csv")
        assert sftp.stat("processed/contacts.csv").st_size == len(PAYLOAD)
        sftp.remove("processed/contacts.csv")
        assert sftp.listdir("processed") == []
    assert sftp_server.auth_attempts == 1
    assert sftp_server.url == f"sftp://ingest@127.0.0.1:{sftp_server.port}/"


def test_sftp_prefetched_download_is_complete(
    sftp_server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """A prefetching download (many reads at offsets in flight) returns every byte."""
    (sftp_server.root / "big.csv").write_bytes(PAYLOAD * 4)
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    with _ssh(sftp_server, known_hosts) as client, client.open_sftp() as sftp:
        sftp.get("big.csv", str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == PAYLOAD * 4


def test_sftp_rename_refuses_overwrite_posix_rename_replaces(
    sftp_server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """Plain SFTP rename refuses an existing target (as OpenSSH); posix-rename replaces it."""
    (sftp_server.root / "a").write_bytes(b"a")
    (sftp_server.root / "b").write_bytes(b"b")
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    with _ssh(sftp_server, known_hosts) as client, client.open_sftp() as sftp:
        with pytest.raises(OSError, match="Failure"):
            sftp.rename("a", "b")
        sftp.posix_rename("a", "b")
    assert (sftp_server.root / "b").read_bytes() == b"a"
    assert not (sftp_server.root / "a").exists()


def test_sftp_paths_cannot_leave_the_root(sftp_server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """'..' stops at the root and a symlink pointing outside it is refused."""
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"secret")
    (sftp_server.root / "link").symlink_to(outside)
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    with _ssh(sftp_server, known_hosts) as client, client.open_sftp() as sftp:
        assert sorted(sftp.listdir("/../..")) == ["link"]
        with pytest.raises(FileNotFoundError):
            sftp.stat("/../secret.txt")
        with pytest.raises(PermissionError):
            sftp.open("link").read()
        assert sftp.normalize("../a/./b") == "/a/b"


def test_sftp_public_key_login(sftp_server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """A client logs in with an authorized Ed25519 key file; an unknown key is refused."""
    good = make_ssh_key(tmp_path / "good")
    bad = make_ssh_key(tmp_path / "bad")
    sftp_server.authorize(good.key)
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    assert good.private_key_file.stat().st_mode & 0o777 == 0o600
    with _ssh(sftp_server, known_hosts, key_filename=str(good.private_key_file)) as client:
        assert client.open_sftp().listdir() == []
    with pytest.raises(paramiko.AuthenticationException):
        _ssh(sftp_server, known_hosts, key_filename=str(bad.private_key_file))
    assert sftp_server.auth_attempts == 2


def test_sftp_wrong_password_is_counted(sftp_server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """A wrong password fails authentication and counts one attempt."""
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    with pytest.raises(paramiko.AuthenticationException):
        _ssh(sftp_server, known_hosts, password="wrong")
    assert sftp_server.auth_attempts == 1


def test_sftp_host_key_mismatch_makes_no_auth_attempt(
    sftp_server: EmbeddedSFTPServer, tmp_path: Path
) -> None:
    """A client whose known_hosts holds another key for the address stops before authenticating."""
    with EmbeddedSFTPServer() as other:  # same key type, another key
        key = other.known_hosts_line().split(" ", 1)[1]
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{sftp_server.port} {key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        _ssh(sftp_server, tmp_path / "known_hosts")
    assert sftp_server.auth_attempts == 0


def test_sftp_unknown_host_is_rejected(sftp_server: EmbeddedSFTPServer, tmp_path: Path) -> None:
    """With RejectPolicy and an empty known_hosts the client refuses the server, no auth tried."""
    (tmp_path / "known_hosts").write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _ssh(sftp_server, tmp_path / "known_hosts")
    assert sftp_server.auth_attempts == 0


def test_sftp_fingerprint_is_openssh_sha256(sftp_server: EmbeddedSFTPServer) -> None:
    """The fingerprint is SHA256 of the key blob, base64 without padding, as ssh-keygen -l."""
    line = sftp_server.known_hosts_line()
    blob = base64.b64decode(line.split()[2])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert sftp_server.fingerprint == f"SHA256:{digest}"
    assert line.startswith(f"[127.0.0.1]:{sftp_server.port} ssh-ed25519 ")


# -- fault proxy ---------------------------------------------------------------------


def test_fault_rejects_contradictions() -> None:
    """A Fault cannot both reset and stall, nor take negative values."""
    with pytest.raises(ValueError, match="not both"):
        Fault(reset_after=1, stall_after=1)
    with pytest.raises(ValueError, match=">= 0"):
        Fault(reset_after=-1)


def test_proxy_without_fault_forwards_everything(
    echo_server: tuple[str, int], fault_proxy: FaultProxyFactory
) -> None:
    """Without a fault the proxy is transparent in both directions."""
    proxy = fault_proxy(echo_server)
    assert _echo(proxy.port, PAYLOAD) == (PAYLOAD, None)
    assert (proxy.connections, proxy.faults_applied) == (1, 0)


def test_proxy_resets_first_connection_then_passes(
    echo_server: tuple[str, int], fault_proxy: FaultProxyFactory
) -> None:
    """reset_after resets the first connection after at most N bytes; the next one passes."""
    proxy = fault_proxy(echo_server, Fault(reset_after=1000))
    received, error = _echo(proxy.port, PAYLOAD)
    assert isinstance(error, ConnectionResetError)
    assert received == PAYLOAD[: len(received)]
    assert len(received) <= 1000
    assert _echo(proxy.port, PAYLOAD) == (PAYLOAD, None)
    assert proxy.faults_applied == 1


def test_proxy_can_fault_every_connection(
    echo_server: tuple[str, int], fault_proxy: FaultProxyFactory
) -> None:
    """every_connection=True resets each connection, so a retry fails too."""
    proxy = fault_proxy(echo_server, Fault(reset_after=0, every_connection=True))
    for _ in range(2):
        received, error = _echo(proxy.port, b"hello")
        assert (received, type(error)) == (b"", ConnectionResetError)
    assert proxy.faults_applied == 2


def test_proxy_stall_keeps_connection_open_and_silent(
    echo_server: tuple[str, int], fault_proxy: FaultProxyFactory
) -> None:
    """stall_after forwards exactly N bytes, then nothing, without closing the connection."""
    proxy = fault_proxy(echo_server, Fault(stall_after=1000))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(PAYLOAD)
        received = bytearray()
        while len(received) < 1000:
            received += sock.recv(65536)
        assert received == PAYLOAD[:1000]
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(65536)  # neither more data nor EOF: the line is just dead


def test_proxy_latency_delays_each_chunk(
    echo_server: tuple[str, int], fault_proxy: FaultProxyFactory
) -> None:
    """latency delays data from the server by at least the given time."""
    proxy = fault_proxy(echo_server, Fault(latency=0.2))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert sock.recv(10) == b"ping"
        assert time.monotonic() - started >= 0.2


def test_sftp_download_reset_by_proxy_then_retry_succeeds(
    sftp_server: EmbeddedSFTPServer, fault_proxy: FaultProxyFactory, tmp_path: Path
) -> None:
    """An SFTP download reset mid-transfer fails; a new connection through the proxy succeeds."""
    (sftp_server.root / "big.csv").write_bytes(PAYLOAD * 4)
    proxy = fault_proxy(sftp_server, Fault(reset_after=300_000))
    # The client connects to the proxy's port, so the host key is filed under it.
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts", port=proxy.port)
    with (
        _ssh(sftp_server, known_hosts, port=proxy.port) as client,
        pytest.raises((OSError, EOFError, paramiko.SSHException)),
        client.open_sftp() as sftp,
    ):
        # No prefetch: paramiko's prefetch thread dies with an unhandled
        # EOFError when the connection drops (paramiko issue #2379).
        sftp.getfo("big.csv", io.BytesIO(), prefetch=False)
    with _ssh(sftp_server, known_hosts, port=proxy.port) as client, client.open_sftp() as sftp:
        copy = io.BytesIO()
        sftp.getfo("big.csv", copy)
    assert copy.getvalue() == PAYLOAD * 4
    assert (proxy.connections, proxy.faults_applied, sftp_server.auth_attempts) == (2, 1, 2)


# -- lifecycle -----------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds in /proc")
def test_servers_release_every_socket(tmp_path: Path) -> None:
    """Starting, using and closing every server leaves no open file descriptor."""
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    with EmbeddedFTPServer(tls=True) as ftps, EmbeddedSFTPServer() as sftp_server:
        (ftps.root / "f").write_bytes(b"x")
        with FaultProxy(sftp_server.host, sftp_server.port) as proxy:
            client = _ftps(ftps)
            assert _retr(client, "f") == b"x"
            client.quit()
            known_hosts = sftp_server.write_known_hosts(tmp_path / "kh", port=proxy.port)
            with _ssh(sftp_server, known_hosts, port=proxy.port) as ssh:
                ssh.open_sftp().listdir()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before
