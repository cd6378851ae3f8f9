"""Throwaway Ed25519 keys for the embedded SFTP server and its clients.

Keys are made with `cryptography` and handed to paramiko in OpenSSH format,
because paramiko can load Ed25519 keys but cannot generate or write them.
"""

# paramiko ships no type information: its names are Any to mypy.
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["SSHKeyPair", "make_ssh_key", "new_ed25519_key"]


def _openssh_private(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")


def new_ed25519_key() -> paramiko.PKey:
    """A new Ed25519 private key as a paramiko key (host keys, client keys)."""
    return paramiko.Ed25519Key(file_obj=io.StringIO(_openssh_private(Ed25519PrivateKey.generate())))


@dataclass(frozen=True)
class SSHKeyPair:
    """A client key: the private key file a config points at, and its parts."""

    private_key_file: Path
    """OpenSSH private key, unencrypted, mode 0600 (as ssh insists)."""
    public_key_line: str
    """`ssh-ed25519 AAAA... comment`, as in authorized_keys."""
    key: paramiko.PKey
    """The same key loaded in paramiko, e.g. for `EmbeddedSFTPServer.authorize`."""


def make_ssh_key(directory: Path, *, stem: str = "id_ed25519") -> SSHKeyPair:
    """Write `<stem>` (private) and `<stem>.pub` in `directory`."""
    private = Ed25519PrivateKey.generate()
    text = _openssh_private(private)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode('ascii')} connector-test"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / stem
    # Created 0600 from the start: OpenSSH and paramiko users expect it.
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)
    (directory / f"{stem}.pub").write_text(line + "\n", encoding="ascii")
    return SSHKeyPair(
        private_key_file=path,
        public_key_line=line,
        key=paramiko.Ed25519Key(file_obj=io.StringIO(text)),
    )
