"""What a live or paper session did, written when it stops: ``summary.json`` and charts.

``SessionRecorder`` (an analyzer) keeps, in memory, one small row per live bar and symbol (the
bars ``LiveStatus`` prints a line for: backfill bars are skipped) and one row of the book per
bar, plus each symbol's cash flows from its fills. ``write_session_report`` then writes, in
the session's folder (beside the journal and the log):

* ``summary.json``: the **book** (start and end value, P&L, closed trades, fees, max drawdown
  from the per-bar values, bars) and **per symbol** (closed trades, P&L, exposure, bars, the
  last model that served, the guards that fired and on how many bars);
* ``chart.png`` (the book's value and drawdown) and ``chart_<SYMBOL>.png`` per symbol (its
  close, position and P&L).

A symbol's P&L is its fills' cash flows (price and fees) plus its position at the last close,
counted from the first live bar: the symbols' P&L add up to the book's.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from atb_strategies.strategies.guards import fired_guards

__all__ = ["SessionRecorder", "session_summary", "write_session_report"]


class SessionRecorder(bt.Analyzer):
    """Per live bar: each symbol's close, position, P&L, exposure and serving model; the book's
    value and cash (see the module docstring)."""

    def start(self) -> None:
        self.rows: dict[str, list[tuple[pd.Timestamp, float, float, float, str | None]]] = {}
        self.book: list[tuple[pd.Timestamp, float, float]] = []
        self.flows: dict[str, float] = {}  # cash moved by each symbol's fills, fees included
        self.fees: dict[str, float] = {}
        self.base: dict[str, float] | None = None  # each symbol's flows + holding at bar one
        self.start_value: float | None = None
        self.first_bar: dict[str, str] = {}  # each symbol's first live bar (close time)
        self._filled: dict[int, tuple[float, float]] = {}  # order ref -> cost, fee so far
        self._seen: dict[str, int] = {}

    def notify_order(self, order: bt.Order) -> None:
        """Add the fill's change since the order's last notification (partial fills count
        once each) to its symbol's cash flow and fees."""
        if order.status not in (order.Partial, order.Completed) or not order.executed.size:
            return
        name = order.data._name
        size, price, fee = (
            float(order.executed.size),
            float(order.executed.price),
            float(order.executed.comm),
        )
        was_cost, was_fee = self._filled.get(order.ref, (0.0, 0.0))
        self._filled[order.ref] = (size * price, fee)
        moved = -(size * price - was_cost) - (fee - was_fee)
        self.flows[name] = self.flows.get(name, 0.0) + moved
        self.fees[name] = self.fees.get(name, 0.0) + fee - was_fee

    def _pnl(self, data: bt.AbstractDataBase) -> float:
        """The symbol's flows plus its position at the current close (before the base)."""
        size = float(self.strategy.getposition(data).size)
        held = size * float(data.close[0]) if size else 0.0
        return self.flows.get(data._name, 0.0) + held

    def next(self) -> None:
        datas = self.strategy.datas
        predictions = getattr(self.strategy, "predictions", {})
        new = [
            d
            for d in datas
            if not (d.islive() and d._laststatus != d.LIVE) and self._seen.get(d._name) != len(d)
        ]
        if not new:
            return
        broker = self.strategy.broker
        if self.base is None:
            self.base = {d._name: self._pnl(d) if len(d) else 0.0 for d in datas}
            self.start_value = float(broker.getvalue())
        when = pd.Timestamp(bt.num2date(self.strategy.datetime[0]))
        for data in new:
            self._seen[data._name] = len(data)
            close = bt.num2date(data.datetime[0])
            self.first_bar.setdefault(data._name, close.isoformat())
            size = float(self.strategy.getposition(data).size)
            pred = predictions.get(data)
            self.rows.setdefault(data._name, []).append(
                (
                    pd.Timestamp(close),
                    float(data.close[0]),
                    size,
                    self._pnl(data) - self.base.get(data._name, 0.0),
                    getattr(pred, "model_key", None),
                )
            )
        self.book.append((when, float(broker.getvalue()), float(broker.getcash())))

    def stop(self) -> None:
        """The end of the session: each symbol's P&L and the book's value after the last fill
        (a flatten on stop included)."""
        self.end_value = float(self.strategy.broker.getvalue()) if self.base is not None else None
        self.end_pnl = (
            {
                d._name: self._pnl(d) - self.base.get(d._name, 0.0)
                for d in self.strategy.datas
                if len(d)
            }
            if self.base is not None
            else {}
        )

    def get_analysis(self) -> dict[str, Any]:
        return {"rows": self.rows, "book": self.book}


def _max_drawdown(values: np.ndarray) -> float:
    if not len(values):
        return 0.0
    peak = np.maximum.accumulate(values)
    return float(np.max(1.0 - values / peak)) if np.all(peak > 0) else 0.0


def session_summary(recorder: SessionRecorder, strat: Any) -> dict[str, Any]:
    """The ``summary.json`` of a stopped session (see the module docstring)."""
    trades = [t for t in getattr(strat, "trade_records", []) if t.get("closed")]
    decisions = getattr(strat, "decisions", [])
    symbols: dict[str, Any] = {}
    for data in strat.datas:
        name = data._name
        rows = recorder.rows.get(name, [])
        own = [t for t in trades if t.get("symbol", name) == name]
        first = recorder.first_bar.get(name)
        fired: Counter[str] = Counter()
        for d in decisions:
            if d.get("symbol", name) == name and first is not None and d.get("bar", "") >= first:
                fired.update(fired_guards(d.get("reason")))
        symbols[name] = {
            "bars": len(rows),
            "trades": len(own),
            "pnl": recorder.end_pnl.get(name, 0.0),
            "closed_pnl": float(sum(t.get("pnl_net", 0.0) for t in own)),
            "fees_paid": recorder.fees.get(name, 0.0),
            "exposure": float(np.mean([r[2] != 0 for r in rows])) if rows else 0.0,
            "last_position": rows[-1][2] if rows else 0.0,
            "model_key": rows[-1][4] if rows else None,
            "guards_fired": dict(sorted(fired.items())),
        }
    values = np.array([v for _, v, _ in recorder.book], dtype=np.float64)
    if recorder.end_value is not None:
        values = np.append(values, recorder.end_value)
    start, end = recorder.start_value, recorder.end_value
    book = {
        "start": recorder.book[0][0].isoformat() if recorder.book else None,
        "end": recorder.book[-1][0].isoformat() if recorder.book else None,
        "bars": len(recorder.book),
        "start_value": start,
        "end_value": end,
        "pnl": end - start if start is not None and end is not None else 0.0,
        "trades": len(trades),
        "fees_paid": float(sum(recorder.fees.values())),
        "max_drawdown": _max_drawdown(values),
    }
    return {"book": book, "symbols": symbols}


def _book_chart(recorder: SessionRecorder, path: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    times = [t for t, _, _ in recorder.book]
    values = np.array([v for _, v, _ in recorder.book], dtype=np.float64)
    fig = Figure(figsize=(10, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot(times, values, color="tab:blue", label="book value")
    top.axhline(values[0], color="grey", lw=0.8, ls="--", label="start value")
    top.set_ylabel("value")
    top.legend(loc="upper left")
    top.set_title(title)
    drawdown = (values / np.maximum.accumulate(values) - 1) * 100
    bottom.fill_between(times, drawdown, 0, color="tab:red", alpha=0.4)
    bottom.set_ylabel("drawdown %")
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100)
    return path


def _shade_held(ax: Any, times: list[pd.Timestamp], held: np.ndarray) -> None:
    """Shade each run of bars with a position, half a bar either side of its closes."""
    if not held.any():
        return
    stamps = pd.DatetimeIndex(times)
    half = (stamps[1:] - stamps[:-1]).min() / 2 if len(stamps) > 1 else pd.Timedelta("30min")
    edges = np.diff(np.concatenate(([0], held.astype(int), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    for i, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
        ax.axvspan(
            stamps[lo] - half,
            stamps[hi] + half,
            color="tab:green",
            alpha=0.15,
            label="position held" if i == 0 else None,
        )


def _symbol_chart(rows: list[tuple], path: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    times = [r[0] for r in rows]
    close = np.array([r[1] for r in rows], dtype=np.float64)
    size = np.array([r[2] for r in rows], dtype=np.float64)
    pnl = np.array([r[3] for r in rows], dtype=np.float64)
    fig = Figure(figsize=(10, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    top.plot(times, close, color="black", label="close")
    _shade_held(top, times, size != 0)
    top.set_ylabel("close")
    top.legend(loc="upper left")
    top.set_title(title)
    bottom.plot(times, pnl, color="tab:blue", label="P&L (fills and position, net of fees)")
    bottom.axhline(0, color="grey", lw=0.8)
    bottom.set_ylabel("P&L")
    bottom.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100)
    return path


def write_session_report(
    recorder: SessionRecorder, strat: Any, folder: Path, title: str
) -> list[Path]:
    """Write ``summary.json``, ``chart.png`` and ``chart_<SYMBOL>.png`` into ``folder`` (the
    charts only when the session saw a live bar); returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = session_summary(recorder, strat)
    path = folder / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    written = [path]
    if recorder.book:
        written.append(_book_chart(recorder, folder / "chart.png", f"{title} - the book"))
    for name, rows in recorder.rows.items():
        if rows:
            chart = folder / f"chart_{name.replace('/', '')}.png"
            written.append(_symbol_chart(rows, chart, f"{title} - {name}"))
    return written
