"""The configuration: TOML validated once, at start-up, into frozen typed models.

Every problem is collected and reported together, each naming its key
(``sources[0].known_hosts: file not found``); unknown keys are errors so typos are never silent.
"""

from __future__ import annotations

import codecs
import difflib
import fnmatch
import math
import os
import posixpath
import re
import ssl
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from connector.actions import Action, Delete, Leave, Move, parse_action
from connector.csvrules.rules import MAX_COLUMNS, MAX_FIELD, MAX_RECORD, FileRules, Kind
from connector.errors import ConfigError
from connector.status import Status

DEFAULT_PATH = Path("config/connector.toml")
SCHEMES = ("sftp", "ftps", "ftp", "file")
# A source's folder, at most: with a name (255 bytes at most) its files' paths stay well
# within what a database index holds (PostgreSQL's: about 2,700 bytes an entry).
MAX_FOLDER_BYTES = 1024

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# No duration is longer, whatever its key: beyond, a date computed from it overflows.
LONGEST = "36500d"


def parse_duration(text: str) -> float:
    """``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"`` → seconds. Bare numbers are refused:
    a unit-less ``interval = 5`` is more often a mistake than a wish for five seconds."""
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"not a duration: {_shown(text)} (use e.g. '30s', '5m', '1h30m')")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds):  # ("1" and 400 zeros: a float says infinity)
        raise ValueError(f"not a duration: {_shown(text)} is too long")
    return seconds


def _shown(text: str) -> str:
    """``text`` quoted for a message, cut if long (a typo may be a pasted page)."""
    return repr(text if len(text) <= 40 else text[:40] + "…")


# A value parsed from the config's text, written back as that text (``model_dump``).
_AS_TEXT = PlainSerializer(str, return_type=str)


class Seconds(float):
    """A duration as the config gives it: parsed once into seconds, which arithmetic sees,
    keeping the text it was written as, which messages show (``f"{d}"`` is ``30s``)."""

    text: str

    def __new__(cls, text: str) -> Seconds:
        seconds = super().__new__(cls, parse_duration(text))
        seconds.text = text
        return seconds

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return repr(self.text)

    def __reduce__(self) -> tuple[type[Seconds], tuple[str]]:
        return (Seconds, (self.text,))  # (pickled as its text: float's way loses it)


def _within(longest: str, *, zero: bool = True) -> PlainValidator:
    """A duration at most ``longest`` (a sane bound for its key), and not 0 unless
    ``zero``: a value that would overflow a date or a timer is refused at start-up."""
    most = parse_duration(longest)

    def check(value: object) -> Seconds:
        if isinstance(value, Seconds):
            return value
        if not isinstance(value, str):
            raise ValueError("a duration is written as text, e.g. '30s', '5m', '1h30m'")
        seconds = Seconds(value)
        if seconds > most:
            raise ValueError(f"{_shown(value)} is too long (at most {longest})")
        if not seconds and not zero:
            raise ValueError(f"{_shown(value)}: must be longer than 0s")
        return seconds

    return PlainValidator(check)


# Durations, each bounded for its key (written back as they were given: ``str``).
Duration = Annotated[Seconds, _within(LONGEST), _AS_TEXT]
# A poll at least once a year.
Interval = Annotated[Seconds, _within("366d", zero=False), _AS_TEXT]
# 0 would fail every connection.
Timeout = Annotated[Seconds, _within("1h", zero=False), _AS_TEXT]
# 0: take files at once (`once` waits this long).
MinAge = Annotated[Seconds, _within("1d"), _AS_TEXT]
# A commit group holds the store's write lock this long; other writers wait 60 s at most.
CommitInterval = Annotated[Seconds, _within("30s"), _AS_TEXT]
# 0 would remove every copy at once.
Keep = Annotated[Seconds, _within(LONGEST, zero=False), _AS_TEXT]


def _action(value: object) -> Action:
    if isinstance(value, Leave | Delete | Move):
        return value
    if not isinstance(value, str):
        raise ValueError("must be 'leave', 'delete' or 'move:<remote folder>'")
    return parse_action(value)


ActionSetting = Annotated[Action, PlainValidator(_action), _AS_TEXT]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# One customer account: its ledger, keys and contacts are its own (docs/guarantees.md).
DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[A-Za-z0-9_.-]+$"
Tenant = Annotated[str, Field(min_length=1, max_length=100, pattern=TENANT_PATTERN)]

STORE_SCHEMES = ("sqlite", "postgresql", "postgres")
STORE_CREDENTIAL = "store"  # the store's systemd credential (connector.secrets)
WEBHOOK_CREDENTIAL = "webhook"  # the webhook URL's
DEFAULT_STORE = Path("var/connector.db")
Lease = Annotated[Seconds, _within("1h", zero=False), _AS_TEXT]


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _check_postgres_url(url: str) -> None:
    """What libpq would refuse only on connecting (a traceback, or a vague store error):
    an unknown option, a port or timeout that is no number, an sslmode it does not know."""
    from psycopg import Error  # (here: SQLite stores never load psycopg)
    from psycopg.conninfo import conninfo_to_dict

    try:
        options = conninfo_to_dict(url)
    except Error as exc:
        raise ValueError(str(exc).strip().splitlines()[0] or "not a PostgreSQL URL") from None
    for port in str(options.get("port", "")).split(","):
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    timeout = str(options.get("connect_timeout", "0"))
    if not (timeout.isascii() and timeout.isdigit()):
        raise ValueError(f"connect_timeout {timeout!r} is not a whole number of seconds")
    sslmode = options.get("sslmode")
    if sslmode is not None and sslmode not in _SSLMODES:
        raise ValueError(f"sslmode {sslmode!r} is not one of {', '.join(_SSLMODES)}")


class StoreConfig(_Model):
    """Where the ledger and the rows live: ``path`` (an SQLite file, the default), or
    ``url``: ``sqlite:///relative/file.db``, ``sqlite:////absolute/file.db``, or
    ``postgresql://user@host:5432/database``. Once validated, ``path`` is the SQLite file
    whichever way it was given, and None for PostgreSQL."""

    url: str | None = None
    path: Path | None = None
    password_env: str | None = None  # PostgreSQL; or password_file, or libpq's own ways
    password_file: Path | None = None
    lease: Lease = Seconds("30s")  # how long a silent replica keeps its claims (PostgreSQL)
    keep: Keep | None = None  # records of files final longer ago are removed (None: kept)
    # This process among those sharing the store, in logs, metrics and claims; default
    # host:pid. Two processes must not share a name.
    replica: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _sqlite_path(cls, data: Any) -> Any:
        """An SQLite URL is read into ``path``; neither key: the default file."""
        if not isinstance(data, Mapping):
            return data
        url, path = data.get("url"), data.get("path")
        if url is not None and path is not None:
            raise ValueError("set url or path, not both")
        if url is None:
            return {**data, "path": path if path is not None else DEFAULT_STORE}
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is not None and parts.scheme == "sqlite" and _names_file(parts):
            return {**data, "path": Path(unquote(parts.path[1:]))}
        return data  # (anything wrong with the URL is said by _known_scheme, naming the key)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in STORE_SCHEMES:
            raise ValueError(f"scheme {parts.scheme!r} is not one of sqlite, postgresql")
        if parts.scheme == "sqlite" and not _names_file(parts):
            raise ValueError(
                "an SQLite URL names its file: sqlite:///relative/file.db or"
                " sqlite:////absolute/file.db"
            )
        # (libpq takes one from the query too: ?password=...)
        if parts.password is not None or any(
            key == "password" for key, _ in parse_qsl(parts.query, keep_blank_values=True)
        ):
            raise ValueError("a password in the URL is refused; use password_env or password_file")
        if parts.scheme != "sqlite":
            _check_postgres_url(value)
        return value

    @model_validator(mode="after")
    def _coherent(self) -> StoreConfig:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("set password_env or password_file, not both")
        if self.path is not None and (self.password_env or self.password_file):
            raise ValueError("an SQLite store takes no password")
        return self

    @property
    def scheme(self) -> str:
        """The adapter's: ``sqlite`` or ``postgresql``."""
        return "sqlite" if self.path is not None else "postgresql"


class PathsConfig(_Model):
    staging: Path = Path("var/staging")
    archive: Path = Path("var/archive")
    archive_keep: Keep | None = None  # e.g. "30d"; unset: archived copies are kept


class IngestConfig(_Model):
    # 10,000 measured as fast as 20,000 with a third less memory (docs/benchmarks.md).
    batch_records: int = Field(default=10_000, ge=1, le=1_000_000)
    commit_interval: CommitInterval = Seconds("1s")  # a crash redoes at most this much work
    # Bounds that keep a file of any shape in bounded memory (docs/guarantees.md): a
    # longer record is rejected, a wider header rejects the file. The defaults keep each
    # process under 200 MB whatever the file; memory grows with them.
    max_record_chars: int = Field(default=MAX_RECORD, ge=2 * MAX_FIELD, le=16 << 20)
    max_columns: int = Field(default=MAX_COLUMNS, ge=1, le=100_000)
    # A file with more rejected rows is rejected whole: it is the wrong file or the wrong
    # settings (encoding, delimiter, kind), not a few bad rows.
    max_rejects: int = Field(default=100_000, ge=0)
    # A compressed file (.gz, .zip) whose content passes either is refused whole, as a
    # decompression bomb: MB of content, and times the compressed size (CSV compresses
    # 5 to 20 times; bombs, thousands of times).
    max_unpacked_mb: int = Field(default=16_000, ge=1)
    max_unpack_ratio: int = Field(default=200, ge=1)


class MetricsConfig(_Model):
    listen: str | None = Field(default=None, pattern=r"^[^:\s]+:[0-9]{1,5}$")  # "host:port"
    max_missed_polls: int = Field(default=3, ge=1)  # store failures in a row: /healthz 503 past it


class WebhookConfig(_Model):
    """Where to POST alerts (a file rejected whole, a source failing and recovered). The
    URL often holds a token, so it is a secret: from the environment, a private file or
    the systemd credential `webhook`, never from the config itself."""

    url_env: str | None = None
    url_file: Path | None = None
    timeout: Timeout = Seconds("10s")  # each attempt's


class FileEntry(_Model):
    kind: Kind
    pattern: str = Field(min_length=1)
    event_name: str | None = None
    event_columns: tuple[str, ...] | None = None
    columns: dict[str, str] = Field(default_factory=dict)

    @field_validator("event_name")
    @classmethod
    def _name_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _event_columns_need_a_name(self) -> FileEntry:
        if self.event_columns is not None and self.kind == "contacts" and not self.event_name:
            raise ValueError("event_columns needs event_name on a contacts entry")
        if self.event_columns is not None and self.kind == "events":
            raise ValueError("event_columns applies to contacts entries only")
        return self


class SourceConfig(_Model):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str
    tenant: Tenant = DEFAULT_TENANT
    password_env: str | None = None
    password_file: Path | None = None
    key_file: Path | None = None
    known_hosts: Path | None = None
    host_key: str | None = Field(default=None, pattern=r"^SHA256:[A-Za-z0-9+/]{43}=?$")
    ca_file: Path | None = None
    allow_plaintext: bool = False
    # sftp: also accept CBC ciphers, 3DES, SHA-1/MD5 MACs and weaker key exchanges (old servers)
    sftp_legacy_algorithms: bool = False
    interval: Interval | None = None
    cron: str | None = None
    min_age: MinAge = Seconds("30s")
    ready: Literal["stable", "marker"] = "stable"  # marker: take X.csv once X.csv.done exists
    max_files: int = Field(default=100, ge=1)  # files taken per poll, oldest first
    timeout: Timeout = Seconds("30s")  # connect, and inactivity during a transfer
    after: ActionSetting = Leave()
    # Where files rejected whole go: the same forms as `after`.
    error_dir: ActionSetting = Move("rejected")
    max_tries: int = Field(default=5, ge=1)  # failed tries in a row before a file is set aside
    expect_every: Interval | None = None  # a new file at least this often, else file_overdue
    # Write <file>.rejects.csv where a file with rejected rows (or rejected whole) went
    reject_report: bool = False
    # Events older than this are rejected (an old event can set off a campaign); unset: kept
    max_event_age: Keep | None = None
    # Times written without a UTC offset, off by default (such a time rejects its row):
    # read in this IANA zone, and by these strptime formats (a format with %z: its offset)
    timezone: str | None = None
    timestamp_formats: tuple[str, ...] = ()
    decimal: Literal[".", ","] = "."  # ",": "12,50" is the number 12.5
    identifier: str = Field(default="identifier", min_length=1)
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)
    encoding: str = "utf-8"
    files: tuple[FileEntry, ...] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _not_the_stores(cls, value: str) -> str:
        # (a source's systemd credential is named after it, $CREDENTIALS_DIRECTORY/<name>)
        if value in (STORE_CREDENTIAL, WEBHOOK_CREDENTIAL):
            raise ValueError(
                f"{value!r} is the {value}'s credential ($CREDENTIALS_DIRECTORY/{value}): a"
                f" source so named would read the {value}'s secret; choose another name"
            )
        return value

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        scheme = parts.scheme
        if scheme not in SCHEMES:
            raise ValueError(f"scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
        # (first: the messages below quote parts of the URL)
        if parts.password is not None:
            raise ValueError("a password in the URL is refused; use password_env or password_file")
        if scheme != "file" and not parts.hostname:
            raise ValueError(f"a {scheme}:// URL names its host: {scheme}://user@host/folder")
        try:
            parts.port  # noqa: B018 (urlsplit checks the port when asked for it)
        except ValueError:
            raise ValueError("invalid port: a number from 1 to 65535") from None
        if scheme == "sftp" and not parts.username:
            raise ValueError("an sftp:// URL names its user: sftp://user@host[:port]/folder")
        if scheme == "file":
            _check_file_url(parts)
        if len(unquote(parts.path).encode("utf-8", "surrogateescape")) > MAX_FOLDER_BYTES:
            # (a file's path, folder and name, must fit the store's indexes)
            raise ValueError(f"the folder's path is longer than {MAX_FOLDER_BYTES:,} bytes")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        return known_codec(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {_shown(value)} (an IANA name, e.g. 'Europe/Brussels')"
                ) from None
        return value

    @field_validator("timestamp_formats")
    @classmethod
    def _usable_formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for form in value:
            directives = form.replace("%%", "")
            if "%Z" in directives:
                raise ValueError(
                    f"{_shown(form)}: %Z reads a zone's name but not its offset; use %z"
                    " (+0200, Z), or timezone for times without one"
                )
            if "%" not in directives:
                raise ValueError(
                    f"{_shown(form)} has no strptime directive (e.g. '%d/%m/%Y %H:%M')"
                )
        return value

    @model_validator(mode="after")
    def _zone_for_formats(self) -> SourceConfig:
        if self.timezone is None and any(
            "%z" not in f.replace("%%", "") for f in self.timestamp_formats
        ):
            raise ValueError(
                "timestamp_formats without %z read times without an offset: set timezone"
                " (e.g. 'Europe/Brussels', or 'UTC')"
            )
        return self

    @field_validator("cron")
    @classmethod
    def _runnable_cron(cls, value: str | None) -> str | None:
        if value is not None:
            from connector.scheduler import validate_cron  # APScheduler: only for a cron

            validate_cron(value)
        return value

    @field_validator("delimiter")
    @classmethod
    def _usable_delimiter(cls, value: str | None) -> str | None:
        return None if value is None else usable_delimiter(value)

    @model_validator(mode="after")
    def _coherent(self) -> SourceConfig:
        scheme = self.scheme
        problems = []
        if self.interval is not None and self.cron is not None:
            problems.append("set interval or cron, not both")
        if self.password_env is not None and self.password_file is not None:
            problems.append("set password_env or password_file, not both")
        if scheme == "ftp" and not self.allow_plaintext:
            problems.append("ftp:// sends the password in clear; use ftps:// or allow_plaintext")
        if scheme == "sftp" and self.known_hosts is None and self.host_key is None:
            problems.append("an sftp source needs known_hosts or host_key to check the server")
        for key in ("after", "error_dir"):
            action = getattr(self, key)
            if (
                isinstance(action, Move)
                and action.folder.startswith("/")
                and (posixpath.normpath(action.folder) == posixpath.normpath(self.remote_path))
            ):
                problems.append(f"{key}: {action} is the source's own folder")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def remote_path(self) -> str:
        return unquote(urlsplit(self.url).path) or "/"

    def path_of(self, name: str) -> str:
        """A listed file's path on the source, as the ledger records it."""
        return self.remote_path.rstrip("/") + "/" + name

    def report_folder(self) -> str:
        """Where the reject report of a deleted file goes: the folder files rejected whole
        go to, else the source's own ("")."""
        return self.error_dir.folder if isinstance(self.error_dir, Move) else ""

    def action_for(self, status: Status) -> Action:
        """The remote action for a file decided with ``status``: `after` for one ingested
        (or a duplicate), `error_dir` for one rejected whole."""
        return self.after if status.accepted else self.error_dir

    def rules_for(self, kind: Kind, file_name: str) -> FileRules:
        """The CSV rules for ``file_name``: the first entry of ``kind`` whose pattern matches,
        else the first entry of that kind, else the defaults with this source's settings."""
        entries = [e for e in self.files if e.kind == kind]
        entry = next((e for e in entries if fnmatch.fnmatchcase(file_name, e.pattern)), None)
        return self.rules_of(kind, entry or (entries[0] if entries else None))

    def rules_of(self, kind: Kind, entry: FileEntry | None) -> FileRules:
        """The CSV rules of one file entry (or the defaults), with this source's settings."""
        return FileRules(
            kind=kind,
            identifier=self.identifier,
            delimiter=self.delimiter,
            encoding=self.encoding,
            columns=dict(entry.columns) if entry else {},
            event_name=entry.event_name if entry else None,
            event_columns=entry.event_columns if entry else None,
            timezone=self.timezone,
            timestamp_formats=self.timestamp_formats,
            decimal=self.decimal,
            max_event_age=None if self.max_event_age is None else int(self.max_event_age),
            max_event_age_text=str(self.max_event_age or ""),
        )


class Config(_Model):
    store: StoreConfig = Field(default_factory=StoreConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    sources: tuple[SourceConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique: {', '.join(duplicates)}")
        return self

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)


def known_codec(value: str) -> str:
    """An encoding the CSV rules can decode with (ValueError saying why not)."""
    try:
        codec = codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown encoding {value!r}") from None
    if not codec._is_text_encoding:  # e.g. "hex", "rot13": bytes-to-bytes codecs
        raise ValueError(f"{value!r} is not a text encoding")
    return value


def usable_delimiter(value: str) -> str:
    """One character that can separate fields (ValueError saying why not)."""
    if len(value) != 1:
        raise ValueError(f"a delimiter is one character, not {value!r}")
    if value in '"\r\n\x00':
        raise ValueError("a quote, a line break or NUL cannot be the delimiter")
    return value


def _names_file(parts: SplitResult) -> bool:
    """Whether an sqlite: URL names a file: three slashes, then its path."""
    return not parts.netloc and parts.path.startswith("/") and len(parts.path) > 1


def _check_file_url(parts: SplitResult) -> None:
    """A file:// URL is a local folder: ``file:///absolute/folder``, or ``file:relative``
    from the working directory. ``file://in`` would name a host, "in", and the folder /."""
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"a file URL names no host, and this one names {parts.netloc!r}: write"
            " file:///absolute/folder (three slashes) or file:relative/folder"
        )
    if not parts.path:
        raise ValueError("names no folder: write file:///absolute/folder or file:relative/folder")
    if parts.query or parts.fragment:
        raise ValueError("'?' and '#' would end the folder's name: write them %3F and %23")


def _key(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        if loc[-1] == "password":
            return (
                "a password is never written in the config: name an environment variable"
                " (password_env) or a file (password_file) that holds it"
            )
        near = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1)
        return f"unknown key (did you mean {near[0]}?)" if near else "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    if error["type"] == "too_short":  # (a list: the library's words name a "Tuple")
        least = error.get("ctx", {}).get("min_length", 1)
        return f"needs at least {least} entr{'y' if least == 1 else 'ies'}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _keys_at(loc: tuple[int | str, ...]) -> list[str]:
    """The keys a table of the config may have, at ``loc`` (none if it is not a table)."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue  # (an entry of a list of tables: the same keys)
        field = model.model_fields.get(str(part))
        inner = field and next(
            (
                a
                for a in typing.get_args(field.annotation) or (field.annotation,)
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _check_files(config: Config, *, sources: bool) -> list[str]:
    """Referenced files must exist, and a password file must be private to its owner
    (the sources' only when ``sources``). Relative paths are taken from the working
    directory, like every path in the config."""
    problems = []
    for i, source in enumerate(config.sources if sources else ()):
        for key in ("key_file", "known_hosts", "ca_file", "password_file"):
            path: Path | None = getattr(source, key)
            if path is None:
                continue
            if not path.is_file():
                problems.append(f"sources[{i}].{key}: file not found: {path}")
            elif key == "password_file" and path.stat().st_mode & 0o077:
                problems.append(
                    f"sources[{i}].password_file: readable by group or others; chmod 600 {path}"
                )
            elif key == "ca_file" and (why := _unloadable_certificates(path)) is not None:
                problems.append(f"sources[{i}].ca_file: cannot load: {why}")
            elif key == "known_hosts" and not _holds_lines(path):
                problems.append(
                    f"sources[{i}].known_hosts: file is empty (no host key): {path}; add the"
                    " server's key, e.g. ssh-keyscan -p PORT HOST >> " + str(path)
                )
        if source.password_env is not None and source.password_env not in os.environ:
            problems.append(
                f"sources[{i}].password_env: environment variable {source.password_env} is not set"
            )
    store, webhook = config.store, config.webhook
    problems += _unreadable_secret("store.password", store.password_env, store.password_file)
    problems += _unreadable_secret("webhook.url", webhook.url_env, webhook.url_file)
    return problems


def _unreadable_secret(key: str, env: str | None, file: Path | None) -> list[str]:
    """What keeps a secret's setting (``<key>_env``, ``<key>_file``) from being read: a
    variable not set, a file missing or not private to its owner."""
    problems = []
    if file is not None:
        if not file.is_file():
            problems.append(f"{key}_file: file not found: {file}")
        elif file.stat().st_mode & 0o077:
            problems.append(f"{key}_file: readable by group or others; chmod 600 {file}")
    if env is not None and env not in os.environ:
        problems.append(f"{key}_env: environment variable {env} is not set")
    return problems


def _unloadable_certificates(path: Path) -> str | None:
    """Why TLS cannot take ``path`` as its CA bundle, if it cannot."""
    try:
        ssl.create_default_context(cafile=str(path))
    except OSError as exc:  # ssl.SSLError included: not a PEM file
        return str(exc)
    return None


def _holds_lines(path: Path) -> bool:
    """Whether a known_hosts file has a line besides blanks and comments (one that is
    unreadable is said so by the SFTP source, which reads it at each connection)."""
    try:
        text = path.read_bytes()
    except OSError:
        return True
    return any(line.strip() and not line.strip().startswith(b"#") for line in text.splitlines())


def _check_folders(config: Config) -> list[str]:
    """Our folders must be folders: a file in the way (``staging = "/etc/passwd"``) is a
    mistake in the config, said at start-up (other faults of theirs are met at work)."""
    problems = []
    store = config.store.path  # (None: a PostgreSQL store, no local file)
    folders = {"paths.staging": config.paths.staging, "paths.archive": config.paths.archive}
    if store is not None:
        folders = {"store.path": store.parent, **folders}
    try:
        for key, folder in folders.items():
            for level in (folder, *folder.parents):
                if level.exists():
                    if not level.is_dir():
                        problems.append(f"{key}: {level} is not a folder")
                    break
        if store is not None and store.is_dir():
            problems.append(f"store.path: {store} is a folder; name the store's file")
    except OSError:  # (a folder we may not look into: the store or the download says so)
        pass
    return problems


def parse_config(data: Mapping[str, Any], *, sources: bool = True) -> Config:
    """Validate a parsed TOML document; raise one ConfigError listing every problem.
    ``sources``: also check what connecting to the sources needs (files, variables)."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([f"{_key(e['loc'])}: {_message(e)}" for e in exc.errors()]) from None
    problems = _check_files(config, sources=sources) + _check_folders(config)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: Path | None, *, sources: bool = True) -> Config:
    """Load the config file. With no path given, ``$CONNECTOR_CONFIG``, else
    ``config/connector.toml`` if it exists, else the built-in defaults (no sources).
    ``sources=False``: for a command that does not connect to them, their files and
    environment variables are not asked for."""
    explicit = path is not None or "CONNECTOR_CONFIG" in os.environ
    path = path or Path(os.environ.get("CONNECTOR_CONFIG", DEFAULT_PATH))
    if not path.exists():
        if explicit:
            raise ConfigError([f"{path}: config file not found"])
        return Config()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}: line {line}: not UTF-8 text; TOML is UTF-8"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_config(data, sources=sources)
