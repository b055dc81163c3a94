"""One redaction for every message, record and log line that could carry an RPC URL.

Provider URLs often hold an API key in their path, query or user info
(``https://mainnet.infura.io/v3/<key>``); only ``scheme://host[:port]`` of a URL is ever
shown. The secret parts of URLs the process was configured with are remembered too, so a
library that echoes just the path ("url: /v3/<key>") is scrubbed as well.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
URL_RE = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://([^\s/?#'\"<>()\[\]]*)([^\s'\"<>()]*)")
MIN_SECRET_CHARS = 8  # shorter pieces ("v3", "rpc") are not secrets and would mangle text
_secrets: set[str] = set()
_lock = threading.Lock()


def _host(netloc: str) -> str:
    return netloc.rsplit("@", 1)[-1]


def redact_url(url: str | None) -> str:
    """``scheme://host[:port]`` of a URL: no user info, path, query or fragment."""
    if not url:
        return ""
    parts = urlsplit(url)
    if not parts.scheme:
        return MASK
    return f"{parts.scheme}://{_host(parts.netloc)}"


def register_secret_url(url: str | None) -> None:
    """Remembers the parts of a configured URL that may be a credential."""
    if not url:
        return
    parts = urlsplit(url)
    pieces = [parts.username or "", parts.password or "", parts.path, parts.query, parts.fragment]
    pieces += [segment for segment in parts.path.split("/")]
    pieces += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    with _lock:
        _secrets.update(piece for piece in pieces if len(piece.strip("/")) >= MIN_SECRET_CHARS)


def redact(text: object) -> str:
    """``text`` with every URL cut to scheme://host and every remembered secret masked."""
    value = URL_RE.sub(lambda m: f"{m.group(1)}://{_host(m.group(2))}", str(text))
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: a path before its segments
    for secret in secrets:
        value = value.replace(secret, MASK)
    return value


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (arguments and exception text included) through ``redact``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = redact(message), None
        if record.exc_text:  # formatters reuse exc_text once it is set
            record.exc_text = redact(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Adds the filter to every handler of ``logger`` (the root logger by default): handler
    filters see records from every child logger, logger filters do not."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
