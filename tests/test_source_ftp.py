"""ftp:// and ftps:// sources: the shared Source contract and FTP's own failure modes,
against pyftpdlib on loopback (FTPS as strict as vsftpd: TLS session reuse required)."""

from __future__ import annotations

import gc
import hashlib
import os
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import GeneratorType
from typing import Any

import pytest
import structlog

from connector.errors import SourceRefused, TransientError
from connector.sources.base import CHUNK, RemoteFile
from connector.sources.ftp import FTPSource
from connector.sources.ftp_listing import listing_lines, mlsd_entries, parse_ls_line, utc
from connector.sources.registry import SourceOpener
from connector.testing import (
    EmbeddedFTPServer,
    Fault,
    make_untrusted_tls_files,
    make_wrong_hostname_tls_files,
)
from tests.helpers import server_config
from tests.source_contract import Remote, SourceContract, use_fully

# Slow (pyproject's `slow` marker): embedded FTP/FTPS servers (and fault proxies).
pytestmark = pytest.mark.slow

SENTINEL = "pw-SENTINEL-5f0c9e"  # a password that must never be seen anywhere


class _NoMLSDServer(EmbeddedFTPServer):
    """Like vsftpd: no MLSD or MLST, so a client must read LIST."""

    def _handler_class(self) -> type[Any]:
        handler = super()._handler_class()
        commands = {k: v for k, v in handler.proto_cmds.items() if k not in ("MLSD", "MLST")}
        return type(handler.__name__, (handler,), {"proto_cmds": commands})


class _GarbledSizeServer(_NoMLSDServer):
    """Answers SIZE with a reply that holds no number (a hostile or broken server)."""

    def _handler_class(self) -> type[Any]:
        handler = super()._handler_class()

        def ftp_SIZE(self: Any, path: str) -> None:  # noqa: N802 (pyftpdlib's naming)
            self.respond("213 " + "9" * 5_000 + "x")

        return type(handler.__name__, (handler,), {"ftp_SIZE": ftp_SIZE})


class _FactlessFoldersServer(EmbeddedFTPServer):
    """Lists folders with no facts at all (RFC 3659 lets a server leave out any): their MLSD
    entries are a space and a name. Entries come in name order."""

    def _handler_class(self) -> type[Any]:
        handler = super()._handler_class()
        base = handler.abstracted_fs

        def format_mlsx(fs: Any, basedir: str, listing: list[str], *args: Any) -> Iterator[bytes]:
            for line in base.format_mlsx(fs, basedir, sorted(listing), *args):
                facts, space, name = line.partition(b" ")
                yield space + name if b"type=dir;" in facts else line

        filesystem = type("FactlessFolders", (base,), {"format_mlsx": format_mlsx})
        return type(handler.__name__, (handler,), {"abstracted_fs": filesystem})


def _source(server: EmbeddedFTPServer, **options: Any) -> FTPSource:
    return FTPSource(server_config(server, **options), server.password)


def _remote(server: EmbeddedFTPServer) -> Remote:
    return Remote(root=server.root, connect=lambda: _source(server))


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Every server and fault proxy is gone once a test ends."""
    yield
    assert [t.name for t in threading.enumerate() if t.name.startswith("connector-testing")] == []


@pytest.fixture(params=["ftp", "ftps"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedFTPServer]:
    """A plain FTP server, then a strict FTPS one."""
    tls = request.param == "ftps"
    with EmbeddedFTPServer(tmp_path / "root", tls=tls, require_session_reuse=tls) as server:
        yield server


class TestFTPContract(SourceContract):
    @pytest.fixture
    def remote(self, tmp_path: Path) -> Iterator[Remote]:
        with EmbeddedFTPServer(tmp_path / "root") as server:
            yield _remote(server)


class TestFTPSContract(SourceContract):
    @pytest.fixture
    def remote(self, tmp_path: Path) -> Iterator[Remote]:
        with EmbeddedFTPServer(tmp_path / "root", tls=True, require_session_reuse=True) as server:
            yield _remote(server)


class TestFTPSWithoutMLSDContract(SourceContract):
    @pytest.fixture
    def remote(self, tmp_path: Path) -> Iterator[Remote]:
        with _NoMLSDServer(tmp_path / "root", tls=True, require_session_reuse=True) as server:
            yield _remote(server)


# -- who is trusted --------------------------------------------------------------------


def test_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    """A certificate from a CA other than ca_file is refused before any password is sent."""
    files = make_untrusted_tls_files(tmp_path / "tls")
    with EmbeddedFTPServer(tmp_path / "root", tls=True, tls_files=files) as server:
        with (
            pytest.raises(SourceRefused, match=r"^source acme: TLS certificate of 127\.0\.0\.1 "),
            _source(server),
        ):
            pass
        assert server.auth_attempts == 0


def test_wrong_hostname_is_refused(tmp_path: Path) -> None:
    """A trusted certificate issued for another host is refused before any password is sent."""
    files = make_wrong_hostname_tls_files(tmp_path / "tls")
    with EmbeddedFTPServer(tmp_path / "root", tls=True, tls_files=files) as server:
        with (
            pytest.raises(SourceRefused, match="not trusted: IP address mismatch"),
            _source(server),
        ):
            pass
        assert server.auth_attempts == 0


def test_ftps_never_falls_back_to_plaintext(tmp_path: Path) -> None:
    """An ftps:// source refuses a server that cannot do TLS, and sends it no password."""
    with EmbeddedFTPServer(tmp_path / "root") as server:
        url = server.url.replace("ftp://", "ftps://")
        with pytest.raises(SourceRefused, match="AUTH TLS refused: 500"), _source(server, url=url):
            pass
        assert server.auth_attempts == 0


def test_wrong_password_is_refused_without_showing_it(server: EmbeddedFTPServer) -> None:
    """A wrong password is SourceRefused naming the user, never the password."""
    with pytest.raises(SourceRefused) as caught, FTPSource(server_config(server), SENTINEL):
        pass
    assert str(caught.value).startswith("source acme: authentication failed for user ingest: 530")
    assert SENTINEL not in "".join(traceback.format_exception(caught.value))


def test_password_never_reaches_logs_or_errors(tmp_path: Path) -> None:
    """The password appears in no log event and no exception text, on success or failure."""
    root = tmp_path / "root"
    errors: list[BaseException] = []
    with (
        structlog.testing.capture_logs() as logs,
        EmbeddedFTPServer(root, password=SENTINEL, tls=True, require_session_reuse=True) as server,
    ):
        (root / "a.csv").write_bytes(b"a,b\n")
        with _source(server) as source:
            errors.append(use_fully(source, "a.csv"))
        wrong = FTPSource(server_config(server), SENTINEL + "x")
        with pytest.raises(SourceRefused) as caught, wrong:
            pass
        errors.append(caught.value)
    assert logs  # something was logged, and checked
    assert SENTINEL not in repr(logs)
    for error in errors:
        assert SENTINEL not in "".join(traceback.format_exception(error))


# -- listing -----------------------------------------------------------------------------


@pytest.mark.parametrize("server_class", [EmbeddedFTPServer, _NoMLSDServer])
def test_links_to_files_are_listed_links_to_folders_are_not(
    server_class: type[EmbeddedFTPServer], tmp_path: Path
) -> None:
    """With MLSD or LIST, a link to a file lists as that file; a link to a folder is left out."""
    with server_class(tmp_path / "root") as server:
        (server.root / "a.csv").write_bytes(b"abc")
        os.utime(server.root / "a.csv", (1_700_000_000, 1_700_000_000))
        (server.root / "sub").mkdir()
        (server.root / "to_file.csv").symlink_to(server.root / "a.csv")
        (server.root / "to_folder").symlink_to(server.root / "sub")
        with _source(server) as source:
            files = sorted(source.list(), key=lambda f: f.name)
    assert files == [
        RemoteFile("a.csv", 3, 1_700_000_000),
        RemoteFile("to_file.csv", 3, 1_700_000_000),
    ]


def test_a_name_with_a_line_break_is_listed_whole(tmp_path: Path) -> None:
    """A name holding a line break comes over MLSD as two lines: it is listed as one name
    (which selection refuses), not as a file named after its first line."""
    with EmbeddedFTPServer(tmp_path / "root") as server:
        (server.root / "a.csv\nb.csv").write_bytes(b"x")
        (server.root / "c.csv").write_bytes(b"yz")
        with _source(server) as source:
            files = {f.name: f.size for f in source.list()}
    assert files == {"a.csv\nb.csv": 1, "c.csv": 2}


def test_an_entry_without_facts_is_an_entry(tmp_path: Path) -> None:
    """An MLSD entry with no facts (" name") is an entry: the name listed before it is whole."""
    with _FactlessFoldersServer(tmp_path / "root") as server:
        (server.root / "a.csv").write_bytes(b"x")
        (server.root / "b").mkdir()
        (server.root / "c.csv").write_bytes(b"yz")
        with _source(server) as source:
            files = {f.name: f.size for f in source.list()}
    assert files == {"a.csv": 1, "c.csv": 2}


@pytest.mark.parametrize(
    ("server_class", "forged"),
    [
        (EmbeddedFTPServer, "x\ntype=file;size=1;modify=20231114221320; contacts_1.csv"),
        (_NoMLSDServer, "x\n-rw-r--r--   1 owner group 1 Nov 14 22:13 contacts_1.csv"),
    ],
    ids=["mlsd", "list"],
)
def test_a_name_with_a_line_break_cannot_forge_an_entry(
    server_class: type[EmbeddedFTPServer], forged: str, tmp_path: Path
) -> None:
    """A name holding LF, then what reads as another file's entry, lists no such file."""
    # The server ends lines with CRLF, so the LF is the name's: MLSD lists the name whole,
    # for selection to refuse; LIST, whose line is then no `ls -l` line, leaves it out.
    with server_class(tmp_path / "root") as server:
        (server.root / forged).write_bytes(b"abc")
        (server.root / "c.csv").write_bytes(b"yz")
        with _source(server) as source:
            files = {f.name: f.size for f in source.list()}
    expected = {"c.csv": 2} | ({forged: 3} if server_class is EmbeddedFTPServer else {})
    assert files == expected


def test_an_entry_forged_with_cr_lf_fails_alone(tmp_path: Path) -> None:
    """An entry forged with CR LF names no file: reading it fails alone, the session goes on."""
    # No listing can tell such a name from two entries (see ftp_listing): the entries it
    # makes fail as a file removed since the listing does.
    with EmbeddedFTPServer(tmp_path / "root") as server:
        (server.root / "x\r\ntype=file;size=1;modify=20231114221320; contacts_1.csv").touch()
        # Facts left out are asked of the server, which knows no such file: not listed.
        (server.root / "y\r\ntype=file; ghost.csv").touch()
        (server.root / "c.csv").write_bytes(b"yz")
        with _source(server) as source:
            assert {f.name: f.size for f in source.list()} == {
                "x": 0,
                "y": 0,
                "contacts_1.csv": 1,
                "c.csv": 2,
            }
            for phantom in ("contacts_1.csv", "x"):
                with pytest.raises(TransientError, match=f"^source acme: RETR {phantom}: 550 "):
                    b"".join(source.read(phantom))
            assert b"".join(source.read("c.csv")) == b"yz"
        assert server.auth_attempts == 1


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"type=file;size=1; a.csv\r\n type=file;size=2; b.csv\r\n",
            [({"type": "file", "size": "1"}, "a.csv"), ({}, "type=file;size=2; b.csv")],
        ),
        (
            b"type=file;size=3; x\ntype=file;size=1; a.csv\r\ntype=file;size=2; c.csv\r\n",
            [
                ({"type": "file", "size": "3"}, "x\ntype=file;size=1; a.csv"),
                ({"type": "file", "size": "2"}, "c.csv"),
            ],
        ),
        (
            b"type=file; x\r\nno facts here\r\ntype=file; c.csv\r\n",
            [({"type": "file"}, "x\r\nno facts here"), ({"type": "file"}, "c.csv")],
        ),
        (
            b"Type=OS.unix=slink:/t;X.odd=; l.csv\r\n",
            [({"type": "OS.unix=slink:/t", "x.odd": ""}, "l.csv")],
        ),
        (b"orphan\r\ntype=file; a b.csv\r\n", [({"type": "file"}, "a b.csv")]),
        (b"type=file;size=1 a.csv\r\ntype=file;size=1;b.csv\r\n", []),  # not RFC 3659
        # Without CRLF, a line break is LF: a name holding one is read back whole only
        # when what follows is no entry; otherwise no client can tell (see ftp_listing).
        (
            b"type=file; a\nb\ntype=file; c.csv",
            [({"type": "file"}, "a\nb"), ({"type": "file"}, "c.csv")],
        ),
        (
            b"type=file; x\ntype=file; a.csv\n",
            [({"type": "file"}, "x"), ({"type": "file"}, "a.csv")],
        ),
    ],
    ids=[
        "no-facts",
        "lf-in-name",
        "crlf-in-name",
        "odd-facts",
        "orphan",
        "not-facts",
        "lf-only",
        "lf-only-forged",
    ],
)
def test_mlsd_entries(data: bytes, expected: list[tuple[dict[str, str], str]]) -> None:
    """A line is an entry if RFC 3659 facts, a space, a name; else it continues the last name."""
    assert list(mlsd_entries(*listing_lines(data, "utf-8"))) == expected


def test_a_long_near_entry_is_read_quickly() -> None:
    """Megabyte-long MLSD lines that are almost entries are read in linear time."""
    lines = ["a=b;" * (1 << 18) + "x", "a" * (1 << 20), "=;" * (1 << 19), ";" * (1 << 20)]
    started = time.process_time()
    assert list(mlsd_entries(lines, "\r\n")) == []
    assert time.process_time() - started < 1.5  # backtracking would take hours


def test_without_mlsd_the_listing_falls_back_to_list_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server answering 500 to MLSD is listed with LIST and MDTM, and not asked MLSD again,
    also by the source its opener opens for the next poll; another opener asks anew."""
    with _NoMLSDServer(tmp_path / "root") as server:
        (server.root / "a.csv").write_bytes(b"x" * 10)
        os.utime(server.root / "a.csv", (1_700_000_042, 1_700_000_042))
        monkeypatch.setenv("FTP_PASSWORD", server.password)
        opener, config = SourceOpener(), server_config(server, password_env="FTP_PASSWORD")
        with structlog.testing.capture_logs() as logs:
            listings = []
            for open_for_poll in (opener, opener, SourceOpener()):
                with open_for_poll(config) as source:
                    listings.append(source.list())
    assert listings == [[RemoteFile("a.csv", 10, 1_700_000_042)]] * 3  # to the second
    assert [e["event"] for e in logs].count("mlsd_refused") == 2  # once for each opener


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "-rw-r--r--   1 owner    group          10 Feb 27 22:13 a b.csv",
            RemoteFile("a b.csv", 10, datetime(2026, 2, 27, 22, 13, tzinfo=UTC).timestamp()),
        ),
        (
            "-rw-------    1 1000     1000         1234 Dec 31 23:59 late.csv",  # last year
            RemoteFile("late.csv", 1234, datetime(2025, 12, 31, 23, 59, tzinfo=UTC).timestamp()),
        ),
        (
            "-rw-r--r--   1 ftp      5 Nov 14  2023 nogroup.csv",
            RemoteFile("nogroup.csv", 5, datetime(2023, 11, 14, tzinfo=UTC).timestamp()),
        ),
        (
            "lrwxrwxrwx   1 u g   7 Jan  2 10:00 l.csv -> a.csv",
            RemoteFile("l.csv", -1, datetime(2026, 1, 2, 10, 0, tzinfo=UTC).timestamp()),
        ),
        ("drwxr-xr-x   2 u g 4096 Jan  2 10:00 sub", None),
        ("total 12", None),
        ("03-01-26  12:00PM                 10 dos.csv", None),  # IIS's DOS style: not read
    ],
)
def test_ls_lines(line: str, expected: RemoteFile | None) -> None:
    """LIST lines give a file's name (spaces kept), size and minute; links have size -1."""
    assert parse_ls_line(line, NOW) == expected


def test_mlsd_times_are_utc_with_optional_fraction() -> None:
    """MLSD/MDTM time values are UTC, with or without milliseconds; garbage is refused."""
    assert utc("20231114221320") == 1_700_000_000
    assert utc("20231114221320.250") == 1_700_000_000.25
    for bad in ("2023111422132", "20231114221320.", "2023111422132x"):
        with pytest.raises(ValueError, match="not a time value"):
            utc(bad)


# -- transfers -----------------------------------------------------------------------------


def test_reset_mid_transfer_is_transient_and_resumes(server: EmbeddedFTPServer) -> None:
    """A data connection reset mid-file is TransientError (over TLS it may also read as a
    stream that ends early, which the download's size check reads on from); reading on
    from the bytes received gives the whole file (same sha256), on the same source."""
    data = os.urandom(3 << 20)
    (server.root / "big.csv").write_bytes(data)
    server.set_data_fault(Fault(reset_after=300_000))
    chunks: list[bytes] = []
    with _source(server) as source:
        failures: list[str] = []
        try:
            chunks.extend(source.read("big.csv"))  # keeps what came before the error
        except TransientError as exc:
            failures.append(str(exc))
        assert [f[:27] for f in failures] == ["source acme: RETR big.csv: "] or server.tls
        received = sum(map(len, chunks))
        assert received < len(data)
        chunks.extend(source.read("big.csv", received))
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert server.data_faults_applied == 1


def test_stalled_transfer_is_transient_within_the_timeout(server: EmbeddedFTPServer) -> None:
    """A server that stops sending raises TransientError after `timeout`, not never; the
    source then reconnects for the next read."""
    data = os.urandom(1 << 20)
    (server.root / "big.csv").write_bytes(data)
    server.set_data_fault(Fault(stall_after=20_000))
    with _source(server, timeout="1s") as source:
        started = time.monotonic()
        with pytest.raises(TransientError, match="no answer for 1s"):
            b"".join(source.read("big.csv"))
        assert time.monotonic() - started < 2.5
        assert b"".join(source.read("big.csv")) == data
    assert server.auth_attempts == 2


def test_stopping_a_read_early_keeps_the_session(server: EmbeddedFTPServer) -> None:
    """A consumer that stops after the first chunk leaves a usable connection behind."""
    data = os.urandom(3 << 20)
    (server.root / "big.csv").write_bytes(data)
    with _source(server) as source:
        chunks = source.read("big.csv")
        assert isinstance(chunks, GeneratorType)  # the protocol only promises an Iterator
        assert next(chunks) == data[:CHUNK]
        chunks.close()
        assert [f.name for f in source.list()] == ["big.csv"]
        assert b"".join(source.read("big.csv", 5)) == data[5:]
    assert server.auth_attempts == 1


def test_a_missing_folder_is_transient(tmp_path: Path) -> None:
    """A source folder not (yet) on the server is retried, as for a local source."""
    with (
        EmbeddedFTPServer(tmp_path / "root") as server,
        pytest.raises(TransientError, match="open folder /nope: 550"),
        _source(server, url=server.url + "nope"),
    ):
        pass


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds in /proc")
def test_no_socket_is_left_open(tmp_path: Path) -> None:
    """Reads stopped early, connections reset and refused logins leave no descriptor open."""
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    with EmbeddedFTPServer(tmp_path / "root", tls=True, require_session_reuse=True) as server:
        (server.root / "big.csv").write_bytes(os.urandom(3 << 20))
        with _source(server) as source:
            source.list()
            next(source.read("big.csv"))  # dropped unfinished
            server.set_data_fault(Fault(reset_after=100_000))
            with pytest.raises(TransientError):
                b"".join(source.read("big.csv"))
            b"".join(source.read("big.csv"))
        with pytest.raises(SourceRefused), FTPSource(server_config(server), "wrong"):
            pass
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_size_reply_without_a_number_is_transient_and_names_the_file(tmp_path: Path) -> None:
    """A link listed by LIST is sized with SIZE; a reply that holds no number fails the
    listing with one clear line (retried later), not a ValueError from int()."""
    with _GarbledSizeServer(tmp_path / "root") as server:
        (server.root / "a.csv").write_bytes(b"x" * 10)
        (server.root / "l.csv").symlink_to(server.root / "a.csv")
        with _source(server) as source, pytest.raises(TransientError) as caught:
            source.list()
    assert str(caught.value) == "source acme: SIZE 'l.csv': the server's reply is not a size"
