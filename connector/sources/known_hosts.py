"""OpenSSH ``known_hosts`` and fingerprints, read the way OpenSSH reads them."""

# paramiko ships no type information: its names are Any to mypy.
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import base64
import hashlib
import re
from contextlib import suppress
from typing import Any

import paramiko
from paramiko.hostkeys import HostKeyEntry

KnownKeys = tuple[list[Any], set[bytes]]  # keys for the host, and every revoked key


def fingerprint(key: Any) -> str:
    """``SHA256:<base64, unpadded>``, as OpenSSH prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_keys(text: str, name: str) -> KnownKeys:
    """The keys a known_hosts text has for ``name``, and every revoked key.

    paramiko's HostKeys returns one key per type and host, so a host listed with an old and
    a new key of the same type would fail half the time; it also skips ``@revoked`` and
    wildcards. This reads the lines itself and uses paramiko only to parse each one."""
    keys = []
    revoked = set()
    for raw in text.splitlines():
        line = " ".join(raw.split())  # paramiko splits on single spaces only
        if not line or line.startswith("#"):
            continue
        marker = None
        if line.startswith("@"):
            marker, _, line = line.partition(" ")
        try:
            entry = HostKeyEntry.from_line(line)
        except Exception:
            # A line we cannot read trusts nothing, as with OpenSSH. (paramiko raises
            # InvalidHostKey, SSHException, binascii and struct errors, depending on the flaw.)
            continue
        if entry is None or entry.key is None:
            continue  # a key type paramiko does not know
        if marker == "@revoked":
            revoked.add(entry.key.asbytes())
        elif marker is None and _host_matches(entry.hostnames, name):
            keys.append(entry.key)
        # @cert-authority lines are skipped: host certificates are not supported.
    return keys, revoked


def _host_matches(patterns: list[str], name: str) -> bool:
    """OpenSSH's rule: some pattern matches and no negated (``!``) pattern does."""
    matched = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            # A damaged hashed name (bad base64, wrong salt size) matches nothing.
            with suppress(ValueError, AssertionError):
                matched |= paramiko.HostKeys.hash_host(name, pattern) == pattern
            continue
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").lower()
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
        if re.fullmatch(regex, name):
            if negated:
                return False
            matched = True
    return matched
