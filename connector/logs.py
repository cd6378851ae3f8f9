"""structlog, configured once by the CLI: JSON lines off a TTY (journald, containers),
the console renderer on one. Logs go to stderr; stdout belongs to command output.

Records of the standard library's ``logging`` (APScheduler, paramiko, watchdog, pyftpdlib,
Python's warnings) go through the same processors, so each is one event in the same format.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from connector.redaction import scrub
from connector.replica import identity

# Libraries' routine records, below these levels, show only with --log-level debug:
# APScheduler logs every job run at INFO, paramiko every step of a connection, pyftpdlib
# every command.
QUIET_BELOW = {
    "apscheduler": logging.WARNING,
    "paramiko": logging.WARNING,
    "pyftpdlib": logging.WARNING,
    "watchdog": logging.WARNING,
    # Our SFTP client's paramiko channel: each failure paramiko logs there (its traceback a
    # record per line) is raised to the poll too, and logged once, as poll_failed.
    "connector.sources.sftp.paramiko": logging.CRITICAL + 1,
}

# Keys whose text spans lines by design (format_exc_info's traceback, a stack).
_MULTILINE = frozenset({"exception", "stack"})
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _stderr(*_: object) -> structlog.PrintLogger:
    # sys.stderr as it is when a logger is made, not when logging was configured: tests and
    # embedding programs swap it, and a logger must never write to a closed stream.
    return structlog.PrintLogger(sys.stderr)


class _StderrHandler(logging.Handler):
    """Writes a formatted record through a PrintLogger on sys.stderr: the same stream as
    structlog's own events, at the moment, and the same lock (PrintLogger keeps one per
    file), so a library's line and one of ours never interleave."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _stderr().msg(self.format(record))
        except Exception:
            self.handleError(record)


def _not_routine(record: logging.LogRecord) -> bool:
    for name, level in QUIET_BELOW.items():
        if record.name == name or record.name.startswith(name + "."):
            return record.levelno >= level
    return True


def _hex(match: re.Match[str]) -> str:
    return f"\\x{ord(match[0]):02x}"


class _Shown:
    """A value's text, already made safe, that the console renderer prints as it is
    (it prints any value that is not a string by its repr)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__


def escape_controls(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Before the console renderer: no control character of a value (a file name sent by
    a remote server, say) reaches the terminal raw, where ESC or C1 CSI start escape
    sequences (retitle the window, rewrite earlier lines). A string holding any
    non-printable character is shown by its repr (quoted; ESC as ``\\x1b``, C1 as
    ``\\x9b``); other values by their repr, escaped in case it is a custom one; a
    traceback keeps its line breaks."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            if key in _MULTILINE:
                event_dict[key] = _CONTROL_BUT_NEWLINE.sub(_hex, value)
            elif not value.isprintable():
                event_dict[key] = _Shown(repr(value))
        elif not isinstance(value, int | float | _Shown):
            text = repr(value)
            if not text.isprintable():
                event_dict[key] = _Shown(_CONTROL.sub(_hex, text))
    return event_dict


def scrub_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The last resort: no password this process has read, in any value, should a library's
    message or a traceback quote what it was given (a long one only: see redaction)."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def add_replica(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Which process said it, among the replicas that may share a store."""
    event_dict.setdefault("replica", identity())
    return event_dict


def _json_dumps(obj: Any, **kwargs: Any) -> str:
    # JSON escapes C0 itself and, with ensure_ascii, everything past ASCII (C1 included);
    # DEL alone would stay raw. Escaped, a JSON line is printable ASCII, safe on a terminal
    # (journalctl, docker logs) as in a file. DEL occurs only inside strings here.
    return json.dumps(obj, ensure_ascii=True, **kwargs).replace("\x7f", "\\u007f")


def configure(level: str = "info") -> None:
    threshold: int = logging.getLevelName(level.upper())
    tail: list[Processor]
    if sys.stderr.isatty():
        tail = [
            structlog.processors.format_exc_info,
            scrub_secrets,
            escape_controls,
            structlog.dev.ConsoleRenderer(),
        ]
    else:
        # format_exc_info: a traceback as Python prints it, under "exception"; no locals
        # (dict_tracebacks can show them), which may hold a password.
        tail = [
            structlog.processors.format_exc_info,
            scrub_secrets,
            structlog.processors.JSONRenderer(serializer=_json_dumps),
        ]
    stamp: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_replica,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*stamp, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=_stderr,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*stamp, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    if threshold > logging.DEBUG:
        handler.addFilter(_not_routine)
    root = logging.getLogger()
    _remove_handlers(root)
    root.addHandler(handler)
    root.setLevel(threshold)
    logging.captureWarnings(True)  # warnings.warn(): a "py.warnings" record, not raw text


def reset() -> None:
    """Undo configure() (for tests that run the CLI in the test process)."""
    structlog.reset_defaults()
    root = logging.getLogger()
    _remove_handlers(root)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)


def _remove_handlers(root: logging.Logger) -> None:
    for handler in root.handlers[:]:
        if isinstance(handler, _StderrHandler):
            root.removeHandler(handler)
