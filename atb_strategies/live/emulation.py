"""Order emulation: stop orders, bracket legs and OCO groups held by the broker, not the exchange.

Spot markets rarely offer native stop-market orders or OCO groups, so ``OrderEmulator`` keeps
them locally and sends a market or limit order when a bar's close crosses the trigger:

* **Stop and stop-limit orders** are accepted and held; when the close crosses the stop price a
  market (stop) or limit (stop-limit, at its limit price) order is sent.
* **Brackets.** A parent sent with ``transmit=False`` waits until its last leg arrives; the legs
  are held until the parent completes, then sized to what the parent really filled (fees in the
  base asset make that less than ordered) and armed. When one leg is sent, the other is
  cancelled; a parent that ends without filling takes its legs along.
* **OCO groups** (backtrader's ``oco=``): the group's first order must be a held stop; every later
  member, limit orders included, is held and sent only when the close crosses its price. When one
  member is sent or cancelled the others are cancelled, as in backtrader's own broker. A member
  whose leader is not held here (a limit already on the exchange, a triggered stop, a bracket
  parent) is rejected with the reason, never silently unlinked.

A held order is checked when it is placed, at its own price, against the market's rules and the
risk limits, so a protective order that could never be sent is refused at once, not when it is
needed. Orders that are not emulated go to the exchange through the broker's ``ExchangeSync``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import backtrader as bt

if TYPE_CHECKING:
    from atb_strategies.live.broker import CcxtBroker

log = logging.getLogger(__name__)

HELD_TYPES = (bt.Order.Stop, bt.Order.StopLimit, bt.Order.Limit)


class OrderEmulator:
    """The orders one broker holds locally: emulated stops, bracket legs and OCO members.

    Parameters
    ----------
    broker : CcxtBroker
        The broker: notifications, rejections, the market rules, the risk limits and the
        exchange side (``broker.sync``) come from it.

    Attributes
    ----------
    held : list of Order
        Held orders, triggered from bars (bracket legs wait for their parent first).
    waiting : dict
        Bracket parents waiting for their last leg, by order ref.
    children : dict
        Bracket legs by their parent's ref, until the parent completes or ends.
    oco_groups : dict
        Order ref -> ref of its OCO group's leader.
    """

    def __init__(self, broker: CcxtBroker) -> None:
        self.broker = broker
        self.held: list[bt.Order] = []
        self.waiting: dict[int, bt.Order] = {}
        self.children: dict[int, list[bt.Order]] = {}
        self.oco_groups: dict[int, int] = {}

    # ------------------------------------------------------------------ placing

    def route(self, order: bt.Order) -> None:
        """Hold a submitted order, or send it through the broker's exchange side."""
        if order.parent is not None:
            self.children.setdefault(order.parent.ref, []).append(order)
            self.held.append(order)  # bracket leg: held until the parent completes
            if order.transmit and order.parent.ref in self.waiting:
                self._dispatch(self.waiting.pop(order.parent.ref))  # last leg releases parent
            return
        if not order.transmit:
            self.waiting[order.ref] = order  # a bracket parent waits for its legs
            return
        if order.oco is not None:
            self._join_oco(order)
            return
        self._dispatch(order)

    def _dispatch(self, order: bt.Order) -> None:
        if order.exectype in (bt.Order.Stop, bt.Order.StopLimit):
            if self._refuse_unsendable(order):
                return
            self._hold(order)
        else:
            self.broker.sync.send(order)

    def _hold(self, order: bt.Order) -> None:
        order.accept(self.broker)
        self.broker.notify(order)
        self.held.append(order)  # emulated: triggered in trigger()

    def _join_oco(self, order: bt.Order) -> None:
        leader = order.oco
        leader_ref = self.oco_groups.get(leader.ref, leader.ref)
        if order.exectype not in HELD_TYPES:
            self.broker.reject(
                order,
                f"an OCO member must be a stop, stop-limit or limit order; got "
                f"{order.getordername()} (a market order cannot wait for its group).",
            )
            return
        leader_ok = (
            leader in self.held
            and leader.parent is None
            and leader.ref not in self.children  # a stop-entry bracket parent
            and (leader.ref in self.oco_groups or leader.exectype != bt.Order.Limit)
        )
        if not leader_ok:
            self.broker.reject(
                order,
                f"OCO with order {leader.ref} is not possible: that order is not held by this "
                "broker (it is on the exchange, already triggered or finished, or part of a "
                "bracket). Place the stop order first and pass it as oco= to the others.",
            )
            return
        if self._refuse_unsendable(order):
            return
        self.oco_groups[leader.ref] = leader_ref
        self.oco_groups[order.ref] = leader_ref
        self._hold(order)

    def _refuse_unsendable(self, order: bt.Order) -> bool:
        # Reject, now, a held order that ExchangeSync.send would refuse when it triggers: the
        # market's precision and minimums at the order's own price, and the risk limits as they
        # stand (a protective order is only useful if it can be sent). True when rejected.
        broker = self.broker
        market = broker.rules.market(order.data)
        raw_amount = broker.account.sell_amount(order, abs(order.created.size))
        price = order.created.price
        if not price or price <= 0:
            broker.reject(order, f"a held {order.getordername()} order needs a positive price")
            return True
        amount, problem = broker.rules.check_amount(market, raw_amount, price)
        if problem is None:
            reduces = broker.account.reduces_position(order, amount)
            book = broker.exposure(order.data) if broker.risk.limits else None
            problem = broker.risk.refusal(amount, price, reduces=reduces, counting=False, book=book)
        if problem is not None:
            broker.reject(order, f"{problem} (checked when the order was placed, at its price)")
            return True
        return False

    def open_risk(self) -> list[tuple[Any, float]]:
        """``(feed, notional)`` of each held order that adds risk when it triggers: a stop
        entry at its price; a bracket leg or any order that only reduces the position does not
        count."""
        out = []
        for order in self.held:
            if order.parent is not None or not order.alive():
                continue
            amount = abs(order.executed.remsize or order.created.size)
            price = float(order.created.price or 0.0)
            if price > 0 and not self.broker.account.reduces_position(order, amount):
                out.append((order.data, amount * price))
        return out

    # ------------------------------------------------------------------ triggering

    def trigger(self) -> None:
        """Send every armed held order whose trigger the last bar's close crossed."""
        for order in list(self.held):
            if order not in self.held:
                continue  # cancelled as the sibling of a leg triggered earlier in this loop
            if not order.alive():
                self.held.remove(order)
                continue
            if order.status != order.Accepted or not len(order.data):
                continue  # bracket legs wait for their parent
            send_as = self._crossed(order)
            if send_as is None:
                continue
            self.held.remove(order)
            self.broker.sync.send(order, exectype=send_as)
            if order.alive() or order.status == order.Completed:
                self._cancel_siblings(order)
            else:
                self._report_refused(order)

    @staticmethod
    def _crossed(order: bt.Order) -> int | None:
        # The order type to send when the close crossed the order's price, else None.
        close = float(order.data.close[0])
        px = order.created.price
        if order.exectype == bt.Order.Limit:  # a take-profit: bracket leg or OCO member
            hit = close >= px if order.issell() else close <= px
            send_as = bt.Order.Limit
        else:
            hit = close <= px if order.issell() else close >= px
            send_as = bt.Order.Market if order.exectype == bt.Order.Stop else bt.Order.Limit
        return send_as if hit else None

    def _report_refused(self, order: bt.Order) -> None:
        log.error(
            "triggered %s leg of order %s was refused (%s); the other leg stays armed",
            order.info.get("role", "bracket"),
            order.parent.ref if order.parent is not None else "-",
            order.info.get("reject_reason"),
        )
        self.broker.store.put_notification(
            "PROTECTION_REFUSED", order.ref, order.info.get("reject_reason")
        )

    # ------------------------------------------------------------------ brackets and groups

    def activate_children(self, parent: bt.Order) -> None:
        """Arm the bracket legs of a completed parent, sized to what it filled."""
        filled = abs(parent.executed.size)
        for child in self.children.pop(parent.ref, []):
            if child.alive():
                # A leg closes what the parent really bought (fees in the base asset make that
                # less than ordered), never more.
                signed = -filled if parent.isbuy() else filled
                child.size = child.created.size = child.executed.remsize = signed
                child.accept(self.broker)
                self.broker.notify(child)

    def cancel_children(self, parent: bt.Order) -> None:
        """Cancel the bracket legs of a parent that ended without completing."""
        for child in self.children.pop(parent.ref, []):
            if child.alive():
                if child in self.held:
                    self.held.remove(child)
                child.cancel()
                self.broker.notify(child)

    def resize_children(self, parent: bt.Order, signed: float) -> None:
        """Size the legs of ``parent`` to close its new signed size."""
        for child in self.children.get(parent.ref, []):
            child.size = child.created.size = child.executed.remsize = -signed

    def _cancel_siblings(self, order: bt.Order) -> None:
        group = self.oco_groups.get(order.ref)
        for other in list(self.held):
            bracket = (
                order.parent is not None
                and other.parent is not None
                and other.parent.ref == order.parent.ref
            )
            if bracket or (group is not None and self.oco_groups.get(other.ref) == group):
                self.held.remove(other)
                other.cancel()
                self.broker.notify(other)
        if group is not None:
            self._forget_oco(group)

    def _forget_oco(self, group: int) -> None:
        # Drop an OCO group's bookkeeping once none of its members is held any more.
        if any(self.oco_groups.get(o.ref) == group for o in self.held):
            return
        for ref in [r for r, g in self.oco_groups.items() if g == group]:
            del self.oco_groups[ref]

    # ------------------------------------------------------------------ cancelling

    def cancel(self, order: bt.Order) -> bool:
        """Cancel ``order`` if it is held here; False when it is not (it is on the exchange)."""
        if order not in self.held:
            return False
        self.held.remove(order)
        order.cancel()
        self.broker.notify(order)
        self.cancel_children(order)  # a held stop-entry bracket parent takes its legs along
        if order.ref in self.oco_groups:
            self._cancel_siblings(order)  # as in backtrader: one cancelled, all are
        return True

    def cancel_all(self, keep_protection: bool = False) -> None:
        """Cancel every held order and forget the OCO groups (the kill switch).

        ``keep_protection`` keeps the held orders that only reduce the position (stop-loss and
        take-profit legs of a position the user chose to keep: ``--no-flatten``).
        """
        account = self.broker.account
        for order in list(self.held):
            if keep_protection and account.reduces_position(order, abs(order.created.size)):
                continue
            self.held.remove(order)
            if order.alive():
                order.cancel()
                self.broker.notify(order)
        if not keep_protection:
            self.oco_groups.clear()
