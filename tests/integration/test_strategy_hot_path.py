"""``MlStrategy``'s per-bar and per-order shortcuts (issue 21 item 4) keep every decision.

``_guarded`` asks only the guards that can fire (``enabled``), from a list it recomputes when
``self.guards`` grows or is replaced; ``notify_order`` reads an order's status and role once.
These tests pin what could change with them: a host's own guard (no ``enabled`` attribute)
appended in ``__init__`` or in the middle of a run is asked from then on, a guard that says it
is disabled is never asked, and an exit order without a role (a host's own ``close()``) still
ends its trade as a ``"signal"`` exit at its fill price.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from atb_strategies.backtest.runner import run_backtest
from atb_strategies.data.synthetic import generate_ohlcv
from atb_strategies.strategies.ml_basic import MlBasic

pytestmark = pytest.mark.slow  # full backtests on the shipped model

SHIPPED = str(Path(__file__).resolve().parents[2] / "models")
BLOCK = "test guard: no entries"


class HostGuard:
    """A host's guard with no ``enabled`` attribute: refuses entries from bar ``start`` on."""

    action = "no_entries"
    name = "host guard"

    def __init__(self, start: int) -> None:
        self.start = start
        self.asked = 0

    def reason(self, data: Any, pred: Any) -> str | None:
        self.asked += 1
        return BLOCK if len(data) >= self.start else None


class DisabledGuard(HostGuard):
    """Says it is disabled: never asked (it would block every entry if it were)."""

    enabled = False

    def __init__(self) -> None:
        super().__init__(start=0)


class GuardedBasic(MlBasic):
    """Appends guards: one in ``__init__``, one at bar ``late_at`` (into a new list)."""

    params = (("early_at", None), ("late_at", None), ("disabled", False))

    def __init__(self) -> None:
        super().__init__()
        self.early = HostGuard(self.p.early_at) if self.p.early_at else None
        self.late = HostGuard(0) if self.p.late_at else None
        if self.early is not None:
            self.guards.append(self.early)
        if self.p.disabled:
            self.disabled = DisabledGuard()
            self.guards.append(self.disabled)

    def next(self) -> None:
        if self.late is not None and len(self.data) == self.p.late_at:
            self.guards = [*self.guards, self.late]  # replaced, not appended in place
        super().next()


class HostClose(MlBasic):
    """Closes every position itself after 3 bars, with an order that carries no role."""

    def next(self) -> None:
        super().next()
        position = self.getposition(self.data)
        trades = self._trades[self.data][0]
        if (
            position.size
            and self._pending[self.data] is None
            and trades
            and trades[-1].isopen
            and len(self.data) - trades[-1].baropen >= 3
        ):
            self._pending[self.data] = self.close(data=self.data)


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return generate_ohlcv(1500, timeframe="1h", seed=5, start="2024-09-01")


def _run(market: pd.DataFrame, strategy: type = MlBasic, **params: Any) -> Any:
    return run_backtest(
        market,
        strategy,
        symbol="BTCUSDT",
        timeframe="1h",
        registry=SHIPPED,
        long_threshold=0.0003,
        **params,
    )


def _entry_bars(result: Any) -> list[pd.Timestamp]:
    return [pd.Timestamp(d["bar"]) for d in result.decisions if d["action"].startswith("enter")]


def test_a_guard_appended_in_init_is_asked_every_bar_and_blocks_entries(market):
    free = _run(market, GuardedBasic)
    decided = [d for d in free.decisions if d["action"] != "skip"]
    start = len(market) - len(decided) // 2  # the middle of the traded bars
    guarded = _run(market, GuardedBasic, early_at=start)
    assert guarded.strategy.early.asked == len(decided)
    blocked = [d for d in guarded.decisions if d["reason"] == BLOCK]
    assert blocked and all(d["action"] != "enter_long" for d in blocked)
    first_blocked = pd.Timestamp(blocked[0]["bar"])
    before = [t for t in _entry_bars(free) if t < first_blocked]
    assert before and [t for t in _entry_bars(guarded) if t < first_blocked] == before
    assert any(t >= first_blocked for t in _entry_bars(free))
    assert not any(t >= first_blocked for t in _entry_bars(guarded))


def test_a_guard_added_mid_run_in_a_new_list_is_asked_from_that_bar(market):
    free = _run(market, GuardedBasic)
    late_at = len(market) - 400
    guarded = _run(market, GuardedBasic, late_at=late_at)
    assert guarded.strategy.late.asked == 400 + 1  # bars late_at .. len(market)
    blocked = [d for d in guarded.decisions if d["reason"] == BLOCK]
    assert len(blocked) == 401
    first_blocked = pd.Timestamp(blocked[0]["bar"])
    assert [t for t in _entry_bars(guarded) if t < first_blocked] == [
        t for t in _entry_bars(free) if t < first_blocked
    ]
    assert any(t >= first_blocked for t in _entry_bars(free))
    assert not any(t >= first_blocked for t in _entry_bars(guarded))


def test_a_guard_that_says_it_is_disabled_is_never_asked(market):
    free = _run(market, GuardedBasic)
    with_disabled = _run(market, GuardedBasic, disabled=True)
    assert with_disabled.strategy.disabled.asked == 0
    assert with_disabled.trades == free.trades
    assert with_disabled.decisions == free.decisions


def test_an_exit_order_without_a_role_ends_its_trade_as_a_signal_exit(market):
    result = _run(market, HostClose, stop_loss=0, take_profit=0)
    closed = [t for t in result.trades if t["closed"]]
    assert len(closed) >= 3
    fills = {o["time"]: o["price"] for o in result.orders if not o.get("role")}
    by_host = [t for t in closed if t["closed"] in fills]
    assert len(by_host) >= 3  # the host's own closes filled and ended trades
    for trade in closed:
        assert trade["exit_reason"] == "signal"
        assert trade["bars"] <= 4
    for trade in by_host:
        assert trade["exit_price"] == fills[trade["closed"]]
