"""The security layer every network surface shares: API keys and the guard in front of each
RPC (authentication, rights, quotas), TLS credentials, bind checks, secret files and the
redaction of RPC URLs."""

from __future__ import annotations

from serve.security import tls
from serve.security.exposure import INSECURE_FLAG, InsecureBind, is_loopback, keep_ray_on_loopback, require_safe_bind
from serve.security.files import InsecureFile, require_private
from serve.security.guard import ANONYMOUS, Guard, Principal, QueuedProofs, current_principal, require
from serve.security.keystore import RIGHTS, ApiKey, KeyStore, KeyStoreError, keys_path
from serve.security.redact import install_log_redaction, redact, redact_url, register_secret_url

__all__ = [
    "ANONYMOUS", "INSECURE_FLAG", "RIGHTS", "ApiKey", "Guard", "InsecureBind", "InsecureFile", "KeyStore",
    "KeyStoreError", "Principal", "QueuedProofs", "current_principal", "install_log_redaction", "is_loopback",
    "keep_ray_on_loopback",
    "keys_path", "redact", "redact_url", "register_secret_url", "require", "require_private", "require_safe_bind",
    "tls",
]
