"""`connector check`: names shown safely, and one source failing in any way leaves the
others checked."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import apsw
import pytest

from connector.check import check
from connector.cli import main
from connector.config import SourceConfig, load_config
from connector.sources.base import RemoteFile, Source
from connector.sources.local import LocalSource
from connector.sources.registry import open_source
from connector.store.sqlite import SQLiteStore
from tests.helpers import local_source, write_config
from tests.mounts import read_only

SENTINEL = "pw-SENTINEL-31c8aa"  # a password that must never be shown


def _config_file(tmp_path: Path, names: list[str], **extra: Any) -> Path:
    """A config with a file:// source per name, each on a folder of its own."""
    files = [{"kind": "contacts", "pattern": "contacts_*.csv"}]
    return write_config(tmp_path, *(local_source(tmp_path, n, files=files, **extra) for n in names))


def test_check_says_which_names_are_skipped_and_shows_every_name_escaped(
    tmp_path: Path,
) -> None:
    """A name that is not UTF-8 or holds a terminal escape is listed as skipped, with its
    reason; no name reaches the terminal raw, a taken one included."""
    config = load_config(_config_file(tmp_path, ["acme"]))
    inbox = os.fsencode(tmp_path / "acme")
    names = [
        b"contacts_\xff.csv",
        b"ev_\x1b]0;PWNED\x07.csv",
        b"contacts_1.csv",
        "contacts_\u202egnp.csv".encode(),
    ]
    for age, name in enumerate(reversed(names)):
        path = os.path.join(inbox, name)
        with open(path, "wb") as f:
            f.write(b"identifier\nu1\n")
        os.utime(path, (1_700_000_000 - age, 1_700_000_000 - age))
    ok, lines = check(config)
    assert ok
    assert lines[1] == "acme: connected, 4 file(s) listed, 2 match"
    assert sorted(lines[2:4]) == [  # in the folder's order
        r"  contacts_\xff.csv: skipped: not valid UTF-8",
        r"  ev_\x1b]0;PWNED\x07.csv: skipped: a control character",
    ]
    assert lines[4:] == [  # oldest first
        "  contacts_1.csv (14 bytes): would take as contacts",
        r"  contacts_\u202egnp.csv (14 bytes): would take as contacts",
    ]
    assert all(line.isprintable() for line in lines)


class _ListingFails:
    """A real local source whose listing then fails as no adapter expects: the failure
    this guards against (a name no one could encode) came from a library, unannounced."""

    def __init__(self, config: SourceConfig, error: BaseException) -> None:
        self.inner = LocalSource(config)
        self.error = error

    def __enter__(self) -> Self:
        self.inner.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.inner.__exit__(kind, exc, tb)

    def list(self) -> list[RemoteFile]:
        self.inner.list()
        raise self.error


def _failing(middle: BaseException) -> object:
    def opener(config: SourceConfig) -> Source | _ListingFails:
        return _ListingFails(config, middle) if config.name == "middle" else open_source(config)

    return opener


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            UnicodeEncodeError("utf-8", "contacts_\udcff.csv", 9, 10, "surrogates not allowed"),
            r"UnicodeEncodeError: 'utf-8' codec can't encode character '\\udcff' in position 9: "
            "surrogates not allowed",
        ),
        (RuntimeError("first line\nsecond line"), r"RuntimeError: first line\nsecond line"),
        (RuntimeError(f"server said {SENTINEL}"), "RuntimeError: server said ***"),
        (RuntimeError(), "RuntimeError: no detail"),
    ],
)
def test_an_unexpected_error_fails_its_source_only(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    shown: str,
) -> None:
    """Any exception while checking one source is that source's one FAILED line (no
    traceback, no password); the sources after it are still checked; check exits 1."""
    monkeypatch.setenv("CHECK_TEST_PASSWORD", SENTINEL)
    config = _config_file(tmp_path, ["first", "middle", "last"], password_env="CHECK_TEST_PASSWORD")
    (tmp_path / "last" / "contacts_1.csv").write_text("identifier\nu1\n")
    os.utime(tmp_path / "last" / "contacts_1.csv", (1_700_000_000, 1_700_000_000))
    monkeypatch.setattr("connector.check.open_source", _failing(error))
    assert main(["--config", str(config), "check"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "config: valid, 3 source(s)",
        "first: connected, 0 file(s) listed, 0 match",
        f"middle: FAILED: unexpected {shown}",
        "last: connected, 1 file(s) listed, 1 match",
        "  contacts_1.csv (14 bytes): would take as contacts",
    ]
    assert "Traceback" not in err and SENTINEL not in out + err


@pytest.mark.parametrize(("version", "says"), [(99, "newer"), (5, "older")])
def test_a_store_of_another_schema_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: int, says: str
) -> None:
    """`check` changes nothing, so it does not upgrade a store: it says so, and a newer one
    is refused as every command refuses it; each source's line says why it has no report."""
    path = _config_file(tmp_path, ["acme"])
    store = tmp_path / "store" / "c.db"
    SQLiteStore(store).close()
    with apsw.Connection(str(store)) as conn:
        conn.execute(f"PRAGMA user_version={version}")
    assert main(["--config", str(path), "check"]) == 1
    out = capsys.readouterr().out
    assert f"acme: FAILED: the store's schema v{version} is {says} than this connector's" in out


def test_check_tests_that_the_folders_it_writes_to_are_writable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` writes and removes a probe in each folder the connector writes to (move
    folders, where reject reports go): a read-only one fails the check, naming the folder,
    the setting and the cause; a writable one is left as it was."""
    config = _config_file(
        tmp_path, ["acme"], after="move:processed", error_dir="leave", reject_report=True
    )
    assert main(["--config", str(config), "check"]) == 0
    assert "FAILED" not in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "acme").rglob("*")] == ["processed"]  # no probe left
    with read_only(tmp_path / "acme"):
        assert main(["--config", str(config), "check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "acme: connected, 0 file(s) listed, 0 match"
    assert re.fullmatch(
        r'  FAILED: cannot write to processed \(after = "move:processed"\): cannot write'
        r" \S+/processed/\.connector-check-\d+\.tmp: Read-only file system",
        out[2],
    ), out[2]
    assert out[3].startswith(
        "  FAILED: cannot write to the source's folder (reject_report with error_dir ="
        ' "leave"): cannot write'
    ), out[3]
