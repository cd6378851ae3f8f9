"""Putting a file through again on purpose: `forget`, `replay` (from the archive copy) and
`import` of compressed files, each audited where it changes the ledger."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import pytest

from connector.cli import EXIT_FAILED, EXIT_OK, EXIT_REJECTED, main
from tests.helpers import drop_config, dump, write_config

EVENTS = [{"kind": "events", "pattern": "*.csv", "event_name": "buy"}]
TEXT = "identifier,idempotencyKey\nu1,k1\nu2,\n"


def _run(config: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--config", str(config), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _drop(tmp_path: Path, name: str, text: str = TEXT) -> str:
    (tmp_path / "inbox" / name).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return drop_config(tmp_path, files=EVENTS, min_age="0s", after="move:done", tenant="acme")


def test_forgotten_bytes_are_ingested_as_new_when_they_come_again(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha256 = _drop(tmp_path, "a.csv")
    assert main(["--config", str(config), "once"]) == EXIT_OK
    _drop(tmp_path, "b.csv")
    assert main(["--config", str(config), "once"]) == EXIT_OK

    code, out, _ = _run(config, capsys, "forget", sha256, "--tenant", "acme", "--reason", "fixed")
    assert (code, out) == (
        EXIT_OK,
        f"{sha256}: forgotten for tenant acme; its next arrival is ingested as new\n",
    )
    _drop(tmp_path, "c.csv")
    assert main(["--config", str(config), "once"]) == EXIT_OK

    files = [(Path(f["path"]).name, f["status"]) for f in dump(config, "files", capsys)]
    assert files == [("a.csv", "ingested"), ("b.csv", "duplicate"), ("c.csv", "ingested")]
    [audit] = dump(config, "audit", capsys)
    assert (audit["action"], audit["tenant"], audit["sha256"], audit["reason"]) == (
        "forget",
        "acme",
        sha256,
        "fixed",
    )
    assert audit["user"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["forget", "ab" * 32],
            "unknown checksum " + "ab" * 32 + " for tenant default (never seen, or forgotten)",
        ),
        (["forget", "xyz"], "not a SHA-256 (64 hex digits): 'xyz'"),
        (["replay", "ab" * 32], "unknown checksum " + "ab" * 32 + " for tenant default"),
    ],
)
def test_unknown_bytes_are_one_line_and_exit_1(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = _run(config, capsys, *argv, "--reason", "x")
    assert code == EXIT_FAILED
    assert err == f"connector: {message}\n"


def test_replay_ingests_the_archive_copy_again_as_a_new_entry(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The copy's content is ingested again under the file's source and path, with an
    entry of its own; a key accepted within 24 hours still skips its event."""
    sha256 = _drop(tmp_path, "a.csv")
    assert main(["--config", str(config), "once"]) == EXIT_OK

    code, out, _ = _run(
        config,
        capsys,
        "replay",
        sha256.upper(),
        "--tenant",
        "acme",
        "--reason",
        "the platform lost it",
    )

    assert code == EXIT_OK
    assert out.startswith(
        f"{tmp_path / 'inbox' / 'a.csv'}: ingested — 1 rows stored, 0 rejected, 1 duplicates"
    )
    files = dump(config, "files", capsys)
    assert [(f["source"], f["sha256"], f["status"], f["rows"]) for f in files] == [
        ("drop", sha256, "ingested", 2),
        ("drop", sha256, "ingested", 1),
    ]
    assert [e["idempotencyKey"] for e in dump(config, "events", capsys)] == ["k1", None, None]
    assert [a["action"] for a in dump(config, "audit", capsys)] == ["replay"]
    # Its bytes are known again: arriving once more, they are a duplicate.
    _drop(tmp_path, "again.csv")
    assert main(["--config", str(config), "once"]) == EXIT_OK
    assert dump(config, "files", capsys)[-1]["status"] == "duplicate"


def test_replay_without_an_archive_copy_says_so(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha256 = _drop(tmp_path, "a.csv")
    assert main(["--config", str(config), "once"]) == EXIT_OK
    (tmp_path / "archive" / f"{sha256}.csv.gz").unlink()
    code, _, err = _run(config, capsys, "replay", sha256, "--tenant", "acme", "--reason", "x")
    assert code == EXIT_FAILED
    assert err.startswith(f"connector: {sha256}: no archive copy at ")


def _import(config: Path, capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str]:
    code, out, _ = _run(config, capsys, "import", str(path), "--kind", "events")
    return code, out


def test_import_reads_gzip_and_zip_as_their_content(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(b"identifier,name\nu1,buy\nu2,buy\n"))
    zipped = tmp_path / "b.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export/b.csv", "identifier,name\nu3,buy\n")

    assert _import(config, capsys, packed)[0] == EXIT_OK
    assert _import(config, capsys, zipped)[0] == EXIT_OK

    files = dump(config, "files", capsys)
    assert [(f["path"], f["sha256"], f["size"], f["rows"]) for f in files] == [
        (str(packed), hashlib.sha256(packed.read_bytes()).hexdigest(), packed.stat().st_size, 2),
        (str(zipped), hashlib.sha256(zipped.read_bytes()).hexdigest(), zipped.stat().st_size, 1),
    ]
    assert [e["identifier"] for e in dump(config, "events", capsys)] == ["u1", "u2", "u3"]
    assert not list((tmp_path / "staging").glob("**/.unpacked-*"))  # (cleaned up)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("bomb.csv.gz", b"identifier,name\n" + b"u1,buy\n" * 50_000, "decompression bomb"),
        ("two.zip", None, "a .zip must hold one file"),
        ("broken.csv.gz", b"", "not a readable .gz file"),
    ],
)
def test_a_compressed_file_that_cannot_be_read_safely_is_rejected_whole(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes | None,
    reason: str,
) -> None:
    path = tmp_path / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("a.csv", "identifier\nu1\n")
            archive.writestr("b.csv", "identifier\nu2\n")
    elif content:
        path.write_bytes(gzip.compress(content))  # (350 KB of lines: over 200 times smaller)
    else:
        path.write_bytes(b"\x1f\x8b\x08\x00 not gzip at all")

    code, out = _import(config, capsys, path)

    assert code == EXIT_REJECTED
    assert reason in out
    [reject] = dump(config, "rejects", capsys)
    assert reject["line"] is None and reason in reject["reason"]
    assert dump(config, "events", capsys) == []


def test_import_of_a_folder_says_it_is_one(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(config, capsys, "import", str(tmp_path / "inbox"), "--kind", "events")
    assert code == EXIT_FAILED
    assert err == (
        f"connector: import: a folder, not a file: {tmp_path / 'inbox'} (give its"
        f" files: {tmp_path / 'inbox'}/*.csv)\n"
    )


def test_import_flags_set_the_one_off_files_rules(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--encoding`, `--delimiter` and `--identifier` say how to read a file that no source
    describes; they win over the source's settings."""
    path = tmp_path / "export.csv"
    path.write_bytes("E-mail\tname\tcity\nada@example.com\tbuy\tGand\xe9\n".encode("latin-1"))
    code, out, _ = _run(
        config,
        capsys,
        "import",
        str(path),
        "--kind",
        "events",
        "--encoding",
        "latin-1",
        "--delimiter",
        "tab",
        "--identifier",
        "E-mail",
    )
    assert code == EXIT_OK, out
    [event] = dump(config, "events", capsys)
    assert (event["identifier"], event["data"]) == ("ada@example.com", {"city": "Gandé"})


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--encoding", "klingon", "unknown encoding 'klingon'"),
        ("--delimiter", ";;", "a delimiter is one character, not ';;'"),
        ("--delimiter", '"', "a quote, a line break or NUL cannot be the delimiter"),
        ("--identifier", " ", "the identifier column needs a name"),
    ],
)
def test_a_bad_import_flag_is_one_line(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config), "import", "x.csv", "--kind", "events", flag, value])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_a_dry_run_lists_the_rejected_rows(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    """The first 20 rejected rows with their lines and reasons, then how many more."""
    url = (
        f"sqlite:///{tmp_path / 'c.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    config = write_config(tmp_path, store={"url": url})
    path = tmp_path / "r.csv"
    path.write_text("identifier,name\nu1,buy\n" + ",buy\n" * 25)

    code, out, _ = _run(config, capsys, "import", str(path), "--kind", "events", "--dry-run")

    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0].endswith("[dry run: nothing stored]") and "25 rejected" in lines[0]
    assert lines[1:] == [
        *(f"  line {n}: identifier (the identifier) is empty" for n in range(3, 23)),
        "  ... and 5 more rejected rows",
    ]
    assert dump(config, "files", capsys) == []
