"""Faults of our own disk — a full one, a read-only one, a damaged store, a folder we may
not enter — are one line naming the path and the cause (exit 1), never a traceback; in a
poll they fail the file in hand, which the next poll takes up with every row stored once.

Real faults: a small tmpfs that fills up, a read-only bind mount, a damaged file, another
user. Mounting needs root; those tests are skipped where it is not allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connector.cli import main
from tests.helpers import drop_config, dump, first_poll_then_stop
from tests.mounts import grow, read_only, small_disk

ROWS = 30_000


def _events_csv(path: Path, rows: int = ROWS) -> None:
    """Random keys and data: about 80 bytes a row that neither gzip nor SQLite shrink much,
    so that 30,000 rows overflow a 1 MB disk wherever they are written."""
    lines = ["email,name,idempotencyKey,blob"]
    lines += [f"u{i}@x.com,buy,{os.urandom(8).hex()},{os.urandom(24).hex()}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def _config(root: Path) -> Path:
    return drop_config(
        root,
        ingest={"batch_records": 1000, "commit_interval": "0s"},
        identifier="email",
        min_age="0s",
        files=[{"kind": "events", "pattern": "events_*.csv"}],
    )


@pytest.mark.parametrize("folder", ["store", "staging", "archive"])
def test_a_disk_that_fills_mid_ingest_fails_the_file_and_the_next_run_stores_each_row_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    """The store's, staging's or the archive's disk fills up during a `once`: the poll
    fails (every file would), naming the folder and the cause, exit 1; with space again,
    the next `once` resumes the file and every row is stored exactly once."""
    config = _config(tmp_path)
    _events_csv(tmp_path / "inbox" / "events_1.csv")
    with small_disk(tmp_path / folder) as disk:
        assert main(["--config", str(config), "once"]) == 1
        out, err = capsys.readouterr()
        assert out.startswith(f"drop: could not be polled: {folder} {disk}/")
        assert out.rstrip().endswith(": the disk is full")
        assert "Traceback" not in err
        grow(disk)
        assert main(["--config", str(config), "once"]) == 0
        assert "drop: 1 ingested" in capsys.readouterr().out
        assert sorted(e["line"] for e in dump(config, "events", capsys)) == list(range(2, ROWS + 2))


@pytest.mark.slow
def test_the_daemon_fails_the_poll_when_the_store_disk_is_full(tmp_path: Path) -> None:
    """`connector run` on a full store disk logs its poll as failed, with the store's path
    and the cause, and backs off (health turns red past the missed polls): no crash, no
    traceback, a clean stop."""
    config = _config(tmp_path)
    _events_csv(tmp_path / "inbox" / "events_1.csv")
    with small_disk(tmp_path / "store"):
        argv = [sys.executable, "-m", "connector", "--config", str(config), "run"]
        events = first_poll_then_stop(argv, dict(os.environ))
    assert events[-1]["event"] == "poll_failed"
    assert events[-1]["cause"] == f"store {tmp_path / 'store' / 'c.db'}: the disk is full"
    assert not [e for e in events if "exception" in e or e["event"] == "poll_crashed"]


def test_import_on_a_full_disk_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`import` whose store cannot grow: `connector: store PATH: the disk is full`, exit 1."""
    config = _config(tmp_path)
    _events_csv(tmp_path / "events.csv")
    with small_disk(tmp_path / "store"):
        status = main(
            [
                "--config",
                str(config),
                "import",
                str(tmp_path / "events.csv"),
                "--kind",
                "events",
                "--source",
                "drop",
            ]
        )
        err = capsys.readouterr().err
    assert status == 1
    assert (
        err.splitlines()[-1] == f"connector: store {tmp_path / 'store' / 'c.db'}: the disk is full"
    )
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["dump", "import", "once", "check"])
def test_a_store_on_a_read_only_file_system_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Every command on a store whose file system is read-only says so, naming it: exit 1.
    (SQLite itself says "unable to open database file": the cause is found on the disk.)"""
    config = _config(tmp_path)
    (tmp_path / "inbox" / "events_1.csv").write_text("email,name\na@x.com,buy\n")
    assert main(["--config", str(config), "once"]) == 0
    (tmp_path / "inbox" / "events_2.csv").write_text("email,name\nb@x.com,buy\n")
    argv = {
        "dump": ["dump", "events"],
        "import": [
            "import",
            str(tmp_path / "inbox" / "events_2.csv"),
            "--kind",
            "events",
            "--source",
            "drop",
        ],
        "once": ["once"],
        "check": ["check"],
    }[command]
    capsys.readouterr()
    with read_only(tmp_path / "store"):
        status = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    assert status == 1
    store = tmp_path / "store" / "c.db"
    if command == "check":  # (a report on stdout, the store's line among the sources')
        assert f"drop: FAILED: store {store}: the file system is read-only" in out
    else:
        assert err.splitlines()[-1] == f"connector: store {store}: the file system is read-only"
    assert "Traceback" not in err


def _damaged_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A real store of a few thousand events, then pages in its middle overwritten."""
    config = _config(tmp_path)
    _events_csv(tmp_path / "events.csv", rows=5_000)
    assert (
        main(
            [
                "--config",
                str(config),
                "import",
                str(tmp_path / "events.csv"),
                "--kind",
                "events",
                "--source",
                "drop",
            ]
        )
        == 0
    )
    capsys.readouterr()
    store = tmp_path / "store" / "c.db"
    with store.open("r+b") as f:
        f.seek(len(store.read_bytes()) // 2 // 4096 * 4096)
        f.write(os.urandom(8 * 4096))
    return config


def test_dump_of_a_damaged_store_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dump` meeting damaged pages says the store is damaged, naming it: exit 1."""
    config = _damaged_store(tmp_path, capsys)
    status = main(["--config", str(config), "dump", "events"])
    err = capsys.readouterr().err
    assert status == 1
    store = tmp_path / "store" / "c.db"
    assert (
        err == f"connector: store {store}: the file is damaged (database disk image is malformed)\n"
    )


def test_a_store_that_is_not_a_database_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store path holding some other file: `the file is not an SQLite database`, exit 1."""
    config = _config(tmp_path)
    store = tmp_path / "store" / "c.db"
    store.parent.mkdir()
    store.write_text("email,name\n" * 1000)
    for argv in (["dump", "files"], ["once"]):
        assert main(["--config", str(config), *argv]) == 1
        err = capsys.readouterr().err
        assert err == f"connector: store {store}: the file is not an SQLite database\n"


@pytest.mark.slow
def test_a_store_another_user_owns_is_permission_denied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store made by another user (an `import` run as root for a service that runs as
    its own user, say): `store PATH: permission denied`, exit 1."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv, to make a store owned by another user")
    config = _config(tmp_path)
    assert main(["--config", str(config), "dump", "files"]) == 0
    store = tmp_path / "store" / "c.db"
    os.chown(store, 65534, -1)  # (nobody's, mode 0600)
    # Root without its power over others' files: as an ordinary user is, to this store.
    done = subprocess.run(
        [
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
            sys.executable,
            "-m",
            "connector",
            "--config",
            str(config),
            "dump",
            "files",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"connector: store {store}: permission denied\n"
