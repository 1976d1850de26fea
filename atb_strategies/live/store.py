"""``CcxtStore``: one ccxt client per (exchange, account, sandbox), shared by feeds and brokers.

backtrader's ``Store`` is a process-wide singleton per class, so two exchanges (or two accounts)
cannot coexist. ``CcxtStore`` keeps backtrader's store interface (``getdata``, ``getbroker``,
``put_notification``/``get_notifications`` -> ``notify_store``) but each constructor call makes a
new store; ``CcxtStore.shared(...)`` returns one store per key when sharing is wanted.

Every exchange call goes through ``call``: one lock serialises the synchronous ccxt client
(its rate limiter is not thread-safe), a request refused for clock skew (``InvalidNonce``) is
resent once after resyncing the clock, ccxt exceptions are translated in one place
(``atb_strategies.exchange.errors``), and only idempotent calls are retried with backoff. Writes
(``create_order``) are never retried: a timeout becomes ``OrderStateUnknownError`` and the broker
reconciles by client order id. Credentials come from the environment or a config file and are
never logged.

Add the store to cerebro (``cerebro.addstore(store)``) to receive its events in
``Strategy.notify_store(msg, *args)``: ``"RATE_LIMITED"``/``"RETRYING"`` (action, error, attempt)
before each retry, ``"EXCHANGE_UNAVAILABLE"`` (action, error) when retries are exhausted,
``"KILL_SWITCH"`` (reason) from the broker, and messages about orders recovered at restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import backtrader as bt
import ccxt
from backtrader.store import MetaSingleton

from atb_strategies.exceptions import RateLimitError, TemporaryExchangeError
from atb_strategies.exchange.client import create_exchange
from atb_strategies.exchange.errors import ccxt_errors
from atb_strategies.exchange.retry import call_with_retries
from atb_strategies.exchange.symbols import to_ccxt_symbol

log = logging.getLogger(__name__)
T = TypeVar("T")


class _MetaStore(MetaSingleton):
    """backtrader's store metaclass without the singleton: every call builds a new store."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return super(MetaSingleton, cls).__call__(*args, **kwargs)


class CcxtStore(bt.Store, metaclass=_MetaStore):
    """A ccxt exchange connection for live feeds and brokers.

    Parameters
    ----------
    exchange : str or ccxt.Exchange
        A ccxt exchange id (``"binance"``) or a ready client.
    config : mapping, optional
        Extra ccxt constructor settings (merged over ``ATB_EXCHANGE_CONFIG`` and
        ``ATB_<ID>_API_KEY``/``_API_SECRET``).
    sandbox : bool
        Use the exchange's test network (``set_sandbox_mode``).
    retries : int
        Retries of idempotent calls on temporary errors.
    retry_delay : float
        First backoff delay in seconds (doubles each retry; rate limits wait longer).
    """

    params = (
        ("exchange", "binance"),
        ("config", None),
        ("sandbox", False),
        ("retries", 4),
        ("retry_delay", 0.5),
    )

    _shared: ClassVar[dict[tuple[str, str, bool], CcxtStore]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        super().__init__()
        ex = self.p.exchange
        if isinstance(ex, ccxt.Exchange):
            self.exchange = ex
        else:
            self.exchange = create_exchange(str(ex), self.p.config or {})
        if self.p.sandbox:
            self.exchange.set_sandbox_mode(True)
        self.exchange.options["maxRetriesOnFailure"] = 0
        self._lock = threading.RLock()
        self._markets_loaded = False
        self._market_cache: dict[str, dict[str, Any]] = {}
        self.time_offset_ms = 0
        import collections

        self.notifs = collections.deque()
        self.datas: list[Any] = []
        self.broker: Any = None

    @classmethod
    def shared(
        cls,
        exchange: str = "binance",
        account: str = "default",
        sandbox: bool = False,
        **kwargs: Any,
    ) -> CcxtStore:
        """The store for (exchange, account, sandbox), created on first use."""
        key = (exchange, account, sandbox)
        with cls._shared_lock:
            store = cls._shared.get(key)
            if store is None:
                store = cls(exchange=exchange, sandbox=sandbox, **kwargs)
                cls._shared[key] = store
            return store

    @property
    def exchange_id(self) -> str:
        return str(self.exchange.id)

    # ---------------------------------------------------------------- calls

    def call(self, method: str, *args: Any, idempotent: bool = True, **kwargs: Any) -> Any:
        """``exchange.<method>(*args, **kwargs)`` serialised, translated, retried if idempotent."""
        fn: Callable[..., Any] = getattr(self.exchange, method)
        shown = ", ".join([repr(a) for a in args[:3]] + [f"{k}=..." for k in kwargs])
        action = f"{self.exchange_id}.{method}({shown})"

        def once() -> Any:
            with self._lock, ccxt_errors(action, write=not idempotent):
                try:
                    return fn(*args, **kwargs)
                except ccxt.InvalidNonce:
                    # Our clock drifted from the exchange's: the request was refused for sure
                    # (Binance -1021), so resync and send it once more.
                    log.info("%s: clock out of sync; resyncing with the exchange", action)
                    self.exchange.load_time_difference()
                    return fn(*args, **kwargs)

        if not idempotent:
            return once()

        def on_retry(error: BaseException, attempt: int) -> None:
            kind = "RATE_LIMITED" if isinstance(error, RateLimitError) else "RETRYING"
            self.put_notification(kind, action, str(error), attempt)

        try:
            return call_with_retries(
                once,
                action=action,
                retries=self.p.retries,
                base_delay=self.p.retry_delay,
                on_retry=on_retry,
            )
        except TemporaryExchangeError as e:
            self.unavailable = f"{action}: {e}"  # why a session may end (live.runner.stop_reason)
            self.put_notification("EXCHANGE_UNAVAILABLE", action, str(e))
            raise

    def load_markets(self, reload: bool = False) -> Mapping[str, Any]:
        if reload or not self._markets_loaded:
            self.call("load_markets", reload)
            self._markets_loaded = True
            self._market_cache.clear()
        return self.exchange.markets

    def market(self, symbol: str) -> dict[str, Any]:
        """The ccxt market of a venue (``BTCUSDT``) or unified (``BTC/USDT``) symbol."""
        found = self._market_cache.get(symbol)
        if found is None:
            self.load_markets()
            found = self.exchange.market(to_ccxt_symbol(symbol, self.exchange.symbols))
            self._market_cache[symbol] = found  # resolved once: callers hit this per bar
        return found

    def now_ms(self) -> int:
        """The exchange's clock (asks the exchange when it can; remembers the offset)."""
        local = self.exchange.milliseconds()
        if self.exchange.has.get("fetchTime"):
            server = int(self.call("fetch_time"))
            self.time_offset_ms = server - local
            return server
        return int(local)

    def estimated_now_ms(self) -> int:
        """Exchange time from the last known offset, without a request."""
        return int(self.exchange.milliseconds() + self.time_offset_ms)

    # ---------------------------------------------------------------- backtrader protocol

    def put_notification(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.notifs.append((msg, args, kwargs))

    def get_notifications(self) -> list:
        self.notifs.append(None)
        return list(iter(self.notifs.popleft, None))

    def getdata(self, *args: Any, **kwargs: Any) -> Any:
        """A ``CcxtData`` feed on this store; with ``sentiment=`` (a ``SentimentPoller`` or a
        source) a ``CcxtSentimentData`` that also carries the sentiment as of each bar."""
        if kwargs.get("sentiment") is not None:
            from atb_strategies.live.sentiment_feed import CcxtSentimentData

            return CcxtSentimentData(*args, store=self, **kwargs)
        kwargs.pop("sentiment", None)
        from atb_strategies.live.feed import CcxtData

        return CcxtData(*args, store=self, **kwargs)

    def getbroker(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        from atb_strategies.live.broker import CcxtBroker

        return CcxtBroker(*args, store=self, **kwargs)

    def start(self, data: Any = None, broker: Any = None) -> None:
        self.load_markets()
        if broker is not None:
            self.broker = broker
        # by identity: backtrader's feeds overload ==, so ``in`` breaks with a second feed
        if data is not None and not any(d is data for d in self.datas):
            self.datas.append(data)
            if self.broker is not None and hasattr(self.broker, "data_started"):
                self.broker.data_started(data)

    def stop(self) -> None:
        pass
