"""Backtest one strategy over several symbols: one cerebro, one account, shared cash.

``run_portfolio_backtest`` feeds every symbol's candles to one ``Cerebro`` (each feed named by
its symbol, so an ``MlStrategy`` selects each symbol's own model and keeps a rolling window per
feed) and returns a ``PortfolioResult``:

* the **book** (the whole account), summarised as a single-symbol backtest is
  (``backtest.runner.summarize``), its buy-and-hold being an equal-weight basket of the
  symbols, each bought at its first traded bar;
* per symbol, in ``summary["symbols"][SYM]`` and ``result.symbols[SYM]`` (a ``BacktestResult``
  for its chart): its model, trades, win rate, P&L (realised and open, net of fees: the
  symbols' P&L add up to the book's), return contribution to the book, exposure, bars without
  prediction and why, gaps, and the in-sample guard of its model.

``MlStrategy``'s ``position_size`` is a fraction of the whole portfolio's value per entry, on
every symbol.

Everything that can be refused is refused before any candle is fed: duplicated symbols, a
symbol without the strategy's model (naming the symbols that have one), and symbols quoted in
different currencies (one account holds one currency; the summary names it,
``account_currency``).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from atb_strategies.backtest.runner import (
    BacktestResult,
    EquityRecorder,
    ProgressBar,
    check_enough_candles,
    in_sample_split,
    prediction_frame,
    served_model_key,
    strategy_bundle,
    summarize,
    version_switches,
    warn_if_no_prediction,
)
from atb_strategies.data.feeds import make_feed
from atb_strategies.data.periods import check_period, check_period_in_data
from atb_strategies.exceptions import AtbError, ConfigurationError, ModelNotFoundError
from atb_strategies.exchange.symbols import to_ccxt_symbol
from atb_strategies.features.candles import timeframe_to_timedelta
from atb_strategies.registry.shared import shared_registry
from atb_strategies.strategies.base import MlStrategy

#: The keys of a symbol's block in ``summary["symbols"]``.
SYMBOL_KEYS = (
    "model_key",
    "bars",
    "trades",
    "win_rate",
    "pnl",
    "return_contribution",
    "buy_and_hold_return",
    "exposure",
    "fees_paid",
    "bars_without_prediction",
    "no_prediction",
    "gaps",
    "in_sample",
    "version_switches",
)


@dataclass
class PortfolioResult(BacktestResult):
    """A ``BacktestResult`` of the book, plus one per symbol (``symbols``) for its chart."""

    symbols: dict[str, BacktestResult] = field(default_factory=dict)
    basket: pd.DataFrame | None = None  # the equal-weight basket as candles (``close``)


class SymbolRecorder(bt.Analyzer):
    """Per bar and feed: position size and close; per feed, the cash its fills moved (price
    and commission), so that a symbol's P&L is its cash flows plus its position's value."""

    def create_analysis(self) -> None:
        self.rows: list[tuple[float, list[float], list[float]]] = []
        self.cash: dict[str, float] = {}
        self.fees: dict[str, float] = {}

    def notify_order(self, order: bt.Order) -> None:
        if order.status != order.Completed or not order.executed.size:
            return
        name = order.data._name
        flow = -float(order.executed.size) * float(order.executed.price)
        self.cash[name] = self.cash.get(name, 0.0) + flow - float(order.executed.comm)
        self.fees[name] = self.fees.get(name, 0.0) + float(order.executed.comm)

    def next(self) -> None:
        datas = self.strategy.datas
        sizes = [float(self.strategy.getposition(d).size) for d in datas]
        closes = [float(d.close[0]) if len(d) else float("nan") for d in datas]
        cash = [self.cash.get(d._name, 0.0) for d in datas]
        self.rows.append((self.strategy.datetime[0], sizes, closes, cash))

    def get_analysis(self) -> dict[str, Any]:
        return {"rows": self.rows, "fees": self.fees}


def quote_currency(symbols: list[str]) -> str | None:
    """The one currency every symbol is quoted in (``USDT`` for ``BTCUSDT``), None when no
    symbol's quote can be told.

    Raises
    ------
    ConfigurationError
        Symbols quoted in different currencies.
    """
    quotes: dict[str, str] = {}
    for s in symbols:
        try:
            quotes[s] = to_ccxt_symbol(s).split("/")[1]
        except AtbError:
            continue  # a name such as "A": its quote is unknown
    found = sorted(set(quotes.values()))
    if len(found) > 1:
        by = ", ".join(f"{s} in {q}" for s, q in quotes.items())
        raise ConfigurationError(
            f"the symbols are quoted in different currencies ({by}); one account holds one "
            f"currency: backtest symbols of one quote currency together (all "
            f"{' or all '.join(found)})."
        )
    return found[0] if found else None


def check_symbols(
    symbols: list[str],
    strategy: type[bt.Strategy],
    *,
    timeframe: str,
    params: dict[str, Any],
    what: str = "symbols",
) -> str | None:
    """Refuse duplicates, mixed quote currencies and symbols without the strategy's model
    before any work; returns the account currency (see ``quote_currency``). ``what`` spells
    the list in messages (``"--symbols"`` in the CLI)."""
    if not symbols:
        raise ConfigurationError(f"{what}: give at least one symbol.")
    dupes = sorted({s for s in symbols if symbols.count(s) > 1})
    if dupes:
        raise ConfigurationError(
            f"{what} names {', '.join(dupes)} more than once; give each symbol once."
        )
    currency = quote_currency(symbols)
    if not (isinstance(strategy, type) and issubclass(strategy, MlStrategy)):
        return currency

    def param(name: str) -> Any:
        return params[name] if name in params else getattr(strategy.params, name)

    if param("symbol") is not None or param("version") == "asof":
        return currency  # one model for every feed, or a schedule checked when it is built
    registry = shared_registry(param("registry"))
    mtype, tf = param("model_type"), param("timeframe") or timeframe
    missing = []
    for s in symbols:
        try:
            registry.select_bundle(s, mtype, tf, param("version"))
        except ModelNotFoundError:
            missing.append(s)
    if missing:
        have = [s for s in symbols if s not in missing]
        listed = sorted({b.symbol for b in registry.list_bundles() if b.model_type == mtype})
        raise ConfigurationError(
            f"no {mtype} {tf} model for {', '.join(missing)} in the registry {registry.root}"
            + (f" (the other symbols have one: {', '.join(have)})" if have else "")
            + f"; it holds {mtype} models for {', '.join(listed) or 'no symbol'}. Train one "
            f"(atb train model {missing[0]} ...) or drop {', '.join(missing)} from {what}."
        )
    return currency


def _trim(
    candles: pd.DataFrame,
    strategy: type[bt.Strategy],
    symbol: str,
    timeframe: str,
    params: dict[str, Any],
    begin: pd.Timestamp | None,
    last: pd.Timestamp | None,
) -> pd.DataFrame:
    """The candles of ``symbol`` to feed: up to ``last``, and before ``begin`` only the rows
    its model reads (as ``run_backtest`` does for one symbol)."""
    if last is not None:
        candles = candles.loc[:last]
    bundle = strategy_bundle(strategy, symbol=symbol, timeframe=timeframe, params=params)
    if begin is not None:
        history = bundle.pipeline.history_bars if bundle is not None else None
        if history is not None:
            first = int(candles.index.searchsorted(begin))
            candles = candles.iloc[max(0, first - (history - 1)) :]
    if bundle is not None:
        check_enough_candles(candles, bundle)
    return candles


def equal_weight_basket(closes: dict[str, pd.Series], index: pd.DatetimeIndex) -> pd.Series:
    """The value of 1 split equally over the symbols, each bought at its first close on
    ``index`` (held as cash before that) and held to the end."""
    parts = []
    for series in closes.values():
        s = series.reindex(index).ffill()
        first = s.first_valid_index()
        parts.append((s / s.loc[first]).fillna(1.0) if first is not None else s * 0 + 1.0)
    return pd.concat(parts, axis=1).mean(axis=1).rename("close")


def run_portfolio_backtest(
    frames: dict[str, pd.DataFrame],
    strategy: type[bt.Strategy],
    *,
    timeframe: str,
    cash: float = 10_000.0,
    commission: float = 0.001,
    progress: bool = False,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    slippage_bps: float = 0.0,
    **strategy_params: Any,
) -> PortfolioResult:
    """Backtest ``strategy`` on every symbol of ``frames`` (symbol -> candles indexed by open
    time) in one cerebro with one account (see the module docstring).

    Parameters are those of ``backtest.runner.run_backtest``, with ``frames`` for
    ``candles``/``symbol``; no baselines are run for a book.

    Raises
    ------
    ConfigurationError
        Duplicated symbols, a symbol without the strategy's model, mixed quote currencies.
    """
    symbols = list(frames)
    if isinstance(strategy, type) and issubclass(strategy, MlStrategy):
        strategy_params.setdefault("timeframe", timeframe)
    currency = check_symbols(symbols, strategy, timeframe=timeframe, params=strategy_params)
    for s, candles in frames.items():
        check_period_in_data(candles.index, start, end, what=f"the candles of {s}")
    begin, last = check_period(start, end)
    bar = timeframe_to_timedelta(timeframe)
    if begin is not None:
        strategy_params.setdefault("trade_from", str(begin + bar))
    fed = {
        s: _trim(c, strategy, s, timeframe, strategy_params, begin, last) for s, c in frames.items()
    }
    cerebro = bt.Cerebro(stdstats=False)
    for s, candles in fed.items():
        cerebro.adddata(make_feed(candles, timeframe=timeframe, name=s), name=s)
    cerebro.addstrategy(strategy, **strategy_params)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=commission)
    if slippage_bps:
        cerebro.broker.set_slippage_perc(slippage_bps / 10_000, slip_open=True, slip_out=True)
    cerebro.addanalyzer(EquityRecorder, _name="equity")
    cerebro.addanalyzer(SymbolRecorder, _name="symbols")
    cerebro.addanalyzer(ProgressBar, _name="progress", enabled=progress)
    strat = cerebro.run()[0]

    analysis = strat.analyzers.equity.get_analysis()
    equity = pd.DataFrame(
        analysis["rows"], columns=["dt", "value", "cash", "exposed", "long", "short", "invested"]
    )
    times = pd.DatetimeIndex([bt.num2date(x) - bar for x in equity.pop("dt")], name="time")
    equity.index = times
    keep = np.ones(len(equity), dtype=bool) if begin is None else np.asarray(times >= begin)
    equity = equity[keep]
    basket = equal_weight_basket({s: c["close"] for s, c in fed.items()}, equity.index)
    basket_frame = basket.to_frame()
    trades = list(getattr(strat, "trade_records", []))
    # the book's Sharpe per trading year: the feeds' common calendar (24/7 when they differ)
    served = [getattr(i, "calendar", None) for i in getattr(strat, "predictions", {}).values()]
    calendars = {getattr(c, "name", c): c for c in served}
    book_calendar = next(iter(calendars.values())) if len(calendars) == 1 else None
    summary = summarize(
        equity, basket_frame, trades, analysis["commission"], timeframe, calendar=book_calendar
    )
    summary.update(
        {
            "strategy": strategy.__name__,
            "symbol": ",".join(symbols),
            "timeframe": timeframe,
            "model_key": None,
            "account_currency": currency,
            "buy_and_hold": "equal-weight basket of the symbols",
            "slippage_bps": slippage_bps,
            "fills": len(analysis["orders"]),
            "gross_return": (summary["end_value"] + summary["fees_paid"]) / summary["start_value"]
            - 1,
            "invested_fraction": float(equity["invested"].mean()) if len(equity) else 0.0,
        }
    )
    per_symbol = _per_symbol(strat, fed, equity, keep, analysis, timeframe, summary)
    summary["symbols"] = {
        s: {k: r.summary.get(k) for k in SYMBOL_KEYS} for s, r in per_symbol.items()
    }
    return PortfolioResult(
        summary=summary,
        equity=equity,
        orders=analysis["orders"],
        trades=trades,
        open_trades=list(getattr(strat, "open_trade_records", list)()),
        decisions=list(getattr(strat, "decisions", [])),
        strategy=strat,
        cerebro=cerebro,
        symbols=per_symbol,
        basket=basket_frame,
    )


def _per_symbol(
    strat: Any,
    fed: dict[str, pd.DataFrame],
    book: pd.DataFrame,
    keep: np.ndarray,
    analysis: dict[str, Any],
    timeframe: str,
    book_summary: dict[str, Any],
) -> dict[str, BacktestResult]:
    """A ``BacktestResult`` per symbol: its P&L curve as a value (book start value + its P&L),
    its positions, trades, orders, predictions and no-prediction reasons, over its own bars."""
    bar = timeframe_to_timedelta(timeframe)
    recorded = strat.analyzers.symbols.get_analysis()
    rows = [r for r, k in zip(recorded["rows"], keep, strict=True) if k]
    start_value = float(book_summary["start_value"])
    out: dict[str, BacktestResult] = {}
    for i, data in enumerate(strat.datas):
        s = data._name
        sizes = np.array([r[1][i] for r in rows], dtype=np.float64)
        closes = np.array([r[2][i] for r in rows], dtype=np.float64)
        flows = np.array([r[3][i] for r in rows], dtype=np.float64)
        held = np.where(sizes != 0, sizes * np.nan_to_num(closes), 0.0)
        pnl = flows + held
        frame = pd.DataFrame(
            {
                "value": start_value + pnl,
                "cash": np.nan,
                "exposed": sizes != 0,
                "long": sizes > 0,
                "short": sizes < 0,
                "invested": np.abs(held) / book["value"].to_numpy(),
            },
            index=book.index,
        )
        own = fed[s].index
        frame = frame[(frame.index >= own[0]) & (frame.index <= own[-1])]
        trades = [t for t in strat.trade_records if t.get("symbol") == s]
        orders = [o for o in analysis["orders"] if o.get("symbol") == s]
        decisions = [d for d in getattr(strat, "decisions", []) if d.get("symbol") == s]
        indicator = getattr(strat, "predictions", {}).get(data)
        predictions = reasons = None
        gaps: list[dict[str, Any]] = []
        if indicator is not None:
            first = frame.index[0] if len(frame) else None
            predictions, reasons, gaps = prediction_frame(indicator, bar, first)
            warn_if_no_prediction(indicator, predictions, reasons)
        fees = float(recorded["fees"].get(s, 0.0))
        calendar = getattr(indicator, "calendar", None)
        summary = summarize(frame, fed[s], trades, fees, timeframe, reasons, gaps, calendar)
        summary.update(
            {
                "strategy": book_summary["strategy"],
                "symbol": s,
                "timeframe": timeframe,
                "model_key": served_model_key(indicator),
                "pnl": float(pnl[-1]) if len(pnl) else 0.0,
                "return_contribution": float(pnl[-1] / start_value) if len(pnl) else 0.0,
                "gap_policy": indicator.p.gap_policy if indicator is not None else None,
            }
        )
        if indicator is not None and indicator.schedule is not None:
            summary["version_switches"] = version_switches(predictions, indicator)
        if indicator is not None and len(frame) > 1:
            summary["in_sample"] = in_sample_split(frame, fed[s], trades, timeframe, indicator)
        out[s] = BacktestResult(
            summary=summary,
            equity=frame,
            orders=orders,
            trades=trades,
            decisions=decisions,
            predictions=predictions,
            no_prediction=reasons,
            gaps=gaps,
            strategy=types.SimpleNamespace(
                predictions={data: indicator} if indicator is not None else {},
                decisions=decisions,
            ),
        )
    return out
