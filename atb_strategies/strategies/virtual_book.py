"""``VirtualBook``: the account a shadow model would have, trading on paper inside a session.

A shadow (challenger) model predicts on the same closed bars as the model that trades and
follows the same rules (``MlStrategy``: thresholds, sizing by confidence, a bracket entry with
stop-loss and take-profit, exit on a reversed prediction), but its orders go to this book
instead of a broker: no request ever leaves the process.

Fills follow backtrader's ``BackBroker`` with ``set_slippage_perc(slip, slip_open=True,
slip_out=True)``, the way ``atb backtest`` configures it, so a virtual book of the trading
model itself reproduces the real backtest book (the tests prove it trade for trade):

* an order decided at bar ``t`` is first tried at bar ``t + 1``; a market entry or exit fills at
  that bar's open, moved against the order by the slippage;
* the stop-loss and take-profit legs become active the bar after the entry fills. A stop fills
  at the open when the bar opens through it, else at the stop price when the bar's range reaches
  it (slippage against the order either way); a take-profit fills at the open (with slippage)
  when the bar opens through it, else at its price when the range reaches it. The stop is tried
  first, and one leg filling cancels the other;
* commission is ``|size| x price x commission`` on every fill, and the value is cash plus the
  position at the close.

What it does not model: the broker refusing an order for cash (``Margin``), exchange amount
precision and minimums, and partial fills. A real paper or live account can therefore drift
from its virtual twin by a rounding step or a refused order; the book says so in its name, not
in its numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class _Order:
    kind: str  # "market", "stop" or "limit"
    side: int  # +1 buy, -1 sell
    size: float  # > 0 (market entries: the size decided at the signal bar)
    price: float | None = None  # stop or limit price
    role: str = "entry"  # entry, exit, stop_loss, take_profit
    active: bool = True
    arming: bool = False  # a leg whose entry filled: active from the next bar


class VirtualBook:
    """Cash, position and orders of one virtual account.

    Parameters
    ----------
    cash : float
        Starting cash.
    commission : float
        Fee as a fraction of each fill's notional.
    slippage : float
        Fraction by which market fills and stops move against the order (``slip_perc``).
    cap : bool
        Keep slipped prices inside the bar's range, and a take-profit's at its limit
        (``BackBroker`` with ``slip_match=True, slip_out=False``, as ``PaperBroker`` sets it);
        False lets them out (``slip_out=True``, as ``atb backtest`` sets it).
    """

    def __init__(
        self, cash: float, commission: float = 0.0, slippage: float = 0.0, cap: bool = False
    ) -> None:
        self.cap = bool(cap)
        self.cash = float(cash)
        self.start_cash = float(cash)
        self.commission = float(commission)
        self.slippage = float(slippage)
        self.position = 0.0
        self.entry_price = 0.0
        self.trades = 0  # closed round trips
        self.fees = 0.0
        self.orders: list[_Order] = []
        self.close = math.nan

    # ------------------------------------------------------------------ state

    @property
    def value(self) -> float:
        """Cash plus the position at the last close."""
        return self.cash + (self.position * self.close if self.position else 0.0)

    @property
    def pending_entry_or_exit(self) -> bool:
        """A market entry or exit waits for its fill (the strategy's ``wait``)."""
        return any(o.kind == "market" for o in self.orders)

    # ------------------------------------------------------------------ orders (decisions)

    def enter(self, side: int, size: float, stop: float | None, limit: float | None) -> None:
        """A bracket: market entry of ``size`` on ``side``, then the protective legs."""
        self.orders.append(_Order("market", side, size, role="entry"))
        if stop is not None:
            self.orders.append(_Order("stop", -side, size, stop, "stop_loss", active=False))
        if limit is not None:
            self.orders.append(_Order("limit", -side, size, limit, "take_profit", active=False))

    def exit(self) -> None:
        """Cancel the legs and close the position at market."""
        self.orders = [o for o in self.orders if o.role not in ("stop_loss", "take_profit")]
        if self.position:
            side = -1 if self.position > 0 else 1
            self.orders.append(_Order("market", side, abs(self.position), role="exit"))

    # ------------------------------------------------------------------ bars (fills)

    def _fill(self, order: _Order, price: float) -> None:
        before = self.position
        size = order.size if order.role != "exit" else abs(self.position)
        if order.role in ("stop_loss", "take_profit"):
            size = min(size, abs(self.position))
        signed = order.side * size
        self.cash -= signed * price
        fee = abs(signed) * price * self.commission
        self.cash -= fee
        self.fees += fee
        self.position = before + signed
        if abs(self.position) < 1e-12:
            self.position = 0.0
        if before == 0 and self.position:
            self.entry_price = price
        if before and not self.position:
            self.trades += 1

    def _slip(self, price: float, side: int, high: float, low: float) -> float:
        slipped = price * (1 + side * self.slippage)
        if self.cap:
            return min(slipped, high) if side > 0 else max(slipped, low)
        return slipped

    def on_bar(self, open_: float, high: float, low: float, close: float) -> None:
        """Try the pending orders on a new bar (before the strategy decides on it)."""
        self.close = float(close)
        legs = ("stop_loss", "take_profit")
        for order in self.orders:
            if order.arming:  # the entry filled on the previous bar
                order.active, order.arming = True, False
        keep: list[_Order] = []
        filled_leg = False
        for order in self.orders:
            if not order.active:
                keep.append(order)
            elif order.kind == "market":
                self._fill(order, self._slip(open_, order.side, high, low))
                if order.role == "entry":
                    for leg in self.orders:
                        leg.arming = leg.role in legs and not leg.active
            elif filled_leg or not self.position:
                continue  # one cancels the other; or nothing is left to protect
            elif (price := self._leg_price(order, open_, high, low)) is None:
                keep.append(order)
            else:
                self._fill(order, price)
                filled_leg = True
        if filled_leg:
            keep = [o for o in keep if o.role not in legs]
        self.orders = keep

    def _leg_price(self, order: _Order, open_: float, high: float, low: float) -> float | None:
        assert order.price is not None
        side, price = order.side, order.price
        if order.kind == "stop":
            if (side < 0 and open_ <= price) or (side > 0 and open_ >= price):
                return self._slip(open_, side, high, low)  # opened through the stop
            touched = low <= price if side < 0 else high >= price
            return self._slip(price, side, high, low) if touched else None
        if (side < 0 and price <= open_) or (side > 0 and price >= open_):
            slipped = open_ * (1 + side * self.slippage)  # opened through the limit
            if not self.cap:
                return slipped
            # never worse than the limit (and a buy not above the bar), as BackBroker does it
            return max(slipped, price) if side < 0 else min(slipped, high, price)
        touched = price <= high if side < 0 else price >= low
        return price if touched else None
