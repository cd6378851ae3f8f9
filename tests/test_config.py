"""Configuration: validated once, every problem reported together with its key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connector.cli import main
from connector.config import load_config, parse_config, parse_duration
from connector.errors import ConfigError


def _problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def _source(**settings: object) -> dict[str, object]:
    return {
        "name": "acme",
        "url": "ftps://ingest@files.example.com/outbox",
        "files": [{"kind": "events", "pattern": "*.csv"}],
        **settings,
    }


def test_defaults_without_sources() -> None:
    """An empty document is a valid config: the store defaults, no sources."""
    config = parse_config({})
    assert config.store.path == Path("var/connector.db")
    assert config.sources == ()
    assert (config.ingest.batch_records, config.ingest.commit_interval) == (10_000, "1s")


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    """Unknown keys, bad values and missing files come back together, each with its key."""
    problems = _problems(
        {
            "store": {"pth": "x"},
            "sources": [
                _source(interval="5 minutes", after="archive"),
                _source(name="b", delimiter=";;"),
                _source(name="c", url="sftp://h/x"),
            ],
        }
    )
    assert "store.pth: unknown key" in problems
    assert any(p.startswith("sources[0].interval: ") for p in problems)
    assert any(p.startswith("sources[0].after: ") for p in problems)
    assert any(p.startswith("sources[1].delimiter: ") for p in problems)
    assert any("known_hosts or host_key" in p and p.startswith("sources[2]") for p in problems)


def test_a_delimiter_csv_could_not_tell_from_the_file_is_refused() -> None:
    for bad in ('"', "\n", "\r", "\x00"):
        problems = _problems({"sources": [_source(delimiter=bad)]})
        assert any(p.startswith("sources[0].delimiter: ") for p in problems), bad
    parse_config({"sources": [_source(delimiter="|")]})


def test_plaintext_ftp_is_refused_unless_allowed() -> None:
    """ftp:// sends the password in clear: refused unless allow_plaintext = true."""
    assert any("allow_plaintext" in p for p in _problems({"sources": [_source(url="ftp://h/")]}))
    parse_config({"sources": [_source(url="ftp://h/", allow_plaintext=True)]})


def test_a_password_in_the_url_is_refused_and_not_echoed() -> None:
    """A literal password is never accepted, and the error does not repeat it."""
    problems = _problems({"sources": [_source(url="ftps://u:s3cret-sentinel@h/")]})
    assert problems and not any("s3cret-sentinel" in p for p in problems)


def test_referenced_files_must_exist_and_password_files_be_private(tmp_path: Path) -> None:
    """Missing files are named; a password file readable by others is refused."""
    secret = tmp_path / "pw"
    secret.write_text("x")
    secret.chmod(0o644)
    problems = _problems(
        {"sources": [_source(ca_file=str(tmp_path / "nope.pem"), password_file=str(secret))]}
    )
    assert f"sources[0].ca_file: file not found: {tmp_path / 'nope.pem'}" in problems
    assert any(p.startswith("sources[0].password_file: readable by group") for p in problems)


def test_duplicate_source_names_are_refused() -> None:
    """Source names are unique: they identify rows in the ledger."""
    assert any("unique" in p for p in _problems({"sources": [_source(), _source()]}))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("2d", 172800)],
)
def test_durations(text: str, seconds: float) -> None:
    """Durations are numbers with units, parsed in one place."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "five minutes", "5x", "-1s", ""])
def test_bad_durations(text: str) -> None:
    """A duration without a unit is a mistake, not five seconds."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_cli_bad_config_exits_78_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad config fails at start with status 78, naming the key, with no traceback."""
    config = tmp_path / "c.toml"
    config.write_text('[store]\npath = "x.db"\ncolour = "blue"\n')
    assert main(["--config", str(config), "dump", "files"]) == 78
    err = capsys.readouterr().err
    assert err == "connector: config: store.colour: unknown key\n"


def test_cli_missing_explicit_config_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config path given but absent is an error, not a silent fallback to defaults."""
    assert main(["--config", str(tmp_path / "absent.toml"), "dump", "files"]) == 78
    assert "config file not found" in capsys.readouterr().err


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$CONNECTOR_CONFIG is used when --config is not given."""
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{tmp_path}/s.db"\n')
    monkeypatch.setenv("CONNECTOR_CONFIG", str(config))
    assert load_config(None).store.path == tmp_path / "s.db"
    assert os.environ["CONNECTOR_CONFIG"] == str(config)


def test_the_example_config_is_valid_apart_from_its_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/connector.example.toml only lacks the files and variables it points at."""
    example = Path(__file__).parent.parent / "config" / "connector.example.toml"
    monkeypatch.setenv("ACME_PASSWORD", "x")
    with pytest.raises(ConfigError) as info:
        load_config(example)
    assert info.value.problems == [
        "sources[0].known_hosts: file not found: /etc/connector/known_hosts"
    ]


def test_passwords_from_env_file_or_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """password_env, then password_file, then $CREDENTIALS_DIRECTORY/<source name>."""
    from connector.secrets import source_password

    monkeypatch.setenv("ACME_PW", "from-env")
    assert (
        source_password(parse_config({"sources": [_source(password_env="ACME_PW")]}).sources[0])
        == "from-env"
    )
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    config = parse_config({"sources": [_source(password_file=str(secret))]})
    assert source_password(config.sources[0]) == "from-file"
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "acme").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    password = source_password(parse_config({"sources": [_source()]}).sources[0])
    assert password == "from-systemd"
    assert "from-systemd" not in repr(password)


@pytest.mark.parametrize("codec", ["hex", "rot13", "base64", "no-such-codec"])
def test_encoding_must_be_a_text_codec(codec: str) -> None:
    """Only codecs that turn bytes into text are encodings for CSV files."""
    assert any(p.startswith("sources[0].encoding: ") for p in _problems(
        {"sources": [_source(encoding=codec)]}
    ))  # fmt: skip


@pytest.mark.parametrize("url", ["ftp:///outbox", "ftps://:21/x", "sftp:///home/x"])
def test_a_network_url_without_a_host_is_refused(url: str) -> None:
    """Rather than connecting to localhost by accident."""
    problems = _problems({"sources": [_source(url=url, allow_plaintext=True)]})
    assert any(p.startswith("sources[0].url: ") and "names its host" in p for p in problems)
