"""The live account as backtrader sees it: balances, cash, value and positions.

``Account`` keeps the exchange's balances cached (refreshed every ``balance_refresh`` seconds,
never per bar: cerebro reads cash and value on every bar), values the portfolio as the quote
balance plus each position at its feed's last close, seeds positions from the account's free
balance when a feed starts, and books each execution into its position and the cash
(``book``), returning the opened/closed sizes, values, commissions and P&L backtrader's
``order.execute`` needs for ``notify_trade`` and analyzers.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any

import backtrader as bt
from backtrader.comminfo import CommInfoBase
from backtrader.position import Position

from atb_strategies.exceptions import TemporaryExchangeError
from atb_strategies.live.market_rules import MarketRules

log = logging.getLogger(__name__)


class SpotCommInfo(CommInfoBase):
    """Spot: no leverage, no margin; commissions come from the exchange's fills."""

    params = (
        ("stocklike", True),
        ("commtype", CommInfoBase.COMM_PERC),
        ("percabs", True),
        ("commission", 0.0),
    )


@dataclass(frozen=True)
class Booking:
    """What one execution did to a position: the figures ``order.execute`` records."""

    psize: float
    pprice: float
    opened: float
    closed: float
    openedvalue: float
    closedvalue: float
    openedcomm: float
    closedcomm: float
    pnl: float


class Account:
    """Cached balances and the positions of one live broker.

    Parameters
    ----------
    store : CcxtStore
        The exchange connection.
    rules : MarketRules
        Market lookup (the quote asset, the base asset of a feed).
    balance_refresh : float
        Seconds between balance refreshes.

    Attributes
    ----------
    positions : dict
        ``Position`` per data feed.
    balances, free : dict
        Total and free balance per asset, as last fetched (and adjusted by fills since).
    cash : float
        The free quote balance.
    """

    def __init__(self, store: Any, rules: MarketRules, balance_refresh: float) -> None:
        self.store = store
        self.rules = rules
        self.balance_refresh = balance_refresh
        self.positions: dict[Any, Position] = collections.defaultdict(Position)
        self.balances: dict[str, float] = {}
        self.free: dict[str, float] = {}
        self.cash = 0.0
        self._last_refresh = 0.0

    def refresh(self, force: bool = False) -> None:
        """Fetch the balances, unless the last fetch is younger than ``balance_refresh``."""
        now = time.monotonic()
        if not force and now - self._last_refresh < self.balance_refresh:
            return
        self._last_refresh = now
        try:
            balance = self.store.call("fetch_balance")
        except TemporaryExchangeError as e:
            log.warning("balance refresh failed: %s", e)
            return
        totals = balance.get("total") or {}
        self.balances = {k: float(v or 0) for k, v in totals.items()}
        free = balance.get("free") or {}
        self.free = {k: float(v or 0) for k, v in free.items()}
        quote = self.quote()
        if quote is not None:
            self.cash = float(free.get(quote) or 0.0)

    def quote(self) -> str | None:
        """The quote asset of the store's first feed (None before a feed has started)."""
        datas = getattr(self.store, "datas", None) or []
        if datas:
            return self.rules.market(datas[0])["quote"]
        return None

    def value(self, datas: Any = None) -> float:
        """The quote balance plus every position (of ``datas``, if given) at its last close."""
        value = self.balances.get(self.quote() or "", self.cash)
        for data, pos in self.positions.items():
            if datas is not None and not any(d is data for d in datas):  # feeds overload ==
                continue
            if pos.size and len(data):
                value += pos.size * float(data.close[0])
        return value

    def exposure(self, data: Any) -> tuple[float, float, float]:
        """``(exposure of data, gross exposure, value)``: position values at their last close."""
        values = [
            (d, abs(p.size) * float(d.close[0]))
            for d, p in self.positions.items()
            if p.size and len(d)
        ]
        mine = sum(v for d, v in values if d is data)
        return mine, sum(v for _, v in values), self.value()

    def seed_position(self, data: Any) -> None:
        """Seed the position of ``data`` from the free balance of its base asset."""
        market = self.rules.market(data)
        base = market["base"]
        # Only the free balance is the strategy's to manage: coins locked in open orders this
        # session does not track (yours, or kept by on_restart="keep") cannot be sold by it.
        held = self.free.get(base, 0.0)
        locked = self.balances.get(base, 0.0) - held
        if locked > 0:
            log.warning(
                "%s %s is locked in open orders this session does not manage; the position "
                "is seeded with the free %s only",
                locked,
                base,
                held,
            )
        if held:
            try:
                ticker = self.store.call("fetch_ticker", market["symbol"])
                price = float(ticker.get("last") or ticker.get("close") or 0.0)
            except TemporaryExchangeError:
                price = 0.0
            self.positions[data] = Position(size=held, price=price)
            log.info("seeded position %s %s at %s from the account", held, base, price)

    def sell_amount(self, order: bt.Order, raw_amount: float) -> float:
        """``raw_amount``, capped at the position for an unfilled sell (spot: never sell more)."""
        held = self.positions[order.data].size
        if order.issell() and 0 < held < raw_amount and not order.executed.size:
            return held
        return raw_amount

    def reduces_position(self, order: bt.Order, amount: float) -> bool:
        """True when ``order`` of ``amount`` only reduces its feed's position."""
        held = self.positions[order.data].size
        opposite = (held > 0 and order.issell()) or (held < 0 and order.isbuy())
        return opposite and amount <= abs(held) * (1 + 1e-9)

    def book(
        self,
        data: Any,
        comminfo: CommInfoBase,
        size: float,
        price: float,
        commission: float,
        quote_flow: float | None = None,
    ) -> Booking:
        """Book an execution into the position of ``data`` and into the cash.

        Parameters
        ----------
        data : DataBase
            The feed whose position changes.
        comminfo : CommInfoBase
            Values and P&L of the position's size.
        size, price : float
            The signed executed size and its price.
        commission : float
            The fee in the quote asset.
        quote_flow : float or None
            The quote asset the fill moves before fees (signed like ``size``); None means
            ``size * price``.

        Returns
        -------
        Booking
            The position after the execution and what it opened and closed.
        """
        position = self.positions[data]
        pprice_orig = position.price
        psize, pprice, opened, closed = position.update(size, price)
        pnl = comminfo.profitandloss(-closed, pprice_orig, price) if closed else 0.0
        total = abs(opened) + abs(closed)
        closedcomm = commission * abs(closed) / total if total else 0.0
        openedcomm = commission - closedcomm
        closedvalue = comminfo.getoperationcost(closed, pprice_orig) if closed else 0.0
        openedvalue = comminfo.getoperationcost(opened, price) if opened else 0.0
        spent = (size * price if quote_flow is None else quote_flow) + commission
        self.cash -= spent
        quote = self.quote()
        if quote is not None and quote in self.balances:
            self.balances[quote] -= spent  # keep the value consistent until the next refresh
        return Booking(
            psize, pprice, opened, closed, openedvalue, closedvalue, openedcomm, closedcomm, pnl
        )
