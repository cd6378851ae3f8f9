"""What text may leave this process: the secrets it has read (source and store passwords)
never do, in a log line, a traceback, an error's message or a reason stored in the
ledger; and an error is said in one line.

A secret is kept out where it could come in, not by replacing its text wherever it
occurs. Our own messages never quote one; a config that writes a password (a
``password`` key, a URL with one) is refused; tracebacks are shown without their
frames' variables (logs.py); SSH and PostgreSQL never send a password back. What
remains is a peer quoting back what it was sent: an FTP server's reply may quote a
command, and PASS carries the password. The adapter masks it in the peer's words only
(``mask_quoted``), so that the rest of the message (the source's name, a folder, a
file) keeps every word.

Last, ``scrub`` masks the secrets read (``remember``) in whatever text a log line or a
cause holds, for what a library might quote; but only secrets of ``MIN_SECRET_CHARS``
or more. A shorter one cannot be told from ordinary words: masked everywhere, a password
such as ``source`` turned every "source" into ``***``, and the gaps told what it was.
"""

from __future__ import annotations

import threading

import structlog

from connector.errors import ConnectorError

_CAUSE_CHARS = 500  # an error's text in a log line, the ledger or a reject reason
MIN_SECRET_CHARS = 8  # shorter, a secret may be an ordinary word: see the module's doc
_MASK = "***"

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


def remember(secret: str) -> None:
    """``secret`` is masked by ``scrub`` from now on, if it is long enough to be told from
    ordinary words (MIN_SECRET_CHARS); a shorter one is kept out where it could come in."""
    global _secrets
    if len(secret) >= MIN_SECRET_CHARS:
        with _lock:
            _secrets = _secrets | {secret}


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    for secret in _secrets:  # (a handful at most: one per source)
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def mask_echo(said: str, secret: str, *, answering: bool = False) -> str:
    """A peer's words, ``said``, with ``secret`` (which it was sent) masked: whatever its
    length if ``said`` answers the very command that carried it, where an echo is what
    to expect; else only if it is MIN_SECRET_CHARS or longer, as ``scrub`` does (a short
    secret found there is most likely an ordinary word, a file's name say, that masking
    would mangle and give away)."""
    if not secret or (len(secret) < MIN_SECRET_CHARS and not answering):
        return said
    return said.replace(secret, _MASK)


def mask_quoted(text: str, said: str, secret: str, *, answering: bool = False) -> str:
    """``text`` with ``secret`` masked in ``said``, a peer's words it quotes (the last time
    it does), as ``mask_echo`` says; the rest of ``text`` is ours and left whole. Should
    ``text`` not hold ``said`` as it is, all of ``text`` is masked instead."""
    if not said:
        return text
    head, found, tail = text.rpartition(said)
    if not found:
        return mask_echo(text, secret, answering=answering)
    return head + mask_echo(said, secret, answering=answering) + tail


def cause_of(exc: BaseException) -> str:
    """One line saying why ``exc`` happened: our own errors' messages as they are (they
    never hold a secret: an adapter masks a peer's echo in what it quotes); any other
    error (a defect, a library's) with its type, scrubbed, and cut to a length a log line
    or reject reason can hold."""
    if isinstance(exc, ConnectorError):
        return str(exc)
    text = scrub(f"unexpected {type(exc).__name__}: {str(exc) or 'no detail'}")
    return text if len(text) <= _CAUSE_CHARS else text[: _CAUSE_CHARS - 1] + "…"


def logged_failure(
    log: structlog.typing.FilteringBoundLogger, event: str, exc: BaseException, **context: object
) -> str:
    """Log ``event`` (a warning) for ``exc`` with its cause, and with its traceback when it
    is not one of ours (a defect to report); the cause, for the caller to show."""
    cause = cause_of(exc)
    log.warning(event, cause=cause, exc_info=not isinstance(exc, ConnectorError), **context)
    return cause
