"""The parse of one file, in-process or in a child process (connector/parsing.py): the same
batches either way, also while the file is still being written, and nothing left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.csvrules.reader import ScannedFile
from connector.csvrules.records import Batch
from connector.csvrules.rules import FileRules
from connector.errors import FileRejected
from connector.parsing import ParseJob
from tests.helpers import write_config
from tests.procs import children

EVENTS = FileRules(kind="events")
HEADER = "identifier,name,timestamp,idempotencyKey,total\n"


def _text(rows: int) -> str:
    keys = [f"k{i}" if i % 3 else "" for i in range(rows)]
    body = "".join(f"u{i % 97},buy,{1_700_000_000 + i},{keys[i]},{i}.5\n" for i in range(rows))
    return HEADER + body + "u1,buy,not-a-time,,1\n"  # one reject at the end


def _shape(batches: list[Batch]) -> tuple[list[object], ...]:
    return (
        [b.records for b in batches],
        [b.rejects for b in batches],
        [list(b.event_rows()) for b in batches],
    )


def _parse(
    path: Path, *, in_child: bool, growing_to: int | None = None, skip: int = 0
) -> list[Batch]:
    job = ParseJob(
        path,
        EVENTS,
        batch_records=1_000,
        in_child=in_child,
        spool_dir=path.parent,
        growing_to=growing_to,
    )
    with job:
        job.resume_at(skip)
        job.header()
        return list(job.batches())


@pytest.mark.parametrize("skip", [0, 2_500])
def test_a_child_gives_the_same_batches_as_in_process(tmp_path: Path, skip: int) -> None:
    path = tmp_path / "e.csv"
    path.write_text(_text(5_000))
    here = _parse(path, in_child=False, skip=skip)
    assert sum(b.records for b in here) == 5_001 - skip
    assert _shape(_parse(path, in_child=True, skip=skip)) == _shape(here)


@pytest.mark.slow
@pytest.mark.parametrize("in_child", [False, True])
def test_a_file_still_being_written_is_followed_to_its_size(tmp_path: Path, in_child: bool) -> None:
    data = _text(5_000).encode()
    whole = tmp_path / "whole.csv"
    whole.write_bytes(data)
    growing = tmp_path / "growing.csv"
    growing.write_bytes(data[:100])

    def write_the_rest() -> None:
        with growing.open("ab") as out:
            for start in range(100, len(data), 7_001):  # pieces that cut lines anywhere
                time.sleep(0.01)
                out.write(data[start : start + 7_001])
                out.flush()

    writer = threading.Thread(target=write_the_rest)
    writer.start()
    try:
        followed = _parse(growing, in_child=in_child, growing_to=len(data))
    finally:
        writer.join()
    assert _shape(followed) == _shape(_parse(whole, in_child=False))


def test_a_rejected_header_is_reported_from_the_child(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("identifier,name,name\nu1,a,b\n")
    with pytest.raises(FileRejected, match="duplicate column name 'name'"):
        _parse(path, in_child=True)


def test_the_spool_has_no_name_and_gives_back_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(_text(30_000))
    job = ParseJob(path, EVENTS, batch_records=500, in_child=True, spool_dir=tmp_path)
    with job:
        job.header()
        batches = list(job.batches())
        assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv"]
        assert job._spool is not None
        spool = os.fstat(job._spool.fileno())
        if sys.platform.startswith("linux"):  # read ranges were punched out
            assert spool.st_blocks * 512 < spool.st_size // 4
    assert sum(b.records for b in batches) == 30_001
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv"]


_ORPHAN = """
import sys, time
from pathlib import Path
from connector.csvrules.rules import FileRules
from connector.parsing import ParseJob
from tests.procs import children
path = Path(sys.argv[1])
job = ParseJob(path, FileRules(kind="events"), batch_records=10, in_child=True,
               spool_dir=path.parent, growing_to=10**9)
job.__enter__()
print(job._child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_a_child_following_a_download_exits_when_its_parent_dies(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(HEADER)  # far from the promised size: the child waits for more
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)  # at once: maybe before the child even started
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child)
    finally:
        parent.kill()
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, already gone, counts as not running)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_scan_sees_each_byte_once_across_seeks(tmp_path: Path) -> None:
    path = tmp_path / "b.bin"
    path.write_bytes(b"a,b\n" + b"x" * 10 + b"\x00\n")
    fd = os.open(path, os.O_RDONLY)
    with ScannedFile(fd, path.stat().st_size, closefd=True) as raw:
        assert raw.read(3) == b"a,b"
        raw.seek(0)
        assert raw.read() == path.read_bytes()
        assert raw.scan.size == path.stat().st_size
        assert raw.scan.has_nul


def test_a_record_over_the_limit_is_rejected_and_the_records_after_it_read(
    tmp_path: Path,
) -> None:
    """A quoted field longer than a record may be (17 MiB) fails that record only: the
    records after it in the same batch are read, at their own lines."""
    path = tmp_path / "e.csv"
    rows = ["u1,a,1,,1", 'u2,a,2,,"' + "x\n" * (17 << 19) + '"', "u3,a,3,,3", "u4,a,4,,4"]
    path.write_text(HEADER + "\n".join(rows) + "\n")
    batches = _parse(path, in_child=False)
    rejects = [reject for batch in batches for reject in batch.rejects]
    events = [(row[0], row[1]) for batch in batches for row in batch.event_rows()]
    assert [(line, reason) for line, reason, _ in rejects] == [
        (3, "record over 4,194,304 characters")
    ]
    assert len(rejects[0][2]) <= 200  # (the record's start, for the reject report)
    after = 3 + (17 << 19)  # the line of the rejected record's closing quote
    assert events == [(2, "u1"), (after + 1, "u3"), (after + 2, "u4")]


@contextlib.contextmanager
def _busy_import(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A real `connector import` whose parser child is busy: one record of 4 GB of NULs (a
    sparse file: no disk used), which the child measures for many seconds while the parent
    hashes the same bytes. The import process and its child's pid, once the child has run;
    both are killed on the way out, whatever the test did."""
    parent, child = _started_busy_import(tmp_path)
    try:
        yield parent, child
    finally:
        parent.kill()
        parent.wait()
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def _started_busy_import(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    path = tmp_path / "huge.csv"
    with path.open("wb") as out:
        out.write(b"identifier,a\nu1,")
        out.truncate(4 << 30)
    config = write_config(tmp_path)
    parent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector",
            "--config",
            str(config),
            "import",
            str(path),
            "--kind",
            "contacts",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        busy = [pid for pid in children(parent.pid) if _cpu_ticks(pid) > 20]
        if busy:
            return parent, busy[0]
        time.sleep(0.02)
    parent.kill()
    parent.wait()
    raise AssertionError("the parser child never got busy")


def _cpu_ticks(pid: int) -> int:
    """User and system time ``pid`` has used, in clock ticks (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_busy_parser_child_dies_with_its_killed_parent(tmp_path: Path) -> None:
    """SIGKILL to an import whose parser child is in the middle of a long record: the child
    goes at once (it would otherwise scan on for many seconds); it runs in a process group
    of its own, so the parent's group signals (Ctrl-C) are the parent's to relay."""
    with _busy_import(tmp_path) as (parent, child):
        assert os.getpgid(child) == child != os.getpgid(parent.pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone_within(child, 5)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_sent_to_a_busy_parser_child_ends_it(tmp_path: Path) -> None:
    """SIGTERM sent to the parser child itself ends it, busy or not (its parent then fails
    the file, to be retried)."""
    with _busy_import(tmp_path) as (_, child):
        os.kill(child, signal.SIGTERM)
        assert _gone_within(child, 5)
