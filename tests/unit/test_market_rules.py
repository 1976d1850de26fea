"""``MarketRules`` and ``book_fee``: the market rules live and paper trading share.

A real ``ccxt.binance`` client rounds, with one BTC/USDT market set offline in Binance's shape
(amount step 0.00001, price tick 0.01, minimum notional 5 USDT, taker fee 0.1 %), inside a real
``CcxtStore``; no request is made.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import ccxt
import pytest

from atb_strategies.live.market_rules import DEFAULT_TAKER_FEE, MarketRules, book_fee
from atb_strategies.live.store import CcxtStore

MARKET = {
    "id": "BTCUSDT",
    "symbol": "BTC/USDT",
    "base": "BTC",
    "quote": "USDT",
    "baseId": "BTC",
    "quoteId": "USDT",
    "type": "spot",
    "spot": True,
    "active": True,
    "precision": {"amount": 1e-05, "price": 0.01},
    "limits": {"amount": {"min": 1e-05, "max": 9000.0}, "cost": {"min": 5.0}},
    "taker": 0.001,
    "maker": 0.001,
}


def make_rules(**market: Any) -> MarketRules:
    exchange = ccxt.binance()
    exchange.set_markets([{**MARKET, **market}])
    return MarketRules(CcxtStore(exchange=exchange))


@pytest.fixture()
def rules() -> MarketRules:
    return make_rules()


@pytest.fixture()
def market(rules: MarketRules) -> dict[str, Any]:
    return rules.market(SimpleNamespace(_name="BTCUSDT"))


def test_market_with_venue_name_finds_the_unified_market(rules):
    assert rules.market(SimpleNamespace(_name="BTCUSDT"))["symbol"] == "BTC/USDT"


def test_market_with_market_symbol_prefers_it_to_the_feed_name(rules):
    data = SimpleNamespace(_name="my-feed", market_symbol="BTC/USDT")
    assert rules.market(data)["symbol"] == "BTC/USDT"


def test_check_amount_with_unrounded_amount_truncates_it_to_the_step(rules, market):
    assert rules.check_amount(market, 0.0123456, 30_000.0) == (0.01234, None)


def test_check_amount_with_amount_below_the_step_refuses_it_for_precision(rules, market):
    amount, reason = rules.check_amount(market, 0.000004, 30_000.0)
    assert amount == 0.0
    assert "below the market's precision" in reason


def test_check_amount_with_notional_below_the_minimum_refuses_it(rules, market):
    amount, reason = rules.check_amount(market, 0.0001, 30_000.0)
    assert amount == 0.0001
    assert reason == "notional 3.0000 below the market minimum 5.0"


def test_check_amount_with_amount_below_the_minimum_amount_refuses_it():
    rules = make_rules(limits={"amount": {"min": 0.001}, "cost": {"min": 5.0}})
    market = rules.market(SimpleNamespace(_name="BTCUSDT"))
    amount, reason = rules.check_amount(market, 0.0005, 30_000.0)
    assert amount == 0.0005
    assert reason == "amount 0.0005 below the market minimum 0.001"


def test_check_amount_with_notional_checked_at_the_given_price(rules, market):
    assert rules.check_amount(market, 0.0002, 30_000.0)[1] is None  # 6 USDT
    assert "notional" in rules.check_amount(market, 0.0002, 20_000.0)[1]  # 4 USDT


def test_round_price_with_extra_digits_rounds_to_the_tick(rules, market):
    assert rules.round_price(market, 30_000.126) == 30_000.13


def test_taker_fee_with_market_fee_returns_it(rules, market):
    assert rules.taker_fee(market) == 0.001


def test_taker_fee_without_market_fee_returns_the_default(rules):
    assert rules.taker_fee({"symbol": "BTC/USDT", "taker": None}) == DEFAULT_TAKER_FEE


def test_book_fee_with_fee_in_quote_books_it_as_commission(market):
    fill = book_fee(market, True, 0.01, 30_000.0, 0.3, "USDT")
    assert (fill.size, fill.price, fill.commission) == (0.01, 30_000.0, 0.3)
    assert fill.quote_flow == pytest.approx(300.0)
    assert fill.fee_in_base is None


def test_book_fee_with_fee_in_bought_asset_books_net_size_at_effective_price(market):
    fill = book_fee(market, True, 0.01, 30_000.0, 0.00001, "BTC")
    assert fill.size == pytest.approx(0.00999)
    assert fill.price == pytest.approx(300.0 / 0.00999)
    assert fill.commission == 0.0
    assert fill.fee_in_base == 0.00001


def test_book_fee_with_base_fee_on_a_sell_converts_it_at_the_fill_price(market):
    fill = book_fee(market, False, 0.01, 30_000.0, 0.00001, "BTC")
    assert (fill.size, fill.price) == (0.01, 30_000.0)
    assert fill.commission == pytest.approx(0.3)
    assert fill.fee_in_base is None


def test_book_fee_with_fee_in_a_third_asset_books_it_as_is_with_a_warning(market, caplog):
    with caplog.at_level(logging.WARNING, logger="atb_strategies.live.market_rules"):
        fill = book_fee(market, True, 0.01, 30_000.0, 0.0007, "BNB", trade_id="42")
    assert fill.commission == 0.0007 and fill.size == 0.01
    assert "fee of trade 42 in BNB is not converted to USDT" in caplog.text
