"""systemd's notification protocol (sd_notify): one datagram to $NOTIFY_SOCKET. A dozen
lines of stdlib; no-op when not started by systemd with Type=notify."""

from __future__ import annotations

import os
import socket


def notify(message: str) -> None:
    """Send e.g. ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` or ``STOPPING=1``."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode("utf-8", "replace"))


def watchdog_interval() -> float | None:
    """Half the watchdog period systemd asked for, or None when it asked for none."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
