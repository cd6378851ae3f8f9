"""Secrets kept out of what this process says: masked where a peer may quote one back (an
FTP server's reply), and by the last-resort scrub only when long enough not to be an
ordinary word, so that a password such as "source" leaves every message whole."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from connector import logs
from connector.config import SourceConfig
from connector.errors import ConnectorError, SourceRefused, TransientError
from connector.redaction import (
    MIN_SECRET_CHARS,
    cause_of,
    logged_failure,
    mask_echo,
    mask_quoted,
    scrub,
)
from connector.secrets import Secret, source_password
from connector.sources.ftp import FTPSource
from connector.testing import EmbeddedFTPServer
from tests.helpers import server_config

LONG = "pw-SENTINEL-redact-6b2d"  # long enough to be masked anywhere
SHORT = "Zq7#x"  # shorter than MIN_SECRET_CHARS, yet no ordinary word
PASSWORD_ENV = "REDACTION_TEST_PASSWORD"  # where the test sources read their password


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    logs.reset()


class _EchoAtLoginServer(EmbeddedFTPServer):
    """Refuses every login quoting the command it refused, PASS and its password included
    (as some servers quote a command they do not accept)."""

    def _handler_class(self) -> type[Any]:
        handler = super()._handler_class()

        def ftp_PASS(self: Any, line: str) -> None:  # noqa: N802 (pyftpdlib's naming)
            self.respond(f"530 Login incorrect: PASS {line}")

        return type(handler.__name__, (handler,), {"ftp_PASS": ftp_PASS})


class _EchoLaterServer(EmbeddedFTPServer):
    """Logs in, then refuses CWD with a reply that quotes the password it was given."""

    def _handler_class(self) -> type[Any]:
        handler = super()._handler_class()

        def ftp_PASS(self: Any, line: str) -> None:  # noqa: N802
            self.said_password = line
            handler.ftp_PASS(self, line)

        def ftp_CWD(self: Any, path: str) -> None:  # noqa: N802
            self.respond(f"550 Refused (session of PASS {self.said_password}).")

        return type(handler.__name__, (handler,), {"ftp_PASS": ftp_PASS, "ftp_CWD": ftp_CWD})


def _failure(config: SourceConfig) -> ConnectorError:
    """The error of opening the source, with the password read as the daemon reads it."""
    with pytest.raises(ConnectorError) as caught, FTPSource(config, source_password(config)):
        pass
    return caught.value


def _logged(error: ConnectorError, capsys: pytest.CaptureFixture[str]) -> str:
    """What the JSON log says of ``error``: as poll_failed, and with its traceback (the
    server's own error chained as its cause)."""
    logs.configure("info")
    log = structlog.get_logger()
    logged_failure(log, "poll_failed", error)
    try:
        raise error
    except ConnectorError:
        log.exception("poll_crashed")
    err = capsys.readouterr().err
    failed, crashed = (json.loads(line) for line in err.splitlines())
    assert failed["cause"] == str(error)
    assert "The above exception was the direct cause" in crashed["exception"]
    return err


# -- the last resort: long secrets only -------------------------------------------------


@pytest.mark.parametrize("password", ["source", "file", "acme"])
def test_a_password_that_is_an_ordinary_word_mangles_no_text(
    password: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A short password, though read (a Secret), is not masked in others' words: "source"
    and "file" stay in causes and logs. Masked there, every message would lose them, and
    the gaps would tell the password."""
    assert len(password) < MIN_SECRET_CHARS
    Secret(password)
    text = "source acme: file contacts_1.csv: password rules: source file missing"
    assert scrub(text) == text
    assert cause_of(RuntimeError(text)) == f"unexpected RuntimeError: {text}"
    logs.configure("info")
    structlog.get_logger().warning("file_failed", cause=text, source="source", file="file")
    (event,) = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert (event["cause"], event["source"], event["file"]) == (text, "source", "file")


def test_a_long_password_is_masked_in_whatever_a_library_says() -> None:
    """A password of MIN_SECRET_CHARS or more, once read, is masked in any text: a
    library's message, the cause of an error that is not ours."""
    password = Secret(LONG)
    assert scrub(f"auth {password} failed") == "auth *** failed"
    assert cause_of(ValueError(f"bad {password}")) == "unexpected ValueError: bad ***"


# -- a peer's echo ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "secret", "answering", "shown"),
    [
        ("530 Login incorrect: PASS file", "file", True, "530 Login incorrect: PASS ***"),
        ("550 No such file or directory.", "file", False, "550 No such file or directory."),
        (f"550 Refused (PASS {LONG}).", LONG, False, "550 Refused (PASS ***)."),
        ("530 Login incorrect.", "", True, "530 Login incorrect."),
    ],
)
def test_mask_echo_masks_a_short_secret_only_in_the_answer_to_it(
    said: str, secret: str, answering: bool, shown: str
) -> None:
    """In the answer to the command that carried it, a secret of any length is masked;
    elsewhere only a long one (a short one there is most likely an ordinary word)."""
    assert mask_echo(said, secret, answering=answering) == shown


def test_mask_quoted_leaves_our_words_whole() -> None:
    """Only the peer's words are masked: the same word in ours (a source, a folder) stays.
    Not found as quoted, the whole text is masked rather than none of it."""
    ours = "source file: login as file: "
    said = "530 Login incorrect: PASS file"
    assert mask_quoted(ours + said, said, "file", answering=True) == ours + (
        "530 Login incorrect: PASS ***"
    )
    assert mask_quoted(ours + said, "", "file", answering=True) == ours + said
    assert mask_quoted("x file y", "not there", "file", answering=True) == "x *** y"


# -- FTP: the one place a password can come back --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("password", ["source", "file"])
def test_ftp_messages_stay_whole_with_a_common_word_password(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    password: str,
) -> None:
    """With the password "source" or "file", a source named "source" whose folder /file is
    missing says so in full, in its error and in the log: the server's reply ("No such
    file") and our words alike."""
    monkeypatch.setenv(PASSWORD_ENV, password)
    with EmbeddedFTPServer(tmp_path / "root", password=password) as server:
        error = _failure(server_config(server, "file", name="source", password_env=PASSWORD_ENV))
    assert isinstance(error, TransientError)
    assert str(error) == "source source: open folder /file: 550 No such file or directory."
    assert "***" not in _logged(error, capsys)


@pytest.mark.parametrize("password", [SHORT, LONG])
def test_a_password_echoed_in_the_answer_to_the_login_is_masked(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    password: str,
) -> None:
    """A server quoting PASS in its refusal: the password, short or long, is in neither
    the error, its traceback (ftplib's error chained as its cause) nor the log."""
    monkeypatch.setenv(PASSWORD_ENV, password)
    with _EchoAtLoginServer(tmp_path / "root") as server:
        error = _failure(server_config(server, password_env=PASSWORD_ENV))
    assert isinstance(error, SourceRefused)
    assert str(error) == (
        "source acme: authentication failed for user ingest: 530 Login incorrect: PASS ***"
    )
    shown = "".join(traceback.format_exception(error))
    assert "ftplib.error_perm: 530 Login incorrect: PASS ***" in shown
    assert password not in shown
    logged = _logged(error, capsys)
    assert "PASS ***" in logged and password not in logged


def test_a_long_password_echoed_after_the_login_is_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server quoting the password in a later reply: a long one is masked there too, in
    the server's words only (the folder's name, ours, is whole)."""
    monkeypatch.setenv(PASSWORD_ENV, LONG)
    with _EchoLaterServer(tmp_path / "root", password=LONG) as server:
        error = _failure(server_config(server, "inbox", password_env=PASSWORD_ENV))
    assert str(error) == "source acme: open folder /inbox: 550 Refused (session of PASS ***)."
    assert LONG not in "".join(traceback.format_exception(error))
    assert LONG not in _logged(error, capsys)
