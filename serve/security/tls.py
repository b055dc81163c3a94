"""TLS for the gRPC servers and their clients, from PEM files named in the config."""

from __future__ import annotations

from pathlib import Path

import grpc

from serve.security.files import require_private


class TlsConfigError(ValueError):
    pass


def _read(path: str | Path, setting: str) -> bytes:
    path = Path(path).expanduser()
    if not path.is_file():
        raise TlsConfigError(f"{setting} {path} does not exist")
    return path.read_bytes()


def server_credentials(cert_file: str | Path, key_file: str | Path) -> grpc.ServerCredentials:
    """Credentials for ``server.add_secure_port``; the key file must be private (0600)."""
    key_path = Path(key_file).expanduser()
    key = _read(key_path, "tls_key_file")
    require_private(key_path, "the TLS private key")
    return grpc.ssl_server_credentials([(key, _read(cert_file, "tls_cert_file"))])


def credentials_for(settings: dict, section: str) -> grpc.ServerCredentials | None:
    """The TLS credentials an exposed port's settings ask for (``tls_cert_file`` and
    ``tls_key_file``, both or neither), or None for plaintext."""
    cert, key = settings.get("tls_cert_file"), settings.get("tls_key_file")
    if not cert and not key:
        return None
    if not (cert and key):
        raise TlsConfigError(f"set both {section}.tls_cert_file and {section}.tls_key_file for TLS")
    return server_credentials(cert, key)


def channel_credentials(root_cert_file: str | Path | None = None) -> grpc.ChannelCredentials:
    """Client credentials trusting ``root_cert_file`` (a self-signed server certificate or its
    CA), or the system's roots when None."""
    roots = _read(root_cert_file, "root certificate") if root_cert_file else None
    return grpc.ssl_channel_credentials(root_certificates=roots)
