"""SIGTERM and SIGINT as a stop request, safely.

A signal handler runs in the main thread between two of its bytecodes, wherever that thread
is, possibly inside ``Event.wait`` holding the event's own lock: an ``Event.set`` there
waits for that lock for ever, and the process ignores every stop from then on (a SIGSTOP
and SIGCONT make that moment likely). So the handler does nothing; Python's C-level handler
writes the signal's number to a socket, and a thread of ours reads it and sets the event.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator

STOPS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(stopping: threading.Event) -> Iterator[None]:
    """While inside, SIGTERM or SIGINT sets ``stopping``. Call from the main thread."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)  # (set_wakeup_fd wants it; a full buffer drops the byte)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in STOPS}

    def watch() -> None:
        while received := reader.recv(64):  # (b"": the writer closed, we are done)
            if any(number in STOPS for number in received):
                stopping.set()

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
