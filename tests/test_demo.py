"""`connector demo` (what `make demo` runs) works end to end and says what happened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """Both embedded servers, five files, a live pickup and a clean stop, in seconds."""
    result = subprocess.run(
        [sys.executable, "-m", "connector", "demo"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "a new file arrives on the SFTP server while the daemon runs" in out
    assert out.count(" ingested ") == 4 and out.count(" duplicate ") == 1
    assert "/outbox/purchases_2026-11-03.csv" in out
    assert "has left in outbox: nothing" in out
    assert (tmp_path / "var" / "demo" / "connector.db").exists()
    assert "Traceback" not in result.stderr
