"""The processes of this machine, read from /proc (Linux only)."""

from __future__ import annotations

import os


def children(pid: int, command: bytes = b"") -> list[int]:
    """The processes whose parent is ``pid`` and whose command line holds ``command``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                line = cmdline.read()
        except (OSError, ValueError):  # gone meanwhile
            continue
        if parent == pid and command in line:
            found.append(int(entry))
    return found
