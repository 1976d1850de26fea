"""Keep credentials out of every log line, at any verbosity.

At DEBUG, ccxt logs each request with its headers (``X-MBX-APIKEY``) and signed query
(``signature=...``). ``RedactSecrets`` is a ``logging.Filter`` for handlers: it replaces every
credential value the process has loaded (``register_secret``, called by ``create_exchange`` for
``apiKey``, ``secret``, ``password``, ``uid``, ``privateKey``) and anything that looks like an
API-key header or a signature with ``***``. ``install_redaction(handler)`` puts it on a handler;
the CLI installs it on every handler it creates (terminal and ``--log-file``). Filters on a
handler see records from every logger that reaches it, ccxt's included.

Tracebacks that do not go through logging (``atb -v`` re-raising an error, an exception that
ends a thread) are printed by ``sys.excepthook`` and ``threading.excepthook``;
``install_excepthooks`` replaces both with ones that print the same traceback masked.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType
from typing import Any

MASK = "***"
#: Credential fields of a ccxt client configuration.
CREDENTIAL_FIELDS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token")

_lock = threading.Lock()
_secrets: set[str] = set()
_PATTERNS = (
    # header names and JSON/dict keys that carry keys: X-MBX-APIKEY: abc / 'apiKey': 'abc'
    re.compile(
        r"(?i)(x-mbx-apikey|api[-_]?key|apikey|secret|password|passphrase|signature|"
        r"authorization|x-[a-z]+-(?:apikey|key|sign|signature|passphrase))"
        r"(['\"]?\s*[:=]\s*['\"]?)([^'\"\s,&}]+)"
    ),
)


def register_secret(value: object) -> None:
    """Remember a credential value so that no log line shows it (values under 4 characters
    are ignored: masking them would garble ordinary text)."""
    if isinstance(value, str) and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def register_credentials(config: dict) -> None:
    """``register_secret`` every credential field of a ccxt client configuration."""
    for name in CREDENTIAL_FIELDS:
        register_secret(config.get(name))


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every known secret and key-like header or parameter value masked."""
    with _lock:
        known = sorted(_secrets if secrets is None else set(secrets), key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return text


class RedactSecrets(logging.Filter):
    """A handler filter that masks credentials in the message and any traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_redaction(handler: logging.Handler) -> logging.Handler:
    """Add ``RedactSecrets`` to ``handler`` (once); returns the handler."""
    if not any(isinstance(f, RedactSecrets) for f in handler.filters):
        handler.addFilter(RedactSecrets())
    return handler


def format_exception_redacted(
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> str:
    """The traceback text of ``exc`` (with its chained causes), credentials masked."""
    return redact("".join(traceback.format_exception(exc_type, exc, tb)))


def _print_redacted(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    sys.stderr.write(format_exception_redacted(exc_type, exc, tb))
    sys.stderr.flush()


def _print_thread_redacted(args: Any) -> None:
    if args.exc_type is SystemExit:
        return
    name = getattr(args.thread, "name", None) or "unknown"
    sys.stderr.write(f"Exception in thread {name}:\n")
    _print_redacted(args.exc_type, args.exc_value, args.exc_traceback)


def install_excepthooks() -> None:
    """Print uncaught exceptions of the process and of its threads with credentials masked
    (``sys.excepthook`` and ``threading.excepthook``)."""
    sys.excepthook = _print_redacted
    threading.excepthook = _print_thread_redacted
