"""What is done to a remote file once it is decided (`after`, `error_dir`): left where
it is, deleted, or moved to a folder. Parsed once, by the config; written back as the
config's own words (``str``), which is how the ledger records it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Leave:
    def __str__(self) -> str:
        return "leave"


@dataclass(frozen=True)
class Delete:
    def __str__(self) -> str:
        return "delete"


@dataclass(frozen=True)
class Move:
    """To ``folder``: relative to the source's folder, or absolute."""

    folder: str

    def __str__(self) -> str:
        return f"move:{self.folder}"


Action = Leave | Delete | Move


def parse_action(text: str) -> Action:
    """``leave``, ``delete`` or ``move:<folder>``; ValueError says why ``text`` is none."""
    if text == "leave":
        return Leave()
    if text == "delete":
        return Delete()
    if not text.startswith("move:") or len(text) == 5:
        raise ValueError("must be 'leave', 'delete' or 'move:<remote folder>'")
    folder = text.removeprefix("move:")
    # A relative folder is inside the source's folder; one elsewhere is named whole.
    parts = [p for p in folder.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(
            f"{text!r}: '..' is refused in a move folder (a relative folder is taken inside"
            " the source's folder; name a folder elsewhere by its absolute path)"
        )
    if not parts and not folder.startswith("/"):
        raise ValueError(f"{text!r} is the source's own folder: its files would come back")
    return Move(folder)
