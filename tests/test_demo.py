"""`connector demo` (what `make demo` runs) works end to end and says what happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from connector.testing.postgres import PostgresUnavailable, find_postgres_bin_dir

# Slow (pyproject's `slow` marker): runs the demos, servers and `connector` subprocesses included.
pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """Both embedded servers, five files, a live pickup and a clean stop, in seconds."""
    result = subprocess.run(
        [sys.executable, "-m", "connector", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "a new file arrives on the SFTP server while the daemon runs" in out
    assert out.count(" ingested ") == 4 and out.count(" duplicate ") == 1
    assert "/outbox/purchases_2026-11-03.csv" in out
    assert "has left in outbox: nothing" in out
    assert (tmp_path / "var" / "demo" / "connector.db").exists()
    assert "Traceback" not in result.stderr


def test_the_replicas_demo_shares_the_files_and_survives_a_kill(tmp_path: Path) -> None:
    """`connector demo --replicas 2`: a throwaway PostgreSQL, one replica killed half-way,
    every file ingested once by the others."""
    try:
        find_postgres_bin_dir()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL's server programs are not here: {exc}")
    result = subprocess.run(
        [sys.executable, "-m", "connector", "demo", "--replicas", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "r1 is killed (SIGKILL) half-way" in out
    assert "every file ingested once: 120 of 120" in out
    assert "6000 events stored (expected 6000)" in out
    assert "Traceback" not in result.stderr
