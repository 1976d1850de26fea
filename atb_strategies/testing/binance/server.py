"""The public :class:`BinanceServer`: construction, lifecycle, inspection and HTTP plumbing.

A stdlib ``ThreadingHTTPServer`` on ``127.0.0.1`` (port 0, so the OS picks a free port) serves
in a daemon thread. Each request is logged, may fire an armed fault, is authenticated when the
endpoint is signed, and is answered by :class:`~atb_strategies.testing.binance.endpoints.Endpoints`
after resting orders are matched up to the market clock, all under one lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

from atb_strategies.testing.binance.auth import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET,
    TimeSync,
    authenticate,
)
from atb_strategies.testing.binance.candles import CandleBook, synthetic_candles
from atb_strategies.testing.binance.ccxt_config import loopback_ccxt_config
from atb_strategies.testing.binance.clock import MarketClock, to_ms
from atb_strategies.testing.binance.endpoints import Endpoints, Handler
from atb_strategies.testing.binance.faults import (
    ERROR_KINDS,
    FaultInjector,
    fault_response,
    reject_response,
)
from atb_strategies.testing.binance.lockstep import Lockstep
from atb_strategies.testing.binance.market import MarketSpec
from atb_strategies.testing.binance.matching import MatchingEngine
from atb_strategies.testing.binance.orders import order_json
from atb_strategies.testing.binance.protocol import (
    ZERO,
    BinanceApiError,
    Request,
    RequestRecord,
    dec,
    error_body,
    q8,
)

__all__ = ["BinanceServer"]


class _MarketField:
    """A :class:`BinanceServer` attribute kept in its :class:`MarketSpec` (read and write)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, server: BinanceServer | None, owner: type | None = None) -> Any:
        if server is None:
            return self
        return getattr(server._market, self.name)

    def __set__(self, server: BinanceServer, value: Any) -> None:
        setattr(server._market, self.name, value)


class BinanceServer:
    """A stateful loopback Binance spot REST server for one symbol, or several (``markets``).

    Parameters
    ----------
    candles : pandas.DataFrame, optional
        OHLCV candles (``open, high, low, close, volume``) indexed by candle open time (UTC;
        naive timestamps are taken as UTC) at a fixed timeframe. Gaps are allowed. None uses
        :func:`synthetic_candles` (2880 one-minute candles from 2024-01-01) with the clock at
        2024-01-02 00:00:30.
    symbol, base, quote : str
        The (first) market served, e.g. ``"BTCUSDT"`` = ``"BTC"`` + ``"USDT"``.
    markets : mapping of str to pandas.DataFrame, optional
        More symbols of the same quote asset and their candles (same timeframe), e.g.
        ``{"ETHUSDT": frame}``: one account (shared balances, one order and trade id sequence),
        the same fees and filters; a request's ``symbol`` picks the market, and symbol-less
        ``exchangeInfo`` and ``openOrders`` answer for all. In lockstep the clock steps only
        once the client is up to date on every symbol's candles.
    timeframe : str, optional
        Base interval of ``candles``; inferred from the smallest index step when omitted.
    api_key, secret : str
        Credentials the signed endpoints accept.
    start_time_ms : int, optional
        Initial market time; defaults to the close of the last candle (all candles complete).
    clock_speed : float
        Initial :meth:`MarketClock.set_speed` factor; 0.0 (default) freezes the clock.
    lockstep : bool
        Drive the frozen clock from the client (see :class:`Lockstep`): once a ``/klines``
        answer has shown every closed candle, the first ``/time`` request is answered unchanged
        (the client waits) and the second moves the clock to the next close of that interval
        first. Live tests use it so that they are deterministic at any machine speed. Not with
        ``clock_speed`` > 0.
    balances : mapping of str to number, optional
        Initial free balances; default ``{quote: 10000, base: 1}``.
    fees : float or str
        Fee rate per fill, e.g. 0.001 for 0.1 %.
    fee_asset : {"quote", "base", "received"}
        Asset the fee is charged in; ``"received"`` is Binance's default (base on buys, quote
        on sells).
    slippage : float or str
        Market orders fill this fraction worse than the current price.
    tick_size, step_size, min_qty, max_qty, min_notional : str
        PRICE_FILTER, LOT_SIZE and NOTIONAL filter values.
    strict_timestamps : bool
        False (default): a signed ``timestamp`` passes when it is within ``recvWindow`` of the
        market clock, or of the market clock as seen through any earlier ``GET /api/v3/time``
        answer and extrapolated at wall speed, so clients need not resync after
        :meth:`MarketClock.advance`. True: only the market clock counts, as on the real
        exchange.

    Attributes
    ----------
    clock : MarketClock
        The market clock.
    lockstep : Lockstep
        The client-driven stepping of the clock (``lockstep.enabled`` switches it).
    faults : FaultInjector
        Fault plans.
    internal_errors : list of Exception
        Unexpected exceptions raised while answering (answered as HTTP 500, code -1000);
        a test can assert it stays empty.

    Examples
    --------
    >>> with BinanceServer(candles) as server:                      # doctest: +SKIP
    ...     exchange = ccxt.binance(server.ccxt_config())
    ...     exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    """

    symbol = _MarketField()
    base = _MarketField()
    quote = _MarketField()
    fees = _MarketField()
    fee_asset = _MarketField()
    slippage = _MarketField()
    tick_size = _MarketField()
    step_size = _MarketField()
    min_qty = _MarketField()
    max_qty = _MarketField()
    min_notional = _MarketField()
    min_price = _MarketField()
    max_price = _MarketField()

    def __init__(
        self,
        candles: pd.DataFrame | None = None,
        *,
        symbol: str = "BTCUSDT",
        base: str = "BTC",
        quote: str = "USDT",
        timeframe: str | None = None,
        api_key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_SECRET,
        start_time_ms: int | None = None,
        clock_speed: float = 0.0,
        lockstep: bool = False,
        balances: Mapping[str, float | str | Decimal] | None = None,
        fees: float | str = 0.001,
        fee_asset: str = "quote",
        slippage: float | str = 0.0,
        tick_size: str = "0.01",
        step_size: str = "0.00001",
        min_qty: str = "0.00001",
        max_qty: str = "9000",
        min_notional: str = "5",
        strict_timestamps: bool = False,
        markets: Mapping[str, pd.DataFrame] | None = None,
    ) -> None:
        if fee_asset not in ("quote", "base", "received"):
            raise ValueError(
                f"fee_asset must be 'quote', 'base' or 'received'. Got {fee_asset!r} instead."
            )
        if lockstep and clock_speed:
            raise ValueError(
                f"lockstep drives a frozen clock; pass clock_speed=0. Got {clock_speed!r}."
            )
        if symbol != base + quote:
            raise ValueError(
                f"symbol must be base + quote. Got {symbol!r} for {base!r} + {quote!r}."
            )
        default_start: int | None = None
        if candles is None:
            candles = synthetic_candles()
            default_start = to_ms("2024-01-02 00:00:30")
        self._book = CandleBook(candles, timeframe)
        self._book.tick = float(tick_size)
        self._market = MarketSpec(
            symbol=symbol,
            base=base,
            quote=quote,
            fees=dec(fees),
            fee_asset=fee_asset,
            slippage=dec(slippage),
            tick_size=dec(tick_size),
            step_size=dec(step_size),
            min_qty=dec(min_qty),
            max_qty=dec(max_qty),
            min_notional=dec(min_notional),
            min_price=dec(tick_size),
            max_price=Decimal("1000000"),
        )
        self.api_key, self._secret = api_key, secret
        self.strict_timestamps = strict_timestamps
        start = start_time_ms if start_time_ms is not None else default_start
        self.clock = MarketClock(self._book.end if start is None else int(start), clock_speed)
        self.lockstep = Lockstep(self.clock, enabled=lockstep)
        self.faults = FaultInjector()
        self._lock = threading.RLock()
        initial = balances if balances is not None else {quote: "10000", base: "1"}
        self._engine = MatchingEngine(
            self._market,
            self._book,
            self.clock,
            {asset: q8(dec(amount)) for asset, amount in initial.items()},
        )
        self._sync = TimeSync()
        self._requests: list[RequestRecord] = []
        self.internal_errors: list[Exception] = []
        self._weights: deque[float] = deque()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        endpoints = Endpoints(
            self._market,
            self._book,
            self.clock,
            self._engine,
            self.faults,
            self._sync,
            self.lockstep,
        )
        self._routes: dict[tuple[str, str], tuple[Handler, bool]] = endpoints.routes()
        self._by_symbol: dict[str, tuple[MatchingEngine, dict[tuple[str, str], Any]]] = {
            symbol: (self._engine, self._routes)
        }
        for other, frame in (markets or {}).items():
            if other in self._by_symbol or not other.endswith(quote) or other == quote:
                raise ValueError(
                    f"markets must be other symbols quoted in {quote!r}. Got {other!r}."
                )
            spec = dataclasses.replace(self._market, symbol=other, base=other[: -len(quote)])
            book = CandleBook(frame, timeframe)
            if book.tf != self._book.tf:
                raise ValueError(f"markets[{other!r}] candles have another timeframe.")
            book.tick = self._book.tick
            engine = MatchingEngine(spec, book, self.clock, {}, share_with=self._engine)
            peer = Endpoints(spec, book, self.clock, engine, self.faults, self._sync, self.lockstep)
            peer.peers = endpoints.peers  # one list: every market's routes answer for all
            endpoints.peers.append(peer)
            self._by_symbol[other] = (engine, peer.routes())
        self.lockstep.watch(self._by_symbol)  # a step waits for the client to read them all
        self.clock.subscribe(self._on_clock_change)

    # ------------------------------------------------------------------------- lifecycle

    def start(self) -> BinanceServer:
        """Bind ``127.0.0.1`` on a free port and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.app = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"binance-loopback-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections and release the port (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> BinanceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """TCP port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("BinanceServer is not started; call start() first.")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def timeframe_ms(self) -> int:
        """Length of one base candle in milliseconds."""
        return self._book.tf

    def ccxt_config(
        self,
        *,
        timeout_ms: int = 10_000,
        rate_limit_ms: int | None = None,
        with_keys: bool = True,
        **options: Any,
    ) -> dict[str, Any]:
        """The ``ccxt.binance(config)`` dict that aims every REST URL at this server.

        All ``urls['api']``, ``urls['test']`` and ``urls['demo']`` entries of ccxt's binance
        class are rewritten to the loopback URL (path kept), so even endpoints the server does
        not implement cannot reach the internet, in or out of sandbox mode.

        Parameters
        ----------
        timeout_ms : int
            ccxt request timeout.
        rate_limit_ms : int, optional
            ccxt ``rateLimit`` (binance default 50 ms); the rate limiter stays enabled.
        with_keys : bool
            Include ``apiKey`` and ``secret``.
        **options
            Merged into ``options`` over the defaults ``fetchCurrencies=False``,
            ``fetchMargins=False``, ``fetchMarkets={'types': ['spot']}`` (no signed sapi or
            futures calls in ``load_markets``), ``adjustForTimeDifference=True`` (learn the
            market clock from ``/api/v3/time``) and
            ``warnOnFetchOpenOrdersWithoutSymbol=False``.

        Returns
        -------
        dict
            Constructor config for ``ccxt.binance``.
        """
        return loopback_ccxt_config(
            self.url,
            timeout_ms=timeout_ms,
            rate_limit_ms=rate_limit_ms,
            credentials=(self.api_key, self._secret) if with_keys else None,
            **options,
        )

    # ------------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RequestRecord]:
        """Copy of the request log, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, path: str, method: str | None = None) -> int:
        """Number of logged requests to exactly ``path`` (and ``method``, when given)."""
        with self._lock:
            return sum(
                1
                for r in self._requests
                if r.path == path and (method is None or r.method == method.upper())
            )

    def clear_requests(self) -> None:
        """Empty the request log."""
        with self._lock:
            self._requests.clear()

    def balance(self, asset: str) -> tuple[Decimal, Decimal]:
        """``(free, locked)`` of ``asset`` after matching up to the current clock."""
        with self._lock:
            self._match_all()
            return self._engine.free.get(asset, ZERO), self._engine.locked.get(asset, ZERO)

    def set_balance(self, asset: str, free: float | str | Decimal) -> None:
        """Set the free balance of ``asset`` (locked funds are unchanged)."""
        with self._lock:
            self._engine.set_balance(asset, q8(dec(free)))

    @property
    def symbols(self) -> list[str]:
        """Every symbol served, the first (``symbol``) first."""
        return list(self._by_symbol)

    def orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Every order (of ``symbol``, or of all) as ``GET /api/v3/order`` JSON, oldest first."""
        with self._lock:
            self._match_all()
            found = [
                (o, name)
                for name, (engine, _) in self._by_symbol.items()
                if symbol in (None, name)
                for o in engine.orders
            ]
            return [order_json(o, name) for o, name in sorted(found, key=lambda x: x[0].order_id)]

    def trades(self, symbol: str | None = None) -> list[dict[str, Any]]:
        """Every fill (of ``symbol``, or of all) as ``myTrades`` JSON, oldest first."""
        with self._lock:
            self._match_all()
            found = [
                dict(t)
                for name, (engine, _) in self._by_symbol.items()
                if symbol in (None, name)
                for t in engine.trades
            ]
            return sorted(found, key=lambda t: t["id"])

    def current_price(self, symbol: str | None = None) -> Decimal | None:
        """Last traded price of ``symbol`` (default the first) at the current clock, rounded
        to the tick (None before data)."""
        return self._by_symbol[symbol or self.symbol][0].current_price()

    # ------------------------------------------------------------------------ HTTP plumbing

    def _match_all(self) -> None:
        for engine, _ in self._by_symbol.values():
            engine.match()

    def _on_clock_change(self) -> None:
        with self._lock:
            self._match_all()

    def _serve(self, handler: _Handler, method: str) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw_body = handler.rfile.read(length).decode("utf-8", "replace") if length else ""
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        if raw_body and "x-www-form-urlencoded" in (handler.headers.get("Content-Type") or ""):
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        request = Request(method, split.path, params, split.query, raw_body, handler.headers)
        record = RequestRecord(method, split.path, dict(params), self.clock.now_ms)
        with self._lock:
            self._requests.append(record)
        fault = self.faults.take(method, split.path)
        record.fault = None if fault is None else fault.kind
        if fault is not None and fault.options.get("advance_ms"):
            self.clock.advance(int(fault.options["advance_ms"]))  # the outage lasts
        if fault is not None and fault.kind in ERROR_KINDS:
            if fault.options.get("process"):
                self._dispatch(request)
            if fault.kind == "disconnect":
                handler.close_connection = True
                return
            status, body, headers = fault_response(fault, self.clock.now_ms)
        elif fault is not None and fault.kind == "reject_order":
            status, body, headers = reject_response(fault)
        else:
            if fault is not None and fault.kind == "hide_order":
                request.hide_reads = int(fault.options.get("reads", 2))
            status, body, headers = self._dispatch(request)
            if fault is not None and fault.kind == "timeout":
                self._stopping.wait(float(fault.options.get("delay", 2.0)))
        symbol = params.get("symbol") or self.symbol
        if split.path == "/api/v3/klines" and symbol in self._by_symbol:
            self.lockstep.read_candles(symbol)
        if fault is None and status == 200 and request.shown_interval is not None:
            self.lockstep.saw_every_closed_candle(request.shown_interval, symbol)
        record.status = status
        self._send(handler, status, body, headers)

    def _dispatch(self, request: Request) -> tuple[int, str, dict[str, str]]:
        symbol = request.params.get("symbol")
        routes = self._by_symbol[symbol][1] if symbol in self._by_symbol else self._routes
        route = routes.get((request.method, request.path))
        try:
            if route is None:
                raise BinanceApiError(-1020, "This operation is not supported.", 404)
            func, signed = route
            with self._lock:
                if signed:
                    authenticate(
                        request,
                        api_key=self.api_key,
                        secret=self._secret,
                        clock=self.clock,
                        sync=self._sync,
                        strict=self.strict_timestamps,
                    )
                self._match_all()
                payload = func(request)
            return 200, json.dumps(payload, separators=(",", ":")), {}
        except BinanceApiError as e:
            return e.status, error_body(e), {}
        except Exception as e:  # a server bug: answer like Binance, keep it for the test
            with self._lock:
                self.internal_errors.append(e)
            error = BinanceApiError(-1000, f"Internal error in the loopback server: {e!r}", 500)
            return error.status, error_body(error), {}

    def _send(self, handler: _Handler, status: int, body: str, headers: Mapping[str, str]) -> None:
        data = body.encode("utf-8")
        now = time.monotonic()
        with self._lock:
            self._weights.append(now)
            while self._weights and self._weights[0] < now - 60.0:
                self._weights.popleft()
            weight = len(self._weights)
        try:
            handler.send_response(status)
            handler.send_header(
                "Content-Type", headers.get("Content-Type", "application/json;charset=UTF-8")
            )
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("x-mbx-used-weight", str(weight))
            handler.send_header("x-mbx-used-weight-1m", str(weight))
            for name, value in headers.items():
                if name != "Content-Type":
                    handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except OSError:  # the client gave up (timeout) or the server is stopping
            handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small JSON answers must not wait for delayed ACKs
    server_version = "atb-binance-loopback/1.0"
    timeout = 30

    def setup(self) -> None:
        super().setup()
        app: BinanceServer = self.server.app  # type: ignore[attr-defined]
        with app._lock:
            app._connections.add(self.connection)

    def finish(self) -> None:
        app: BinanceServer = self.server.app  # type: ignore[attr-defined]
        with app._lock:
            app._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self.server.app._serve(self, "GET")  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        self.server.app._serve(self, "POST")  # type: ignore[attr-defined]

    def do_DELETE(self) -> None:
        self.server.app._serve(self, "DELETE")  # type: ignore[attr-defined]

    def do_PUT(self) -> None:
        self.server.app._serve(self, "PUT")  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; ``BinanceServer.requests`` keeps the log."""
