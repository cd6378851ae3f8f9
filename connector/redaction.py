"""What text may leave this process: the secrets it has read (source passwords) never do,
in a log line, a traceback, an error's message or a reason stored in the ledger, even in
text a library wrote with a password it was given; and an error is said in one line."""

from __future__ import annotations

import threading

import structlog

from connector.errors import ConnectorError

_CAUSE_CHARS = 500  # an error's text in a log line, the ledger or a reject reason

_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()


def remember(secret: str) -> None:
    """``secret`` is never to be shown from now on."""
    global _secrets
    if secret:
        with _lock:
            _secrets = _secrets | {secret}


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***``."""
    for secret in _secrets:  # (a handful at most: one per source)
        if secret in text:
            text = text.replace(secret, "***")
    return text


def cause_of(exc: BaseException) -> str:
    """One line saying why ``exc`` happened: our own errors' messages as they are (they
    never hold a secret); any other error (a defect, a library's) with its type, without
    any password, and cut to a length a log line or reject reason can hold."""
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
