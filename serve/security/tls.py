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


def certificate_name(cert_file: str | Path) -> str:
    """A name the certificate is valid for: its first DNS name, else its first IP address, else
    its common name. A client dialling a bind-all server on loopback checks the certificate
    against this name (grpc.ssl_target_name_override) instead of "127.0.0.1"."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    certificate = x509.load_pem_x509_certificate(_read(cert_file, "tls_cert_file"))
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for kind in (x509.DNSName, x509.IPAddress):
            found = names.get_values_for_type(kind)
            if found:
                return str(found[0])
    except x509.ExtensionNotFound:
        pass
    common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not common:
        raise TlsConfigError(f"certificate {cert_file} names no host (no subjectAltName, no common name)")
    return str(common[0].value)


def loopback_server_name(host: str, cert_file: str | Path | None) -> str | None:
    """The name to check a TLS server bound to ``host`` against: None (its target's own host)
    unless ``host`` binds every interface; then the client dials loopback and checks the
    certificate's own name (grpc.ssl_target_name_override)."""
    from serve.ports import is_wildcard

    return certificate_name(cert_file) if cert_file and is_wildcard(host) else None


def name_override(server_name: str | None) -> list[tuple[str, str]]:
    """Channel options that check the server's certificate against ``server_name`` (none: the target's host)."""
    return [("grpc.ssl_target_name_override", server_name)] if server_name else []
