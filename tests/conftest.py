"""Shared test hygiene."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

# Readable assertion diffs from the shared helpers; registered here, before any test module
# imports them (a later registration cannot rewrite a module already imported).
pytest.register_assert_rewrite("tests.golden", "tests.source_contract")


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Tests that run the CLI in-process configure logging (level, renderer); the next
    test must not inherit that, or it would miss debug events it captures."""
    yield
    structlog.reset_defaults()
