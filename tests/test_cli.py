"""The command line's boundaries: a defect met with one file of `import` fails that file
(exit 1), and the files after it are still imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connector.cli import main
from connector.ingest import Ingestor, Outcome
from tests.helpers import local_source, write_config


def test_an_unexpected_error_with_one_imported_file_fails_it_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`import a b`: a defect with `a` prints one line for it (no traceback on stdout),
    `b` is still ingested, and the exit status is 1."""
    config = write_config(tmp_path)
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
    config = write_config(tmp_path, store={"path": str(tmp_path / "c.db")})
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
    config = write_config(tmp_path, store={"path": str(tmp_path / "store.db")})
    assert main(["dump", "files", "--config", str(config)]) == 0
    # Given after the command, --config wins.
    assert (
        main(["--config", str(tmp_path / "absent.toml"), "dump", "files", "--config", str(config)])
        == 0
    )
    assert (tmp_path / "store.db").exists()


def test_commands_on_the_store_alone_do_not_need_the_sources_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source whose key files are gone (say, the demo's, after it ended) keeps `dump`,
    `feed` and `import` working; `once`, which connects, says what is missing."""
    config = write_config(
        tmp_path,
        {
            "name": "acme",
            "url": "sftp://ingest@files.example.com/outbox",
            "known_hosts": "/nowhere/known_hosts",
            "password_env": "NOT_SET_ANYWHERE",
            "files": [{"kind": "events", "pattern": "*.csv"}],
        },
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
    files = [{"kind": "events", "pattern": "*.csv"}]
    config = write_config(
        tmp_path, *(local_source(tmp_path, n, files=files, min_age="0s") for n in ("a", "b"))
    )
    for name in ("a", "b"):
        (tmp_path / name / "e.csv").write_text(f"identifier,name\n{name},buy\n")
    assert main(["--config", str(config), "once", "--source", "b"]) == 0
    assert capsys.readouterr().out == "b: 1 ingested\n"
    assert main(["--config", str(config), "once", "--source", "c"]) == 78
    assert capsys.readouterr().err == "connector: config: --source: no source named 'c'\n"

    monkeypatch.chdir(tmp_path)  # (no config/connector.toml here: built-in defaults)
    monkeypatch.delenv("CONNECTOR_CONFIG", raising=False)
    assert main(["once"]) == 78
    assert "no sources configured" in capsys.readouterr().err
    assert not (tmp_path / "var").exists()  # (no store made for nothing)


# What a customer's file looked like → the reason `import --dry-run` prints, whole.
_FOUND = "header: no identifier column 'email'; found"
_REASONS = {
    b"Email,name\nada@x.org,Ada\n": f"{_FOUND} 2 column(s), split on ',': 'Email', 'name';"
    " 'Email' differs only in case (names are case-sensitive): rename it, or set identifier"
    ' = "Email"',
    b"email|name\nada@x.org|Ada\n": f"{_FOUND} 1 column(s), split on ',': 'email|name'; split"
    " on '|' the header has 'email': set delimiter = \"|\"",
    b"email\tname\nada@x.org\tAda\n": f"{_FOUND} 1 column(s), split on ',': 'email\\tname';"
    " split on '\\t' the header has 'email': set delimiter = \"\\t\"",
    b"mail,name\nada@x.org,Ada\n": f"{_FOUND} 2 column(s), split on ',': 'mail', 'name'",
    b"email,name\nada@x.org,Ren\xe9\n": "line 2: bytes that are not valid utf-8: invalid"
    " continuation byte; set the source's encoding (or import --encoding) to the file's:"
    ' byte 0xe9 reads "\xe9" in cp1252, Excel\'s on Windows',
}


@pytest.mark.parametrize("data", list(_REASONS))
def test_a_refused_file_says_what_was_found_and_what_to_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    """Golden reasons: the headers found and the delimiter used, with a hint when the
    identifier differs only in case or another delimiter would have split the header; an
    undecodable file names its line, the byte, and the setting to change."""
    config = write_config(tmp_path)
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    argv = ["--config", str(config), "import", str(path), "--kind", "contacts"]
    assert main([*argv, "--identifier", "email", "--dry-run"]) == 2
    reason = capsys.readouterr().out.splitlines()[1]
    assert reason == f"  reason: {_REASONS[data]} [dry run: nothing stored]"


def test_a_dry_run_shows_each_rejected_row_with_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rejected rows quote the value that was found, as the customer wrote it."""
    config = write_config(tmp_path)
    path = tmp_path / "f.csv"
    path.write_text("email,phone,unsubscribed\nada@,,\nbob@x.org,+3247,\ncy@x.org,,yes\n")
    argv = ["--config", str(config), "import", str(path), "--kind", "contacts"]
    assert main([*argv, "--identifier", "email", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        '  line 2: email is not an address: "ada@" (expected local@domain.tld)',
        "  line 3: phone must be 6 to 15 digits, no '+', not starting with 0: \"+3247\"",
        '  line 4: unsubscribed must be true or false: "yes"',
    ]


def test_the_demo_without_its_servers_says_which_extra_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded servers are the `testing` extra, not the daemon's dependencies."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyftpdlib" else find_spec(name, *a),
    )
    assert main(["demo"]) == 1
    assert capsys.readouterr().err == (
        "connector: demo: the embedded servers are not installed:"
        " pip install 'connector[testing]'\n"
    )
