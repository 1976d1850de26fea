"""``CcxtBroker``: real orders through a ccxt exchange, with backtrader's full order lifecycle.

Lifecycle: every order is notified ``Submitted``, then ``Accepted`` when the exchange
acknowledges it (or ``Rejected``/``Margin`` with the reason in ``order.info["reject_reason"]``),
``Partial`` for each fill that leaves a remainder, and ``Completed``/``Canceled``/``Expired``.
Every notification is an ``order.clone()``, and every execution carries its real size, price,
commission and P&L, so ``notify_trade`` and ``TradeAnalyzer`` work.

* **Order types.** Market and limit orders go to the exchange. Stop and stop-limit orders are
  emulated (held locally; when a bar's close crosses the trigger a market or limit order is
  sent), so brackets work on spot markets without native stop-market orders. Bracket legs are
  held until their parent completes and cancel each other (OCO).
* **OCO groups** (backtrader's ``oco=`` argument) are emulated too, so they work on spot
  markets: the group's first order must be a stop (held by the broker); every later member,
  limit orders included, is held locally and sent only when a bar's close crosses its price.
  When one member is sent or cancelled, the others are cancelled, as in backtrader's own
  broker. A later member whose group leader is not held locally (a limit already on the
  exchange, or a stop already triggered) is rejected with the reason, never silently unlinked.
* **Fills** come from the exchange's trades (``fetch_order_trades``), deduplicated by trade id;
  fees in the base asset or another currency are converted to the quote asset at the fill price.
* **Checks before sending:** amount and price are rounded to the market's precision (amounts
  down), and the minimum amount and notional are enforced; a failing order is rejected locally.
* **No duplicate orders.** Each order gets a deterministic client order id
  (``atb<session>x<ref>``), written to the SQLite journal before it is sent. ``create_order`` is
  never retried: if it times out, the broker asks the exchange for that client id (several
  times, since an exchange may not show a just-accepted order yet) and adopts what it finds; only
  an order proven absent is rejected.
* **Restart.** On start, journal orders that were not final are looked up by client id: fills
  are recorded once, still-open orders are cancelled or kept by ``on_restart`` policy. Positions
  are seeded from the account's free balance (coins locked in orders this session does not
  manage are left out, with a warning).
* **Cash and value** are cached and refreshed from balances every ``balance_refresh`` seconds,
  never fetched per bar.
* **Kill switch** (``KillSwitch``): pre-trade limits reject orders; a breached loss or drawdown
  cancels open orders, optionally flattens, notifies the store and stops cerebro.
"""

from __future__ import annotations

import collections
import datetime
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import backtrader as bt
from backtrader.comminfo import CommInfoBase
from backtrader.position import Position

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
from atb_strategies.live.journal import Journal

log = logging.getLogger(__name__)


@dataclass
class KillSwitch:
    """Hard limits for live trading (``None`` disables a limit).

    ``max_daily_loss`` and ``max_drawdown`` are fractions of portfolio value (the day's first
    value, the peak value). ``max_order_notional`` is in quote currency. ``flatten`` closes
    positions at market when a loss limit trips. ``max_order_notional`` and
    ``max_orders_per_minute`` cap new risk: orders that only reduce the position (exits,
    stop-losses, take-profits) are exempt, so a protective order is never blocked by them.
    """

    max_daily_loss: float | None = 0.05
    max_drawdown: float | None = 0.15
    max_order_notional: float | None = None
    max_orders_per_minute: int | None = 10
    flatten: bool = True


class _Tracked:
    """Exchange-side state of one backtrader order."""

    def __init__(self, order: bt.Order, client_id: str) -> None:
        self.order = order
        self.client_id = client_id
        self.exchange_id: str | None = None
        self.unknown_checks = 0
        self.trade_ids: set[str] = set()
        self.amount = abs(order.created.size)
        self.filled = 0.0


class _SpotCommInfo(CommInfoBase):
    """Spot: no leverage, no margin; commissions come from the exchange's fills."""

    params = (
        ("stocklike", True),
        ("commtype", CommInfoBase.COMM_PERC),
        ("percabs", True),
        ("commission", 0.0),
    )


class CcxtBroker(bt.BrokerBase):
    """Live broker on a ``CcxtStore``.

    Parameters
    ----------
    store : CcxtStore
        The exchange connection (credentials needed).
    journal : str or Path
        SQLite journal file (created if missing).
    order_poll : float
        Seconds between order-status polls (default 1.0).
    balance_refresh : float
        Seconds between balance refreshes (default 10.0).
    unknown_retries : int
        Lookups by client id before an unacknowledged order is declared not placed.
    on_stop : str
        ``"cancel"`` (default): cancel open orders when cerebro stops; ``"keep"``: leave them,
        they are re-adopted or cancelled at the next start.
    on_restart : str
        What to do with orders still open on the exchange from an earlier session:
        ``"cancel"`` (default) or ``"keep"`` (leave them; they are not tracked by the new
        session, their fills show in the balances). Emulated stop/take-profit legs live in
        memory only: after a restart the broker holds no protective orders; ``MlStrategy``
        re-protects the position it finds (its ``protect_adopted`` parameter), a strategy of
        your own must do the same.
    kill_switch : KillSwitch or None
        Limits; None disables them.
    """

    params = (
        ("store", None),
        ("journal", "atb-journal.sqlite"),
        ("order_poll", 1.0),
        ("balance_refresh", 10.0),
        ("unknown_retries", 5),
        ("on_stop", "cancel"),
        ("on_restart", "cancel"),
        ("kill_switch", None),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.store = self.p.store
        self.journal = Journal(self.p.journal)
        self.notifs: collections.deque = collections.deque()
        self.positions: dict[Any, Position] = collections.defaultdict(Position)
        self._tracked: dict[int, _Tracked] = {}
        self._local: list[bt.Order] = []  # emulated stops and held bracket legs
        self._held: dict[int, bt.Order] = {}  # bracket parents waiting for their legs
        self._children: dict[int, list[bt.Order]] = {}
        self._oco_group: dict[int, int] = {}  # order ref -> ref of its OCO group's leader
        self._order_times: collections.deque = collections.deque()
        self._last_poll = 0.0
        self._last_balance = 0.0
        self.cash = 0.0
        self.startingcash = 0.0
        self._balances: dict[str, float] = {}
        self._free: dict[str, float] = {}
        self._peak = None
        self._day = None
        self._day_start_value = None
        self.killed = False
        self._flattening = False
        self._stop_requested = False
        self.comminfo = {None: _SpotCommInfo()}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        super().start()
        self.store.start(broker=self)
        self._refresh_balance(force=True)
        self._recover()
        log.info(
            "live broker started; journal %s (session %s)", self.journal.path, self.journal.session
        )

    def stop(self) -> None:
        if self.p.on_stop == "cancel":
            for tracked in list(self._tracked.values()):
                if tracked.order.alive():
                    self._cancel_on_exchange(tracked)
        self.journal.close()
        super().stop()

    def data_started(self, data: Any) -> None:
        self._refresh_balance(force=True)
        self.startingcash = self.cash
        base = self._market(data)["base"]
        # Only the free balance is the strategy's to manage: coins locked in open orders this
        # session does not track (yours, or kept by on_restart="keep") cannot be sold by it.
        held = self._free.get(base, 0.0)
        locked = self._balances.get(base, 0.0) - held
        if locked > 0:
            log.warning(
                "%s %s is locked in open orders this session does not manage; the position "
                "is seeded with the free %s only",
                locked,
                base,
                held,
            )
        if held:
            try:
                ticker = self.store.call("fetch_ticker", self._market(data)["symbol"])
                price = float(ticker.get("last") or ticker.get("close") or 0.0)
            except TemporaryExchangeError:
                price = 0.0
            self.positions[data] = Position(size=held, price=price)
            log.info("seeded position %s %s at %s from the account", held, base, price)

    # ------------------------------------------------------------------ account

    def _market(self, data: Any) -> dict[str, Any]:
        return self.store.market(getattr(data, "market_symbol", "") or data._name)

    def _refresh_balance(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_balance < self.p.balance_refresh:
            return
        self._last_balance = now
        try:
            balance = self.store.call("fetch_balance")
        except TemporaryExchangeError as e:
            log.warning("balance refresh failed: %s", e)
            return
        totals = balance.get("total") or {}
        self._balances = {k: float(v or 0) for k, v in totals.items()}
        free = balance.get("free") or {}
        self._free = {k: float(v or 0) for k, v in free.items()}
        quote = self._quote()
        if quote is not None:
            self.cash = float(free.get(quote) or 0.0)

    def _quote(self) -> str | None:
        datas = getattr(self.store, "datas", None) or []
        if datas:
            return self._market(datas[0])["quote"]
        return None

    def getcash(self) -> float:
        return self.cash

    def getvalue(self, datas: Any = None) -> float:
        value = self._balances.get(self._quote() or "", self.cash)
        for data, pos in self.positions.items():
            if datas is not None and data not in datas:
                continue
            if pos.size and len(data):
                value += pos.size * float(data.close[0])
        return value

    def getposition(self, data: Any) -> Position:
        return self.positions[data]

    def getcommissioninfo(self, data: Any) -> CommInfoBase:
        return self.comminfo[None]

    # ------------------------------------------------------------------ notifications

    def notify(self, order: bt.Order) -> None:
        self.notifs.append(order.clone())

    def get_notification(self) -> bt.Order | None:
        try:
            return self.notifs.popleft()
        except IndexError:
            return None

    # ------------------------------------------------------------------ orders

    _ORDER_ARGS = (
        "price",
        "plimit",
        "exectype",
        "valid",
        "tradeid",
        "oco",
        "trailamount",
        "trailpercent",
        "parent",
        "transmit",
    )

    def _create(
        self, cls: type[bt.Order], owner: Any, data: Any, size: float, *args: Any, **kwargs: Any
    ) -> bt.Order:
        """An order from ``BrokerBase.buy``/``sell``'s positional or keyword arguments."""
        named = dict(zip(self._ORDER_ARGS, args, strict=False))
        named.update({k: kwargs.pop(k) for k in self._ORDER_ARGS if k in kwargs})
        named.setdefault("tradeid", 0)
        named.setdefault("transmit", True)
        named["pricelimit"] = named.pop("plimit", None)
        order = cls(owner=owner, data=data, size=size, **named)
        return self._submit(order, kwargs)

    def buy(self, owner: Any, data: Any, size: float, *args: Any, **kwargs: Any) -> bt.Order:
        return self._create(bt.BuyOrder, owner, data, size, *args, **kwargs)

    def sell(self, owner: Any, data: Any, size: float, *args: Any, **kwargs: Any) -> bt.Order:
        return self._create(bt.SellOrder, owner, data, size, *args, **kwargs)

    def _submit(self, order: bt.Order, info: dict[str, Any]) -> bt.Order:
        order.addcomminfo(self.getcommissioninfo(order.data))
        order.addinfo(**info)
        order.submit(self)
        self.notify(order)
        if order.parent is not None:
            self._children.setdefault(order.parent.ref, []).append(order)
            self._local.append(order)  # bracket leg: held until the parent completes
            if order.transmit and order.parent.ref in self._held:
                self._dispatch(self._held.pop(order.parent.ref))  # last leg releases parent
            return order
        if not order.transmit:
            self._held[order.ref] = order  # a bracket parent waits for its legs
            return order
        if order.oco is not None:
            self._join_oco(order)
            return order
        self._dispatch(order)
        return order

    _HELD_TYPES = (bt.Order.Stop, bt.Order.StopLimit, bt.Order.Limit)

    def _join_oco(self, order: bt.Order) -> None:
        """Hold ``order`` locally as a member of ``order.oco``'s group, or reject it."""
        leader = order.oco
        leader_ref = self._oco_group.get(leader.ref, leader.ref)
        if order.exectype not in self._HELD_TYPES:
            self._reject(
                order,
                f"an OCO member must be a stop, stop-limit or limit order; got "
                f"{order.getordername()} (a market order cannot wait for its group).",
            )
            return
        leader_ok = (
            leader in self._local
            and leader.parent is None
            and leader.ref not in self._children  # a stop-entry bracket parent
            and (leader.ref in self._oco_group or leader.exectype != bt.Order.Limit)
        )
        if not leader_ok:
            self._reject(
                order,
                f"OCO with order {leader.ref} is not possible: that order is not held by this "
                "broker (it is on the exchange, already triggered or finished, or part of a "
                "bracket). Place the stop order first and pass it as oco= to the others.",
            )
            return
        if self._refuse_unsendable(order):
            return
        self._oco_group[leader.ref] = leader_ref
        self._oco_group[order.ref] = leader_ref
        order.accept(self)
        self.notify(order)
        self._local.append(order)  # emulated: triggered in next(), like a bracket leg

    def _dispatch(self, order: bt.Order) -> None:
        if order.exectype in (bt.Order.Stop, bt.Order.StopLimit):
            if self._refuse_unsendable(order):
                return
            order.accept(self)
            self.notify(order)
            self._local.append(order)  # emulated: triggered in next()
        else:
            self._send(order)

    def _refuse_unsendable(self, order: bt.Order) -> bool:
        """Reject, now, a held order that ``_send`` would refuse when it triggers.

        The market's precision and minimums are checked at the order's own price, and the
        kill switch's limits as they stand (a protective order is only useful if it can be
        sent). Returns True when the order was rejected.
        """
        market = self._market(order.data)
        raw_amount = self._sell_amount(order, abs(order.created.size))
        price = order.created.price
        if not price or price <= 0:
            self._reject(order, f"a held {order.getordername()} order needs a positive price")
            return True
        amount, problem = self._market_problem(market, raw_amount, price)
        if problem is None:
            problem = self._pretrade_checks(order, amount, price, counting=False)
        if problem is not None:
            self._reject(order, f"{problem} (checked when the order was placed, at its price)")
            return True
        return False

    def _sell_amount(self, order: bt.Order, raw_amount: float) -> float:
        held = self.positions[order.data].size
        if order.issell() and 0 < held < raw_amount and not order.executed.size:
            return held  # spot: never sell more than the position
        return raw_amount

    def _market_problem(
        self, market: dict[str, Any], raw_amount: float, price: float
    ) -> tuple[float, str | None]:
        """The amount rounded to the market's precision, and why the market would refuse it."""
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

    def _reduces_position(self, order: bt.Order, amount: float) -> bool:
        held = self.positions[order.data].size
        opposite = (held > 0 and order.issell()) or (held < 0 and order.isbuy())
        return opposite and amount <= abs(held) * (1 + 1e-9)

    def _reject(self, order: bt.Order, reason: str, margin: bool = False) -> None:
        order.addinfo(reject_reason=reason)
        log.warning("order %s rejected: %s", order.ref, reason)
        if margin:
            order.margin()
        else:
            order.reject(self)
        self.notify(order)
        self._cancel_children(order)

    def _pretrade_checks(
        self, order: bt.Order, amount: float, price: float, counting: bool = True
    ) -> str | None:
        """Why the kill switch refuses this order, or None.

        Orders that only reduce the position (exits, stop-losses, take-profits) are exempt from
        ``max_order_notional`` and ``max_orders_per_minute``: those limits cap new risk, and a
        stop-loss blocked by them would leave the position unprotected exactly when it is
        needed. ``counting=False`` checks without reading the per-minute count (for held orders,
        which are sent later).
        """
        ks: KillSwitch | None = self.p.kill_switch
        if self._flattening:
            return None  # the kill switch's own exits are never blocked
        if self.killed:
            return "kill switch engaged: no new orders"
        if ks is not None and not self._reduces_position(order, amount):
            if ks.max_order_notional is not None and amount * price > ks.max_order_notional:
                return (
                    f"notional {amount * price:.2f} exceeds max_order_notional "
                    f"{ks.max_order_notional:.2f}"
                )
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

    def _send(self, order: bt.Order, exectype: int | None = None) -> None:
        data = order.data
        market = self._market(data)
        symbol = market["symbol"]
        ex = self.store.exchange
        kind = exectype if exectype is not None else order.exectype
        type_ = "market" if kind in (None, bt.Order.Market, bt.Order.Stop) else "limit"
        side = "buy" if order.isbuy() else "sell"
        raw_amount = self._sell_amount(order, abs(order.executed.remsize or order.created.size))
        price = None
        if type_ == "limit":
            limit = order.created.pricelimit if kind == bt.Order.StopLimit else order.created.price
            price = float(ex.price_to_precision(symbol, limit))
        ref_price = price or float(data.close[0])
        amount, problem = self._market_problem(market, raw_amount, ref_price)
        if problem is not None:
            self._reject(order, problem)
            return
        if not math.isclose(amount, raw_amount, rel_tol=0, abs_tol=1e-15) and not abs(
            order.executed.size
        ):
            self._resize(order, amount)
        refused = self._pretrade_checks(order, amount, ref_price)
        if refused:
            self._reject(order, refused)
            return
        client_id = self.journal.client_id(order.ref)
        tracked = _Tracked(order, client_id)
        tracked.amount = amount
        self._tracked[order.ref] = tracked
        self.journal.record_sending(
            client_id,
            order.ref,
            symbol,
            side,
            type_,
            amount,
            price,
            {k: v for k, v in order.info.items()},
        )
        self._order_times.append(time.monotonic())
        try:
            resp = self.store.call(
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
            self.journal.update(client_id, "unknown")
            return
        except InsufficientFundsError as e:
            self.journal.update(client_id, "rejected")
            self._tracked.pop(order.ref, None)
            self._reject(order, str(e), margin=True)
            return
        except (InvalidOrderError, ExchangeAuthError, RateLimitError, ExchangeError) as e:
            # A refused write (including HTTP 429/418: the order was not placed) rejects the
            # order with the reason; it must never escape into cerebro's loop.
            self.journal.update(client_id, "rejected")
            self._tracked.pop(order.ref, None)
            self._reject(order, str(e))
            return
        self._adopt(tracked, resp)

    def _resize(self, order: bt.Order, amount: float) -> None:
        """Shrink an unfilled order (and its bracket legs) to the amount actually sent."""
        signed = amount if order.isbuy() else -amount
        order.addinfo(requested_size=order.info.get("requested_size", order.created.size))
        order.size = order.created.size = order.executed.remsize = signed
        for child in self._children.get(order.ref, []):
            child_signed = -signed
            child.size = child.created.size = child.executed.remsize = child_signed

    def _adopt(self, tracked: _Tracked, resp: dict[str, Any]) -> None:
        order = tracked.order
        tracked.exchange_id = str(resp.get("id"))
        self.journal.update(tracked.client_id, "open", exchange_id=tracked.exchange_id)
        if order.status in (order.Submitted, order.Created):
            order.accept(self)
            self.notify(order)
        self._sync_order(tracked, resp)

    # ------------------------------------------------------------------ polling

    def next(self) -> None:
        if self._stop_requested:
            self._stop_cerebro()
            return
        self._refresh_balance()
        now = time.monotonic()
        if now - self._last_poll >= self.p.order_poll:
            self._last_poll = now
            for tracked in list(self._tracked.values()):
                if tracked.exchange_id is None:
                    self._reconcile_unknown(tracked)
                elif tracked.order.alive():
                    self._poll_order(tracked)
        self._trigger_local()
        self._check_kill_switch()

    def _reconcile_unknown(self, tracked: _Tracked) -> None:
        symbol = self._market(tracked.order.data)["symbol"]
        try:
            resp = self.store.call(
                "fetch_order", None, symbol, {"clientOrderId": tracked.client_id}
            )
        except OrderNotFoundError:
            tracked.unknown_checks += 1
            if tracked.unknown_checks >= self.p.unknown_retries:
                self.journal.update(tracked.client_id, "not_placed")
                self._tracked.pop(tracked.order.ref, None)
                self._reject(
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

    def _poll_order(self, tracked: _Tracked) -> None:
        symbol = self._market(tracked.order.data)["symbol"]
        try:
            resp = self.store.call("fetch_order", tracked.exchange_id, symbol)
        except (TemporaryExchangeError, OrderNotFoundError) as e:
            log.warning("poll of order %s failed: %s", tracked.exchange_id, e)
            return
        self._sync_order(tracked, resp)

    def _sync_order(self, tracked: _Tracked, resp: dict[str, Any]) -> None:
        order = tracked.order
        filled = float(resp.get("filled") or 0.0)
        if filled > tracked.filled + 1e-12:
            self._collect_fills(tracked, done=filled >= float(resp.get("amount") or 0) - 1e-12)
        status = resp.get("status")
        if status == "canceled" and order.alive():
            self.journal.update(tracked.client_id, "canceled", filled=filled)
            order.cancel()
            self.notify(order)
            self._cancel_children(order)
        elif status in ("expired", "rejected") and order.alive():
            self.journal.update(tracked.client_id, status, filled=filled)
            if status == "expired":
                order.expire()
            else:
                order.reject(self)
            self.notify(order)
            self._cancel_children(order)
        elif status == "closed" and order.alive() and tracked.filled >= tracked.amount - 1e-12:
            # Every fill is in but fees in the base asset left a remainder: it is done.
            order.executed.remsize = 0.0
            order.completed()
            self.journal.update(tracked.client_id, "closed", filled=filled)
            self.notify(order)
            self._activate_children(order)
        elif status == "closed" and not order.alive():
            self.journal.update(tracked.client_id, "closed", filled=filled)

    def _collect_fills(self, tracked: _Tracked, done: bool = False) -> None:
        order = tracked.order
        market = self._market(order.data)
        try:
            trades = self.store.call("fetch_order_trades", tracked.exchange_id, market["symbol"])
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
            if not self.journal.record_fill(
                tid, tracked.client_id, amount, price, fee_cost, currency, trade.get("timestamp")
            ):
                continue
            quote_flow = amount * price  # what the fill moves in the quote asset (before fees)
            size, exec_price, commission = amount, price, fee_cost
            if currency == market["base"] and order.isbuy() and fee_cost < amount:
                # The fee was taken from what we bought: we hold less, at a higher cost each.
                size = amount - fee_cost
                exec_price = quote_flow / size
                commission = 0.0
                order.addinfo(fee_in_base=order.info.get("fee_in_base", 0.0) + fee_cost)
            elif currency == market["base"]:
                commission = fee_cost * price
            elif currency not in (None, market["quote"]):
                log.warning(
                    "fee of trade %s in %s is not converted to %s", tid, currency, market["quote"]
                )
            last = done and tracked.filled >= tracked.amount - 1e-12
            self._execute(
                order,
                size if order.isbuy() else -size,
                exec_price,
                commission,
                trade.get("timestamp"),
                quote_flow=quote_flow if order.isbuy() else -quote_flow,
                final=last,
            )

    def _execute(
        self,
        order: bt.Order,
        size: float,
        price: float,
        commission: float,
        timestamp: int | None,
        *,
        quote_flow: float | None = None,
        final: bool = False,
    ) -> None:
        data = order.data
        position = self.positions[data]
        comminfo = self.getcommissioninfo(data)
        pprice_orig = position.price
        psize, pprice, opened, closed = position.update(size, price)
        pnl = comminfo.profitandloss(-closed, pprice_orig, price) if closed else 0.0
        total = abs(opened) + abs(closed)
        closedcomm = commission * abs(closed) / total if total else 0.0
        openedcomm = commission - closedcomm
        closedvalue = comminfo.getoperationcost(closed, pprice_orig) if closed else 0.0
        openedvalue = comminfo.getoperationcost(opened, price) if opened else 0.0
        spent = (size * price if quote_flow is None else quote_flow) + commission
        self.cash -= spent
        quote = self._quote()
        if quote is not None and quote in self._balances:
            self._balances[quote] -= spent  # keep the value consistent until the next refresh
        if len(data):
            dt = data.datetime[0]
        else:
            stamp = timestamp / 1000 if timestamp is not None else time.time()
            when = datetime.datetime.fromtimestamp(stamp, datetime.UTC).replace(tzinfo=None)
            dt = bt.date2num(when)
        order.execute(
            dt,
            size,
            price,
            closed,
            closedvalue,
            closedcomm,
            opened,
            openedvalue,
            openedcomm,
            0.0,
            pnl,
            psize,
            pprice,
        )
        if final and order.executed.remsize:
            # The exchange filled the whole order; what is left is the base-asset fee.
            order.executed.remsize = 0.0
        if order.executed.remsize:
            order.partial()
        else:
            order.completed()
            tracked = self._tracked.get(order.ref)
            if tracked is not None:
                self.journal.update(tracked.client_id, "closed", filled=abs(order.executed.size))
            self._activate_children(order)
        self.notify(order)
        self._check_kill_switch()

    # ------------------------------------------------------------------ brackets and stops

    def _activate_children(self, parent: bt.Order) -> None:
        filled = abs(parent.executed.size)
        for child in self._children.pop(parent.ref, []):
            if child.alive():
                # A leg closes what the parent really bought (fees in the base asset make that
                # less than ordered), never more.
                signed = -filled if parent.isbuy() else filled
                child.size = child.created.size = child.executed.remsize = signed
                child.accept(self)
                self.notify(child)

    def _cancel_children(self, parent: bt.Order) -> None:
        for child in self._children.pop(parent.ref, []):
            if child.alive():
                if child in self._local:
                    self._local.remove(child)
                child.cancel()
                self.notify(child)

    def _trigger_local(self) -> None:
        for order in list(self._local):
            if order not in self._local:
                continue  # cancelled as the sibling of a leg triggered earlier in this loop
            if not order.alive():
                self._local.remove(order)
                continue
            if order.status != order.Accepted or not len(order.data):
                continue  # bracket legs wait for their parent
            close = float(order.data.close[0])
            px = order.created.price
            if order.exectype == bt.Order.Limit:  # a take-profit: bracket leg or OCO member
                hit = close >= px if order.issell() else close <= px
                send_as = bt.Order.Limit
            else:
                hit = close <= px if order.issell() else close >= px
                send_as = bt.Order.Market if order.exectype == bt.Order.Stop else bt.Order.Limit
            if not hit:
                continue
            self._local.remove(order)
            self._send(order, exectype=send_as)
            if order.alive() or order.status == order.Completed:
                self._oco_cancel_siblings(order)
            else:
                log.error(
                    "triggered %s leg of order %s was refused (%s); the other leg stays armed",
                    order.info.get("role", "bracket"),
                    order.parent.ref if order.parent is not None else "-",
                    order.info.get("reject_reason"),
                )
                self.store.put_notification(
                    "PROTECTION_REFUSED", order.ref, order.info.get("reject_reason")
                )

    def _oco_cancel_siblings(self, order: bt.Order) -> None:
        group = self._oco_group.get(order.ref)
        for other in list(self._local):
            bracket = (
                order.parent is not None
                and other.parent is not None
                and other.parent.ref == order.parent.ref
            )
            if bracket or (group is not None and self._oco_group.get(other.ref) == group):
                self._local.remove(other)
                other.cancel()
                self.notify(other)
        if group is not None:
            self._forget_oco(group)

    def _forget_oco(self, group: int) -> None:
        """Drop an OCO group's bookkeeping once none of its members is held any more."""
        if any(self._oco_group.get(o.ref) == group for o in self._local):
            return
        for ref in [r for r, g in self._oco_group.items() if g == group]:
            del self._oco_group[ref]

    def cancel(self, order: bt.Order) -> None:
        if not order.alive():
            return
        if order in self._local:
            self._local.remove(order)
            order.cancel()
            self.notify(order)
            self._cancel_children(order)  # a held stop-entry bracket parent takes its legs along
            if order.ref in self._oco_group:
                self._oco_cancel_siblings(order)  # as in backtrader: one cancelled, all are
            return
        tracked = self._tracked.get(order.ref)
        if tracked is not None:
            self._cancel_on_exchange(tracked)

    def _cancel_on_exchange(self, tracked: _Tracked) -> None:
        if tracked.exchange_id is None:
            return
        symbol = self._market(tracked.order.data)["symbol"]
        try:
            self.store.call("cancel_order", tracked.exchange_id, symbol, idempotent=False)
        except OrderNotFoundError:
            self._poll_order(tracked)  # filled or already gone: take its real state
            return
        except (TemporaryExchangeError, InvalidOrderError) as e:
            log.warning("cancel of %s failed: %s", tracked.exchange_id, e)
            return
        self._poll_order(tracked)
        if tracked.order.alive():
            tracked.order.cancel()
            self.journal.update(tracked.client_id, "canceled")
            self.notify(tracked.order)
            self._cancel_children(tracked.order)

    # ------------------------------------------------------------------ restart and safety

    def _recover(self) -> None:
        for row in self.journal.unfinished():
            try:
                self._recover_one(row)
            except (TemporaryExchangeError, ExchangeError) as e:
                # Leave the row unfinished: the next start tries again. Never crash startup.
                log.error("could not reconcile journal order %s: %s", row["client_id"], e)
                self.store.put_notification("RECOVERY_FAILED", row["client_id"], str(e))
        self._refresh_balance(force=True)

    def _recover_one(self, row: dict[str, Any]) -> None:
        client_id, symbol = row["client_id"], row["symbol"]
        try:
            resp = self.store.call("fetch_order", None, symbol, {"clientOrderId": client_id})
        except OrderNotFoundError:
            self.journal.update(client_id, "not_placed")
            log.info("journal order %s was never placed", client_id)
            self.store.put_notification("RECOVERED", client_id, "not_placed", 0.0)
            return
        status = resp.get("status") or "open"
        filled = float(resp.get("filled") or 0.0)
        self.journal.update(client_id, status, exchange_id=str(resp.get("id")), filled=filled)
        if filled:
            for trade in self.store.call("fetch_order_trades", resp.get("id"), symbol):
                fee = trade.get("fee") or {}
                self.journal.record_fill(
                    str(trade.get("id")),
                    client_id,
                    float(trade.get("amount") or 0),
                    float(trade.get("price") or 0),
                    float(fee.get("cost") or 0),
                    fee.get("currency"),
                    trade.get("timestamp"),
                )
        if status == "open":
            if self.p.on_restart == "cancel":
                try:
                    self.store.call("cancel_order", resp.get("id"), symbol, idempotent=False)
                    self.journal.update(client_id, "canceled")
                    log.info("cancelled order %s left open by an earlier session", client_id)
                except OrderNotFoundError:  # it filled or was cancelled meanwhile
                    again = self.store.call("fetch_order", resp.get("id"), symbol)
                    status = again.get("status") or status
                    self.journal.update(
                        client_id, status, filled=float(again.get("filled") or filled)
                    )
            else:
                log.info(
                    "order %s from an earlier session stays open on the exchange; this session "
                    "does not track it (its fills show in the balances)",
                    client_id,
                )
        self.store.put_notification("RECOVERED", client_id, status, filled)

    def _check_kill_switch(self) -> None:
        ks: KillSwitch | None = self.p.kill_switch
        if ks is None or self.killed or self._flattening:
            return
        datas = getattr(self.store, "datas", [])
        if not datas or any(d._laststatus != d.LIVE for d in datas):
            return  # backfilled bars carry old prices: limits start with live data
        value = self.getvalue()
        if not math.isfinite(value) or value <= 0:
            return
        self._peak = max(self._peak or value, value)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if self._day != today:
            self._day, self._day_start_value = today, value
        reason = None
        if ks.max_drawdown is not None and value < self._peak * (1 - ks.max_drawdown):
            reason = f"drawdown {1 - value / self._peak:.2%} beyond {ks.max_drawdown:.2%}"
        start = self._day_start_value or value
        if ks.max_daily_loss is not None and value < start * (1 - ks.max_daily_loss):
            reason = f"daily loss {1 - value / start:.2%} beyond {ks.max_daily_loss:.2%}"
        if reason:
            self.engage_kill_switch(reason)

    def _owner(self) -> Any:
        for data in getattr(self.store, "datas", []):
            strats = getattr(getattr(data, "_env", None), "runningstrats", None)
            if strats:
                return strats[0]
        return None

    def engage_kill_switch(self, reason: str) -> None:
        """Cancel open orders, flatten if configured, notify and stop cerebro."""
        self.killed = True
        log.error("KILL SWITCH: %s", reason)
        for tracked in list(self._tracked.values()):
            if tracked.order.alive():
                self._cancel_on_exchange(tracked)
        for order in list(self._local):
            self._local.remove(order)
            if order.alive():
                order.cancel()
                self.notify(order)
        self._oco_group.clear()
        ks: KillSwitch | None = self.p.kill_switch
        owner = self._owner()
        if ks is not None and ks.flatten and owner is not None:
            self.killed, self._flattening = False, True  # let the flattening orders through
            try:
                for data, pos in list(self.positions.items()):
                    if pos.size > 0:
                        self.sell(
                            owner,
                            data,
                            pos.size,
                            exectype=bt.Order.Market,
                            role="kill_switch_flatten",
                        )
            finally:
                self.killed, self._flattening = True, False
        self.store.put_notification("KILL_SWITCH", reason)
        # Stop at the next loop, after cerebro has delivered the store notification.
        self._stop_requested = True

    def _stop_cerebro(self) -> None:
        for data in getattr(self.store, "datas", []):
            env = getattr(data, "_env", None)
            if env is not None:
                env.runstop()
                return
