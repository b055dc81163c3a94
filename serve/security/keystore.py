"""API keys, kept as salted hashes in one JSON file under the state directory (mode 0600).

A token is ``zks_<key id>.<secret>``: the key id (public, shown by ``zkserve keys list``) finds
the entry, the 256-bit secret is checked against its salted SHA-256 in constant time. A
random 256-bit secret cannot be guessed, so a fast hash suffices (a slow KDF guards low-entropy
passwords, and would cost every request). The token itself is shown once, at creation.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from serve.security.files import require_private, write_private

TOKEN_PREFIX = "zks_"
RIGHTS = ("predict", "verify", "submit", "admin")  # admin implies every other right
FORMAT = 1


class KeyStoreError(ValueError):
    pass


def keys_path(state_dir: str | Path, configured: str | Path | None = None) -> Path:
    """The key store's file: the configured one, else ``<state dir>/auth/keys.json``."""
    return Path(configured).expanduser() if configured else Path(state_dir) / "auth" / "keys.json"


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    rights: tuple[str, ...]
    salt: str = field(repr=False)
    digest: str = field(repr=False)
    created: float = 0.0
    revoked: float | None = None
    requests_per_s: float | None = None  # None: the service's default quota

    @property
    def active(self) -> bool:
        return self.revoked is None

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(_digest(bytes.fromhex(self.salt), secret), self.digest)


def split_token(token: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed token, else None."""
    if not token.startswith(TOKEN_PREFIX) or "." not in token:
        return None
    key_id, _, secret = token[len(TOKEN_PREFIX):].partition(".")
    return (key_id, secret) if key_id and secret else None


class KeyStore:
    """The key file, re-read whenever it changes on disk (so a revoke from the CLI takes
    effect on the next request of a running service)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._keys: dict[str, ApiKey] = {}
        self._stamp: tuple | None = None
        self._lock = threading.Lock()

    # ---- reading ----

    def _load(self) -> dict[str, ApiKey]:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._keys, self._stamp = {}, None
            return self._keys
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            require_private(self.path, "the API key file")
            try:
                document = json.loads(self.path.read_text())
                keys = {entry["key_id"]: ApiKey(**{**entry, "rights": tuple(entry["rights"])})
                        for entry in document["keys"]}
            except (ValueError, KeyError, TypeError) as error:
                raise KeyStoreError(f"API key file {self.path} is malformed ({error}); restore it or remove it "
                                    f"and create keys again with `zkserve keys create`") from None
            self._keys, self._stamp = keys, stamp
        return self._keys

    def api_keys(self) -> list[ApiKey]:
        with self._lock:
            return sorted(self._load().values(), key=lambda key: key.created)

    def lookup(self, token: str) -> ApiKey | None:
        """The active key a token belongs to, or None (unknown, revoked or malformed)."""
        parts = split_token(token)
        if parts is None:
            return None
        with self._lock:
            key = self._load().get(parts[0])
        if key is None or not key.matches(parts[1]) or not key.active:
            return None
        return key

    # ---- writing (the CLI) ----

    @contextmanager
    def _locked_write(self):
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.parent / f".{self.path.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with self._lock:
                self._stamp = None
                keys = dict(self._load())
                yield keys
                entries = [asdict(key) | {"rights": list(key.rights)} for key in keys.values()]
                document = {"format": FORMAT, "keys": entries}
                write_private(self.path, json.dumps(document, indent=1) + "\n")
                self._stamp = None

    def create(self, name: str, rights: list[str], requests_per_s: float | None = None) -> tuple[ApiKey, str]:
        """A new key and its token (the only time the token exists outside the caller)."""
        unknown = sorted(set(rights) - set(RIGHTS))
        if unknown or not rights:
            raise KeyStoreError(f"rights must be some of {', '.join(RIGHTS)}; got {', '.join(unknown) or 'none'}")
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self._locked_write() as keys:
            key_id = secrets.token_hex(6)
            while key_id in keys:
                key_id = secrets.token_hex(6)
            key = ApiKey(key_id, name, tuple(sorted(set(rights))), salt.hex(), _digest(salt, secret), time.time(),
                         None, requests_per_s)
            keys[key_id] = key
        return key, f"{TOKEN_PREFIX}{key_id}.{secret}"

    def revoke(self, key_id: str) -> ApiKey:
        with self._locked_write() as keys:
            if key_id not in keys:
                raise KeyStoreError(f"no API key {key_id!r} in {self.path}; `zkserve keys list` shows them")
            if keys[key_id].active:
                keys[key_id] = replace(keys[key_id], revoked=time.time())
            return keys[key_id]
