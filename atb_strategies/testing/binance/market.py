"""The one market served: symbol, assets, fees, slippage and the ``exchangeInfo`` filters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from atb_strategies.testing.binance.orders import LIMIT_TYPES, ORDER_TYPES, STOP_TYPES, Order
from atb_strategies.testing.binance.protocol import ZERO, BinanceApiError, fmt, mandatory

__all__ = ["MarketSpec"]


@dataclass
class MarketSpec:
    """Trading rules of the single symbol, shared by the endpoints and the matching engine.

    Attributes
    ----------
    symbol, base, quote : str
        E.g. ``"BTCUSDT"`` = ``"BTC"`` + ``"USDT"``.
    fees : Decimal
        Fee rate per fill.
    fee_asset : {"quote", "base", "received"}
        Asset the fee is charged in.
    slippage : Decimal
        Market orders fill this fraction worse than the current price.
    tick_size, step_size, min_qty, max_qty, min_notional, min_price, max_price : Decimal
        PRICE_FILTER, LOT_SIZE and NOTIONAL filter values.
    """

    symbol: str
    base: str
    quote: str
    fees: Decimal
    fee_asset: str
    slippage: Decimal
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    min_price: Decimal
    max_price: Decimal

    def fee_asset_for(self, side: str) -> str:
        """The asset a fill on ``side`` (``"BUY"``/``"SELL"``) pays its fee in."""
        if self.fee_asset == "received":
            return self.base if side == "BUY" else self.quote
        return self.base if self.fee_asset == "base" else self.quote

    def check_symbol(self, params: Mapping[str, str], required: bool = True) -> None:
        """Raise ``-1102`` when ``symbol`` is required but missing, ``-1121`` when it is wrong."""
        symbol = params.get("symbol")
        if symbol is None or symbol == "":
            if required:
                raise mandatory("symbol")
            return
        if symbol != self.symbol:
            raise BinanceApiError(-1121, "Invalid symbol.")

    def check_filters(self, order: Order, reference_price: Decimal) -> None:
        """Raise ``-1013 Filter failure: ...`` when ``order`` breaks a price, lot or notional rule.

        Parameters
        ----------
        order : Order
            The new order (its quantity already derived for quote-quantity market orders).
        reference_price : Decimal
            Price the notional is computed at.
        """
        if order.type in LIMIT_TYPES or order.type in STOP_TYPES:
            for value in (order.price, order.stop_price):
                if value and (
                    value < self.min_price
                    or value > self.max_price
                    or (value - self.min_price) % self.tick_size
                ):
                    raise BinanceApiError(-1013, "Filter failure: PRICE_FILTER")
        qty = order.orig_qty
        if qty < self.min_qty or qty > self.max_qty or (qty - self.min_qty) % self.step_size:
            raise BinanceApiError(-1013, "Filter failure: LOT_SIZE")
        notional = order.orig_quote_qty if order.orig_quote_qty else qty * reference_price
        if notional < self.min_notional:
            raise BinanceApiError(-1013, "Filter failure: NOTIONAL")

    def symbol_info(self) -> dict[str, Any]:
        """The symbol's entry of ``GET /api/v3/exchangeInfo``."""
        return {
            "symbol": self.symbol,
            "status": "TRADING",
            "baseAsset": self.base,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": list(ORDER_TYPES),
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "amendAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": fmt(self.min_price),
                    "maxPrice": fmt(self.max_price),
                    "tickSize": fmt(self.tick_size),
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": fmt(self.min_qty),
                    "maxQty": fmt(self.max_qty),
                    "stepSize": fmt(self.step_size),
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": fmt(ZERO),
                    "maxQty": fmt(self.max_qty),
                    "stepSize": fmt(ZERO),
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": fmt(self.min_notional),
                    "applyMinToMarket": True,
                    "maxNotional": "9000000.00000000",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": [
                "NONE",
                "EXPIRE_TAKER",
                "EXPIRE_MAKER",
                "EXPIRE_BOTH",
            ],
        }
