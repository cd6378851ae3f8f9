"""Helpers for the CSV-rules golden tests: drive the CLI in-process and read its dumps.

Everything goes through the user's interface (the commands and the dumps): a config
written to a temp folder (by the shared builders of tests/helpers.py), ``connector
import`` and ``connector dump``. Nothing here calls the implementation beyond
``connector.cli.main``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.helpers import local_source, write_config

DATA = Path(__file__).parent / "data"

EVENT_KEYS = {
    "tenant",
    "identifier",
    "name",
    "timestamp",
    "idempotencyKey",
    "data",
    "source",
    "file",
    "sha256",
    "line",
}
CONTACT_KEYS = {"tenant", "identifier", "attributes"}
REJECT_KEYS = {"tenant", "source", "file", "sha256", "line", "reason"}
FILE_KEYS = {
    "tenant",
    "source",
    "path",
    "sha256",
    "size",
    "status",
    "rows",
    "rejected",
    "duplicates",
    "processed_at",
}
DUMP_KEYS = {
    "events": EVENT_KEYS,
    "contacts": CONTACT_KEYS,
    "rejects": REJECT_KEYS,
    "files": FILE_KEYS,
}

MAX_FIELD = 1_048_576  # CSV rules §4: 1 MiB, counted in characters
MAX_TIMESTAMP = 4_102_444_800  # CSV rules §8: 2100-01-01T00:00:00Z
MAX_IDENTIFIER = 512  # CSV rules §6.2, §11.4: characters, not bytes

# The default file entries of the `import` source: events get a fallback name, so
# event files need no `name` column unless a test says otherwise.
DEFAULT_FILES: list[dict[str, Any]] = [
    {"kind": "events", "pattern": "*", "event_name": "purchase"},
    {"kind": "contacts", "pattern": "*"},
]


class _Absent:
    """Marks a property that must not be present (an empty cell, CSV rules §5)."""

    def __repr__(self) -> str:
        return "ABSENT"


class _Processing:
    """Marks an event timestamp that must be the processing time of its import."""

    def __repr__(self) -> str:
        return "PROCESSING"


ABSENT: Any = _Absent()
PROCESSING: Any = _Processing()

_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_DEC = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+")


def typed(text: str) -> Any:
    """Reference implementation of CSV rules §5 for one non-reserved cell."""
    if text == "":
        return ABSENT
    if text.isascii() and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.fullmatch(text) and -(2**63) <= int(text) < 2**63:
        return int(text)
    if _DEC.fullmatch(text):
        return float(text)
    return text


def strict(value: Any) -> Any:
    """Tag every scalar with its type, so True != 1 and 1 != 1.0 in comparisons."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    return (type(value).__name__, value)


def count_line_breaks(text: str) -> int:
    """Physical line breaks in text: CRLF, LF and CR each count once (docs/csv-rules.md)."""
    return len(re.findall(r"\r\n|\r|\n", text))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- config -----------------------------------------------------------------------


def source_table(root: Path, name: str, **settings: Any) -> dict[str, Any]:
    """A `[[sources]]` table (``helpers.local_source``) on `root/name`, polled hourly and
    left in place, with the default file entries unless ``files`` is given."""
    if settings.get("files") is None:
        settings["files"] = DEFAULT_FILES
    return local_source(root, name, **{"interval": "1h", "after": "leave", **settings})


# --- the CLI ------------------------------------------------------------------------


class Harness:
    """A private store and config in `root`, and the CLI run against them.

    With pytest's `capsys`, output is read through it (as the brief asks); without
    (inside hypothesis examples, where function fixtures cannot be used), stdout is
    redirected to a buffer around each call.
    """

    def __init__(self, root: Path, capsys: Any = None) -> None:
        self.root = root
        self.capsys = capsys
        self.cfg: Path | None = None
        self.incoming = root / "in"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.shas: dict[str, str] = {}
        self.windows: dict[str, tuple[int, int]] = {}
        self.last_output: tuple[str, str] = ("", "")

    # config

    def configure(
        self, *extra_sources: Mapping[str, Any], import_source: bool = True, **settings: Any
    ) -> Path:
        """Write the config: an `import` source with `settings` (identifier, delimiter,
        encoding, files=[...]) unless import_source is false, plus extra source tables."""
        sources = [source_table(self.root, "import", **settings)] if import_source else []
        self.cfg = write_config(self.root, *sources, *extra_sources)
        return self.cfg

    def source(self, name: str, **settings: Any) -> dict[str, Any]:
        return source_table(self.root, name, **settings)

    # files

    def stage(self, name: str, data: bytes | str | None = None, folder: Path | None = None) -> Path:
        """Put a CSV where the import will read it: the fixture tests/data/<name>, or the
        given exact bytes (str is encoded as UTF-8 with no newline translation)."""
        target = (folder or self.incoming) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            shutil.copyfile(DATA / name, target)
        else:
            target.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        self.shas[name] = sha256(target.read_bytes())
        return target

    # commands

    def run(self, *argv: str) -> tuple[int, str]:
        from connector.cli import main  # imported late: the implementation may be absent

        if self.cfg is None:
            self.configure()
        args = ["--config", str(self.cfg), *argv]
        if self.capsys is not None:
            self.capsys.readouterr()
            rc = main(args)
            out, err = self.capsys.readouterr()
        else:
            buffer = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="")
            errors = io.StringIO()
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(errors):
                rc = main(args)
            buffer.flush()
            out = buffer.buffer.getvalue().decode("utf-8")  # type: ignore[attr-defined]
            err = errors.getvalue()
        self.last_output = (out, err)
        return rc, out

    def import_(self, path: Path, *options: str, kind: str = "events") -> int:
        """`connector import PATH --kind KIND [options]`; returns the exit status."""
        before = math.floor(time.time())
        rc, _ = self.run("import", str(path), "--kind", kind, *options)
        self.windows[path.name] = (before, math.ceil(time.time()))
        return rc

    def dump(self, what: str) -> list[dict[str, Any]]:
        """`connector dump WHAT` as a list of records, each checked for exactly its keys."""
        rc, out = self.run("dump", what)
        assert rc == 0, f"dump {what} exited {rc}: {self.last_output[1]}"
        # Split on "\n" only: JSON leaves U+2028 and friends raw, str.splitlines() would cut there.
        records = [json.loads(line) for line in out.split("\n") if line.strip()]
        for record in records:
            assert set(record) == DUMP_KEYS[what], f"dump {what} keys: {sorted(record)}"
        return records

    def events(self) -> list[dict[str, Any]]:
        records = self.dump("events")
        for record in records:
            record["file"] = Path(record["file"]).name
        return sorted(records, key=lambda r: (r["file"], r["line"]))

    def contacts(self) -> dict[str, dict[str, Any]]:
        records = self.dump("contacts")
        contacts = {r["identifier"]: r["attributes"] for r in records}
        assert len(contacts) == len(records), "a contact is listed twice"
        return contacts

    def rejects(self) -> list[dict[str, Any]]:
        records = self.dump("rejects")
        for record in records:
            record["file"] = Path(record["file"]).name
        return sorted(records, key=lambda r: (r["file"], r["line"] or 0))

    def files(self) -> list[dict[str, Any]]:
        records = self.dump("files")
        for record in records:
            record["path"] = Path(record["path"]).name
        return records

    # expectations

    def event(
        self,
        path: Path,
        line: int,
        identifier: str,
        data: Mapping[str, Any] | None = None,
        *,
        name: str = "purchase",
        key: str | None = None,
        timestamp: Any = PROCESSING,
        source: str = "import",
    ) -> dict[str, Any]:
        """The `dump events` record expected for one row of the staged file `path`."""
        return {
            "tenant": "default",
            "identifier": identifier,
            "name": name,
            "timestamp": timestamp,
            "idempotencyKey": key,
            "data": dict(data or {}),
            "source": source,
            "file": path.name,
            "sha256": self.shas[path.name],
            "line": line,
        }

    def assert_events(self, *expected: dict[str, Any], only: Path | None = None) -> None:
        """`dump events` holds exactly these records (of file `only`, if given), with
        strict types; a PROCESSING timestamp must fall within that file's import."""
        actual = self.events()
        if only is not None:
            actual = [a for a in actual if a["file"] == only.name]
        wanted = sorted((dict(e) for e in expected), key=lambda r: (r["file"], r["line"]))
        by_place = {(a["file"], a["line"]): a for a in actual}
        for e in wanted:
            if e["timestamp"] is PROCESSING:
                low, high = self.windows[e["file"]]
                got = by_place.get((e["file"], e["line"]), {}).get("timestamp")
                ok = isinstance(got, int) and not isinstance(got, bool) and low <= got <= high
                e["timestamp"] = got if ok else f"processing time in [{low}, {high}]"
        assert strict(actual) == strict(wanted)

    def assert_contacts(self, expected: Mapping[str, Mapping[str, Any]]) -> None:
        """`dump contacts` holds exactly these contacts and attributes, strict types."""
        assert strict(self.contacts()) == strict({k: dict(v) for k, v in expected.items()})

    def assert_row_rejects(self, path: Path, expected: Mapping[int, str | None]) -> None:
        """The file's row rejects are exactly on these lines; each reason is non-empty
        and, where a wording is given, contains it (case-insensitive)."""
        rejects = [r for r in self.rejects() if r["file"] == path.name]
        assert sorted(r["line"] for r in rejects) == sorted(expected), rejects
        for r in rejects:
            assert r["source"] == "import"
            assert r["sha256"] == self.shas[path.name]
            assert isinstance(r["reason"], str), r
            assert r["reason"].strip(), r
            wording = expected[r["line"]]
            if wording is not None:
                assert wording.lower() in r["reason"].lower(), r

    def file_record(self, path: Path) -> dict[str, Any]:
        records = [f for f in self.files() if f["path"] == path.name]
        assert len(records) == 1, f"files records for {path.name}: {records}"
        return records[0]

    def assert_file(
        self,
        path: Path,
        status: str,
        *,
        rows: int | None = None,
        rejected: int | None = None,
        duplicates: int | None = None,
    ) -> dict[str, Any]:
        """The file's `dump files` record has this status (and counts, where given)."""
        record = self.file_record(path)
        assert record["source"] == "import"
        assert record["sha256"] == self.shas[path.name]
        assert record["size"] == path.stat().st_size
        assert record["status"] == status, record
        assert record["processed_at"] is not None
        counts = {"rows": rows, "rejected": rejected, "duplicates": duplicates}
        for key, want in counts.items():
            if want is not None:
                assert record[key] == want, record
        return record

    def assert_file_rejected(self, path: Path) -> str:
        """The whole file was refused: one reject with line null, the `files` record
        `rejected` with all counts 0, and no event from it. Returns the reason."""
        self.assert_file(path, "rejected", rows=0, rejected=0, duplicates=0)
        rejects = [r for r in self.rejects() if r["file"] == path.name]
        assert len(rejects) == 1, rejects
        [reject] = rejects
        assert reject["line"] is None, reject
        assert reject["source"] == "import"
        assert reject["sha256"] == self.shas[path.name]
        assert isinstance(reject["reason"], str), reject
        assert reject["reason"].strip(), reject
        assert [e for e in self.events() if e["file"] == path.name] == []
        return str(reject["reason"])
