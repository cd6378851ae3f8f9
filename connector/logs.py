"""structlog, configured once by the CLI: JSON lines off a TTY (journald, containers),
the console renderer on one. Logs go to stderr; stdout belongs to command output."""

from __future__ import annotations

import logging
import sys

import structlog


def _stderr(*_: object) -> structlog.PrintLogger:
    # sys.stderr as it is when a logger is made, not when logging was configured: tests and
    # embedding programs swap it, and a logger must never write to a closed stream.
    return structlog.PrintLogger(sys.stderr)


def configure(level: str = "info") -> None:
    renderer: structlog.typing.Processor
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr,
        cache_logger_on_first_use=False,
    )
