"""``connector check``: the config is valid, every source answers, the folders the
connector writes to on it are writable, and what a poll would do with each listed file.
Changes nothing but a probe file, written and removed in each such folder (a move folder
missing is made, as the first move would): no download, no ledger entry, no remote action.

Readiness is estimated from the server's modification time: a poll of a remote source
instead watches a file stay unchanged for min_age (it does not trust the server's clock),
which one look cannot.

Every name is printed through ``shown``: a server's names reach the operator's terminal."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack

from connector.actions import Leave, Move
from connector.config import Config, SourceConfig
from connector.errors import ConnectorError
from connector.expected import overdue
from connector.redaction import cause_of
from connector.selection import refused, select
from connector.sources.base import Source
from connector.sources.naming import shown
from connector.sources.registry import open_source
from connector.store import open_existing
from connector.store.ledger import Ledger


def written_folders(source: SourceConfig) -> dict[str, str]:
    """The folders (relative to the source's) that the connector writes to, each with the
    setting that makes it do so: move folders, and where reject reports go."""
    folders: dict[str, str] = {}
    for key in ("after", "error_dir"):
        action = getattr(source, key)
        if isinstance(action, Move):
            folders.setdefault(action.folder, f'{key} = "{action}"')
        elif source.reject_report:
            folder = "" if isinstance(action, Leave) else source.report_folder()
            folders.setdefault(folder, f'reject_report with {key} = "{action}"')
    return folders


def unwritable(remote: Source, source: SourceConfig) -> list[str]:
    """Why each folder the connector writes to cannot be written, if it cannot: a probe
    file is written there and removed (a hidden temporary name, never taken by a poll)."""
    probe = f".connector-check-{os.getpid()}.tmp"
    problems = []
    for folder, why in written_folders(source).items():
        try:
            remote.put(folder, probe, b"")
            remote.remove(folder, probe)
        except ConnectorError as exc:
            shown_folder = folder or "the source's folder"
            problems.append(f"cannot write to {shown_folder} ({why}): {cause_of(exc)}")
    return problems


def check_source(source: SourceConfig, ledger: Ledger | None, now: float) -> tuple[bool, list[str]]:
    """Whether the source is usable, and lines describing it; raises what connecting or
    listing raised."""
    with open_source(source) as remote:
        listing = remote.list()
        problems = unwritable(remote, source)
    chosen = select(listing, source)
    known = ledger.known(source.name) if ledger is not None else {}
    min_age = source.min_age
    lines = [f"{source.name}: connected, {len(listing)} file(s) listed, {len(chosen)} match"]
    lines += [f"  FAILED: {shown(problem)}" for problem in problems]
    for file, reason in refused(listing):
        lines.append(f"  {shown(file.name)}: skipped: {reason}")
    for candidate in chosen:
        file = candidate.file
        seen = known.get(source.path_of(file.name))
        if seen is not None and seen.matches(file):
            verdict = "skip: already " + seen.status
            if not seen.completed:
                action = source.action_for(seen.status)
                verdict += f" (its remote action, {action}, is redone at the next poll)"
        elif now - file.mtime < min_age:
            age = now - file.mtime
            verdict = f"not ready yet: modified {age:.0f}s ago (min_age {source.min_age})"
        else:
            verdict = f"would take as {candidate.rules.kind}"
        lines.append(f"  {shown(file.name)} ({file.size} bytes): {verdict}")
    late = overdue(source, ledger, now, now) if ledger is not None else None
    if late is not None:
        lines.append(f"  OVERDUE: {late.text(source)}")
    return not problems, lines


def check(config: Config) -> tuple[bool, list[str]]:
    """(all sources good, the lines to print). One source failing, for whatever reason, is
    its own line: the sources after it are still checked."""
    ok, lines = True, [f"config: valid, {len(config.sources)} source(s)"]
    with ExitStack() as stack:
        try:
            store = open_existing(config.store)  # (none yet: nothing is known, nothing made)
        except ConnectorError as exc:  # every source's report needs what the ledger knows
            return False, lines + [f"{s.name}: FAILED: {cause_of(exc)}" for s in config.sources]
        ledger = stack.enter_context(store).ledger if store is not None else None
        for source in config.sources:
            try:
                usable, described = check_source(source, ledger, time.time())
            except Exception as exc:
                # Whatever it is (ours, a library's, a defect), one line: the operator sees
                # which source and why, and the sources after it are still checked.
                ok = False
                lines.append(f"{source.name}: FAILED: {shown(cause_of(exc))}")
                continue
            ok = ok and usable
            lines += described
    return ok, lines
