"""Embedded servers and fault injection for testing file transfers.

Used by connector's own tests, by `connector demo`, and by anyone testing a
connector setup: real FTP, FTPS and SFTP servers on loopback, a TCP proxy
that resets or stalls connections, and throwaway certificates and SSH keys.
Nothing here starts at import time. The pytest fixtures live in
`connector.testing.plugin` (it imports pytest, so it is not imported here).
"""

from connector.testing.certs import (
    CertificateAuthority,
    TLSFiles,
    make_tls_files,
    make_untrusted_tls_files,
    make_wrong_hostname_tls_files,
)
from connector.testing.ftp import EmbeddedFTPServer
from connector.testing.proxy import Fault, FaultPlan, FaultProxy
from connector.testing.sftp import EmbeddedSFTPServer
from connector.testing.sshkeys import SSHKeyPair, make_ssh_key, new_ed25519_key

__all__ = [
    "CertificateAuthority",
    "EmbeddedFTPServer",
    "EmbeddedSFTPServer",
    "Fault",
    "FaultPlan",
    "FaultProxy",
    "SSHKeyPair",
    "TLSFiles",
    "make_ssh_key",
    "make_tls_files",
    "make_untrusted_tls_files",
    "make_wrong_hostname_tls_files",
    "new_ed25519_key",
]
