"""How this process allocates memory, set once at start (``connector`` calls
``one_malloc_arena`` before doing anything else)."""

from __future__ import annotations

import ctypes
import sys

_M_ARENA_MAX = -8  # glibc's mallopt() parameter (malloc.h)


def one_malloc_arena() -> None:
    """Have glibc serve every thread from one malloc arena. By default a thread that
    allocates while another holds the lock gets an arena of its own (up to eight per
    core), and what one arena frees the others do not reuse: a `once` over SFTP, with its
    download, archive and writer threads, peaked 6 MB higher. Python's own allocations
    are serialised by its lock anyway, so one arena costs no measurable speed. Elsewhere
    than glibc, nothing is done."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # (musl, say: no such arenas)
        return
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 1)
