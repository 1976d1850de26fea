"""Order matching: balances, reservations, fills and resting orders against the price path.

The "current price" is the path price at the clock (after the last candle it stays at the last
close; before the first candle there is none and market orders answer ``-1013 Market is
closed.``). Market orders fill at once at the current price, moved against the taker by
``slippage``, rounded to the tick. Limit orders that are marketable on arrival fill at once at
the current price (capped by the limit); the others rest and fill at their limit price as soon
as the price path crosses them. Stop orders trigger when the path touches ``stopPrice``, then
behave as a limit order (``*_LIMIT``) or fill at the trigger price (``STOP_LOSS``,
``TAKE_PROFIT``). Resting orders are matched on every request and on every clock change.
Balances are per asset (``free``/``locked``); funds are locked when an order is accepted.

The engine does no locking: its owner serialises every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from atb_strategies.testing.binance.candles import CandleBook
from atb_strategies.testing.binance.clock import MarketClock
from atb_strategies.testing.binance.market import MarketSpec
from atb_strategies.testing.binance.orders import LIMIT_TYPES, STOP_TYPES, Order, parse_new_order
from atb_strategies.testing.binance.protocol import (
    ZERO,
    BinanceApiError,
    dec,
    floor_step,
    fmt,
    q8,
    to_tick,
)

__all__ = ["IdSource", "MatchingEngine", "touch"]


def touch(p0: float, p1: float, level: float, below: bool) -> float | None:
    """Fraction of the segment p0 -> p1 where ``price <= level`` (below) first holds.

    Parameters
    ----------
    p0, p1 : float
        Prices at the start and end of a linear piece of the price path.
    level : float
        Limit or stop price.
    below : bool
        True to look for ``price <= level``, False for ``price >= level``.

    Returns
    -------
    float or None
        0.0 when it holds at once, None when it never holds on the segment.
    """
    if below:
        if p0 <= level:
            return 0.0
        return (p0 - level) / (p0 - p1) if p1 <= level else None
    if p0 >= level:
        return 0.0
    return (level - p0) / (p1 - p0) if p1 >= level else None


@dataclass
class IdSource:
    """The last order and trade ids given out; shared by the engines of one account."""

    order: int = 1000
    trade: int = 500


class MatchingEngine:
    """Balances, orders and trades of the single account, matched against the candle path.

    Parameters
    ----------
    market : MarketSpec
        Trading rules (read at every use, so later changes apply).
    book : CandleBook
        The candles whose price path orders match against.
    clock : MarketClock
        The market clock.
    balances : mapping of str to Decimal
        Initial free balances (base and quote start at zero when absent).
    share_with : MatchingEngine, optional
        The engine of another symbol of the same account: its balances and id sequence are
        used (``balances`` is then ignored).

    Attributes
    ----------
    free, locked : dict of str to Decimal
        Balances per asset.
    orders : list of Order
        Every order, oldest first.
    trades : list of dict
        Every fill as Binance's ``myTrades`` JSON, oldest first.
    """

    def __init__(
        self,
        market: MarketSpec,
        book: CandleBook,
        clock: MarketClock,
        balances: Mapping[str, Decimal],
        *,
        share_with: MatchingEngine | None = None,
    ) -> None:
        self.market, self.book, self.clock = market, book, clock
        if share_with is None:
            self.free: dict[str, Decimal] = {market.base: ZERO, market.quote: ZERO}
            self.free.update(balances)
            self.locked: dict[str, Decimal] = dict.fromkeys(self.free, ZERO)
            self.ids = IdSource()
        else:  # another symbol of the same account: one set of balances, one id sequence
            self.free, self.locked, self.ids = share_with.free, share_with.locked, share_with.ids
            for asset in (market.base, market.quote):
                self.free.setdefault(asset, ZERO)
                self.locked.setdefault(asset, ZERO)
        self.orders: list[Order] = []
        self.trades: list[dict[str, Any]] = []
        self._cursor = clock.now_ms

    # -------------------------------------------------------------------------- prices

    def current_price(self) -> Decimal | None:
        """Last traded price at the current clock, rounded to the tick (None before data)."""
        price = self.book.price_at(self.clock.now_ms)
        return None if price is None else to_tick(dec(round(price, 10)), self.market.tick_size)

    def require_price(self) -> Decimal:
        """The current price, or ``-1013 Market is closed.`` before the first candle."""
        price = self.current_price()
        if price is None:
            raise BinanceApiError(-1013, "Market is closed.")
        return price

    # --------------------------------------------------------------------- order entry

    def validate_new_order(self, params: Mapping[str, str]) -> tuple[Order, Decimal | None]:
        """Parse and filter-check a new order; ``(order, price)`` or a Binance error.

        Returns
        -------
        tuple
            The order and, for a market order, its execution price (slippage included, the
            quantity derived from ``quoteOrderQty``); otherwise the current price or None.
        """
        market = self.market
        market.check_symbol(params)
        order = parse_new_order(params, self.clock)
        current = self.current_price()
        if order.type == "MARKET":
            if current is None:
                raise BinanceApiError(-1013, "Market is closed.")
            rounding = ROUND_CEILING if order.side == "BUY" else ROUND_FLOOR
            factor = 1 + market.slippage if order.side == "BUY" else 1 - market.slippage
            exec_price = to_tick(current * factor, market.tick_size, rounding)
            if order.orig_quote_qty:
                order.orig_qty = floor_step(order.orig_quote_qty / exec_price, market.step_size)
            market.check_filters(order, exec_price)
            return order, exec_price
        market.check_filters(order, order.price if order.price else order.stop_price)
        return order, current

    def place(
        self,
        order: Order,
        current: Decimal | None,
        *,
        hide_reads: int = 0,
        partial_fraction: float | None = None,
    ) -> None:
        """Accept a validated order: lock its funds, give it an id and fill what is marketable.

        Parameters
        ----------
        order : Order
            From :meth:`validate_new_order`.
        current : Decimal or None
            The price :meth:`validate_new_order` returned with it.
        hide_reads : int
            Reads that miss the order (``hide_order`` fault).
        partial_fraction : float, optional
            Fraction a GTC order fills first (``FaultInjector.partial_fill_fraction``).
        """
        if any(o.is_open and o.client_order_id == order.client_order_id for o in self.orders):
            raise BinanceApiError(-2010, "Duplicate order sent.")
        marketable = False
        if order.type in STOP_TYPES:
            if (
                current is not None
                and touch(
                    float(current), float(current), float(order.stop_price), order.trigger_below
                )
                is not None
            ):
                raise BinanceApiError(-2010, "Stop price would trigger immediately.")
        elif order.type != "MARKET" and current is not None:
            marketable = current <= order.price if order.side == "BUY" else current >= order.price
            if marketable and order.type == "LIMIT_MAKER":
                raise BinanceApiError(-2010, "Order would immediately match and take.")
        if order.type == "MARKET":
            assert current is not None  # validate_new_order raised otherwise
            order.reserve_price = current
        else:
            order.reserve_price = order.price if order.price else order.stop_price
        self._reserve(order)
        self.ids.order += 1
        order.order_id = self.ids.order
        order.hidden_reads = hide_reads
        if order.time_in_force == "GTC":  # IOC/FOK fill at once or never
            order.partial_fraction = partial_fraction
        self.orders.append(order)
        now = self.clock.now_ms
        if order.type == "MARKET":
            assert current is not None
            self._fill_planned(order, current, now, maker=False, pass_now=now)
        elif marketable:
            assert current is not None
            better = min(current, order.price) if order.side == "BUY" else max(current, order.price)
            self._fill_planned(order, better, now, maker=False, pass_now=now)
        elif order.time_in_force in ("IOC", "FOK") and order.type == "LIMIT":
            self.close(order, "EXPIRED", now)

    def close(self, order: Order, status: str, now: int) -> None:
        """End ``order`` with ``status`` (``CANCELED``, ``EXPIRED``) and unlock its funds."""
        self._release(order, order.reserved)
        order.status = status
        order.update_time = now
        order.deferred_price = None

    def set_balance(self, asset: str, free: Decimal) -> None:
        """Set the free balance of ``asset`` (locked funds are unchanged)."""
        self.free[asset] = free
        self.locked.setdefault(asset, ZERO)

    # ------------------------------------------------------------------------ matching

    def match(self) -> None:
        """Fill deferred remainders and resting orders the price path crossed since last time."""
        now = self.clock.now_ms
        for order in self.orders:
            if order.is_open and order.deferred_price is not None and now > order.deferred_after:
                price, order.deferred_price = order.deferred_price, None
                self._fill(order, order.remaining, price, now, order.deferred_maker)
        if now <= self._cursor:
            self._cursor = now
            return
        active = [o for o in self.orders if o.is_open and o.deferred_price is None]
        if active:
            for segment in self.book.segments(self._cursor, now):
                for order in active:
                    if order.is_open and order.deferred_price is None:
                        self._process_segment(order, segment, now)
        self._cursor = now

    def _process_segment(
        self, order: Order, segment: tuple[float, float, float, float], pass_now: int
    ) -> None:
        t0, p0, t1, p1 = segment
        if not order.working:
            hit = touch(p0, p1, float(order.stop_price), order.trigger_below)
            if hit is None:
                return
            t0, p0 = t0 + hit * (t1 - t0), p0 + hit * (p1 - p0)
            order.working = True
            order.working_time = int(t0)
            order.update_time = int(t0)
        limit = order.price if order.type in LIMIT_TYPES else None
        frac = 0.0 if limit is None else touch(p0, p1, float(limit), order.side == "BUY")
        if frac is None:
            return
        if frac == 0.0:
            price = to_tick(dec(round(p0, 10)), self.market.tick_size)
            if limit is not None:
                price = min(price, limit) if order.side == "BUY" else max(price, limit)
            maker = False
        else:
            assert limit is not None
            price, maker = limit, True
        self._fill_planned(order, price, int(t0 + frac * (t1 - t0)), maker=maker, pass_now=pass_now)

    # ----------------------------------------------------------------- funds and fills

    def _reservation(self, order: Order, qty: Decimal) -> Decimal:
        fee_here = self.market.fee_asset_for(order.side) == order.reserve_asset
        rate = 1 + self.market.fees if fee_here else Decimal(1)
        if order.side == "BUY":
            return q8(qty * order.reserve_price * rate)
        return q8(qty * rate)

    def _reserve(self, order: Order) -> None:
        order.reserve_asset = self.market.quote if order.side == "BUY" else self.market.base
        need = self._reservation(order, order.orig_qty)
        if self.free.get(order.reserve_asset, ZERO) < need:
            raise BinanceApiError(-2010, "Account has insufficient balance for requested action.")
        self._move(order.reserve_asset, -need, need)
        order.reserved = need

    def _move(self, asset: str, free: Decimal, locked: Decimal = ZERO) -> None:
        self.free[asset] = self.free.get(asset, ZERO) + free
        self.locked[asset] = self.locked.get(asset, ZERO) + locked

    def _release(self, order: Order, amount: Decimal) -> None:
        amount = min(amount, order.reserved)
        self._move(order.reserve_asset, amount, -amount)
        order.reserved -= amount

    def _fill_planned(
        self, order: Order, price: Decimal, t_ms: int, *, maker: bool, pass_now: int
    ) -> None:
        if order.partial_fraction is not None and order.executed_qty == 0:
            first = floor_step(order.orig_qty * dec(order.partial_fraction), self.market.step_size)
            if ZERO < first < order.orig_qty:
                self._fill(order, first, price, t_ms, maker)
                order.deferred_price = price
                order.deferred_after = pass_now
                order.deferred_maker = maker
                return
        self._fill(order, order.remaining, price, t_ms, maker)

    def _fill(self, order: Order, qty: Decimal, price: Decimal, t_ms: int, maker: bool) -> None:
        market = self.market
        final = qty >= order.remaining
        cost = q8(qty * price)
        fee_asset = market.fee_asset_for(order.side)
        commission = q8((qty if fee_asset == market.base else cost) * market.fees)
        self._release(order, order.reserved if final else self._reservation(order, qty))
        if order.side == "BUY":
            self._move(market.quote, -cost)
            self._move(market.base, qty)
        else:
            self._move(market.base, -qty)
            self._move(market.quote, cost)
        self._move(fee_asset, -commission)
        self.ids.trade += 1
        trade = {
            "symbol": market.symbol,
            "id": self.ids.trade,
            "orderId": order.order_id,
            "orderListId": -1,
            "price": fmt(price),
            "qty": fmt(qty),
            "quoteQty": fmt(cost),
            "commission": fmt(commission),
            "commissionAsset": fee_asset,
            "time": int(t_ms),
            "isBuyer": order.side == "BUY",
            "isMaker": maker,
            "isBestMatch": True,
        }
        self.trades.append(trade)
        order.fills.append(
            {
                "price": trade["price"],
                "qty": trade["qty"],
                "commission": trade["commission"],
                "commissionAsset": fee_asset,
                "tradeId": trade["id"],
            }
        )
        order.executed_qty += qty
        order.cumm_quote += cost
        order.update_time = int(t_ms)
        order.status = "FILLED" if final else "PARTIALLY_FILLED"
