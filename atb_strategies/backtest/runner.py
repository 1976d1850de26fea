"""Run a backtest of an ML strategy on candles and summarise it.

``run_backtest`` builds a ``Cerebro`` with the candles as a correctly-timed feed, the strategy,
cash and commission, an ``EquityRecorder`` analyzer and a progress bar, runs it and returns a
``BacktestResult`` with the summary (see ``summarize``), the equity curve, the trades, and which
bars had no prediction and why (``no_prediction``, ``gaps``).

With ``start``, only the candles the model needs before it are fed: the bundle's
``pipeline.history_bars`` rows before the first traded bar when the features have a fixed
look-back. When a recursive feature (EMA, RSI) makes every earlier bar matter
(``history_bars`` is None), all earlier candles are kept, exactly as a live feed started from
the first candle would see them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd

from atb_strategies.backtest.baselines import run_baselines
from atb_strategies.bundle.lineage import training_period
from atb_strategies.data.feeds import make_feed
from atb_strategies.data.periods import check_period, check_period_in_data
from atb_strategies.exceptions import AtbError, CandleDataError, ConfigurationError
from atb_strategies.features.calendar import TradingCalendar
from atb_strategies.features.candles import rows_span_gap, timeframe_to_timedelta
from atb_strategies.features.periods import bars_per_year
from atb_strategies.registry.shared import shared_registry
from atb_strategies.strategies.base import NO_PREDICTION_REASONS, MlStrategy

log = logging.getLogger(__name__)


_COMPLETED, _PARTIAL = bt.Order.Completed, bt.Order.Partial


class EquityRecorder(bt.Analyzer):
    """Per bar: time, portfolio value, cash, whether any position is open, any long, any short,
    the fraction of the value held in positions; total commission, the number of completed
    orders (``fills``) and, unless ``orders=False`` (a sweep cell reads only their number), each
    completed order as a dict."""

    params = (("orders", True),)

    def create_analysis(self) -> None:
        self.rows: list[tuple[float, float, float, bool, bool, bool]] = []
        self.commission = 0.0
        self.fills = 0
        self.orders: list[dict[str, Any]] = []
        self._keep_orders = bool(self.p.orders)

    def start(self) -> None:
        # the feeds' close lines and the strategy's clock, looked up once, not per bar
        strategy = self.strategy
        self._closes = [(data, data.lines.close) for data in strategy.datas]
        self._clock = strategy.lines.datetime

    def next(self) -> None:  # every bar: one pass over the feeds, no intermediate lists
        broker = self.strategy.broker
        long = short = False
        held = 0
        for data, close in self._closes:
            size = broker.getposition(data).size  # what strategy.getposition(data) returns
            if size > 0:
                long = True
            elif size < 0:
                short = True
            held += abs(size) * float(close[0])
        value = broker.getvalue()
        self.rows.append(
            (
                self._clock[0],
                value,
                broker.getcash(),
                long or short,
                long,
                short,
                held / value if value > 0 else 0.0,
            )
        )

    def notify_order(self, order: bt.Order) -> None:
        status = order.status
        if status != _COMPLETED and status != _PARTIAL:
            return
        executed = order.executed
        if executed.size:
            self.commission += float(executed.comm)
        if status != _COMPLETED:
            return
        self.fills += 1
        if self._keep_orders:
            info = order.info
            self.orders.append(
                {
                    "time": bt.num2date(executed.dt).isoformat(),
                    "symbol": getattr(order.data, "_name", ""),
                    "side": "buy" if order.isbuy() else "sell",
                    "size": float(executed.size),
                    "price": float(executed.price),
                    "commission": float(executed.comm),
                    "role": info.get("role"),
                    "model_key": info.get("model_key"),
                    "predicted_return": info.get("predicted_return"),
                }
            )

    def get_analysis(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "commission": self.commission,
            "orders": self.orders,
            "fills": self.fills,
        }


class ProgressBar(bt.Analyzer):
    """A tqdm progress bar over the bars of the first data feed (when its length is known)."""

    params = (("enabled", True),)

    def start(self) -> None:
        self._bar = None
        total = self.strategy.datas[0].buflen()
        if self.p.enabled and total > 1:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="backtest", unit="bar", leave=False)

    def next(self) -> None:
        if self._bar is not None:
            self._bar.update(len(self.strategy.datas[0]) - self._bar.n)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass
class BacktestResult:
    """What a backtest produced: summary numbers, equity curve, orders and closed trades.

    ``equity`` (columns ``value``, ``cash``, ``exposed``, ``long``, ``short``), ``predictions``
    and ``no_prediction`` are indexed by candle open time, like the input candles; times inside
    ``orders``, ``trades`` and ``decisions`` are backtrader's bar (close) times.

    ``no_prediction`` holds, for every fed bar without a prediction, why (a key of
    ``NO_PREDICTION_REASONS``: ``"warm_up"``, ``"gap"``, ``"non_finite_output"``,
    ``"implausible_output"`` or ``"model"``); ``gaps`` lists the gaps
    in the fed candles (``after``/``resumes``: open times of the bars either side,
    ``missing_bars``). Both are None/empty when the strategy has no ``MlPrediction``.
    """

    summary: dict[str, Any]
    equity: pd.DataFrame
    orders: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    predictions: pd.DataFrame | None = None
    no_prediction: pd.Series | None = None
    gaps: list[dict[str, Any]] = field(default_factory=list)
    strategy: Any = None
    cerebro: Any = None
    #: trades still open after the last bar, marked to its close (``exit_reason`` "end_of_data")
    open_trades: list[dict[str, Any]] = field(default_factory=list)


def value_metrics(
    values: pd.Series, timeframe: str, calendar: TradingCalendar | str | None = None
) -> dict[str, Any]:
    """Start, end, bars, start and end value, total return, CAGR, Sharpe, Sortino and max
    drawdown of a value series indexed by time (per-bar returns, zero risk-free rate,
    annualised with the trading bars in a year of ``calendar``: on 24/7 (None) the bars in 365
    days, on a market that closes its sessions' bars, ``features.periods.bars_per_year``).
    CAGR compounds over calendar years, whatever the market's hours."""
    v = values.to_numpy(dtype=np.float64)
    start, end = v[0], v[-1]
    span = values.index[-1] - values.index[0]
    years = span / pd.Timedelta(days=365.25) if len(v) > 1 else 0.0
    rets = np.diff(v) / v[:-1] if len(v) > 1 else np.array([])
    per_year = bars_per_year(calendar, timeframe)
    sd = rets.std(ddof=1) if len(rets) > 1 else 0.0
    downside = rets[rets < 0]
    dsd = math.sqrt(np.mean(downside**2)) if len(downside) else 0.0
    drawdown = 1.0 - v / np.maximum.accumulate(v)
    return {
        "start": str(values.index[0]),
        "end": str(values.index[-1]),
        "bars": len(v),
        "start_value": float(start),
        "end_value": float(end),
        "total_return": float(end / start - 1),
        "cagr": float((end / start) ** (1 / years) - 1) if years > 0 and end > 0 else None,
        "sharpe": float(rets.mean() / sd * math.sqrt(per_year)) if sd > 0 else None,
        "sortino": float(rets.mean() / dsd * math.sqrt(per_year)) if dsd > 0 else None,
        "max_drawdown": float(drawdown.max()) if len(drawdown) else 0.0,
    }


def summarize(
    equity: pd.DataFrame,
    candles: pd.DataFrame,
    trades: list[dict[str, Any]],
    commission: float,
    timeframe: str,
    no_prediction: pd.Series | None = None,
    gaps: list[dict[str, Any]] | None = None,
    calendar: TradingCalendar | str | None = None,
) -> dict[str, Any]:
    """Total return, CAGR, Sharpe, Sortino, max drawdown, trades, win rate, exposure, fees, and
    buy-and-hold over the same bars. Sharpe and Sortino use per-bar returns, a zero risk-free
    rate, and are annualised with the trading bars in a year of ``calendar`` (the model's;
    None: 24/7, the bars in 365 days).

    With ``no_prediction`` (reason code per bar without a prediction, indexed by open time, as
    in ``BacktestResult``), also ``bars_without_prediction`` (over the equity's bars) and
    ``no_prediction``: per reason code, ``{"bars": n, "why": text}``; ``gaps`` is copied in as
    given (the gaps the traded bars' predictions read across). Without it these are None and
    empty.
    """
    closes = candles.loc[equity.index[0] : equity.index[-1], "close"]
    wins = [t for t in trades if t.get("pnl_net", 0) > 0]
    return {
        **value_metrics(equity["value"], timeframe, calendar),
        "trades": len(trades),
        "win_rate": float(len(wins) / len(trades)) if trades else None,
        "exposure": float(equity["exposed"].mean()) if len(equity) else 0.0,
        "fees_paid": float(commission),
        "buy_and_hold_return": float(closes.iloc[-1] / closes.iloc[0] - 1)
        if len(closes) > 1
        else None,
        **_no_prediction_summary(equity.index, no_prediction, gaps),
    }


def _no_prediction_summary(
    index: pd.DatetimeIndex, no_prediction: pd.Series | None, gaps: list[dict[str, Any]] | None
) -> dict[str, Any]:
    if no_prediction is None:
        return {"bars_without_prediction": None, "no_prediction": {}, "gaps": list(gaps or [])}
    inside = no_prediction[no_prediction.index.isin(index)]
    counts = inside.value_counts()
    return {
        "bars_without_prediction": len(inside),
        "no_prediction": {
            code: {"bars": int(counts[code]), "why": why}
            for code, why in NO_PREDICTION_REASONS.items()
            if code in counts.index
        },
        "gaps": list(gaps or []),
    }


def model_history_bars(
    strategy: type[bt.Strategy], *, symbol: str, timeframe: str, params: dict[str, Any]
) -> int | None:
    """Candles a prediction of ``strategy``'s model reads, ending at its bar, or None for all.

    That is the bundle's ``pipeline.history_bars`` (warm-up + window) for an ``MlStrategy``
    whose features all have a fixed look-back. None when every earlier candle matters (a
    recursive feature such as an EMA or RSI), when ``strategy`` is not an ``MlStrategy``, or
    when its model cannot be selected here (the backtest then reports why).
    """
    bundle = strategy_bundle(strategy, symbol=symbol, timeframe=timeframe, params=params)
    return bundle.pipeline.history_bars if bundle is not None else None


def strategy_bundle(
    strategy: type[bt.Strategy], *, symbol: str, timeframe: str, params: dict[str, Any]
) -> Any:
    """The bundle an ``MlStrategy`` with ``params`` would select, or None."""
    if not (isinstance(strategy, type) and issubclass(strategy, MlStrategy)):
        return None

    def param(name: str) -> Any:
        return params[name] if name in params else getattr(strategy.params, name)

    if param("version") == "asof":
        return None
    try:
        return shared_registry(param("registry")).select_bundle(
            param("symbol") or symbol,
            param("model_type"),
            param("timeframe") or timeframe,
            param("version"),
        )
    except AtbError:
        return None


def first_unseen_bar(
    strategy: type[bt.Strategy],
    symbol: str,
    timeframe: str,
    params: dict[str, Any],
    start: str | None = None,
) -> str:
    """The later of ``start`` and the first bar the strategy's model never saw in training
    (``--oos-only``).

    Raises
    ------
    ConfigurationError
        When the model's training period is unknown (reference bundles) or it is not an
        ``MlStrategy``.
    """
    bundle = strategy_bundle(strategy, symbol=symbol, timeframe=timeframe, params=params)
    period = training_period(bundle.metadata.raw) if bundle is not None else None
    if period is None:
        what = bundle.key if bundle is not None else strategy.__name__
        raise ConfigurationError(
            f"oos_only=True needs the model's training period, and {what} does not record one "
            "(training period unknown). Pass start_date='YYYY-MM-DD' after its training data."
        )
    first = period.available_from
    return str(max(first, pd.Timestamp(start)) if start is not None else first)


def prediction_coverage(
    indicator: Any, bar: pd.Timedelta
) -> tuple[pd.Series, list[dict[str, Any]], pd.DatetimeIndex]:
    """From an ``MlPrediction`` after the run: the reason code of every fed bar without a
    prediction, the gaps in the fed candles (with the ``position`` of the bar after each) and
    the fed bars' open times."""
    data = indicator.data
    days = np.asarray(data.datetime.array, dtype=np.float64)
    close_ns = np.round((days - 719163.0) * 86_400_000.0).astype(np.int64) * 1_000_000
    opens = pd.DatetimeIndex(close_ns - bar.value, name="time")
    n = len(opens)
    ret = np.asarray(indicator.lines.predicted_return.array[:n], dtype=np.float64)
    missing = ~np.isfinite(ret)
    min_bars = int(indicator.bundle.pipeline.min_bars)
    gap_pos = np.unique(np.searchsorted(close_ns, [int(t.value) for t in indicator.gap_bars]))
    gap_pos = gap_pos[(gap_pos > 0) & (gap_pos < n)]
    pos = np.arange(n)
    codes = np.full(n, "model", dtype=object)
    codes[rows_span_gap(pos, gap_pos, min_bars)] = "gap"
    codes[pos < min_bars - 1] = "warm_up"
    # bars whose model output was rejected (inference.decode): their reason code
    rejected = getattr(indicator, "rejected_bars", [])
    if rejected and n:
        times = np.array([t.value for t, _ in rejected], dtype=np.int64)
        at = np.clip(np.searchsorted(close_ns, times), 0, n - 1)
        hit = close_ns[at] == times
        codes[at[hit]] = np.array([why for _, why in rejected], dtype=object)[hit]
    reasons = pd.Series(codes[missing], index=opens[missing], name="no_prediction")
    # bars missing in trading time: a closure of the model's calendar counts none
    calendar = getattr(indicator, "calendar", None)
    if len(gap_pos) and calendar is not None and not calendar.always_open:
        ordinal = calendar.ordinals(close_ns, indicator.bundle.timeframe, stamped="close")
        missing_bars = ordinal[gap_pos] - ordinal[gap_pos - 1] - 1
    else:
        missing_bars = np.array([int((opens[g] - opens[g - 1]) / bar) - 1 for g in gap_pos])
    gaps = [
        {
            "after": str(opens[g - 1]),
            "resumes": str(opens[g]),
            "missing_bars": int(m),
            "position": int(g),
        }
        for g, m in zip(gap_pos, missing_bars, strict=True)
    ]
    return reasons, gaps, opens


def prediction_frame(
    indicator: Any, bar: pd.Timedelta, first_traded: pd.Timestamp | None
) -> tuple[pd.DataFrame, pd.Series, list[dict[str, Any]]]:
    """From an ``MlPrediction`` after the run: its lines per fed bar (indexed by open time),
    the reason code of every fed bar without a prediction, and the gaps inside the rows that
    the predictions of the bars from ``first_traded`` on read (None: no traded bar)."""
    reasons, all_gaps, stamps = prediction_coverage(indicator, bar)
    predictions = pd.DataFrame(
        {
            name: np.asarray(getattr(indicator.lines, name).array, dtype=np.float64)
            for name in indicator.lines.getlinealiases()
        },
        index=stamps,
    )
    first = int(stamps.searchsorted(first_traded)) if first_traded is not None else len(stamps)
    reach = first - (int(indicator.bundle.pipeline.min_bars) - 1)
    gaps = [
        {k: v for k, v in g.items() if k != "position"} for g in all_gaps if g["position"] > reach
    ]
    return predictions, reasons, gaps


def served_model_key(indicator: Any) -> str | None:
    """The key of the model an ``MlPrediction`` served: with ``version="asof"`` the schedule's
    (``_key``), else its bundle's; None without one."""
    if getattr(indicator, "schedule", None):
        return getattr(indicator, "_key", None)
    return getattr(indicator, "model_key", None)


def run_backtest(
    candles: pd.DataFrame,
    strategy: type[bt.Strategy],
    *,
    symbol: str,
    timeframe: str,
    cash: float = 10_000.0,
    commission: float = 0.001,
    progress: bool = False,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    slippage_bps: float = 0.0,
    baselines: bool = False,
    record_orders: bool = True,
    **strategy_params: Any,
) -> BacktestResult:
    """Backtest ``strategy`` on ``candles`` (indexed by time) and summarise it.

    Parameters
    ----------
    candles : DataFrame
        OHLCV (plus any columns the model needs), indexed by candle open time.
    strategy : type
        A ``bt.Strategy`` subclass, normally an ``MlStrategy``.
    symbol, timeframe : str
        The feed's name and bar size.
    cash, commission : float
        Starting cash and commission (fraction per trade).
    progress : bool
        Show a progress bar.
    start, end : str or Timestamp, optional
        The traded period (candle open times, inclusive). Before ``start`` only the candles the
        model needs are fed: ``history_bars`` rows (see ``model_history_bars``), or all of them
        when its features are recursive; they warm the model up and are never traded, and
        nothing earlier is even looked at (a gap or a bad candle there does not matter).
    slippage_bps : float
        Slippage in basis points, applied against the trader to every market fill (a broker
        property, like the commission, so the same strategy runs unchanged live).
    baselines : bool
        Also backtest the baselines of ``backtest.baselines`` over the same bars, with the
        same fees and slippage (``summary["baselines"]``).
    record_orders : bool
        Keep every fill in ``orders`` (default True). False keeps only their number
        (``summary["fills"]``) and fees: every other number is the same, and a sweep cell,
        which reads nothing else, builds no dict per fill.
    **strategy_params
        Passed to the strategy.

    Returns
    -------
    BacktestResult
    """
    check_period_in_data(candles.index, start, end, what="the data")
    begin, last = check_period(start, end)
    if last is not None:
        candles = candles.loc[:last]
    bar = timeframe_to_timedelta(timeframe)
    if isinstance(strategy, type) and issubclass(strategy, MlStrategy):
        # the feed's timeframe is ``timeframe`` on purpose, not backtrader's daily default
        strategy_params.setdefault("timeframe", timeframe)
    bundle = strategy_bundle(strategy, symbol=symbol, timeframe=timeframe, params=strategy_params)
    if begin is not None:  # backtrader bar times are close times (see make_feed)
        strategy_params.setdefault("trade_from", str(begin + bar))
        history = bundle.pipeline.history_bars if bundle is not None else None
        if history is not None:
            first = int(candles.index.searchsorted(begin))
            candles = candles.iloc[max(0, first - (history - 1)) :]
    if bundle is not None:
        check_enough_candles(candles, bundle)
    cerebro = bt.Cerebro(stdstats=False)
    feed = make_feed(candles, timeframe=timeframe, name=symbol)
    cerebro.adddata(feed, name=symbol)
    cerebro.addstrategy(strategy, **strategy_params)
    cerebro.broker.setcash(cash)
    cerebro.broker.setcommission(commission=commission)
    if slippage_bps:
        cerebro.broker.set_slippage_perc(slippage_bps / 10_000, slip_open=True, slip_out=True)
    cerebro.addanalyzer(EquityRecorder, _name="equity", orders=record_orders)
    if progress:  # not even a disabled one: it is called on every bar
        cerebro.addanalyzer(ProgressBar, _name="progress", enabled=progress)
    strat = cerebro.run()[0]
    analysis = strat.analyzers.equity.get_analysis()
    rows = analysis["rows"]
    equity = pd.DataFrame(
        rows, columns=["dt", "value", "cash", "exposed", "long", "short", "invested"]
    )
    equity.index = pd.DatetimeIndex(
        [bt.num2date(x) - bar for x in equity.pop("dt")], name="time"
    )  # back to candle open times, like the input frame
    if begin is not None:
        equity = equity.loc[begin:]
    trades = list(getattr(strat, "trade_records", []))
    predictions = no_prediction = None
    gaps: list[dict[str, Any]] = []
    indicator = getattr(strat, "predictions", {}).get(strat.datas[0])
    if indicator is not None:
        first = equity.index[0] if len(equity) else None
        predictions, no_prediction, gaps = prediction_frame(indicator, bar, first)
        warn_if_no_prediction(indicator, predictions, no_prediction)
    calendar = getattr(indicator, "calendar", None)  # the bundle's: Sharpe per trading year
    summary = summarize(
        equity, candles, trades, analysis["commission"], timeframe, no_prediction, gaps, calendar
    )
    summary.update(
        {
            "strategy": strategy.__name__,
            "symbol": symbol,
            "timeframe": timeframe,
            "model_key": served_model_key(indicator),
            "gap_policy": indicator.p.gap_policy if indicator is not None else None,
            "slippage_bps": slippage_bps,
            "fills": analysis["fills"],
            "gross_return": (summary["end_value"] + summary["fees_paid"]) / summary["start_value"]
            - 1,
            "invested_fraction": float(equity["invested"].mean()) if len(equity) else 0.0,
        }
    )
    if indicator is not None and indicator.schedule is not None and predictions is not None:
        summary["version_switches"] = version_switches(predictions, indicator)
    if indicator is not None:
        summary["in_sample"] = in_sample_split(equity, candles, trades, timeframe, indicator)
    if baselines:
        summary["baselines"] = run_baselines(
            candles,
            symbol=symbol,
            timeframe=timeframe,
            start=start,
            end=end,
            cash=cash,
            commission=commission,
            slippage_bps=slippage_bps,
            position_size=float(getattr(strat.p, "position_size", 0.1)),
            invested_fraction=summary["invested_fraction"],
        )
    return BacktestResult(
        summary=summary,
        equity=equity,
        orders=analysis["orders"],
        trades=trades,
        decisions=list(getattr(strat, "decisions", [])),
        predictions=predictions,
        no_prediction=no_prediction,
        gaps=gaps,
        strategy=strat,
        cerebro=cerebro,
        open_trades=list(getattr(strat, "open_trade_records", list)()),
    )


def check_enough_candles(candles: pd.DataFrame, bundle: Any) -> None:
    """Refuse to feed fewer candles than one prediction of ``bundle`` reads (backtrader would
    otherwise run without a single prediction, or fail inside an indicator)."""
    pipe = bundle.pipeline
    if len(candles) >= pipe.min_bars:
        return
    span = f" ({candles.index[0]} .. {candles.index[-1]})" if len(candles) else ""
    raise CandleDataError(
        f"{len(candles)} candle(s) given{span}; model {bundle.key} needs at least "
        f"{pipe.min_bars} ({pipe.warmup_bars} warm-up + {pipe.sequence_length} window) for one "
        "prediction. Give more candles (a longer file or an earlier start of the data)."
    )


def warn_if_no_prediction(indicator: Any, predictions: pd.DataFrame, reasons: Any) -> None:
    """One warning when the model predicted nothing over the whole run, with why."""
    if "predicted_return" not in predictions or predictions["predicted_return"].notna().any():
        return
    why = ""
    if reasons is not None and len(reasons):
        counts = reasons.value_counts()
        why = ": " + ", ".join(f"{n} bar(s) {code}" for code, n in counts.items())
    log.warning(
        "%s made no prediction over the %d bar(s) fed%s. The strategy never traded; see "
        "no_prediction in the summary.",
        getattr(indicator, "model_key", None) or type(indicator).__name__,
        len(predictions),
        why,
    )


def version_switches(predictions: pd.DataFrame, indicator: Any) -> list[dict[str, str]]:
    """``version="asof"``: the bars (open times) where a new version starts serving."""
    served = predictions["version_index"].dropna()
    changed = served.ne(served.shift())
    return [
        {"time": str(t), "version": indicator.bundles[int(v)].key}
        for t, v in served[changed].items()
    ]


_SPLIT_KEYS = ("bars", "total_return", "sharpe", "max_drawdown", "trades", "exposure")


def in_sample_split(
    equity: pd.DataFrame,
    candles: pd.DataFrame,
    trades: list[dict[str, Any]],
    timeframe: str,
    indicator: Any,
) -> dict[str, Any]:
    """The in-sample guard: which traded bars the model was trained or tuned on, and every
    summary metric split into in-sample and out-of-sample.

    Returns ``{"training_period", "in_sample_bars", "out_of_sample_bars", "in_sample",
    "out_of_sample", "warning"}``; ``training_period`` is None (and ``warning`` says "training
    period unknown") for bundles without lineage, such as the reference project's.
    """
    if getattr(indicator, "schedule", None) is not None:  # asof: each bar by an earlier version
        return {
            "training_period": "asof",
            "in_sample_bars": 0,
            "out_of_sample_bars": len(equity),
            "in_sample": None,
            "out_of_sample": None,
            "warning": None,
        }
    return split_by_period(
        equity,
        candles,
        trades,
        timeframe,
        training_period(indicator.bundle.metadata.raw),
        indicator.model_key,
        getattr(indicator, "calendar", None),
    )


def split_by_period(
    equity: pd.DataFrame,
    candles: pd.DataFrame,
    trades: list[dict[str, Any]],
    timeframe: str,
    period: Any,
    key: str,
    calendar: TradingCalendar | str | None = None,
) -> dict[str, Any]:
    """``in_sample_split`` for a known (or None) ``TrainingPeriod`` of model ``key``: the bars
    before the training data, inside it, and after it, each summarised on its own."""
    if period is None:
        return {
            "training_period": None,
            "in_sample_bars": None,
            "out_of_sample_bars": None,
            "in_sample": None,
            "out_of_sample": None,
            "warning": f"training period unknown for {key}: in-sample bars cannot be told apart",
        }
    index = equity.index
    before = index < period.first
    seen = (index >= period.first) & (index < period.available_from)
    # three contiguous segments, each summarised on its own: joining the bars before the
    # training data to those after it would count the in-sample stretch as one return
    segments = {"pre_training": before, "in_sample": seen, "out_of_sample": ~before & ~seen}
    parts = {}
    for name, mask in segments.items():
        part = equity[mask]
        if len(part) < 2:
            parts[name] = None
            continue
        lo, hi = part.index[0] + _bar(timeframe), part.index[-1] + _bar(timeframe)
        inside = [
            t
            for t in trades
            if "closed" in t
            and lo <= pd.Timestamp(t["opened"]) <= hi
            and lo <= pd.Timestamp(t["closed"]) <= hi
        ]
        full = summarize(part, candles, inside, 0.0, timeframe, calendar=calendar)
        parts[name] = {k: full[k] for k in _SPLIT_KEYS}
    n_in, n_before = int(seen.sum()), int(before.sum())
    notes = []
    if n_in:
        notes.append(
            f"{n_in} of {len(equity)} bars ({100 * n_in / len(equity):.0f} %) are inside the "
            f"training period of {key} ({period.first:%Y-%m-%d} .. "
            f"{period.seen_until:%Y-%m-%d %H:%M}): their results are in-sample"
        )
    if n_before:
        notes.append(
            f"{n_before} bar(s) come before its training data: the model was trained on their "
            "future"
        )
    warning = None
    if notes:
        warning = "; ".join(notes) + (
            f". Start at {period.available_from} for out-of-sample bars only."
        )
    return {
        "training_period": period.to_dict(),
        "pre_training_bars": n_before,
        "in_sample_bars": n_in,
        "out_of_sample_bars": int(len(equity) - n_in - n_before),
        **parts,
        "warning": warning,
    }


def _bar(timeframe: str) -> pd.Timedelta:
    return timeframe_to_timedelta(timeframe)
