"""The command line's boundaries: a defect met with one file of `import` fails that file
(exit 1), and the files after it are still imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.cli import main
from connector.ingest import Ingestor, Outcome


def test_an_unexpected_error_with_one_imported_file_fails_it_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`import a b`: a defect with `a` prints one line for it (no traceback on stdout),
    `b` is still ingested, and the exit status is 1."""
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "c.db"}"\n')
    bad, good = tmp_path / "bad.csv", tmp_path / "good.csv"
    for path in (bad, good):
        path.write_text(f"identifier,n\n{path.stem},1\n")
    ingest = Ingestor.ingest

    def tripping(self: Ingestor, path: Path, *args: Any, **kwargs: Any) -> Outcome:
        if path == bad:
            raise RuntimeError("a library tripped over these bytes")
        return ingest(self, path, *args, **kwargs)

    monkeypatch.setattr(Ingestor, "ingest", tripping)
    argv = ["--config", str(config), "import", str(bad), str(good), "--kind", "events"]
    assert main([*argv, "--event-name", "e"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0] == f"{bad}: failed — unexpected RuntimeError: a library tripped over these bytes"
    )
    assert lines[1].startswith(f"{good}: ingested — 1 rows stored")
    assert len(lines) == 2


def test_an_import_path_too_long_to_record_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file is recorded under its path as given; a path longer than a source's files can
    have is refused before anything is read, on every store alike."""
    folder = tmp_path
    while len(str(folder)) < 1300:
        folder /= "d" * 200
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("identifier,name\nu,buy\n")
    config = tmp_path / "connector.toml"
    config.write_text(f'[store]\npath = "{tmp_path}/c.db"\n')
    argv = ["--config", str(config), "import", str(folder / "a.csv"), "--kind", "events"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("connector: import: path too long to record (over 1,279 bytes): ")
    assert not (tmp_path / "c.db").exists()


def test_version_and_config_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("connector ")
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "store.db"}"\n')
    assert main(["dump", "files", "--config", str(config)]) == 0
    assert main(["--config", str(tmp_path / "absent.toml"), "dump", "files", "--config",
                 str(config)]) == 0  # (after the command, it wins)  # fmt: skip
    assert (tmp_path / "store.db").exists()


def test_commands_on_the_store_alone_do_not_need_the_sources_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source whose key files are gone (say, the demo's, after it ended) keeps `dump`,
    `feed` and `import` working; `once`, which connects, says what is missing."""
    config = tmp_path / "c.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "store.db"}"\n[[sources]]\nname = "acme"\n'
        'url = "sftp://ingest@files.example.com/outbox"\nknown_hosts = "/nowhere/known_hosts"\n'
        'password_env = "NOT_SET_ANYWHERE"\n[[sources.files]]\nkind = "events"\npattern = "*.csv"\n'
    )
    data = tmp_path / "a.csv"
    data.write_text("identifier,name\nu1,buy\n")
    argv = ["--config", str(config)]
    assert main([*argv, "import", str(data), "--kind", "events", "--source", "acme"]) == 0
    assert main([*argv, "dump", "events"]) == 0
    assert main([*argv, "feed", "files"]) == 0
    capsys.readouterr()
    assert main([*argv, "once"]) == 78
    err = capsys.readouterr().err
    assert "sources[0].known_hosts: file not found" in err
    assert "sources[0].password_env: environment variable NOT_SET_ANYWHERE is not set" in err


def test_source_restricts_a_connecting_command_and_none_configured_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "e.csv").write_text(f"identifier,name\n{name},buy\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "s.db"}"\n' + "".join(
        f'[[sources]]\nname = "{n}"\nurl = "file://{tmp_path / n}"\nmin_age = "0s"\n'
        '[[sources.files]]\nkind = "events"\npattern = "*.csv"\n' for n in ("a", "b")
    ))  # fmt: skip
    assert main(["--config", str(config), "once", "--source", "b"]) == 0
    assert capsys.readouterr().out == "b: 1 ingested\n"
    assert main(["--config", str(config), "once", "--source", "c"]) == 78
    assert capsys.readouterr().err == "connector: config: --source: no source named 'c'\n"

    monkeypatch.chdir(tmp_path)  # (no config/connector.toml here: built-in defaults)
    monkeypatch.delenv("CONNECTOR_CONFIG", raising=False)
    assert main(["once"]) == 78
    assert "no sources configured" in capsys.readouterr().err
    assert not (tmp_path / "var").exists()  # (no store made for nothing)
