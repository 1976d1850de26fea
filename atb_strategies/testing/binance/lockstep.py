"""Lockstep: the market clock driven by what the client has seen, not by wall time.

A live client polls in a loop: it asks the time (``GET /api/v3/time``), sleeps until the next
candle should have closed, then asks for the candles (``GET /api/v3/klines``). In lockstep the
clock stays frozen and moves only when the client is demonstrably waiting: once a klines answer
has shown the client every closed candle of an interval (it is up to date), the next time
request is answered unchanged (the client learns that the next close is still ahead and
waits), and the one after it first moves the clock to the next close of that interval, then
answers. So exactly one more candle closes per wait, the client always gets to wait once between
two candles (as it would for real, where its orders and notifications are handled meanwhile),
and no candle can close unseen however slow the client (or the machine) is. Candles arrive at
the pace of the client's polls, a machine of any speed sees the same sequence of market states,
and a client that stops reading candles stops the market.

Any other clock change (a test's ``advance``/``set_time``, a fault's ``advance_ms``) disarms
the pending step: the client has not seen the candles that closed meanwhile.

With several symbols (one feed each), the step is armed only once every watched symbol is up
to date: every symbol the server serves (:meth:`Lockstep.watch`) and any other whose candles the
client read, so a feed that has not even started is never stepped past. A client of a
several-symbol server in lockstep must therefore read every symbol's candles.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from atb_strategies.testing.binance.candles import next_close
from atb_strategies.testing.binance.clock import MarketClock

__all__ = ["Lockstep"]


class Lockstep:
    """Steps ``clock`` to the next candle close when an up-to-date client asks the time again.

    Parameters
    ----------
    clock : MarketClock
        The market clock to drive; it must be frozen (speed 0) while lockstep is enabled.
    enabled : bool
        Start enabled.

    Attributes
    ----------
    enabled : bool
        While False, nothing is stepped (the clock is the test's to move).
    steps : int
        How many times the clock was stepped.
    """

    def __init__(self, clock: MarketClock, enabled: bool = False) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._armed: int | None = None
        self._told_to_wait = False
        self._stepping = False
        self._watched: set[str] = set()
        self._up_to_date: dict[str, int] = {}
        self.enabled = enabled
        self.steps = 0
        clock.subscribe(self._on_clock_change)

    def watch(self, symbols: Iterable[str]) -> None:
        """Step only once the client is up to date on each of ``symbols`` (too)."""
        with self._lock:
            self._watched.update(symbols)

    def read_candles(self, symbol: str) -> None:
        """Record that a client reads ``symbol``'s candles: it must be up to date before a step."""
        with self._lock:
            self._watched.add(symbol)

    @property
    def armed(self) -> int | None:
        """Interval (ms) whose next close the clock moves to at the next time request, if any."""
        return self._armed

    def saw_every_closed_candle(self, interval_ms: int, symbol: str = "") -> None:
        """Record that a client was just shown every closed ``interval_ms`` candle of
        ``symbol``; the step is armed once every symbol read so far is up to date."""
        if not self.enabled:
            return
        with self._lock:
            seen = self._up_to_date.get(symbol)
            self._up_to_date[symbol] = interval_ms if seen is None else min(seen, interval_ms)
            if any(s not in self._up_to_date for s in self._watched):
                return  # another symbol's feed has not caught up with the clock yet
            interval = min(self._up_to_date.values())
            self._armed = interval if self._armed is None else min(self._armed, interval)
            self._told_to_wait = False

    def on_time_request(self) -> None:
        """Before a time request is answered: the first one after the client was shown every
        closed candle leaves the clock (the client waits), the next steps to the next close."""
        if not self.enabled:
            return
        with self._lock:
            if self._armed is None:
                return
            if not self._told_to_wait:
                self._told_to_wait = True
                return
            interval, self._armed, self._told_to_wait = self._armed, None, False
            if self._clock.speed:
                raise RuntimeError(
                    "Lockstep needs a frozen market clock; call clock.set_speed(0) first."
                )
            self._stepping = True
        try:
            self._clock.set_time(next_close(self._clock.now_ms, interval))
        finally:
            self._stepping = False
        self.steps += 1

    def _on_clock_change(self) -> None:
        self._up_to_date.clear()  # candles closed: nobody has seen them yet
        if not self._stepping:
            self._armed, self._told_to_wait = None, False
