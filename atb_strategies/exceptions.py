"""Errors raised by atb_strategies, grouped by what the caller should do next.

::

    AtbError
     ├─ ConfigurationError(AtbError, ValueError)   a setting is wrong: fix it and run again
     ├─ CandleDataError(AtbError, ValueError)      candles are unusable: fix the data
     ├─ RegistryError(AtbError)
     │   ├─ ModelNotFoundError(RegistryError, LookupError)
     │   │                                         no such symbol/type/version: pick one listed
     │   ├─ BundleError(RegistryError, ValueError) a bundle on disk is corrupt or cannot be
     │   │                                         served faithfully: retrain or repair it
     │   └─ FeatureSchemaError(RegistryError, ValueError)
     │                                             features given do not match the model
     ├─ InferenceError(AtbError, ValueError)       an input tensor is malformed (shape, dtype,
     │                                             NaN or inf): fix the caller
     ├─ TrainingError(AtbError, RuntimeError)      a gate refused the trained model: nothing
     │                                             was registered
     ├─ KillSwitchError(AtbError)                  the kill switch is engaged (it tripped in
     │                                             an earlier session): clear it on purpose
     ├─ JournalError(AtbError)                     a live journal is damaged, or was deleted
     │                                             or emptied: restore it or start anew on purpose
     └─ ExchangeError(AtbError)                    an exchange call failed
         ├─ TemporaryExchangeError                 network, 5xx, timeout: retried (reads only)
         │   └─ RateLimitError                     429/418, DDoSProtection, RateLimitExceeded:
         │                                         retried after a longer backoff
         ├─ InvalidOrderError(ExchangeError, ValueError)
         │   └─ InsufficientFundsError             the exchange refused the order: not retried
         ├─ OrderNotFoundError(ExchangeError, LookupError)
         ├─ ExchangeAuthError                      credentials or permissions: fatal
         └─ OrderStateUnknownError                 a write may or may not have happened
                                                   (timeout on create_order): reconcile by
                                                   client order id, never resend blindly

Every message says what failed (with its identifiers), what was expected and what was
received, and what to do next. Each class also subclasses the matching built-in, so
``except ValueError`` and ``except LookupError`` keep working.
"""

from __future__ import annotations

from pathlib import Path


class AtbError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(AtbError, ValueError):
    """A configuration value (environment, config file, argument) is invalid."""


class CandleDataError(AtbError, ValueError):
    """Candles are unusable: NaN, non-positive prices, unsorted or duplicate stamps, gaps.

    ``row`` is the offending row label (timestamp or position) when one is known.
    """

    def __init__(self, message: str, *, row: object | None = None) -> None:
        super().__init__(message)
        self.row = row


class RegistryError(AtbError):
    """Base class of model-registry errors."""


class ModelNotFoundError(RegistryError, LookupError):
    """No bundle matches the requested symbol, type, timeframe or version.

    The message lists what does exist, so the caller can pick one.
    """


class BundleError(RegistryError, ValueError):
    """A bundle on disk is corrupt, inconsistent, or cannot be served faithfully.

    ``path`` is the file at fault and ``field`` the missing or invalid field, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        self.field = field


class FeatureSchemaError(RegistryError, ValueError):
    """Features or columns given to a model do not match its feature schema."""


class InferenceError(AtbError, ValueError):
    """An input tensor given to a model runner has the wrong shape or dtype, or holds NaN/inf."""


class TrainingError(AtbError, RuntimeError):
    """Training produced a model that must not be registered (parity or causality failed)."""


class KillSwitchError(AtbError):
    """The kill switch tripped (this session or an earlier one on the same journal); trading
    resumes only when the user clears it. The CLI exits with ``exit_code``."""

    exit_code = 3


class JournalError(AtbError):
    """A live journal cannot be trusted: it is damaged, or it was deleted or emptied (its marker
    says it existed). Nothing trades until it is restored or a new one is started on purpose."""


class ExchangeError(AtbError):
    """An exchange call failed; subclasses say whether to retry."""


class TemporaryExchangeError(ExchangeError):
    """A transient failure (network, HTTP 5xx, timeout). Idempotent calls are retried."""


class RateLimitError(TemporaryExchangeError):
    """The exchange throttled us (HTTP 429/418). Retried after a longer backoff."""


class InvalidOrderError(ExchangeError, ValueError):
    """The exchange refused an order (filters, precision, duplicate id). Not retried."""


class InsufficientFundsError(InvalidOrderError):
    """Not enough balance for the order. Not retried."""


class OrderNotFoundError(ExchangeError, LookupError):
    """The exchange does not know the order (yet)."""


class ExchangeAuthError(ExchangeError):
    """Credentials or permissions were refused. Fatal: a person must fix the keys."""


class OrderStateUnknownError(ExchangeError):
    """A write (``create_order``) failed in a way that does not tell whether it happened."""


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting untrusted values in messages: a
    hostile file's field may hold megabytes and the error must stay one line; ``repr`` escapes
    control and bidirectional characters, so none reaches a terminal."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"
