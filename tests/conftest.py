"""Shared test hygiene."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Tests that run the CLI in-process configure logging (level, renderer); the next
    test must not inherit that, or it would miss debug events it captures."""
    yield
    structlog.reset_defaults()
