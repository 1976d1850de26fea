"""``RiskGuard``'s portfolio limits with open orders, and the day of the daily-loss limit."""

from __future__ import annotations

import pandas as pd

from atb_strategies.live.risk import Exposure, KillSwitch, RiskGuard, market_day


def _guard(**limits: float) -> RiskGuard:
    return RiskGuard(KillSwitch(max_daily_loss=None, max_drawdown=None, **limits))


def test_max_symbol_share_counts_the_symbol_s_own_open_entries_only():
    guard = _guard(max_symbol_share=0.2)
    # 1,000 held + 900 open on this symbol + 200 > 2,000; the other symbols' 5,000 open do not
    book = Exposure(symbol=1_000, gross=1_000, value=10_000, symbol_open=900, gross_open=5_900)
    reason = guard.refusal(0.1, 2_000, reduces=False, book=book)
    assert reason == (
        "the symbol's exposure 2100.00 (positions 1000.00 + open entry orders 900.00 + this "
        "order 200.00) would exceed max_symbol_share 20 % of the value 10000.00"
    )
    elsewhere = Exposure(1_000, 1_000, 10_000, symbol_open=0, gross_open=5_900)
    assert guard.refusal(0.1, 2_000, reduces=False, book=elsewhere) is None


def test_max_gross_exposure_counts_every_open_entry_and_never_refuses_an_exit():
    guard = _guard(max_gross_exposure=0.5)
    book = Exposure(symbol=0, gross=3_000, value=10_000, symbol_open=0, gross_open=1_900)
    assert guard.refusal(0.1, 2_000, reduces=False, book=book).startswith(
        "gross exposure 5100.00 (positions 3000.00 + open entry orders 1900.00"
    )
    assert guard.refusal(0.1, 2_000, reduces=False, book=Exposure(0, 3_000, 10_000)) is None
    assert guard.refusal(10.0, 2_000, reduces=True, book=book) is None  # an exit


def test_market_day_is_the_utc_day_of_the_bar_close_else_today():
    midnight = int(pd.Timestamp("2024-01-06 00:00", tz="UTC").value // 1_000_000)
    assert market_day(midnight - 1) == "2024-01-05"
    assert market_day(midnight) == "2024-01-06"  # the bar closing at 00:00 opens the new day
    before = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    today = market_day(None)  # no bar time known: the wall clock's day
    assert today in {before, pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")}


def test_daily_loss_day_start_resets_at_the_first_check_of_a_new_market_day():
    guard = RiskGuard(KillSwitch(max_daily_loss=0.1, max_drawdown=None))
    day_one = int(pd.Timestamp("2024-01-05 22:00", tz="UTC").value // 1_000_000)
    assert guard.breach(10_000.0, live=True, market_ms=day_one) is None
    assert guard.breach(9_500.0, live=True, market_ms=day_one + 3_600_000) is None
    assert (guard.day, guard.day_start_value) == ("2024-01-05", 10_000.0)
    assert guard.breach(9_200.0, live=True, market_ms=day_one + 2 * 3_600_000) is None
    assert (guard.day, guard.day_start_value) == ("2024-01-06", 9_200.0)
    reason = guard.breach(8_000.0, live=True, market_ms=day_one + 3 * 3_600_000)
    assert reason.startswith("daily loss 13.04 % beyond 10 % (value 8000.00, day start 9200.00)")
