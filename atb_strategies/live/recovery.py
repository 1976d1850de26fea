"""Restart recovery: settle the orders an earlier session left unfinished in the journal.

At start, every journal order not in a final state (from any session) is looked up on the
exchange by its client order id:

* not found: it was never placed (``not_placed``), so it is never sent twice;
* found: its state and exchange id are journalled, and its fills recorded once (by trade id);
* still open: cancelled (``on_restart="cancel"``) or left on the exchange (``"keep"``; this
  session does not track it, its fills show in the balances).

Each order is announced through the store (``RECOVERED``: client id, state, filled). An order
that cannot be looked up stays unfinished for the next start (``RECOVERY_FAILED``); startup never
crashes on it.
"""

from __future__ import annotations

import logging
from typing import Any

from atb_strategies.exceptions import ExchangeError, OrderNotFoundError, TemporaryExchangeError
from atb_strategies.live.journal import Journal

log = logging.getLogger(__name__)


def recover_orders(store: Any, journal: Journal, on_restart: str) -> None:
    """Settle every unfinished journal order with the exchange.

    Parameters
    ----------
    store : CcxtStore
        The exchange connection; receives the ``RECOVERED``/``RECOVERY_FAILED`` notifications.
    journal : Journal
        The journal of earlier sessions.
    on_restart : str
        ``"cancel"`` or ``"keep"`` the orders still open on the exchange.
    """
    for row in journal.unfinished():
        try:
            _recover_one(store, journal, row, on_restart)
        except (TemporaryExchangeError, ExchangeError) as e:
            # Leave the row unfinished: the next start tries again. Never crash startup.
            log.error("could not reconcile journal order %s: %s", row["client_id"], e)
            store.put_notification("RECOVERY_FAILED", row["client_id"], str(e))


def _recover_one(store: Any, journal: Journal, row: dict[str, Any], on_restart: str) -> None:
    client_id, symbol = row["client_id"], row["symbol"]
    try:
        resp = store.call("fetch_order", None, symbol, {"clientOrderId": client_id})
    except OrderNotFoundError:
        journal.update(client_id, "not_placed")
        log.info("journal order %s was never placed", client_id)
        store.put_notification("RECOVERED", client_id, "not_placed", 0.0)
        return
    status = resp.get("status") or "open"
    filled = float(resp.get("filled") or 0.0)
    journal.update(client_id, status, exchange_id=str(resp.get("id")), filled=filled)
    if filled:
        _record_fills(store, journal, client_id, resp.get("id"), symbol)
    if status == "open":
        if on_restart == "cancel":
            status = _cancel_left_open(store, journal, client_id, symbol, resp, filled)
        else:
            log.info(
                "order %s from an earlier session stays open on the exchange; this session "
                "does not track it (its fills show in the balances)",
                client_id,
            )
    store.put_notification("RECOVERED", client_id, status, filled)


def _record_fills(
    store: Any, journal: Journal, client_id: str, exchange_id: Any, symbol: str
) -> None:
    for trade in store.call("fetch_order_trades", exchange_id, symbol):
        fee = trade.get("fee") or {}
        journal.record_fill(
            str(trade.get("id")),
            client_id,
            float(trade.get("amount") or 0),
            float(trade.get("price") or 0),
            float(fee.get("cost") or 0),
            fee.get("currency"),
            trade.get("timestamp"),
        )


def _cancel_left_open(
    store: Any,
    journal: Journal,
    client_id: str,
    symbol: str,
    resp: dict[str, Any],
    filled: float,
) -> str:
    # Returns the state to announce: "open" (as found) when this cancel succeeds, the
    # exchange's new state when the order filled or was cancelled meanwhile.
    status = "open"
    try:
        store.call("cancel_order", resp.get("id"), symbol, idempotent=False)
        journal.update(client_id, "canceled")
        log.info("cancelled order %s left open by an earlier session", client_id)
    except OrderNotFoundError:  # it filled or was cancelled meanwhile
        again = store.call("fetch_order", resp.get("id"), symbol)
        status = again.get("status") or status
        journal.update(client_id, status, filled=float(again.get("filled") or filled))
    return status
