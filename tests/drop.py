"""A config with one `file://` source named "drop" on `root/inbox`, for end-to-end tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.golden import toml_value


def drop_config(
    root: Path,
    *,
    files: Sequence[Mapping[str, Any]],
    ingest: Mapping[str, Any] | None = None,
    **source: Any,
) -> Path:
    """Write `root/connector.toml` (store in `root/store`) and return its path."""
    inbox = root / "inbox"
    inbox.mkdir(exist_ok=True)
    lines = [
        "[store]", f"path = {toml_value(str(root / 'store' / 'c.db'))}",
        "[paths]", f"staging = {toml_value(str(root / 'staging'))}",
        f"archive = {toml_value(str(root / 'archive'))}",
    ]  # fmt: skip
    if ingest:
        lines += ["[ingest]", *(f"{k} = {toml_value(v)}" for k, v in ingest.items())]
    table = {"name": "drop", "url": f"file://{inbox}", **source}
    lines += ["[[sources]]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    for entry in files:
        lines += ["[[sources.files]]", *(f"{k} = {toml_value(v)}" for k, v in entry.items())]
    path = root / "connector.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
