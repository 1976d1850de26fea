"""``CcxtBroker``: real orders through a ccxt exchange, with backtrader's full order lifecycle.

Lifecycle: every order is notified ``Submitted``, then ``Accepted`` when the exchange
acknowledges it (or ``Rejected``/``Margin`` with the reason in ``order.info["reject_reason"]``),
``Partial`` for each fill that leaves a remainder, and ``Completed``/``Canceled``/``Expired``.
Every notification is an ``order.clone()``, and every execution carries its real size, price,
commission and P&L, so ``notify_trade`` and ``TradeAnalyzer`` work.

* **Order types.** Market and limit orders go to the exchange. Stop and stop-limit orders,
  bracket legs and OCO groups are emulated (held locally, triggered from bars), so they work on
  spot markets (``emulation``).
* **Fills** come from the exchange's trades, deduplicated by trade id; fees in the base asset or
  another currency are converted to the quote asset at the fill price (``exchange_sync``).
* **Checks before sending:** amount and price are rounded to the market's precision (amounts
  down), and the minimum amount and notional are enforced; a failing order is rejected locally
  (``market_rules``, shared with ``PaperBroker``).
* **No duplicate orders.** Each order gets a deterministic client order id, written to the SQLite
  journal before it is sent; ``create_order`` is never retried, an unknown outcome is reconciled
  by client id (``exchange_sync``).
* **Restart.** On start, journal orders that were not final are looked up by client id: fills
  are recorded once, still-open orders are cancelled or kept by ``on_restart`` policy
  (``recovery``). Positions are seeded from the account's free balance (coins locked in orders
  this session does not manage are left out, with a warning).
* **Cash and value** are cached and refreshed from balances every ``balance_refresh`` seconds,
  never fetched per bar (``account``).
* **Kill switch** (``KillSwitch``, re-exported here): pre-trade limits reject orders; a breached
  loss or drawdown cancels open orders, optionally flattens, notifies the store and stops cerebro
  (``risk`` keeps the limits' state; engaging is done here).

How it is built: by composition. The broker keeps backtrader's contract (``buy``/``sell``,
``cancel``, ``next``, ``get_notification``, cash, value, positions) and owns one of each part:

========================  =======================================================
``rules``                 ``MarketRules``: market lookup, precision, minimums, fees
``account``               ``Account``: balances, cash, value, positions, booking fills
``risk``                  ``RiskGuard``: kill switch and order limits
``emulator``              ``OrderEmulator``: held stops, brackets, OCO groups
``sync``                  ``ExchangeSync``: send, poll, reconcile, cancel, fills
========================  =======================================================

The broker is the parts' mediator: the emulator and the exchange side reach the other parts, and
the broker's ``notify``/``reject``/``check_kill_switch``, through the broker they are given;
no part holds another directly. ``recovery.recover_orders`` runs once at start.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import backtrader as bt
from backtrader.comminfo import CommInfoBase
from backtrader.position import Position

from atb_strategies.live.account import Account, SpotCommInfo
from atb_strategies.live.emulation import OrderEmulator
from atb_strategies.live.exchange_sync import ExchangeSync
from atb_strategies.live.journal import Journal
from atb_strategies.live.market_rules import MarketRules
from atb_strategies.live.recovery import recover_orders
from atb_strategies.live.risk import Exposure, KillSwitch, RiskGuard

__all__ = ["CcxtBroker", "KillSwitch"]

log = logging.getLogger(__name__)


class CcxtBroker(bt.BrokerBase):
    """Live broker on a ``CcxtStore``.

    Parameters
    ----------
    store : CcxtStore
        The exchange connection (credentials needed).
    journal : str or Path
        SQLite journal file (created if missing; one that was deleted or emptied is refused,
        see ``new_journal``; a damaged one raises ``JournalError``).
    new_journal : bool
        Start a new journal where the last one was deleted or emptied (``Journal``).
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
        Limits; None disables them. A trip is recorded in the journal: a later session on the
        same journal starts with the switch engaged (no new orders, a ``KILL_SWITCH_ACTIVE``
        store notification) until ``clear_kill_switch``.
    clear_kill_switch : bool
        Clear a trip recorded by an earlier session (the user's explicit decision).
    """

    params = (
        ("store", None),
        ("journal", "atb-journal.sqlite"),
        ("new_journal", False),
        ("order_poll", 1.0),
        ("balance_refresh", 10.0),
        ("unknown_retries", 5),
        ("on_stop", "cancel"),
        ("on_restart", "cancel"),
        ("kill_switch", None),
        ("clear_kill_switch", False),
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.store = self.p.store
        self.journal = Journal(self.p.journal, new_journal=self.p.new_journal)
        self.notifs: collections.deque = collections.deque()
        self.rules = MarketRules(self.store)
        self.account = Account(self.store, self.rules, self.p.balance_refresh)
        self.positions = self.account.positions
        self.risk = RiskGuard(self.p.kill_switch, journal=self.journal)
        self.emulator = OrderEmulator(self)
        self.sync = ExchangeSync(self)
        self.startingcash = 0.0
        self._stop_requested = False
        self._stop_when_flat = False
        self.comminfo = {None: SpotCommInfo()}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        super().start()
        self.store.start(broker=self)
        self.account.refresh(force=True)
        recover_orders(self.store, self.journal, self.p.on_restart)
        self.account.refresh(force=True)
        trip = self.risk.earlier_trip
        if trip is not None and self.p.clear_kill_switch:
            self.journal.clear_kill_switch()
            self.risk.earlier_trip, self.risk.killed = None, False
            log.warning(
                "kill switch tripped at %s (%s): cleared by the user", trip["time"], trip["reason"]
            )
        elif trip is not None:
            log.error(
                "kill switch tripped at %s (%s) in an earlier session: no new orders until it is "
                "cleared",
                trip["time"],
                trip["reason"],
            )
            self.store.put_notification("KILL_SWITCH_ACTIVE", trip["reason"])
        log.info(
            "live broker started; journal %s (session %s)", self.journal.path, self.journal.session
        )

    def stop(self) -> None:
        if self.p.on_stop == "cancel":
            self.sync.cancel_all()
        self.journal.close()
        super().stop()

    def data_started(self, data: Any) -> None:
        """Refresh the balances and seed the position of ``data`` from the account."""
        self.account.refresh(force=True)
        self.startingcash = self.account.cash
        self.account.seed_position(data)

    def next(self) -> None:
        if self._stop_when_flat and not self._holding():
            self._stop_requested = True
        if self._stop_requested:
            self._stop_cerebro()
            return
        self.account.refresh()
        self.sync.poll(self.p.order_poll)
        self.emulator.trigger()
        self.check_kill_switch()

    # ------------------------------------------------------------------ account

    @property
    def cash(self) -> float:
        """The free quote balance (cached)."""
        return self.account.cash

    @property
    def killed(self) -> bool:
        """The kill switch is engaged: every new order is refused."""
        return self.risk.killed

    def getcash(self) -> float:
        return self.account.cash

    def getvalue(self, datas: Any = None) -> float:
        return self.account.value(datas)

    def exposure(self, data: Any) -> Exposure:
        """The positions' values and the open entry orders' notional, for ``data``'s symbol
        and the whole book (the portfolio limits' view of the account)."""
        mine, gross, value = self.account.exposure(data)
        pending = self.sync.open_risk() + self.emulator.open_risk()
        return Exposure(
            mine,
            gross,
            value,
            symbol_open=sum(n for d, n in pending if d is data),  # feeds overload ==
            gross_open=sum(n for _, n in pending),
        )

    def getposition(self, data: Any) -> Position:
        return self.positions[data]

    def getcommissioninfo(self, data: Any) -> CommInfoBase:
        return self.comminfo[None]

    # ------------------------------------------------------------------ notifications

    def notify(self, order: bt.Order) -> None:
        """Queue a clone of ``order`` for the strategy (a clone keeps each status and fill)."""
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
        # An order from BrokerBase.buy/sell's positional or keyword arguments.
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
        self.emulator.route(order)
        return order

    def cancel(self, order: bt.Order) -> None:
        if not order.alive():
            return
        if not self.emulator.cancel(order):
            self.sync.cancel(order)

    def reject(self, order: bt.Order, reason: str, margin: bool = False) -> None:
        """Reject ``order`` (``Margin`` if ``margin``) with ``reason``; its bracket legs go too."""
        order.addinfo(reject_reason=reason)
        log.warning("order %s rejected: %s", order.ref, reason)
        if margin:
            order.margin()
        else:
            order.reject(self)
        self.notify(order)
        self.emulator.cancel_children(order)

    # ------------------------------------------------------------------ kill switch

    def check_kill_switch(self) -> None:
        """Engage the kill switch if the portfolio value crossed a loss limit."""
        if self.risk.limits is None:
            return
        datas = getattr(self.store, "datas", [])
        live = bool(datas) and all(d._laststatus == d.LIVE for d in datas)
        reason = self.risk.breach(self.getvalue(), live=live, market_ms=self._market_ms(datas))
        if reason:
            self.engage_kill_switch(reason)

    @staticmethod
    def _market_ms(datas: list) -> int | None:
        # The close time of the latest bar seen on any feed (the market's now), or None.
        closes = [getattr(d, "last_close_ms", None) for d in datas]
        known = [c for c in closes if c is not None]
        return max(known) if known else None

    def engage_kill_switch(self, reason: str) -> None:
        """Cancel open orders, flatten if configured, notify and stop cerebro; the trip is
        recorded in the journal and outlives the session until cleared."""
        self.risk.trip(reason, self.getvalue())
        log.error("KILL SWITCH: %s", reason)
        ks: KillSwitch | None = self.risk.limits
        keep = ks is not None and not ks.flatten  # the user keeps the position: and its legs
        self.sync.cancel_all()
        self.emulator.cancel_all(keep_protection=keep)
        owner = self._owner()
        if ks is not None and ks.flatten and owner is not None:
            self._flatten(owner)
        self.store.put_notification("KILL_SWITCH", reason)
        if keep and self._holding():
            # --no-flatten: the position stays, and so do its stop-loss and take-profit legs
            # (emulated in this process: they die with it). No new entries; the session goes
            # on protecting the position and stops once it is flat.
            log.error(
                "KILL SWITCH: keeping the position with its stop-loss/take-profit legs; no new "
                "entries; the session stops when the position is closed (or on Ctrl-C)"
            )
            self._stop_when_flat = True
            return
        # Stop at the next loop, after cerebro has delivered the store notification.
        self._stop_requested = True

    def _holding(self) -> bool:
        return any(pos.size != 0 for pos in self.positions.values())

    def _flatten(self, owner: Any) -> None:
        self.risk.killed, self.risk.flattening = False, True  # let the flattening orders through
        try:
            for data, pos in list(self.positions.items()):
                if pos.size > 0:
                    self.sell(
                        owner, data, pos.size, exectype=bt.Order.Market, role="kill_switch_flatten"
                    )
        finally:
            self.risk.killed, self.risk.flattening = True, False

    def _owner(self) -> Any:
        for data in getattr(self.store, "datas", []):
            strats = getattr(getattr(data, "_env", None), "runningstrats", None)
            if strats:
                return strats[0]
        return None

    def _stop_cerebro(self) -> None:
        for data in getattr(self.store, "datas", []):
            env = getattr(data, "_env", None)
            if env is not None:
                env.runstop()
                return
