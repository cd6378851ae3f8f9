"""The command line, and the single error boundary: a user's mistake is one clear line on
stderr and an exit status, never a traceback."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TextIO

import structlog

from connector import logs
from connector.config import (
    DEFAULT_TENANT,
    MAX_FOLDER_BYTES,
    TENANT_PATTERN,
    Config,
    known_codec,
    load_config,
    usable_delimiter,
)
from connector.csvrules.rules import TOO_OLD, FileRules, Kind
from connector.dump import dump
from connector.errors import ConfigError, ConnectorError, Interrupted, UnknownChecksum
from connector.ingest import Ingestor, Outcome, Progress
from connector.memory import one_malloc_arena
from connector.redaction import cause_of, logged_failure
from connector.replica import name_as
from connector.signals import stop_on_signals
from connector.sources.naming import MAX_NAME_BYTES
from connector.status import Status
from connector.store import open_store
from connector.store.feed import KINDS, START, parse_cursor
from connector.store.ledger import Entry
from connector.store.port import TABLES, Store
from connector.store.reports import BY_FILE
from connector.unpack import UnpackLimits, unpacked

# Commands import what only they need when they run: `import` and `dump` start faster and
# smaller without the scheduler, the metrics server and the transfer libraries.

EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_CONFIG = 0, 1, 2, 78
# The commands that connect to the sources; the others (import, dump, feed, ...) work on
# the store alone, and do not ask for the sources' key files, CA files or passwords.
CONNECTING = ("run", "once", "check")
IMPORT_SOURCE = "import"
_PROGRESS_MIN_BYTES = 16 << 20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector",
        description="Ingest contacts and events CSV files from FTP, FTPS, SFTP and folders.",
    )
    config_help = "config file (default: $CONNECTOR_CONFIG, else config/connector.toml)"
    parser.add_argument("--config", type=Path, help=config_help)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    parser.add_argument("--version", action="version", version=f"connector {_version()}")
    # Options also taken after the command (`dump files --config x`): there, they win.
    anywhere = argparse.ArgumentParser(add_help=False)
    anywhere.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = _Commands(subparsers, anywhere)

    imp = commands.add_parser("import", help="ingest local CSV files through the same rules")
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument("--kind", required=True, choices=["contacts", "events"])
    imp.add_argument(
        "--source", help=f"take file rules from this source (default: {IMPORT_SOURCE!r})"
    )
    imp.add_argument("--event-name", help="event name when the file has no 'name' column")
    imp.add_argument("--encoding", type=_checked(known_codec), help="the files' encoding")
    imp.add_argument(
        "--delimiter", type=_delimiter, help="the field delimiter (one character, or 'tab')"
    )
    imp.add_argument("--identifier", type=_identifier, help="the identifier column's header")
    imp.add_argument(
        "--tenant",
        type=_tenant,
        help=f"the tenant to ingest for (default: the source's, else {DEFAULT_TENANT!r})",
    )
    imp.add_argument("--dry-run", action="store_true", help="validate and report; store nothing")

    dmp = commands.add_parser("dump", help="print the store as JSON Lines")
    dmp.add_argument("table", choices=TABLES)
    dmp.add_argument("--tenant", type=_tenant, help="only this tenant's records")
    _by_file(dmp)

    fed = commands.add_parser("feed", help="what became visible after a cursor, as JSON Lines")
    fed.add_argument("kind", choices=KINDS)
    fed.add_argument("--after", metavar="CURSOR", help="the cursor of the last line processed")
    fed.add_argument("--tenant", type=_tenant, help="only this tenant's records")
    _by_file(fed)
    fed.add_argument("--limit", type=_count, metavar="N", help="print at most N lines")
    fed.add_argument(
        "--follow",
        action="store_true",
        help="go on printing as files become final, until SIGTERM or SIGINT",
    )

    era = commands.add_parser(
        "erase", help="remove contacts and their events from the store, audited"
    )
    era.add_argument("identifiers", nargs="+", metavar="IDENTIFIER")
    era.add_argument("--tenant", type=_tenant, required=True, help="whose contacts they are")
    era.add_argument("--reason", type=_reason, required=True, help="why (in the audit trail)")

    acts = {
        "forget": "the ledger forgets these bytes: they are new again",
        "replay": "ingest the archive copy of these bytes again, now",
    }
    for name, what in acts.items():
        acting = commands.add_parser(name, help=what)
        acting.add_argument("sha256", metavar="SHA256")
        acting.add_argument("--reason", type=_reason, required=True, help="why (audited)")
        acting.add_argument("--tenant", type=_tenant, help=f"whose (default {DEFAULT_TENANT!r})")

    connecting = {
        "run": "the daemon: poll every source on its schedule",
        "once": "poll every source once, ingest every ready file, exit",
        "check": "validate the config, connect to and list each source",
    }
    for name, what in connecting.items():
        commands.add_parser(name, help=what).add_argument(
            "--source",
            action="append",
            dest="sources",
            metavar="NAME",
            help="only this source (again for more)",
        )
    demo = commands.add_parser("demo", help="ingest sample files end to end and print a summary")
    demo.add_argument(
        "--replicas",
        type=_positive,
        metavar="N",
        help="N daemons sharing a throwaway PostgreSQL store instead (needs its server programs)",
    )
    return parser


class _Commands:
    """The subcommands' parsers, each taking the options that go anywhere."""

    def __init__(
        self,
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
        anywhere: argparse.ArgumentParser,
    ) -> None:
        self.subparsers, self.anywhere = subparsers, anywhere

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self.subparsers.add_parser(
            name, parents=[self.anywhere], **kwargs
        )
        return parser


def _connected(config: Config, names: list[str] | None) -> Config:
    """The sources a connecting command works on: those named by --source, else all; a
    config with none is said to be one (a daemon polling nothing is a mistake)."""
    if names:
        unknown = [name for name in names if config.source(name) is None]
        if unknown:
            raise ConfigError([f"--source: no source named {name!r}" for name in unknown])
        config = config.model_copy(
            update={"sources": tuple(s for s in config.sources if s.name in names)}
        )
    if not config.sources:
        raise ConfigError(
            ["no sources configured: add a [[sources]] table (see config/connector.example.toml)"]
        )
    return config


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("connector")
    except PackageNotFoundError:  # (run from a checkout that was never installed)
        return "unknown"


def _positive(text: str) -> int:
    """A count of at least 1 (argparse says which argument is wrong otherwise)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 16:
        raise argparse.ArgumentTypeError(f"not a number from 1 to 16: {text!r}")
    return value


def _by_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="only the records of this source's files")
    parser.add_argument("--file", help="only the records of the file at this path")


def _count(text: str) -> int:
    """A count of lines, 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a number of 1 or more: {text!r}")
    return int(text)


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type from a config check: its reason is argparse's message."""

    def parse(text: str) -> str:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _delimiter(text: str) -> str:
    return _checked(usable_delimiter)("\t" if text in ("tab", "\\t") else text)


def _identifier(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the identifier column needs a name")
    return text.strip()  # (headers are matched trimmed)


def _reason(text: str) -> str:
    """Why an operator acts: one line of words, kept in the audit trail."""
    if not text.strip() or not text.isprintable():
        raise argparse.ArgumentTypeError("say why, on one line of printable text")
    return text.strip()


def _tenant(text: str) -> str:
    """A tenant's name, as in the config (argparse says which argument is wrong otherwise)."""
    if not (len(text) <= 100 and re.fullmatch(TENANT_PATTERN, text)):
        raise argparse.ArgumentTypeError(
            f"not a tenant name (1 to 100 of A-Z a-z 0-9 _ . -): {text!r}"
        )
    return text


def _import_tenant(config: Config, source_name: str | None) -> str:
    """``import``'s tenant when --tenant is not given: that of the source whose rules
    apply, else the default."""
    source = config.source(source_name or IMPORT_SOURCE)
    return source.tenant if source is not None else DEFAULT_TENANT


def _import_rules(config: Config, source_name: str | None, kind: Kind, path: Path) -> FileRules:
    source = config.source(source_name or IMPORT_SOURCE)
    if source is None:
        if source_name is not None:
            raise ConfigError([f"--source: no source named {source_name!r} in the config"])
        return FileRules(kind=kind)
    return source.rules_for(kind, path.name)


@contextlib.contextmanager
def _progress_bar(path: Path) -> Iterator[Progress | None]:
    """On a terminal, for a large file: a bar of its bytes read (``_bytes_bar``)."""
    size = path.stat().st_size
    if not sys.stderr.isatty() or size < _PROGRESS_MIN_BYTES:
        yield None
        return
    with _bytes_bar(path.name, size, sys.stderr) as progress:
        yield progress


@contextlib.contextmanager
def _bytes_bar(name: str, size: int, out: TextIO) -> Iterator[Progress]:
    """A bar on ``out`` of ``size`` bytes read, with the percentage and the time left; at
    100 % when the block ends without an error (a file's tail may hold no record). Lines
    written to sys.stderr meanwhile (the log) go above the bar, not over it."""
    from tqdm import tqdm  # only on a terminal, for a large file
    from tqdm.contrib import DummyTqdmFile

    with tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        file=out,
        leave=False,
        dynamic_ncols=True,
    ) as bar:

        def update(read: int) -> None:
            if read > bar.n:
                bar.update(read - bar.n)

        # Each line through tqdm, which clears the bar for it and redraws the bar below
        # (structlog writes to sys.stderr itself, not through a logging handler).
        stderr, sys.stderr = sys.stderr, DummyTqdmFile(out)
        try:
            yield update
            update(size)
            bar.refresh()  # (an update within tqdm's mininterval of the last is not drawn)
        finally:
            sys.stderr = stderr


def _summary(path: Path, outcome: Outcome, dry_run: bool) -> str:
    entry = outcome.entry
    text = (
        f"{path}: {entry.status} — {entry.rows} rows stored, {entry.rejected} rejected,"
        f" {entry.duplicates} duplicates (sha256 {(entry.sha256 or 'unknown')[:12]})"
    )
    if outcome.reason:
        text += f"\n  reason: {outcome.reason}"
    return text + (" [dry run: nothing stored]" if dry_run else "")


def cmd_import(args: argparse.Namespace, config: Config) -> int:
    folders = [str(p) for p in args.paths if p.is_dir()]
    if folders:
        print(
            f"connector: import: a folder, not a file: {', '.join(folders)} (give its"
            f" files: {folders[0]}/*.csv)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        print(f"connector: import: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_FAILED
    # A file is recorded under its path as given: bounded as a source's are (the store's
    # indexes hold so much).
    long = [str(p) for p in args.paths if len(os.fsencode(p)) > MAX_FOLDER_BYTES + MAX_NAME_BYTES]
    if long:
        print(
            f"connector: import: path too long to record (over"
            f" {MAX_FOLDER_BYTES + MAX_NAME_BYTES:,} bytes): {', '.join(long)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    rules = {p: _import_rules(config, args.source, args.kind, p) for p in args.paths}
    if args.event_name is not None and not args.event_name.strip():
        raise ConfigError(["--event-name: must not be empty"])
    given = {
        "event_name": args.event_name,
        "encoding": args.encoding,
        "delimiter": args.delimiter,
        "identifier": args.identifier,
    }
    overrides = {key: value for key, value in given.items() if value}
    if overrides:  # (the command line's say over the source's, for a one-off file)
        rules = {p: dataclasses.replace(r, **overrides) for p, r in rules.items()}
    tenant = args.tenant or _import_tenant(config, args.source)
    status = EXIT_OK
    log = structlog.get_logger()
    with open_store(config.store) as store:
        ingestor = Ingestor.configured(store, config)
        scope = store.rolled_back() if args.dry_run else contextlib.nullcontext()
        with scope:
            for path in args.paths:
                try:
                    with _progress_bar(path) as progress:
                        outcome = ingestor.ingest_given(
                            path,
                            rules[path],
                            source=IMPORT_SOURCE,
                            name=str(path),
                            tenant=tenant,
                            unpacking=UnpackLimits.of(config.ingest),
                            progress=progress,
                        )
                except KeyboardInterrupt:  # (Ctrl-C: the ledger keeps what was committed)
                    print(
                        f"connector: import: interrupted in {path}; "
                        + (
                            "nothing was stored (dry run)"
                            if args.dry_run
                            else "run the same command again to resume it"
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
                    raise  # exit 130, in main()
                except ConnectorError:
                    raise  # the error boundary in main() says it in one line
                except Exception as exc:  # a defect with this file: the next files go on
                    cause = cause_of(exc)
                    log.error("file_failed", file=str(path), cause=cause, exc_info=True)
                    print(f"{path}: failed — {cause}", flush=True)
                    status = EXIT_FAILED
                    continue
                print(_summary(path, outcome, args.dry_run), flush=True)
                if args.dry_run and outcome.entry.rejected:
                    _print_rejects(store, outcome.entry)
                if outcome.entry.status is Status.REJECTED and status == EXIT_OK:
                    status = EXIT_REJECTED
    return status


SHOWN_REJECTS = 20


def _print_rejects(store: Store, entry: Entry) -> None:
    """A dry run's rejected rows: the first few with their reasons, then how many more."""
    for line, reason, _ in store.ledger.rejects(entry.id, SHOWN_REJECTS):
        print(f"  line {line}: {reason}")
    if entry.rejected > SHOWN_REJECTS:
        print(f"  ... and {entry.rejected - SHOWN_REJECTS:,} more rejected rows")
    too_old = store.ledger.rejects_saying(entry.id, TOO_OLD)
    if too_old:
        print(f"  {too_old:,} of the rejected rows: events {TOO_OLD}")


def _acting(args: argparse.Namespace) -> tuple[str, str, str]:
    """The tenant, checksum and user of `forget` or `replay`."""
    import getpass

    sha256 = args.sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise UnknownChecksum(f"not a SHA-256 (64 hex digits): {args.sha256!r}")
    return args.tenant or DEFAULT_TENANT, sha256, getpass.getuser()


def cmd_forget(args: argparse.Namespace, config: Config) -> int:
    import time

    tenant, sha256, user = _acting(args)
    with open_store(config.store) as store, store.transaction():
        if not store.ledger.forget_bytes(tenant, sha256, time.time()):
            raise UnknownChecksum(
                f"unknown checksum {sha256} for tenant {tenant} (never seen, or forgotten)"
            )
        store.ledger.audit("forget", tenant, sha256, args.reason, user, time.time())
    print(f"{sha256}: forgotten for tenant {tenant}; its next arrival is ingested as new")
    return EXIT_OK


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    import time

    from connector.archive import copy_of

    tenant, sha256, user = _acting(args)
    copy = copy_of(sha256, config.paths.archive)
    with open_store(config.store) as store:
        entry = store.ledger.latest(tenant, sha256)
        if entry is None:
            raise UnknownChecksum(f"unknown checksum {sha256} for tenant {tenant}")
        if not copy.is_file():
            raise UnknownChecksum(f"{sha256}: no archive copy at {copy} to replay")
        source = config.source(entry.source)
        kind: Kind = "contacts" if entry.kind == "contacts" else "events"
        name = PurePosixPath(entry.path).name
        rules = source.rules_for(kind, name) if source is not None else FileRules(kind=kind)
        # (its events are as old as they were when it was first taken, not older)
        rules = rules.with_age_counted_from(store.ledger.first_taken(tenant, sha256))
        with store.transaction():  # (its bytes are new again: not a duplicate of themselves)
            store.ledger.forget_bytes(tenant, sha256, time.time())
            store.ledger.audit("replay", tenant, sha256, args.reason, user, time.time())
        # Crash here: the bytes are forgotten, not yet ingested again: replay once more.
        unpacking = UnpackLimits.of(config.ingest)
        with unpacked(copy, config.paths.staging, unpacking) as content:  # (the same bytes)
            outcome = Ingestor.configured(store, config).ingest(
                content, rules, source=entry.source, name=entry.path, tenant=tenant
            )
    print(_summary(Path(entry.path), outcome, dry_run=False), flush=True)
    return EXIT_REJECTED if outcome.entry.status is Status.REJECTED else EXIT_OK


ONCE_WORKERS = 8  # sources `once` polls at a time


def cmd_once(args: argparse.Namespace, config: Config) -> int:
    import time
    from concurrent.futures import ThreadPoolExecutor

    from connector.expected import overdue
    from connector.housekeeping import tidy
    from connector.pipeline import Poller
    from connector.webhook import Webhook

    status = EXIT_OK
    log = structlog.get_logger()
    stopping = threading.Event()
    hook: Webhook | None = None

    def polled(poller: Poller) -> tuple[bool, str] | None:
        """The source's line, and whether all went well; None: a stop came first."""
        source = poller.source
        if stopping.is_set():
            return None
        try:
            summary = poller.poll(stop=stopping.is_set)
        except Interrupted:
            return True, f"{source.name}: stopped; the file in hand resumes next time"
        except Exception as exc:  # one source's failure never keeps another unpolled
            cause = logged_failure(log, "poll_failed", exc, source=source.name)
            return False, f"{source.name}: could not be polled: {cause}"
        if hook is not None:
            hook.rejected(summary.taken.values(), poller.store.ledger)
        taken = Counter(entry.status for entry in summary.taken.values())
        text = ", ".join(f"{n} {s}" for s, n in sorted(taken.items())) or "nothing new"
        if summary.completed:
            text += f"; {len(summary.completed)} earlier file(s) completed"
        if summary.pending:
            text += f"; {len(summary.pending)} not ready yet"
        if summary.busy:
            text += f"; {len(summary.busy)} in hand in another run, skipped"
        if summary.failed:
            text += f"; {len(summary.failed)} failed, retried next time: " + "; ".join(
                f"{path}: {why}" for path, why in summary.failed.items()
            )
        now = time.time()
        late = overdue(source, poller.store.ledger, now, now)  # (with no file ever: not said)
        if late is not None:
            text += f"; OVERDUE: {late.text(source)}"
            log.warning("file_overdue", source=source.name, why=late.text(source))
        return not summary.failed, f"{source.name}: {text}"

    # SIGTERM or SIGINT: as `run` does, stop cleanly, resumably
    with (
        stop_on_signals(stopping),
        open_store(config.store) as store,
        contextlib.ExitStack() as stack,
    ):
        tidy(config, store)
        hook = Webhook.configured(config.webhook)
        if hook is not None:  # (its alerts sent, within a grace time, before `once` ends)
            stack.callback(hook.close)
        # The sources are polled at once, each with a poller and an ingestor of its own as
        # in `run`: one source's min_age wait or slow server does not delay the others.
        pollers = [
            Poller(
                config,
                source,
                store,
                sleep=stopping.wait,
                ingestor=Ingestor.configured(store, config, stop=stopping.is_set),
            )
            for source in config.sources
        ]
        with ThreadPoolExecutor(min(len(pollers), ONCE_WORKERS), "once") as pool:
            # (in the config's order, each line once its poll and those before it are done)
            for said in pool.map(polled, pollers):
                if said is not None:
                    print(said[1], flush=True)
                    status = status if said[0] else EXIT_FAILED
    return status


def cmd_run(args: argparse.Namespace, config: Config) -> int:
    from connector.service import Service

    def load() -> Config:  # on SIGHUP: the same file and --source as at start-up
        return _connected(load_config(args.config), args.sources)

    return Service(config, load).run()


def cmd_check(args: argparse.Namespace, config: Config) -> int:
    from connector.check import check

    ok, lines = check(config)
    print("\n".join(lines), flush=True)
    return EXIT_OK if ok else EXIT_FAILED


@contextlib.contextmanager
def _lines_out() -> Iterator[BinaryIO]:
    """stdout for many lines: buffered even where Python's is not (PYTHONUNBUFFERED=1, as
    containers often set), where a line would cost a system call of its own."""
    out = sys.stdout.buffer
    if isinstance(out, io.BufferedIOBase):
        yield sys.stdout.buffer
        return
    buffered = io.BufferedWriter(out, 1 << 16)
    try:
        yield buffered
    finally:
        with contextlib.suppress(BrokenPipeError):  # (the error boundary tells it)
            buffered.flush()
        buffered.detach()  # (stdout stays open for whoever writes next)


def cmd_dump(args: argparse.Namespace, config: Config) -> int:
    if args.table not in BY_FILE and (args.source or args.file):
        raise ConfigError([f"--source, --file: {args.table} are not a file's records"])
    with open_store(config.store) as store, _lines_out() as out:
        dump(store, args.table, out, args.tenant, source=args.source, file=args.file)
    return EXIT_OK


def cmd_feed(args: argparse.Namespace, config: Config) -> int:
    from connector.feed import print_feed

    after = START if args.after is None else parse_cursor(args.after, args.kind)
    stopping = threading.Event()
    with stop_on_signals(stopping), open_store(config.store) as store, _lines_out() as out:
        print_feed(
            store,
            args.kind,
            after,
            out,
            tenant=args.tenant,
            source=args.source,
            file=args.file,
            limit=args.limit,
            stopping=stopping.is_set if args.follow else None,
        )
    return EXIT_OK


def cmd_erase(args: argparse.Namespace, config: Config) -> int:
    import getpass
    import time

    from connector.archive import copy_of

    identifiers = list(dict.fromkeys(args.identifiers))
    with open_store(config.store) as store:
        erased = store.erase(args.tenant, identifiers, args.reason, getpass.getuser(), time.time())
    print(
        f"erased {erased.contacts} contact(s) and {erased.events} event(s) of tenant"
        f" {args.tenant}; recorded in the audit trail (`connector dump audit`)"
    )
    copies = sorted(
        path for sha256 in erased.files if (path := copy_of(sha256, config.paths.archive)).exists()
    )
    if copies:
        print("archive copies that still hold them (the store cannot edit them):")
        for path in copies:
            print(f"  {path}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, config: Config) -> int:
    import importlib.util

    if not all(map(importlib.util.find_spec, ("pyftpdlib", "OpenSSL"))):  # (an extra)
        raise ConnectorError(
            "demo: the embedded servers are not installed: pip install 'connector[testing]'"
        )
    if args.replicas:
        from connector.demo_replicas import run_replicas_demo

        return run_replicas_demo(args.replicas)
    from connector.demo import run_demo  # the demo's sample data is only built when asked

    return run_demo()


COMMANDS: dict[str, Callable[[argparse.Namespace, Config], int]] = {
    "import": cmd_import,
    "dump": cmd_dump,
    "feed": cmd_feed,
    "erase": cmd_erase,
    "forget": cmd_forget,
    "replay": cmd_replay,
    "once": cmd_once,
    "run": cmd_run,
    "check": cmd_check,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    one_malloc_arena()
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    # Everything this process writes holds customer data or secrets: private whatever the
    # umask it was started with (a stricter one is kept). Our own files also get explicit
    # modes; this covers the rest (the demo's files, what a library makes). Put back on
    # return: tests call main() in-process.
    umask = os.umask(0o077)
    os.umask(umask | 0o077)
    try:
        return _run(args)
    finally:
        os.umask(umask)


def _run(args: argparse.Namespace) -> int:
    """The error boundary: what the user must know is one line on stderr, never a
    traceback (a traceback is left for a defect of ours)."""
    try:
        config = (
            Config()
            if args.command == "demo"
            else load_config(args.config, sources=args.command in CONNECTING)
        )
        if args.command in CONNECTING:
            config = _connected(config, args.sources)
        name_as(config.store.replica)
        return COMMANDS[args.command](args, config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"connector: config: {problem}", file=sys.stderr)
        return EXIT_CONFIG  # on every command, check included (docs/commands.md)
    except ConnectorError as exc:  # a store or a folder of ours: "store PATH: the disk is full"
        print(f"connector: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `connector dump events | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
