"""A local test CA and server certificate for the emulators (ServiceNow is HTTPS-only).

Files are written once into a directory and reused, so ``make run``, the tests and any client
configured with ``SERVICENOW_CA_BUNDLE`` agree on one CA.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    ca_pem: Path
    cert_chain_pem: Path
    key_pem: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_chain_pem, self.key_pem)
        return context


def ensure_tls_files(directory: Path) -> TlsFiles:
    """Create (or reuse) a CA and a server certificate for localhost in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server-chain.pem", directory / "server-key.pem")
    if files.ca_pem.exists() and files.cert_chain_pem.exists() and files.key_pem.exists():
        return files
    ca = trustme.CA(organization_name="defender-iot-servicenow local test CA")
    server = ca.issue_cert(*HOSTS)
    ca.cert_pem.write_to_path(str(files.ca_pem))
    server.private_key_pem.write_to_path(str(files.key_pem))
    files.cert_chain_pem.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    files.key_pem.chmod(0o600)
    return files
