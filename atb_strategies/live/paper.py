"""Paper trading: live ``CcxtData`` candles with backtrader's own simulated broker.

``PaperBroker`` is ``bt.brokers.BackBroker`` (so paper fills are computed exactly as in a
backtest) configured from the real market through the same ``MarketRules`` the live broker uses:
the taker fee as commission, configurable slippage, and the market's amount precision, minimum
amount and minimum notional enforced before an order is accepted (a failing order is
``Rejected`` with the reason in ``order.info["reject_reason"]``). No API keys are needed: only
public market data is read. Strategy code is identical to live.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import backtrader as bt

from atb_strategies.live.market_rules import MarketRules

log = logging.getLogger(__name__)


class PaperBroker(bt.brokers.BackBroker):
    """A simulated broker with a real market's fees, precision and limits.

    Parameters (besides ``BackBroker``'s ``cash`` and friends)
    ----------
    store : CcxtStore
        Where the market rules come from (public data only).
    slippage : float
        Fraction by which market fills are worse than the bar's price (default 0.0005).
    fee : float or None
        Commission rate; None takes the market's taker fee.
    """

    params = (("store", None), ("slippage", 0.0005), ("fee", None))

    def __init__(self) -> None:
        super().__init__()
        self.rules = MarketRules(self.p.store)
        self._configured: set[Any] = set()
        if self.p.slippage:
            self.set_slippage_perc(
                self.p.slippage, slip_open=True, slip_limit=True, slip_match=True, slip_out=False
            )

    def _configure(self, data: Any) -> dict[str, Any]:
        market = self.rules.market(data)
        if data not in self._configured:
            fee = self.p.fee if self.p.fee is not None else self.rules.taker_fee(market)
            self.setcommission(commission=fee, name=data._name)
            self._configured.add(data)
            log.info(
                "paper broker: %s fee %.4f%%, slippage %.4f%%",
                market["symbol"],
                fee * 100,
                self.p.slippage * 100,
            )
        return market

    def getcommissioninfo(self, data: Any) -> Any:
        """The market's fee for ``data`` (configured on first use, also before any order)."""
        self._configure(data)
        return super().getcommissioninfo(data)

    def submit(self, order: bt.Order, check: bool = True) -> bt.Order:
        market = self._configure(order.data)
        if order.parent is not None:  # a bracket leg closes exactly what its parent opens
            order.size = order.created.size = order.executed.remsize = -order.parent.size
            return super().submit(order, check)
        amount = abs(order.created.size)
        price = order.created.price or float(order.data.close[0])
        rounded, reason = self.rules.check_amount(market, amount, price)
        if reason is not None:
            order.addinfo(reject_reason=reason)
            log.warning("paper order %s rejected: %s", order.ref, reason)
            order.reject(self)
            self.notify(order)
            return order
        if not math.isclose(rounded, amount):
            signed = math.copysign(rounded, order.created.size)
            order.size = order.created.size = order.executed.remsize = signed
        return super().submit(order, check)
