"""Shared fixtures (the helpers are in tests/helpers.py) and test hygiene."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connector import logs
from connector.store.sqlite import SQLiteStore

# The embedded servers' fixtures: the plugin is opt-in (docs/testing.md), as a user's
# own tests would take it.
pytest_plugins = ["connector.testing.plugin"]

# Readable assertion diffs from the shared helpers; registered here, before any test module
# imports them (a later registration cannot rewrite a module already imported).
pytest.register_assert_rewrite(
    "tests.golden", "tests.helpers", "tests.source_contract", "tests.store_contract"
)


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Tests that run the CLI in-process configure logging (level, renderer, the handler
    that routes the libraries' records); the next test must not inherit that, or it would
    miss debug events it captures."""
    yield
    logs.reset()


# PostgreSQL makes a test slow (pyproject's `slow` marker): a server, started for it.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store_table(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The `[store]` table of a test's config, on each backend: an SQLite file under
    tmp_path, or a fresh database of the session's PostgreSQL server (``postgres_url``, of
    connector.testing.plugin: skipped without PostgreSQL). Its lease is short, so that a
    run after a killed one waits little for the claims the dead one held. Narrow a test to
    one backend with ``@pytest.mark.parametrize("store_table", ["sqlite"], indirect=True)``."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "store" / "c.db")}
    return {"url": request.getfixturevalue("postgres_url"), "lease": "1s"}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SQLiteStore]:
    """A new SQLite store, ``tmp_path/store/c.db``, closed after the test."""
    with SQLiteStore(tmp_path / "store" / "c.db") as database:
        yield database
