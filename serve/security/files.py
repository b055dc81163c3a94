"""Files that hold secrets (signing keys, TLS keys, the API key store) are private to their owner."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class InsecureFile(PermissionError):
    """A secret file others can read; the message says the chmod to run."""


def require_private(path: Path, what: str) -> None:
    """Refuses a file whose mode lets group or others read or write it."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise InsecureFile(f"{what} {path} is readable or writable by other users (mode {mode:04o}); "
                           f"run `chmod 600 {path}` and start again")


def write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically, created 0600 in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
