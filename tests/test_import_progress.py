"""`connector import`'s progress: the bytes of the file read, up to its size (of the file as
given, for a compressed one), on a bar that log lines do not overwrite; and Ctrl-C said
once, with how to resume."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connector import logs
from connector.cli import _bytes_bar
from connector.csvrules.rules import FileRules
from connector.ingest import Ingestor
from connector.store.sqlite import SQLiteStore
from connector.unpack import UnpackLimits
from tests.helpers import write_config

EVENTS = FileRules(kind="events")
UNPACKING = UnpackLimits(max_bytes=1 << 30, max_ratio=1000)
ROWS = 30_000  # about 750 kB: several of the parser's reads


def _csv(rows: int = ROWS) -> bytes:
    return b"identifier,name\n" + b"".join(b"user%d@example.com,buy\n" % i for i in range(rows))


def _imported(db: SQLiteStore, path: Path, progress: list[int], parallel_min_bytes: int) -> None:
    ingestor = Ingestor(db, batch_records=1000, parallel_min_bytes=parallel_min_bytes)
    outcome = ingestor.ingest_given(
        path,
        EVENTS,
        source="import",
        name=str(path),
        tenant="default",
        unpacking=UNPACKING,
        progress=progress.append,
    )
    assert (outcome.entry.status, outcome.entry.rows) == ("ingested", ROWS)


@pytest.mark.parametrize(
    ("name", "pack", "in_child"),
    [("a.csv", bytes, False), ("a.csv", bytes, True), ("a.csv.gz", gzip.compress, False)],
)
def test_progress_is_the_bytes_read_up_to_the_file_size(
    tmp_path: Path, db: SQLiteStore, name: str, pack: Callable[[bytes], bytes], in_child: bool
) -> None:
    """Told after each batch, parsed here or in a child process (large files): growing,
    in several steps, to the file's size. A compressed file's content is what is read;
    its progress is told in proportion, in bytes of the .gz as given (the size `import`
    knows), and ends at that size."""
    path = tmp_path / name
    path.write_bytes(pack(_csv()))
    progress: list[int] = []
    _imported(db, path, progress, parallel_min_bytes=0 if in_child else 1 << 40)
    assert progress == sorted(progress)
    assert len(set(progress)) >= 3
    assert progress[-1] == path.stat().st_size


def test_the_bar_ends_at_100_percent_and_log_lines_go_above_it(
    tmp_path: Path, db: SQLiteStore
) -> None:
    """The bar's terminal (here a file that is none) gets whole log lines, the bar cleared
    before each (a line's visible text is what follows its last carriage return), and
    the bar at 100 % once the file is done."""
    logs.configure()
    path = tmp_path / "a.csv"
    path.write_bytes(_csv())
    out = io.StringIO()
    with _bytes_bar(path.name, path.stat().st_size, out) as update:
        outcome = Ingestor(db, batch_records=1000).ingest_given(
            path,
            EVENTS,
            source="import",
            name=str(path),
            tenant="default",
            unpacking=UNPACKING,
            progress=update,
        )
    assert outcome.entry.rows == ROWS
    shown = [line.rsplit("\r", 1)[-1] for line in out.getvalue().split("\n")]
    logged = [json.loads(line) for line in shown if line.startswith("{")]
    assert [e["event"] for e in logged] == ["file_ingested"]
    assert "a.csv: 100%" in out.getvalue()


def _interruptible() -> None:
    """In the child: SIGINT as a terminal gives it, even when the test runs where SIGINT
    is ignored (a shell's background job), which Python would then keep ignoring."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "said", "again"),
    [
        ([], "run the same command again to resume it", ")"),  # (no dry-run note)
        (["--dry-run"], "nothing was stored (dry run)", " [dry run: nothing stored]"),
    ],
)
def test_ctrl_c_says_once_what_it_left(
    tmp_path: Path, options: list[str], said: str, again: str
) -> None:
    """Ctrl-C in the middle of a file (here while it waits for the claim on its bytes,
    held by the test): one line saying to run the command again (or, for a dry run, that
    nothing was stored), exit 130; run again, it imports the file."""
    config = write_config(tmp_path, store={"path": str(tmp_path / "c.db")})
    data = gzip.compress(_csv(100))
    path = tmp_path / "a.csv.gz"
    path.write_bytes(data)
    argv = [
        sys.executable,
        "-m",
        "connector",
        "--config",
        str(config),
        "import",
        str(path),
        "--kind",
        "events",
        *options,
    ]
    with (
        SQLiteStore(tmp_path / "c.db") as db,
        db.claim(hashlib.sha256(data).hexdigest()),
        subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_interruptible,
        ) as run,
    ):
        try:
            deadline = time.monotonic() + 60  # (its content unpacked: the file is in hand)
            while not list((tmp_path / "staging").glob(".unpacked-*")):
                assert run.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            run.send_signal(signal.SIGINT)
            out, err = run.communicate(timeout=60)
        finally:
            run.kill()
    assert (run.returncode, out, err) == (
        130,
        "",
        f"connector: import: interrupted in {path}; {said}\n",
    )
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.startswith(f"{path}: ingested — 100 rows stored")
    assert rerun.stdout.endswith(f"{again}\n")
