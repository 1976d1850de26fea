"""Risk for live trading: the kill switch (loss and drawdown) and the limits on new orders.

``KillSwitch`` is what a user sets; ``RiskGuard`` is the state one broker keeps to enforce it:

* ``refusal`` says why a new order is refused (switch engaged, ``max_order_notional``,
  ``max_orders_per_minute``), ``record_order`` counts a sent order for the per-minute limit;
* ``breach`` follows the portfolio value (peak, the day's first value) and says when a loss or
  drawdown limit is crossed. It only watches once every feed is live: backfilled bars carry old
  prices.

What engaging does (cancel, flatten, stop cerebro) is the broker's job; ``killed`` and
``flattening`` are the flags it sets meanwhile.

With a journal, a trip is recorded there (time, reason, values) and a later session on the same
journal starts with the switch engaged until the user clears it; the day's starting value is
kept there too, so a restart does not reset the daily-loss limit (UTC days).

The day is the market's: the UTC day of the close time of the latest bar seen (what the broker
passes as ``market_ms``), so a replay or the accelerated demo exchange turns the day at the
first bar of the new day, not when the wall clock does; the wall clock is the fallback only
while no bar time is known.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class KillSwitch:
    """Hard limits for live trading (``None`` disables a limit).

    ``max_daily_loss`` and ``max_drawdown`` are fractions of portfolio value (the day's first
    value, the peak value). ``max_order_notional`` is in quote currency. ``flatten`` closes
    positions at market when a loss limit trips. ``max_order_notional`` and
    ``max_orders_per_minute`` cap new risk: orders that only reduce the position (exits,
    stop-losses, take-profits) are exempt, so a protective order is never blocked by them.
    The portfolio limits ``max_gross_exposure`` (every position's value, the open entry orders'
    notional and the order's, as a fraction of the account's value) and ``max_symbol_share``
    (the order's symbol alone) refuse new risk the same way. Open orders that add risk count
    (an unfilled limit entry is risk the moment it can fill); the stop-loss and take-profit
    legs of a position do not (they only reduce it).
    """

    max_daily_loss: float | None = 0.05
    max_drawdown: float | None = 0.15
    max_order_notional: float | None = None
    max_orders_per_minute: int | None = 10
    flatten: bool = True
    max_gross_exposure: float | None = None
    max_symbol_share: float | None = None


@dataclass(frozen=True)
class Exposure:
    """What the account holds and has asked for when an order is checked against the portfolio
    limits, in quote currency.

    Attributes
    ----------
    symbol, gross : float
        The value of the order's symbol's position, and of every position.
    value : float
        The account's value.
    symbol_open, gross_open : float
        The notional of the open orders that add risk (entries, not the protective exits of a
        position) on the order's symbol, and on every symbol.
    """

    symbol: float
    gross: float
    value: float
    symbol_open: float = 0.0
    gross_open: float = 0.0


class RiskGuard:
    """The state that enforces one ``KillSwitch`` in one broker.

    Parameters
    ----------
    limits : KillSwitch or None
        The limits; None disables every check except ``killed``.

    Attributes
    ----------
    killed : bool
        The switch is engaged: every new order is refused.
    flattening : bool
        The switch's own exits are being sent: nothing is refused or watched.
    """

    def __init__(self, limits: KillSwitch | None, journal: Any = None) -> None:
        self.limits = limits
        self.journal = journal
        #: A trip recorded by an earlier session (``{"time", "reason", ...}``), or None.
        self.earlier_trip = journal.kill_switch() if journal is not None else None
        self.killed = self.earlier_trip is not None
        self.reason: str | None = None
        self.flattening = False
        self._order_times: collections.deque[float] = collections.deque()
        self._peak: float | None = None
        self._day: str | None = None
        self._day_start_value: float | None = None

    @property
    def day(self) -> str | None:
        """The UTC day the daily-loss limit is watching (None before the first live check)."""
        return self._day

    @property
    def day_start_value(self) -> float | None:
        """The value at the first check of :attr:`day` (kept in the journal across restarts)."""
        return self._day_start_value

    def refusal(
        self,
        amount: float,
        price: float,
        *,
        reduces: bool,
        counting: bool = True,
        book: Exposure | None = None,
    ) -> str | None:
        """Why the limits refuse an order of ``amount`` at ``price``, or None.

        Parameters
        ----------
        amount, price : float
            The unsigned amount and the price it is valued at.
        reduces : bool
            The order only reduces the position (exits, stop-losses, take-profits): it is
            exempt from ``max_order_notional`` and ``max_orders_per_minute``, which cap new risk;
            a stop-loss blocked by them would leave the position unprotected exactly when it is
            needed.
        counting : bool
            False checks without reading the per-minute count (for held orders, sent later).
        book : Exposure, optional
            The account's positions and open entry orders now, for the portfolio limits; None
            skips them.
        """
        ks = self.limits
        if self.flattening:
            return None  # the kill switch's own exits are never blocked
        if self.killed and reduces and self.limits is not None and not self.limits.flatten:
            return None  # a kept position's stop-loss / take-profit (and exits) still protect it
        if self.killed:
            if self.earlier_trip is not None and self.reason is None:
                t = self.earlier_trip
                return (
                    f"kill switch engaged: it tripped at {t['time']} ({t['reason']}) in an "
                    "earlier session; no new orders until it is cleared (clear_kill_switch=True)"
                )
            return "kill switch engaged: no new orders"
        if ks is None or reduces:
            return None
        if ks.max_order_notional is not None and amount * price > ks.max_order_notional:
            return (
                f"notional {amount * price:.2f} exceeds max_order_notional "
                f"{ks.max_order_notional:.2f}"
            )
        portfolio = _portfolio_refusal(ks, amount * price, book)
        if portfolio is not None:
            return portfolio
        now = time.monotonic()
        while self._order_times and now - self._order_times[0] > 60:
            self._order_times.popleft()
        if (
            counting
            and ks.max_orders_per_minute is not None
            and len(self._order_times) >= ks.max_orders_per_minute
        ):
            return f"more than {ks.max_orders_per_minute} orders in a minute"
        return None

    def trip(self, reason: str, value: float) -> None:
        """Engage, and record the trip in the journal for later sessions."""
        self.killed, self.reason = True, reason
        if self.journal is not None:
            self.journal.record_kill_switch(reason, value=value, peak=self._peak)

    def record_order(self) -> None:
        """Count an order sent now, for ``max_orders_per_minute``."""
        self._order_times.append(time.monotonic())

    def breach(self, value: float, *, live: bool, market_ms: int | None = None) -> str | None:
        """Follow the portfolio ``value``; the reason when a loss limit is crossed, else None.

        Parameters
        ----------
        value : float
            The portfolio value now.
        live : bool
            Every feed is live; before that nothing is watched (backfilled bars carry old
            prices, so limits start with live data).
        market_ms : int, optional
            The close time (ms, UTC) of the latest bar seen: its UTC day is the day of
            ``max_daily_loss``. None falls back to the wall clock.
        """
        ks = self.limits
        if ks is None or self.killed or self.flattening or not live:
            return None
        if not math.isfinite(value) or value <= 0:
            return None
        self._peak = max(self._peak or value, value)
        today = market_day(market_ms)
        if self._day != today:
            self._day = today
            self._day_start_value = (
                self.journal.day_start_value(today, value) if self.journal is not None else value
            )
        reason = None
        if ks.max_drawdown is not None and value < self._peak * (1 - ks.max_drawdown):
            reason = (
                f"drawdown {_pct(1 - value / self._peak)} beyond {_pct(ks.max_drawdown)} "
                f"(value {value:.2f}, peak {self._peak:.2f})"
            )
        start = self._day_start_value or value
        if ks.max_daily_loss is not None and value < start * (1 - ks.max_daily_loss):
            reason = (
                f"daily loss {_pct(1 - value / start)} beyond {_pct(ks.max_daily_loss)} "
                f"(value {value:.2f}, day start {start:.2f})"
            )
        return reason


def market_day(market_ms: int | None) -> str:
    """``"YYYY-MM-DD"``: the UTC day of ``market_ms`` (ms since the epoch), else of now."""
    seconds = time.time() if market_ms is None else market_ms / 1000.0
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def _portfolio_refusal(ks: KillSwitch, notional: float, book: Exposure | None) -> str | None:
    """Why an order of ``notional`` breaks a portfolio limit given ``book``, or None."""
    if book is None:
        return None
    if not math.isfinite(book.value) or book.value <= 0:
        return None
    gross = ("gross exposure", "max_gross_exposure", ks.max_gross_exposure)
    mine = ("the symbol's exposure", "max_symbol_share", ks.max_symbol_share)
    checks = ((*gross, book.gross, book.gross_open), (*mine, book.symbol, book.symbol_open))
    for what, name, limit, held, pending in checks:
        total = held + pending + notional
        if limit is not None and total > limit * book.value:
            return (
                f"{what} {total:.2f} (positions {held:.2f} + open entry orders {pending:.2f} + "
                f"this order {notional:.2f}) would exceed {name} {_pct(limit)} of the value "
                f"{book.value:.2f}"
            )
    return None


def _pct(fraction: float) -> str:
    """A percentage readable for small limits too (``0.0123 %``, ``15 %``)."""
    return f"{100 * fraction:.4g} %"
