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
    assert (config.ingest.batch_records, str(config.ingest.commit_interval)) == (10_000, "1s")


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    """Unknown keys, bad values and missing files come back together, each with its key."""
    problems = _problems(
        {
            "store": {"pth": "x"},
            "sources": [
                _source(interval="5 minutes", after="archive"),
                _source(name="b", delimiter=";;"),
                _source(name="c", url="sftp://u@h/x"),
            ],
        }
    )
    assert "store.pth: unknown key (did you mean path?)" in problems
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
    assert any(
        p.startswith("sources[0].encoding: ")
        for p in _problems({"sources": [_source(encoding=codec)]})
    )


@pytest.mark.parametrize("url", ["ftp:///outbox", "ftps://:21/x", "sftp:///home/x"])
def test_a_network_url_without_a_host_is_refused(url: str) -> None:
    """Rather than connecting to localhost by accident."""
    problems = _problems({"sources": [_source(url=url, allow_plaintext=True)]})
    assert any(p.startswith("sources[0].url: ") and "names its host" in p for p in problems)


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("garbage", "Wrong number of fields"),
        ("61 25 * * *", "maximum value"),
        ("*/0 * * * *", "Increment must be higher than 0"),
        ("* * * * * *", "Wrong number of fields"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_a_cron_the_scheduler_cannot_run_is_refused(cron: str, why: str) -> None:
    """Checked by the scheduler's own parser at start-up, not met by `run` alone."""
    (problem,) = _problems({"sources": [_source(cron=cron)]})
    assert problem.startswith("sources[0].cron: ") and why in problem


@pytest.mark.parametrize("cron", ["*/5 * * * *", "0 6 * * mon-fri", "30 2 29 2 *"])
def test_a_runnable_cron_is_kept(cron: str) -> None:
    """Ranges, steps, names, and a date that comes only in leap years are all fine."""
    assert parse_config({"sources": [_source(cron=cron)]}).sources[0].cron == cron


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("interval", "99999999999999h", "'99999999999999h' is too long (at most 366d)"),
        ("interval", "367d", "'367d' is too long (at most 366d)"),
        ("interval", "0s", "'0s': must be longer than 0s"),
        ("interval", "0m0s", "'0m0s': must be longer than 0s"),
        ("interval", "9" * 400 + "s", f"not a duration: '{'9' * 40}…' is too long"),
        ("timeout", "0s", "'0s': must be longer than 0s"),
        ("timeout", "2h", "'2h' is too long (at most 1h)"),
        ("min_age", "2d", "'2d' is too long (at most 1d)"),
    ],
)
def test_a_source_duration_out_of_its_bounds_is_refused(key: str, value: str, why: str) -> None:
    """Zero where it would mean "the default" or "fail at once", and values that would
    overflow a timer (systemd would restart a `run` that crashes on them every 5 s)."""
    assert _problems({"sources": [_source(**{key: value})]}) == [f"sources[0].{key}: {why}"]


def test_durations_that_may_be_zero_or_must_not() -> None:
    """min_age 0 takes files at once and commit_interval 0 commits every batch: kept;
    archive_keep 0 would remove every copy as soon as it is made: refused."""
    config = parse_config(
        {
            "ingest": {"commit_interval": "0s"},
            "sources": [_source(min_age="0s")],
        }
    )
    assert (str(config.sources[0].min_age), str(config.ingest.commit_interval)) == ("0s", "0s")
    assert _problems({"paths": {"archive_keep": "0d"}, "ingest": {"commit_interval": "31s"}}) == [
        "paths.archive_keep: '0d': must be longer than 0s",
        "ingest.commit_interval: '31s' is too long (at most 30s)",
    ]


def test_cli_check_refuses_a_bad_cron_with_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` says what `run` would have crashed on, in one line, and exits 78."""
    config = tmp_path / "c.toml"
    config.write_text(
        '[[sources]]\nname = "d"\nurl = "file:///tmp"\ncron = "61 25 * * *"\n'
        '[[sources.files]]\nkind = "events"\npattern = "*.csv"\n'
    )
    assert main(["--config", str(config), "check"]) == 78
    err = capsys.readouterr().err
    assert err.startswith("connector: config: sources[0].cron: not a cron expression (")
    assert err.count("\n") == 1


@pytest.mark.parametrize("url", ["file://in", "file://in/sub", "file://server/share"])
def test_a_file_url_naming_a_host_is_refused(url: str) -> None:
    """`file://in` names the host "in" and the folder /: said, with the forms that work."""
    (problem,) = _problems({"sources": [_source(url=url)]})
    assert problem.startswith("sources[0].url: a file URL names no host, and this one names")
    assert "file:///absolute/folder (three slashes) or file:relative/folder" in problem


@pytest.mark.parametrize("url", ["file://ingest:hunter2@host/in", "sftp://u:hunter2@/in"])
def test_a_password_in_any_url_is_refused_without_being_shown(url: str) -> None:
    """Whatever else is wrong with the URL, its password is the first thing said, and the
    message never quotes it."""
    (problem,) = _problems({"sources": [_source(url=url)]})
    assert problem == (
        "sources[0].url: a password in the URL is refused; use password_env or password_file"
    )


@pytest.mark.parametrize(
    ("url", "folder"),
    [
        ("file:///srv/in", "/srv/in"),
        ("file://localhost/srv/in", "/srv/in"),
        ("file:in", "in"),
        ("file:drop/in%20box", "drop/in box"),
    ],
)
def test_file_urls_name_a_folder_absolute_or_relative(url: str, folder: str) -> None:
    """Three slashes for an absolute folder (or localhost), none for one relative to the
    working directory, like every other path in the config."""
    assert parse_config({"sources": [_source(url=url)]}).sources[0].remote_path == folder


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:", "names no folder"),
        ("file://", "names no folder"),
        ("file:///in#1", "'?' and '#'"),
        ("file:///in?x", "'?' and '#'"),
    ],
)
def test_a_file_url_that_would_lose_part_of_its_folder_is_refused(url: str, why: str) -> None:
    """An empty path would poll /, and a '#' or '?' would cut the folder's name short."""
    (problem,) = _problems({"sources": [_source(url=url)]})
    assert problem.startswith("sources[0].url: ") and why in problem


def test_a_relative_file_url_is_polled_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`file:inbox` is the folder inbox where the connector runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "e.csv").write_text("identifier,name\nu1,buy\n")
    (tmp_path / "c.toml").write_text(
        '[[sources]]\nname = "d"\nurl = "file:inbox"\nmin_age = "0s"\n'
        '[[sources.files]]\nkind = "events"\npattern = "*.csv"\n'
    )
    assert main(["--config", "c.toml", "once"]) == 0
    assert "d: 1 ingested" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("key", "value"),
    [("after", "move:../../escaped"), ("error_dir", "move:a/../../b"), ("after", "move:..")],
)
def test_a_move_folder_climbing_out_with_dotdot_is_refused(key: str, value: str) -> None:
    """A relative move folder stays inside the source's folder; one elsewhere is written
    as an absolute path, so that where files go is plain from the config."""
    (problem,) = _problems({"sources": [_source(**{key: value})]})
    assert problem.startswith(f"sources[0].{key}: {value!r}: '..' is refused in a move folder")


@pytest.mark.parametrize("value", ["move:.", "move:./", "move:/outbox", "move:/outbox/./"])
def test_moving_files_into_their_own_folder_is_refused(value: str) -> None:
    """They would be listed again, as new names, at every poll."""
    (problem,) = _problems({"sources": [_source(after=value)]})
    assert problem.startswith("sources[0]") and "the source's own folder" in problem


@pytest.mark.parametrize("value", ["move:processed", "move:done/2026", "move:/archive/acme"])
def test_move_folders_inside_or_named_absolutely_are_kept(value: str) -> None:
    """Inside the source's folder, or elsewhere by an absolute path (on the server; for a
    file:// source, on this machine, another file system included)."""
    assert parse_config({"sources": [_source(after=value, error_dir=value)]}).sources[0].after


@pytest.mark.parametrize("text", ["", "\n\n", "# no keys yet\n"])
def test_an_empty_known_hosts_file_is_said_to_be_empty(tmp_path: Path, text: str) -> None:
    """Not "file not found", nor a refused key at each poll: empty, and how to fill it."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(text)
    source = _source(url="sftp://u@h/x", known_hosts=str(known_hosts), host_key=None)
    source.pop("host_key")
    assert _problems({"sources": [source]}) == [
        f"sources[0].known_hosts: file is empty (no host key): {known_hosts}; add the server's"
        f" key, e.g. ssh-keyscan -p PORT HOST >> {known_hosts}"
    ]


def test_a_config_that_is_not_utf8_is_one_line_and_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file saved in Latin-1 (or UTF-16) is named, with the line of the first bad byte."""
    config = tmp_path / "c.toml"
    config.write_bytes('[store]\npath = "café.db"\n'.encode("latin-1"))
    assert main(["--config", str(config), "dump", "files"]) == 78
    assert capsys.readouterr().err == (
        f"connector: config: {config}: line 2: not UTF-8 text; TOML is UTF-8\n"
    )


def test_a_file_where_one_of_our_folders_should_be_is_refused(tmp_path: Path) -> None:
    """`staging = "/etc/passwd"` and the like are said at start-up, naming the key."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    problems = _problems(
        {
            "store": {"path": str(blocker / "c.db")},
            "paths": {"staging": str(blocker), "archive": str(blocker / "sub" / "archive")},
        }
    )
    assert problems == [
        f"store.path: {blocker} is not a folder",
        f"paths.staging: {blocker} is not a folder",
        f"paths.archive: {blocker} is not a folder",
    ]
    assert _problems({"store": {"path": str(tmp_path)}}) == [
        f"store.path: {tmp_path} is a folder; name the store's file"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://connector:hunter2@db.example.com/connector",
        "postgresql://connector@db.example.com/connector?password=hunter2",
        "postgresql://connector@db.example.com/connector?sslmode=require&password=",
    ],
)
def test_a_password_in_the_store_url_is_refused(url: str) -> None:
    """Before the @ or in the query (which libpq reads too): the config file is no secret."""
    problems = _problems({"store": {"url": url}})
    assert problems == [
        "store.url: a password in the URL is refused; use password_env or password_file"
    ]
    assert "hunter2" not in str(problems)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://db.example.com/connector?foo=bar", 'invalid URI query parameter: "foo"'),
        (
            "postgresql://db.example.com/connector?sslmode=bogus",
            "sslmode 'bogus' is not one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (
            "postgresql://db.example.com:99999/connector",
            "port '99999' is not a number from 1 to 65535",
        ),
        ("postgres://db.example.com:0/connector", "port '0' is not a number from 1 to 65535"),
        (
            "postgresql://db.example.com/connector?connect_timeout=soon",
            "connect_timeout 'soon' is not a whole number of seconds",
        ),
    ],
)
def test_a_postgresql_url_libpq_would_refuse_is_a_config_error(
    url: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Said at start, naming the key (exit 78), not when the store is first connected."""
    assert _problems({"store": {"url": url}}) == [f"store.url: {problem}"]
    config = tmp_path / "connector.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')
    assert main(["--config", str(config), "dump", "files"]) == 78
    assert capsys.readouterr().err == f"connector: config: store.url: {problem}\n"


def test_a_postgresql_url_with_libpq_options_is_taken() -> None:
    url = "postgresql://a.example.com,b.example.com:5432,5433/c?connect_timeout=30&sslmode=require"
    assert parse_config({"store": {"url": url}}).store.url == url


@pytest.mark.parametrize("name", ["store", "webhook"])
def test_a_source_named_as_another_credential_is_refused(name: str) -> None:
    """Its systemd credential would be the store's ($CREDENTIALS_DIRECTORY/store), or the
    webhook URL's."""
    assert _problems({"sources": [_source(name=name)]}) == [
        f"sources[0].name: '{name}' is the {name}'s credential ($CREDENTIALS_DIRECTORY/{name}):"
        f" a source so named would read the {name}'s secret; choose another name"
    ]
    assert parse_config({"sources": [_source(name="store2")]}).sources[0].name == "store2"


def test_a_source_name_or_folder_too_long_for_the_stores_indexes_is_refused() -> None:
    """A file's source and path are indexed in the store: they are bounded at start-up
    rather than failing every poll of the source at its first file."""
    files = [{"kind": "events", "pattern": "*.csv"}]
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "sources": [
                    {"name": "n" * 101, "url": "file:///in", "files": files},
                    {"name": "deep", "url": "file:///" + "d/" * 600, "files": files},
                ]
            }
        )
    assert caught.value.problems[0].startswith("sources[0].name: ")
    assert caught.value.problems[1] == (
        "sources[1].url: the folder's path is longer than 1,024 bytes"
    )


def test_config_messages_say_what_to_write_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt key names the closest one; a password in the config says where one goes;
    an empty list says how many entries it needs, not the validation library's words."""
    config = tmp_path / "c.toml"
    config.write_text(
        '[[sources]]\nname = "a"\nurl = "sftp://u@h/x"\nknwon_hosts = "/x"\n'
        'password = "hunter2"\nfiles = []\n[ingest]\nbatch_record = 5\n'
    )
    assert main(["--config", str(config), "check"]) == 78
    assert capsys.readouterr().err.splitlines() == [
        "connector: config: ingest.batch_record: unknown key (did you mean batch_records?)",
        "connector: config: sources[0].files: needs at least 1 entry",
        "connector: config: sources[0].knwon_hosts: unknown key (did you mean known_hosts?)",
        "connector: config: sources[0].password: a password is never written in the config:"
        " name an environment variable (password_env) or a file (password_file) that holds it",
    ]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftps://host:99999/in", "sources[0].url: invalid port: a number from 1 to 65535"),
        ("sftp://host:x/in", "sources[0].url: invalid port: a number from 1 to 65535"),
        ("sftp://host/in", "sources[0].url: an sftp:// URL names its user:"),
    ],
)
def test_a_url_a_source_could_not_use_is_refused_at_start_up(url: str, says: str) -> None:
    """What an adapter would otherwise find mid-poll is said at start-up, naming the key."""
    (problem,) = _problems({"sources": [_source(url=url)]})
    assert problem.startswith(says), problem


def test_a_ca_file_tls_cannot_load_is_refused_at_start_up(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    source = _source(url="ftps://ingest@host/in", ca_file=str(bundle))
    (problem,) = _problems({"sources": [source]})
    assert problem.startswith("sources[0].ca_file: cannot load: "), problem
