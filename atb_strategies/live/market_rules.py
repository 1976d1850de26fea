"""A market's trading rules, written once for live (``CcxtBroker``) and paper (``PaperBroker``).

``MarketRules`` answers, for the markets of one ``CcxtStore``:

* which ccxt market a data feed trades (``market``);
* a price at the market's precision (``round_price``; prices are rounded, ccxt's
  ``price_to_precision``);
* whether the market accepts an amount at a price (``check_amount``): the amount is truncated to
  the market's step (ccxt's ``amount_to_precision``), then the minimum amount and the minimum
  notional are enforced, with the reason when the market would refuse it;
* the market's taker fee (``taker_fee``), the paper broker's commission.

``book_fee`` turns the fee of one exchange fill into what backtrader books in the quote asset: a
fee taken from the bought asset leaves a smaller position at a higher price each, a fee in the base
asset of a sell is converted at the fill price.

Both brokers call these, so an order paper trading accepts is an order live trading sends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TAKER_FEE = 0.001


@dataclass(frozen=True)
class BookedFill:
    """One exchange fill as backtrader books it (sizes unsigned, money in the quote asset).

    Attributes
    ----------
    size : float
        Base amount the position gains or loses (less than traded when the fee was taken from
        the bought asset).
    price : float
        Price per unit of ``size``.
    commission : float
        Fee in the quote asset (0 when the fee is already priced into ``size`` and ``price``).
    quote_flow : float
        Quote asset the fill moves before fees (traded amount times fill price).
    fee_in_base : float or None
        Base asset the exchange kept as the fee of a buy, None when the fee was not taken so.
    """

    size: float
    price: float
    commission: float
    quote_flow: float
    fee_in_base: float | None = None


class MarketRules:
    """Precision, minimums, fees and market lookup of the markets of one store.

    Parameters
    ----------
    store : CcxtStore
        Where markets come from (public data only) and whose ccxt client rounds.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def market(self, data: Any) -> dict[str, Any]:
        """The ccxt market a data feed trades (its ``market_symbol``, else its name)."""
        return self.store.market(getattr(data, "market_symbol", "") or data._name)

    def round_price(self, market: dict[str, Any], price: float) -> float:
        """``price`` rounded to the market's price precision."""
        return float(self.store.exchange.price_to_precision(market["symbol"], price))

    def check_amount(
        self, market: dict[str, Any], raw_amount: float, price: float
    ) -> tuple[float, str | None]:
        """The amount truncated to the market's step, and why the market would refuse it.

        Parameters
        ----------
        market : dict
            The ccxt market.
        raw_amount : float
            The unsigned amount wanted.
        price : float
            The price the notional is checked at.

        Returns
        -------
        tuple of (float, str or None)
            The amount as it would be sent (0.0 when it rounds to nothing), and the reason the
            market refuses it (below its precision, minimum amount or minimum notional), or None.
        """
        try:
            amount = float(self.store.exchange.amount_to_precision(market["symbol"], raw_amount))
        except Exception as e:  # ccxt raises InvalidOrder for amounts below precision
            return 0.0, f"amount {raw_amount} is below the market's precision: {e}"
        limits = market.get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min")
        min_cost = (limits.get("cost") or {}).get("min")
        if amount <= 0 or (min_amount and amount < min_amount):
            return amount, f"amount {amount} below the market minimum {min_amount}"
        if min_cost and amount * price < min_cost:
            return amount, f"notional {amount * price:.4f} below the market minimum {min_cost}"
        return amount, None

    def taker_fee(self, market: dict[str, Any]) -> float:
        """The market's taker fee rate (``DEFAULT_TAKER_FEE`` when the market has none)."""
        return float(market.get("taker") or DEFAULT_TAKER_FEE)


def book_fee(
    market: dict[str, Any],
    is_buy: bool,
    amount: float,
    price: float,
    fee_cost: float,
    fee_currency: str | None,
    trade_id: str = "",
) -> BookedFill:
    """How one exchange fill and its fee are booked in the quote asset.

    Parameters
    ----------
    market : dict
        The ccxt market of the fill.
    is_buy : bool
        True for a buy.
    amount, price : float
        The traded base amount (unsigned) and the fill price.
    fee_cost : float
        The fee the exchange charged, in ``fee_currency``.
    fee_currency : str or None
        The fee's asset; None or the quote asset is booked as is.
    trade_id : str
        The exchange's trade id, for the warning about a fee that cannot be converted.

    Returns
    -------
    BookedFill
        A fee taken from what a buy received shrinks the size (the price per unit rises and no
        commission is booked); a fee in the base asset otherwise becomes a commission at the
        fill price; a fee in a third asset (BNB, say) is booked as is, with a warning.
    """
    quote_flow = amount * price
    if fee_currency == market["base"] and is_buy and fee_cost < amount:
        size = amount - fee_cost
        return BookedFill(size, quote_flow / size, 0.0, quote_flow, fee_in_base=fee_cost)
    commission = fee_cost
    if fee_currency == market["base"]:
        commission = fee_cost * price
    elif fee_currency not in (None, market["quote"]):
        log.warning(
            "fee of trade %s in %s is not converted to %s", trade_id, fee_currency, market["quote"]
        )
    return BookedFill(amount, price, commission, quote_flow)
