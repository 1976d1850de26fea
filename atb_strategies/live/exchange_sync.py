"""The exchange side of live orders: send, poll, reconcile, cancel, and book fills with fees.

``ExchangeSync`` keeps one ``TrackedOrder`` per order sent to the exchange:

* **Sending.** The amount is capped at the position for sells (spot), checked against the
  market's rules (truncated to its step, minimum amount and notional; a failing order is
  rejected locally) and the risk limits. An unfilled order is resized to the amount actually
  sent, its bracket legs too (the requested size stays in ``order.info["requested_size"]``).
* **No duplicate orders.** Each order gets a deterministic client order id
  (``atb<session>x<ref>``), written to the journal before it is sent. ``create_order`` is never
  retried: if it times out, the order is looked up by that client id on the next polls (an
  exchange may not show a just-accepted order yet) and adopted when found; only an order proven
  absent after ``unknown_retries`` lookups is rejected as not placed. A refused write
  (insufficient funds -> ``Margin``; invalid, rate limited, refused -> ``Rejected``) never
  escapes into cerebro's loop.
* **Polling** (``poll``, from the broker's ``next``): every ``order_poll`` seconds each live
  order is fetched; cancellations, expiries and rejections by the exchange are notified.
* **Fills** come from the exchange's trades (``fetch_order_trades``), deduplicated by trade id
  and journalled once; fees are booked in the quote asset by ``market_rules.book_fee``. Each fill
  becomes an execution with its real size, price, commission and P&L (``Account.book``), so
  ``notify_trade`` and analyzers work; a completed order arms its bracket legs.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import backtrader as bt

from atb_strategies.exceptions import (
    ExchangeAuthError,
    ExchangeError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    OrderStateUnknownError,
    RateLimitError,
    TemporaryExchangeError,
)
from atb_strategies.live.market_rules import book_fee

if TYPE_CHECKING:
    from atb_strategies.live.broker import CcxtBroker

log = logging.getLogger(__name__)


class TrackedOrder:
    """Exchange-side state of one backtrader order.

    Parameters
    ----------
    order : Order
        The backtrader order.
    client_id : str
        Its client order id on the exchange.
    """

    def __init__(self, order: bt.Order, client_id: str) -> None:
        self.order = order
        self.client_id = client_id
        self.exchange_id: str | None = None
        self.unknown_checks = 0
        self.trade_ids: set[str] = set()
        self.amount = abs(order.created.size)
        self.filled = 0.0
        #: The order adds risk (an entry, not an exit of a position): its open part counts in
        #: the portfolio limits.
        self.adds_risk = False
        #: The limit price sent (None: a market order).
        self.price: float | None = None


class ExchangeSync:
    """Orders of one broker on the exchange, and their fills.

    Parameters
    ----------
    broker : CcxtBroker
        The broker: store, journal, market rules, account, risk limits, order emulation,
        notifications and rejections come from it.

    Attributes
    ----------
    tracked : dict
        ``TrackedOrder`` by order ref, for every order sent this session.
    """

    def __init__(self, broker: CcxtBroker) -> None:
        self.broker = broker
        self.tracked: dict[int, TrackedOrder] = {}
        self._last_poll = 0.0

    # ------------------------------------------------------------------ sending

    def send(self, order: bt.Order, exectype: int | None = None) -> None:
        """Send ``order`` to the exchange, or reject it with the reason.

        Parameters
        ----------
        order : Order
            The order (its remaining size is sent).
        exectype : int or None
            Send as this type instead of the order's own (a triggered stop goes as market).
        """
        market = self.broker.rules.market(order.data)
        kind = exectype if exectype is not None else order.exectype
        type_ = "market" if kind in (None, bt.Order.Market, bt.Order.Stop) else "limit"
        price = None
        if type_ == "limit":
            limit = order.created.pricelimit if kind == bt.Order.StopLimit else order.created.price
            price = self.broker.rules.round_price(market, limit)
        ref_price = price or float(order.data.close[0])
        checked = self._checked_amount(order, market, ref_price)
        if checked is not None:
            amount, reduces = checked
            self._place(order, market["symbol"], type_, amount, price, adds_risk=not reduces)

    def _checked_amount(
        self, order: bt.Order, market: dict[str, Any], price: float
    ) -> tuple[float, bool] | None:
        # The amount to send and whether it only reduces the position, or None once the order
        # is rejected.
        broker = self.broker
        raw_amount = broker.account.sell_amount(
            order, abs(order.executed.remsize or order.created.size)
        )
        amount, problem = broker.rules.check_amount(market, raw_amount, price)
        if problem is not None:
            broker.reject(order, problem)
            return None
        if not math.isclose(amount, raw_amount, rel_tol=0, abs_tol=1e-15) and not abs(
            order.executed.size
        ):
            self._resize(order, amount)
        reduces = broker.account.reduces_position(order, amount)
        book = broker.exposure(order.data) if broker.risk.limits else None
        refused = broker.risk.refusal(amount, price, reduces=reduces, book=book)
        if refused:
            broker.reject(order, refused)
            return None
        return amount, reduces

    def open_risk(self) -> list[tuple[Any, float]]:
        """``(feed, notional)`` of each live order on the exchange that adds risk: its unfilled
        part at its limit price (a market order at its feed's last close)."""
        out = []
        for tracked in self.tracked.values():
            order = tracked.order
            if not tracked.adds_risk or not order.alive():
                continue
            left = max(tracked.amount - tracked.filled, 0.0)
            price = tracked.price or (float(order.data.close[0]) if len(order.data) else 0.0)
            if left > 0 and price > 0:
                out.append((order.data, left * price))
        return out

    def _resize(self, order: bt.Order, amount: float) -> None:
        # Shrink an unfilled order (and its bracket legs) to the amount actually sent.
        signed = amount if order.isbuy() else -amount
        order.addinfo(requested_size=order.info.get("requested_size", order.created.size))
        order.size = order.created.size = order.executed.remsize = signed
        self.broker.emulator.resize_children(order, signed)

    def _place(
        self,
        order: bt.Order,
        symbol: str,
        type_: str,
        amount: float,
        price: float | None,
        *,
        adds_risk: bool,
    ) -> None:
        broker = self.broker
        client_id = broker.journal.client_id(order.ref)
        tracked = TrackedOrder(order, client_id)
        tracked.amount, tracked.adds_risk, tracked.price = amount, adds_risk, price
        self.tracked[order.ref] = tracked
        side = "buy" if order.isbuy() else "sell"
        info = dict(order.info.items())
        broker.journal.record_sending(
            client_id, order.ref, symbol, side, type_, amount, price, info
        )
        broker.risk.record_order()
        try:
            resp = broker.store.call(
                "create_order",
                symbol,
                type_,
                side,
                amount,
                price,
                {"clientOrderId": client_id},
                idempotent=False,
            )
        except OrderStateUnknownError as e:
            log.warning(
                "order %s (%s): outcome unknown (%s); reconciling by client id",
                order.ref,
                client_id,
                e,
            )
            broker.journal.update(client_id, "unknown")
            return
        except InsufficientFundsError as e:
            self._refused(tracked, str(e), margin=True)
            return
        except (InvalidOrderError, ExchangeAuthError, RateLimitError, ExchangeError) as e:
            # A refused write (including HTTP 429/418: the order was not placed) rejects the
            # order with the reason; it must never escape into cerebro's loop.
            self._refused(tracked, str(e))
            return
        self._adopt(tracked, resp)

    def _refused(self, tracked: TrackedOrder, reason: str, margin: bool = False) -> None:
        self.broker.journal.update(tracked.client_id, "rejected")
        self.tracked.pop(tracked.order.ref, None)
        self.broker.reject(tracked.order, reason, margin=margin)

    def _adopt(self, tracked: TrackedOrder, resp: dict[str, Any]) -> None:
        order = tracked.order
        tracked.exchange_id = str(resp.get("id"))
        self.broker.journal.update(tracked.client_id, "open", exchange_id=tracked.exchange_id)
        if order.status in (order.Submitted, order.Created):
            order.accept(self.broker)
            self.broker.notify(order)
        self._sync_order(tracked, resp)

    # ------------------------------------------------------------------ polling

    def poll(self, interval: float) -> None:
        """Reconcile or poll every order, unless the last poll is younger than ``interval``."""
        now = time.monotonic()
        if now - self._last_poll < interval:
            return
        self._last_poll = now
        for tracked in list(self.tracked.values()):
            if tracked.exchange_id is None:
                self._reconcile_unknown(tracked)
            elif tracked.order.alive():
                self._poll_order(tracked)

    def _reconcile_unknown(self, tracked: TrackedOrder) -> None:
        symbol = self.broker.rules.market(tracked.order.data)["symbol"]
        try:
            resp = self.broker.store.call(
                "fetch_order", None, symbol, {"clientOrderId": tracked.client_id}
            )
        except OrderNotFoundError:
            tracked.unknown_checks += 1
            if tracked.unknown_checks >= self.broker.p.unknown_retries:
                self.broker.journal.update(tracked.client_id, "not_placed")
                self.tracked.pop(tracked.order.ref, None)
                self.broker.reject(
                    tracked.order,
                    "the exchange never acknowledged the order and does "
                    f"not know client id {tracked.client_id} after "
                    f"{tracked.unknown_checks} lookups; it was not placed",
                )
            return
        except TemporaryExchangeError as e:
            log.warning("reconcile %s: %s", tracked.client_id, e)
            return
        log.info(
            "order %s found by client id %s after an unknown outcome",
            tracked.order.ref,
            tracked.client_id,
        )
        self._adopt(tracked, resp)

    def _poll_order(self, tracked: TrackedOrder) -> None:
        symbol = self.broker.rules.market(tracked.order.data)["symbol"]
        try:
            resp = self.broker.store.call("fetch_order", tracked.exchange_id, symbol)
        except (TemporaryExchangeError, OrderNotFoundError) as e:
            log.warning("poll of order %s failed: %s", tracked.exchange_id, e)
            return
        self._sync_order(tracked, resp)

    def _sync_order(self, tracked: TrackedOrder, resp: dict[str, Any]) -> None:
        broker, order = self.broker, tracked.order
        filled = float(resp.get("filled") or 0.0)
        if filled > tracked.filled + 1e-12:
            self._collect_fills(tracked, done=filled >= float(resp.get("amount") or 0) - 1e-12)
        status = resp.get("status")
        if status in ("canceled", "expired", "rejected") and order.alive():
            broker.journal.update(tracked.client_id, status, filled=filled)
            if status == "canceled":
                order.cancel()
            elif status == "expired":
                order.expire()
            else:
                order.reject(broker)
            broker.notify(order)
            broker.emulator.cancel_children(order)
        elif status == "closed" and order.alive() and tracked.filled >= tracked.amount - 1e-12:
            # Every fill is in but fees in the base asset left a remainder: it is done.
            order.executed.remsize = 0.0
            order.completed()
            broker.journal.update(tracked.client_id, "closed", filled=filled)
            broker.notify(order)
            broker.emulator.activate_children(order)
        elif status == "closed" and not order.alive():
            broker.journal.update(tracked.client_id, "closed", filled=filled)

    # ------------------------------------------------------------------ cancelling

    def cancel(self, order: bt.Order) -> None:
        """Cancel ``order`` on the exchange, if it was sent there."""
        tracked = self.tracked.get(order.ref)
        if tracked is not None:
            self._cancel_on_exchange(tracked)

    def cancel_all(self) -> None:
        """Cancel every live order this session sent."""
        for tracked in list(self.tracked.values()):
            if tracked.order.alive():
                self._cancel_on_exchange(tracked)

    def _cancel_on_exchange(self, tracked: TrackedOrder) -> None:
        if tracked.exchange_id is None:
            return
        broker = self.broker
        symbol = broker.rules.market(tracked.order.data)["symbol"]
        try:
            broker.store.call("cancel_order", tracked.exchange_id, symbol, idempotent=False)
        except OrderNotFoundError:
            self._poll_order(tracked)  # filled or already gone: take its real state
            return
        except (TemporaryExchangeError, InvalidOrderError) as e:
            log.warning("cancel of %s failed: %s", tracked.exchange_id, e)
            return
        self._poll_order(tracked)
        if tracked.order.alive():
            tracked.order.cancel()
            broker.journal.update(tracked.client_id, "canceled")
            broker.notify(tracked.order)
            broker.emulator.cancel_children(tracked.order)

    # ------------------------------------------------------------------ fills

    def _collect_fills(self, tracked: TrackedOrder, done: bool = False) -> None:
        order = tracked.order
        market = self.broker.rules.market(order.data)
        try:
            trades = self.broker.store.call(
                "fetch_order_trades", tracked.exchange_id, market["symbol"]
            )
        except TemporaryExchangeError as e:
            log.warning("fills of order %s not fetched: %s", tracked.exchange_id, e)
            return
        for trade in sorted(trades, key=lambda t: (t.get("timestamp") or 0, str(t.get("id")))):
            tid = str(trade.get("id"))
            if tid in tracked.trade_ids:
                continue
            amount = float(trade.get("amount") or 0.0)
            price = float(trade.get("price") or 0.0)
            fee = trade.get("fee") or {}
            fee_cost = float(fee.get("cost") or 0.0)
            currency = fee.get("currency")
            tracked.trade_ids.add(tid)
            tracked.filled += amount
            if not self.broker.journal.record_fill(
                tid, tracked.client_id, amount, price, fee_cost, currency, trade.get("timestamp")
            ):
                continue
            fill = book_fee(market, order.isbuy(), amount, price, fee_cost, currency, tid)
            if fill.fee_in_base is not None:
                # The fee was taken from what we bought: we hold less, at a higher cost each.
                order.addinfo(fee_in_base=order.info.get("fee_in_base", 0.0) + fill.fee_in_base)
            sign = 1.0 if order.isbuy() else -1.0
            self._execute(
                order,
                sign * fill.size,
                fill.price,
                fill.commission,
                trade.get("timestamp"),
                quote_flow=sign * fill.quote_flow,
                final=done and tracked.filled >= tracked.amount - 1e-12,
            )

    def _execute(
        self,
        order: bt.Order,
        size: float,
        price: float,
        commission: float,
        timestamp: int | None,
        *,
        quote_flow: float,
        final: bool,
    ) -> None:
        broker, data = self.broker, order.data
        comminfo = broker.getcommissioninfo(data)
        b = broker.account.book(data, comminfo, size, price, commission, quote_flow)
        order.execute(
            _bar_time(data, timestamp),
            size,
            price,
            b.closed,
            b.closedvalue,
            b.closedcomm,
            b.opened,
            b.openedvalue,
            b.openedcomm,
            0.0,
            b.pnl,
            b.psize,
            b.pprice,
        )
        if final and order.executed.remsize:
            # The exchange filled the whole order; what is left is the base-asset fee.
            order.executed.remsize = 0.0
        if order.executed.remsize:
            order.partial()
        else:
            order.completed()
            tracked = self.tracked.get(order.ref)
            if tracked is not None:
                broker.journal.update(tracked.client_id, "closed", filled=abs(order.executed.size))
            broker.emulator.activate_children(order)
        broker.notify(order)
        broker.check_kill_switch()


def _bar_time(data: Any, timestamp: int | None) -> float:
    # The backtrader date of an execution: the feed's current bar, else the fill's own time.
    if len(data):
        return data.datetime[0]
    stamp = timestamp / 1000 if timestamp is not None else time.time()
    when = datetime.datetime.fromtimestamp(stamp, datetime.UTC).replace(tzinfo=None)
    return bt.date2num(when)
