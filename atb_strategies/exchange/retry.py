"""Retries for idempotent remote calls (reads), with exponential backoff (tenacity).

The one translate-and-retry of the project: ``call_with_retries`` retries a call that raises
``TemporaryExchangeError`` (``RateLimitError`` waits longer); ``call_exchange`` first translates
ccxt's errors (``exchange.errors``) and is what the candle download uses; the live store adds its
lock and clock resync around the same two; the sentiment client raises the same temporary
errors for HTTP 429/5xx and network failures. Order placement is never retried: its failures
are reconciled by client order id instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from atb_strategies.exceptions import RateLimitError, TemporaryExchangeError

log = logging.getLogger(__name__)
T = TypeVar("T")


def _wait(base: float, cap: float) -> Callable[[RetryCallState], float]:
    plain = wait_exponential(multiplier=base, max=cap)
    limited = wait_exponential(multiplier=base * 8, max=cap * 4)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return (limited if isinstance(error, RateLimitError) else plain)(state)

    return wait


def call_with_retries(
    fn: Callable[..., T],
    *args: Any,
    action: str,
    retries: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    sleep: Callable[[float], None] | None = None,
    on_retry: Callable[[BaseException, int], None] | None = None,
    quiet: bool = False,
    **kwargs: Any,
) -> T:
    """``fn(*args, **kwargs)``, retried up to ``retries`` times on temporary errors.

    ``on_retry(error, attempt)`` is called before each wait (e.g. to tell a strategy).
    ``quiet=True`` logs the retries and the giving up at DEBUG instead of WARNING/ERROR, for
    callers that report failures themselves (the live sentiment poller: one line per outage).
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if on_retry is not None and error is not None:
            on_retry(error, state.attempt_number)
        log.log(
            logging.DEBUG if quiet else logging.WARNING,
            "%s; retrying in %.1f s (retry %d of %d)",
            error,
            state.next_action.sleep if state.next_action else 0.0,
            state.attempt_number,
            retries,
        )

    extra = {"sleep": sleep} if sleep is not None else {}
    retrying = Retrying(
        retry=retry_if_exception_type(TemporaryExchangeError),
        stop=stop_after_attempt(retries + 1),
        wait=_wait(base_delay, max_delay),
        before_sleep=before_sleep,
        reraise=True,
        **extra,
    )
    try:
        return retrying(fn, *args, **kwargs)
    except TemporaryExchangeError as e:
        log.log(
            logging.DEBUG if quiet else logging.ERROR,
            "%s: giving up after %d attempts",
            action,
            retries + 1,
        )
        raise type(e)(f"{e} Gave up after {retries + 1} attempts.") from e


def call_exchange(
    fn: Callable[..., T],
    *args: Any,
    action: str,
    retries: int = 4,
    base_delay: float = 0.5,
    **kwargs: Any,
) -> T:
    """A read-only ccxt call ``fn(*args, **kwargs)``: errors translated, temporary ones retried."""
    # imported here: importing ccxt takes ~0.6 s, which every sweep worker would pay through
    # the sentiment client's retries (strategies -> sentiment -> here), which never need it
    from atb_strategies.exchange.errors import ccxt_errors

    def once() -> T:
        with ccxt_errors(action):
            return fn(*args, **kwargs)

    return call_with_retries(once, action=action, retries=retries, base_delay=base_delay)
