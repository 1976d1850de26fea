"""``LiveStatus``: one status line per live bar of a running live or paper session, and the
announcement of every model change (hot reload of ``latest``)."""

from __future__ import annotations

from pathlib import Path

import backtrader as bt

from atb_strategies.live.bars_log import BarsLog
from atb_strategies.live.journal import Journal
from atb_strategies.strategies.guards import fired_guards


def _guard_tag(reason: str | None) -> str:
    """`` guard=drift,model-age`` while guards fire on the bar's decision, else nothing."""
    fired = fired_guards(reason)
    return " guard=" + ",".join(n.split()[0] for n in fired) if fired else ""


def _sentiment(data: bt.AbstractDataBase) -> str:
    """`` sent=VALUE age=HOURSh`` for a live sentiment feed, else nothing."""
    age = getattr(data.lines, "sentiment_age", None)
    if age is None:
        return ""
    return f" sent={float(data.lines.sentiment[0]):g} age={float(age[0]):.1f}h"


class LiveStatus(bt.Analyzer):
    """One status line per live bar: time, close, prediction, signal, position, P&L, model.

    Bars replayed from the backfill are skipped; only bars delivered while the feed is live
    produce a line; with the drift guard on, it shows the drift score (``drift=``, > 1 when
    drifted), the guards firing on the bar's decision (``guard=drift``; the reason is announced
    when they start), and on a live sentiment feed the sentiment value and its age (``sent=``,
    ``age=``). A guard that starts firing (or changes reason) and its end are announced once:
    a line and a store notification (``GUARD`` with the reason, ``GUARD_CLEARED``). A model
    event of a prediction (``MlPrediction.model_events``: ``latest``
    moved and the new version now serves, or it was refused) is announced once, whatever the
    feed's state: a status line, a store notification (``notify_store("MODEL_SWITCH" |
    "MODEL_REFUSED", event_dict)``) and an audit row in the journal.

    Parameters
    ----------
    echo : callable, default print
        Receives each status line (``click.echo``, ``list.append``, a logger method...).
    audit : str, Path or None
        Journal that receives the audit rows. Default (None): the live broker's own journal;
        a paper session without one writes none.
    """

    params = (("echo", print), ("audit", None))

    def start(self) -> None:
        """Open the audit journal; the P&L base is the value at the first bar (a live broker
        knows the account's holdings only once it has read the balances)."""
        self.start_value: float | None = None
        broker = self.strategy.broker
        self._own_journal = self.p.audit is not None and getattr(broker, "journal", None) is None
        self.journal: Journal | None = (
            Journal(Path(self.p.audit)) if self._own_journal else getattr(broker, "journal", None)
        )
        self._mode = "paper" if getattr(broker, "journal", None) is None else "live"
        self._announced: dict[int, int] = {}
        self._guard: dict[int, tuple[str, ...]] = {}
        self._bars_log = BarsLog.beside(self.journal.path) if self.journal is not None else None

    def stop(self) -> None:
        if self._bars_log is not None:
            self._bars_log.close()
        if self._own_journal and self.journal is not None:
            self.journal.close()

    def _announce(self, pred: bt.Indicator) -> None:
        events = getattr(pred, "model_events", ())
        done = self._announced.get(id(pred), 0)
        for event in events[done:]:
            self.p.echo(f"{event.bar[:16].replace('T', ' ')} {event.symbol} {event.describe()}")
            if self.journal is not None:
                self.journal.record_model_event(
                    event.kind,
                    bar=event.bar,
                    symbol=event.symbol,
                    from_key=event.from_key,
                    to_key=event.to_key,
                    reason=event.reason,
                    mode=self._mode,
                )
            message = "MODEL_SWITCH" if event.kind == "switch" else "MODEL_REFUSED"
            for store in self.strategy.env.stores:
                store.put_notification(message, event.as_dict())
        self._announced[id(pred)] = len(events)

    def _guards(self, data: bt.AbstractDataBase, reason: str | None) -> None:
        """Announce the guards that start firing and their end, once each (not every bar)."""
        fired = fired_guards(reason)
        before = self._guard.get(id(data), ())
        if tuple(fired) == before:
            return
        self._guard[id(data)] = tuple(fired)
        if not fired:
            self.p.echo(f"{data._name} guards clear: trading normally")
            message, payload = "GUARD_CLEARED", {"symbol": data._name}
        else:
            self.p.echo(f"{data._name} guard: {reason}")
            message, payload = "GUARD", {"symbol": data._name, "reason": reason}
        for store in self.strategy.env.stores:
            store.put_notification(message, payload)

    def next(self) -> None:
        """Announce model events and guards, then emit one line per live data feed the strategy
        predicts on."""
        strat = self.strategy
        for data, pred in getattr(strat, "predictions", {}).items():
            self._announce(pred)
            if data.islive() and data._laststatus != data.LIVE:
                continue
            ret = float(pred.predicted_return[0])
            last = strat.decisions[-1] if strat.decisions else {}
            reason = last.get("reason")
            self._guards(
                data, reason if reason and not reason.startswith("no prediction") else None
            )
            drift = float(pred.drift[0])
            value = strat.broker.getvalue()
            if self.start_value is None:
                self.start_value = value
            self.p.echo(
                f"{bt.num2date(data.datetime[0]):%Y-%m-%d %H:%M} {data._name} "
                f"close={float(data.close[0]):.2f} pred={float(pred.predicted_price[0]):.2f} "
                f"ret={ret:+.4%} conf={float(pred.confidence[0]):.2f} "
                f"signal={last.get('signal', '-')} action={last.get('action', '-')} "
                f"pos={strat.getposition(data).size:.6g} value={value:.2f} "
                f"pnl={value - self.start_value:+.2f}"
                + (f" drift={drift:.2f}" if drift == drift else "")
                + _guard_tag(last.get("reason"))
                + _sentiment(data)
                + f" model={pred.model_key}"
            )
            if self._bars_log is not None:  # bars.jsonl beside the journal (atb dashboard reads it)
                self._bars_log.bar(strat, data, pred, last, value, value - self.start_value)
