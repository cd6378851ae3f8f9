"""Shared test hygiene."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from connector import logs

# Readable assertion diffs from the shared helpers; registered here, before any test module
# imports them (a later registration cannot rewrite a module already imported).
pytest.register_assert_rewrite("tests.golden", "tests.source_contract")


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Tests that run the CLI in-process configure logging (level, renderer, the handler
    that routes the libraries' records); the next test must not inherit that, or it would
    miss debug events it captures."""
    yield
    logs.reset()


@pytest.fixture(autouse=True)
def _fresh_ftp_capabilities() -> Iterator[None]:
    """What FTP servers lack is remembered per host and port for the process; test servers
    come and go on reused ports, so each test starts knowing nothing."""
    yield
    ftp = sys.modules.get("connector.sources.ftp")
    if ftp is not None:
        ftp._capabilities.clear()
