"""SIGTERM and SIGINT as a stop request, and SIGHUP as a reload request, safely.

A signal handler runs in the main thread between two of its bytecodes, wherever that thread
is, possibly inside ``Event.wait`` holding the event's own lock: an ``Event.set`` there
waits for that lock for ever, and the process ignores every stop from then on (a SIGSTOP
and SIGCONT make that moment likely). So the handler does nothing; Python's C-level handler
writes the signal's number to a socket, and a thread of ours reads it and sets the event
(or calls the reload callback).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator

STOPS = (signal.SIGTERM, signal.SIGINT)
RELOAD = signal.SIGHUP


@contextlib.contextmanager
def stop_on_signals(
    stopping: threading.Event, reload: Callable[[], None] | None = None
) -> Iterator[None]:
    """While inside, SIGTERM or SIGINT sets ``stopping``; with ``reload``, SIGHUP calls it
    (from the signals thread: it must return at once, e.g. set an event). Without, SIGHUP
    keeps its default action (the process ends). Call from the main thread."""
    handled = (*STOPS, RELOAD) if reload is not None else STOPS
    reader, writer = socket.socketpair()
    writer.setblocking(False)  # (set_wakeup_fd wants it; a full buffer drops the byte)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}

    def watch() -> None:
        while received := reader.recv(64):  # (b"": the writer closed, we are done)
            for number in received:
                if number in STOPS:
                    stopping.set()
                elif number == RELOAD and reload is not None:
                    reload()

    watcher = threading.Thread(target=watch, name="signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        writer.shutdown(socket.SHUT_RDWR)
        watcher.join()
        reader.close()
        writer.close()
