"""``LiveStatus``: one status line per live bar of a running live or paper session (with several
symbols, a block per bar: a line per symbol that closed a bar and a ``BOOK`` line), and the
announcement of every model change (hot reload of ``latest``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    a line and a store notification (``GUARD`` with the reason, ``GUARD_CLEARED``), per
    symbol: each feed's line and guards read that feed's own last decision. With several feeds
    (a portfolio session) each bar prints a block: the line of every feed that closed a live
    bar, then one ``BOOK`` line (value, P&L, cash, gross exposure, positions). A model
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
        self._shown: dict[int, int] = {}  # len(data) at its last status line, per feed
        self._pending: dict[Any, dict[str, str]] = {}  # held lines per bar close time
        self._bars_log = BarsLog.beside(self.journal.path) if self.journal is not None else None

    def stop(self) -> None:
        if self._bars_log is not None:
            self._bars_log.close()
        self._flush(list(getattr(self.strategy, "predictions", {})), final=True)
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

    def _last_decision(self, data: bt.AbstractDataBase) -> dict:
        """The strategy's decision on ``data``'s current bar ({} when it made none)."""
        name = getattr(data, "_name", "")
        bar = bt.num2date(data.datetime[0]).isoformat()
        for decision in reversed(self.strategy.decisions):
            if decision.get("bar", "") < bar:
                break  # older bars: this feed made no decision on its current bar
            if decision.get("symbol", name) == name and decision.get("bar") == bar:
                return decision
        return {}

    def next(self) -> None:
        """Announce model events and guards, then emit one line per live data feed the strategy
        predicts on that closed a new bar; with several feeds, the lines of one close time are
        held until every feed has that bar (or is a bar late) and go out as one block."""
        strat = self.strategy
        predictions = getattr(strat, "predictions", {})
        for data, pred in predictions.items():
            self._announce(pred)
            if data.islive() and data._laststatus != data.LIVE:
                continue
            if self._shown.get(id(data)) == len(data):
                continue  # no new bar of this feed (another feed moved)
            self._shown[id(data)] = len(data)
            line = self._line(data, pred, portfolio=len(predictions) > 1)
            when = bt.num2date(data.datetime[0])
            self._pending.setdefault(when, {})[data._name] = line
        self._flush(list(predictions), final=False)

    def _line(self, data: bt.AbstractDataBase, pred: bt.Indicator, portfolio: bool) -> str:
        """The status line of ``data``'s current bar (announcing its guards on the way)."""
        strat = self.strategy
        ret = float(pred.predicted_return[0])
        last = self._last_decision(data)
        reason = last.get("reason")
        self._guards(data, reason if reason and not reason.startswith("no prediction") else None)
        drift = float(pred.drift[0])
        value = strat.broker.getvalue()
        if self.start_value is None:
            self.start_value = value
        position = strat.getposition(data).size
        money = (
            f"exposure={position * float(data.close[0]):.2f}"
            if portfolio
            else f"value={value:.2f} pnl={value - self.start_value:+.2f}"
        )
        if self._bars_log is not None:  # bars.jsonl beside the journal (atb dashboard reads it)
            self._bars_log.bar(strat, data, pred, last, value, value - self.start_value)
        return (
            f"{bt.num2date(data.datetime[0]):%Y-%m-%d %H:%M} {data._name} "
            f"close={float(data.close[0]):.2f} pred={float(pred.predicted_price[0]):.2f} "
            f"ret={ret:+.4%} conf={float(pred.confidence[0]):.2f} "
            f"signal={last.get('signal', '-')} action={last.get('action', '-')} "
            f"pos={position:.6g} {money}"
            + (f" drift={drift:.2f}" if drift == drift else "")
            + _guard_tag(last.get("reason"))
            + _sentiment(data)
            + f" model={pred.model_key}"
        )

    def _flush(self, datas: list, final: bool) -> None:
        """Emit the held blocks whose bar every feed has (or that a feed is a bar late for, or
        all of them at the end), oldest first: the lines, a late note, the ``BOOK`` line."""
        newest = {d._name: bt.num2date(d.datetime[0]) for d in datas if len(d)}
        for when in sorted(self._pending):
            lines = self._pending[when]
            missing = [d._name for d in datas if d._name not in lines]
            moved_on = any(t > when for t in newest.values())
            if missing and not (final or moved_on):
                break  # wait for the late feed (at most until another feed closes a bar)
            del self._pending[when]
            for name in (d._name for d in datas):
                if name in lines:
                    self.p.echo(lines[name])
            for name in [] if final else missing:  # at the end, feeds stop at their own pace
                self.p.echo(f"{when:%Y-%m-%d %H:%M} {name} late: no live bar closing then")
            if len(datas) > 1:
                self.p.echo(self._book_line(datas, when))

    def _book_line(self, datas: list, when: object) -> str:
        """``TIME BOOK value=... pnl=... cash=... gross=... BTCUSDT=0.01 ETHUSDT=0``."""
        broker = self.strategy.broker
        value = broker.getvalue()
        if self.start_value is None:
            self.start_value = value
        sizes = {d._name: self.strategy.getposition(d).size for d in datas}
        gross = sum(abs(sizes[d._name]) * float(d.close[0]) for d in datas if len(d))
        held = " ".join(f"{name}={size:.6g}" for name, size in sizes.items())
        return (
            f"{when:%Y-%m-%d %H:%M} BOOK value={value:.2f} pnl={value - self.start_value:+.2f} "
            f"cash={broker.getcash():.2f} gross={gross:.2f} {held}"
        )
