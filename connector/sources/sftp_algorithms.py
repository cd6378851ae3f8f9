"""Which SSH algorithms an SFTP session may use, and what to say when a server has none.

By default only modern algorithms are offered, best first: AES-GCM, then AES-CTR with an
SHA-2 MAC (encrypt-then-MAC first); key exchange over Curve25519 (with ML-KEM where
paramiko has it), NIST curves, or a 4096-bit or larger Diffie-Hellman group; host keys
signed with Ed25519, ECDSA, or RSA over SHA-2 (``rsa-sha2-512``, ``rsa-sha2-256``). CBC
modes, 3DES, arcfour, MD5 and SHA-1 MACs, smaller or server-chosen Diffie-Hellman groups,
and ``ssh-rsa`` (RSA over SHA-1) and ``ssh-dss`` host keys are left out, even where
paramiko offers them by default (older releases do); ``sftp_legacy_algorithms = true`` on a
source adds back whatever else paramiko supports, after the modern ones. (paramiko has no
chacha20-poly1305: it is not listed.)

paramiko keeps only what was agreed, not what the server offered; ``Transport`` records the
offer so that a refusal can name it.
"""

# paramiko ships no type information: its names are Any to mypy, and Transport must still
# be subclassed.
# mypy: disable-error-code="import-untyped"
# mypy: disallow-subclassing-any=False

from __future__ import annotations

from contextlib import suppress
from typing import Any

import paramiko
from paramiko.message import Message

LEGACY_SETTING = "sftp_legacy_algorithms"

# SecurityOptions attribute → (what to call it, the KEXINIT list the server offers it in,
# the modern names, best first).
_MODERN: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "kex": (
        "key exchange",
        "kex_algo_list",
        (
            "mlkem768x25519-sha256",
            "curve25519-sha256",
            "curve25519-sha256@libssh.org",
            "ecdh-sha2-nistp256",
            "ecdh-sha2-nistp384",
            "ecdh-sha2-nistp521",
            "diffie-hellman-group18-sha512",
            "diffie-hellman-group16-sha512",
        ),
    ),
    "ciphers": (
        "cipher",
        "server_encrypt_algo_list",
        (
            "aes256-gcm@openssh.com",  # AEAD, and the fastest with paramiko (measured)
            "aes128-gcm@openssh.com",
            "aes256-ctr",
            "aes192-ctr",
            "aes128-ctr",
        ),
    ),
    "digests": (
        "MAC",
        "server_mac_algo_list",
        (
            "hmac-sha2-256-etm@openssh.com",
            "hmac-sha2-512-etm@openssh.com",
            "hmac-sha2-256",
            "hmac-sha2-512",
        ),
    ),
    "key_types": (
        "host key type",
        "server_key_algo_list",
        (
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "rsa-sha2-512",
            "rsa-sha2-256",
        ),
    ),
}


class Transport(paramiko.Transport):
    """paramiko's Transport, keeping the server's KEXINIT lists in ``offered``, and in
    ``supported`` what paramiko offered before ``restrict``."""

    offered: dict[str, list[str]] | None = None
    supported: dict[str, tuple[str, ...]] | None = None

    def _parse_kex_init(self, m: Any) -> None:
        # Read from a copy: paramiko parses ``m`` itself right after.
        with suppress(Exception):  # the offer only words a refusal; paramiko judges the packet
            self.offered = self._really_parse_kex_init(Message(m.asbytes()))
        super()._parse_kex_init(m)


def restrict(transport: Any, *, legacy: bool) -> None:
    """Offer the modern algorithms paramiko has, best first; with ``legacy``, paramiko's
    others after them."""
    options = transport.get_security_options()
    transport.supported = {attribute: tuple(getattr(options, attribute)) for attribute in _MODERN}
    for attribute, (_, _, modern) in _MODERN.items():
        supported = transport.supported[attribute]
        chosen = [name for name in modern if name in supported]
        if legacy:
            chosen += [name for name in supported if name not in chosen]
        setattr(options, attribute, chosen)


def refusal(transport: Any, *, legacy: bool) -> str | None:
    """Why no algorithm could be agreed on, naming what the server offered for each kind
    that has nothing in common with ours; None when the failure was not about algorithms
    (or the offer is unknown)."""
    offered = getattr(transport, "offered", None)
    if not offered:
        return None
    options = transport.get_security_options()
    supported = getattr(transport, "supported", None) or {}
    legacy_only, none_at_all = [], []
    for attribute, (word, field, _) in _MODERN.items():
        # (ext-info-s and kex-strict-s-v00@openssh.com only announce extensions.)
        theirs = [n for n in offered.get(field, []) if n and not n.startswith(("ext-", "kex-"))]
        # (paramiko takes a host key certificate for each host key type it is given.)
        plain = {name.removesuffix("-cert-v01@openssh.com") for name in theirs}
        if any(name in plain for name in getattr(options, attribute)):
            continue
        listed = ", ".join(theirs) or "none"
        # The setting is named only where it would help: paramiko must have one of them
        # (a recent one has no ssh-rsa, and none has chacha20-poly1305).
        if legacy or not any(name in plain for name in supported.get(attribute, ())):
            none_at_all.append(f"no {word} in common (the server offers {listed})")
        else:
            legacy_only.append(f"only legacy {word}s ({listed})")
    if none_at_all:
        return "; ".join(none_at_all)
    if legacy_only:
        return (
            f"the server offers {'; '.join(legacy_only)}: set {LEGACY_SETTING} = true on "
            "this source to accept them"
        )
    return None


def negotiated(transport: Any) -> dict[str, str]:
    """What a connected session agreed on, for a debug log line."""
    info = paramiko.Transport._cipher_info.get(transport.local_cipher, {})
    kex = "unknown"
    offered = getattr(transport, "offered", None)
    if offered:
        # As paramiko chooses: our first that the server offers.
        theirs = offered.get("kex_algo_list", [])
        kex = next((name for name in transport.preferred_kex if name in theirs), kex)
    cipher = transport.local_cipher
    if transport.remote_cipher != cipher:
        cipher = f"{cipher} out, {transport.remote_cipher} in"
    return {
        "cipher": cipher,
        "mac": "implicit (AEAD)" if info.get("is_aead") else str(transport.local_mac),
        "kex": kex,
        "host_key_type": str(transport.host_key_type),
    }
