"""What the backtest charts draw, computed once for the PNG (``backtest.chart``) and the HTML
report (``backtest.html_report``), from a ``BacktestResult`` and its candles.

Every series is indexed by the traded bars' candle open times (``result.equity.index``):

* the close, and the model's predicted close moved to the bar it predicts (``horizon`` bars
  after the bar it was made at), with an error band: the root mean square of the relative
  errors of the predictions whose target bar has closed by then (causal: the band at a bar uses
  no later close);
* the predicted return at the bar it was made at, with the same band around it;
* returns in %: the strategy's; buy-and-hold of the strategy's average invested fraction of the
  capital (the rest in cash), and of all of it; a buy-and-hold value can fall to zero but never
  below, so none of these goes under -100 %;
* the strategy's drawdown in %;
* states per bar, each a boolean mask: long, short, in-sample, no prediction (gap, warm-up), and
  one per guard that fired (model age, drift, sentiment staleness);
* per bar, the decision made at its close (action, signal, reason) and the orders filled in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.backtest.runner import BacktestResult
from atb_strategies.features.candles import timeframe_to_timedelta
from atb_strategies.strategies.guards import fired_guards

#: Bars in the rolling window of the prediction error band (a week of hourly bars).
ERROR_WINDOW = 168


@dataclass
class ChartData:
    """The series of the module docstring (see ``chart_data``)."""

    index: pd.DatetimeIndex
    bar: pd.Timedelta
    horizon: int
    close: pd.Series
    predicted_close: pd.Series  # at the bar it predicts
    predicted_close_band: pd.Series  # +- this much around predicted_close (price units)
    predicted_return: pd.Series  # in %, at the bar it was made at
    error_band: pd.Series  # +- this much around predicted_return (%)
    strategy_return: pd.Series  # %
    hold_scaled_return: pd.Series  # %
    hold_return: pd.Series  # %
    invested_fraction: float
    drawdown: pd.Series  # %, <= 0
    states: dict[str, np.ndarray]  # label -> mask over index, only the states that occur
    thresholds: dict[str, float] = field(default_factory=dict)  # label -> predicted return %
    decisions: pd.DataFrame = field(default_factory=pd.DataFrame)  # by open time
    orders: pd.DataFrame = field(default_factory=pd.DataFrame)  # "time" = open time of the bar
    sentiment: pd.Series | None = None


def bar_length(result: BacktestResult, index: pd.DatetimeIndex) -> pd.Timedelta:
    """The bar size: the summary's timeframe, else the smallest step between bars."""
    timeframe = result.summary.get("timeframe")
    if timeframe:
        return timeframe_to_timedelta(timeframe)
    return (index[1:] - index[:-1]).min() if len(index) > 1 else pd.Timedelta(hours=1)


def prediction_horizon(result: BacktestResult) -> int:
    """Bars between a prediction and the close it predicts (the bundle's output horizon)."""
    strategy = result.strategy
    if strategy is not None and getattr(strategy, "predictions", None):
        indicator = next(iter(strategy.predictions.values()))
        return int(getattr(indicator.bundle.metadata.output, "horizon", 1) or 1)
    return 1


def strategy_thresholds(result: BacktestResult) -> dict[str, float]:
    """The strategy's entry and exit thresholds on the predicted return, in %, by label."""
    p = getattr(result.strategy, "p", None)
    if p is None or not hasattr(p, "long_threshold"):
        return {}
    levels = [("long entry >", float(p.long_threshold))]
    if getattr(p, "allow_shorts", False):
        levels.append(("short entry <", -float(p.short_threshold)))
    exit_at = float(getattr(p, "exit_threshold", 0.0) or 0.0)
    levels.append(("exit long <", -exit_at))
    if getattr(p, "allow_shorts", False):
        levels.append(("exit short >", exit_at))
    out: dict[str, float] = {}
    for text, level in levels:
        out.setdefault(f"{text} {100 * level + 0.0:.3g} %", 100 * level)  # no "-0"
    return out


def prediction_limits(data: ChartData) -> tuple[float, float]:
    """Y limits (%) of the prediction panel: the bulk of the predicted returns (99.9 % of them)
    and their error band, not one outlier nor a threshold far outside the predictions."""
    values = np.abs(data.predicted_return.dropna().to_numpy())
    if not len(values):
        return -1.0, 1.0
    top = float(np.quantile(values, 0.999))
    if data.error_band.notna().any():
        top += float(np.nanmedian(data.error_band.to_numpy()))
    top = 1.15 * max(top, 1e-6)
    return -top, top


def threshold_label(label: str, level: float, limits: tuple[float, float]) -> str:
    """``label``, saying so when ``level`` is outside ``limits`` (drawn at the edge)."""
    return label if limits[0] <= level <= limits[1] else f"{label} (off the scale)"


def held_return(prices: pd.Series, fraction: float) -> pd.Series:
    """Return in % of buying ``fraction`` of the capital's worth at the first price and keeping
    the rest in cash: ``fraction * (price / first - 1)``, never below -100 % for a fraction in
    [0, 1]."""
    return fraction * (prices / float(prices.iloc[0]) - 1) * 100


def chart_data(
    result: BacktestResult, candles: pd.DataFrame, predictions: pd.Series | None = None
) -> ChartData:
    """The series of the module docstring.

    Parameters
    ----------
    result : BacktestResult
        From ``run_backtest``.
    candles : DataFrame
        The candles backtested (with a ``sentiment`` column when the strategy read one).
    predictions : Series, optional
        Predicted close per decision bar; default ``result.predictions["predicted_price"]``.
    """
    equity = result.equity
    index = equity.index
    bar = bar_length(result, index)
    horizon = prediction_horizon(result)
    close = candles["close"].reindex(index)
    if predictions is None and result.predictions is not None:
        predictions = result.predictions["predicted_price"]
    made = (
        predictions.reindex(index).astype(float)
        if predictions is not None
        else pd.Series(np.nan, index=index)
    )
    # the prediction made at bar t (its close) is compared with the close of bar t + horizon
    error = close / made.shift(horizon) - 1  # known at the close of the target bar
    band = np.sqrt((error**2).rolling(ERROR_WINDOW, min_periods=24).mean())
    predicted_return = (made / close - 1) * 100
    if result.predictions is not None and "predicted_return" in result.predictions:
        predicted_return = result.predictions["predicted_return"].reindex(index) * 100
    value = equity["value"]
    invested = float(result.summary.get("invested_fraction") or equity["invested"].mean())
    decisions = _by_open_time(pd.DataFrame(result.decisions), "bar", bar)
    return ChartData(
        index=index,
        bar=bar,
        horizon=horizon,
        close=close,
        predicted_close=made.shift(horizon),
        predicted_close_band=(band.shift(horizon) * made.shift(horizon)),
        predicted_return=predicted_return,
        error_band=band * 100,
        strategy_return=(value / float(value.iloc[0]) - 1) * 100,
        hold_scaled_return=held_return(close, min(max(invested, 0.0), 1.0)),
        hold_return=held_return(close, 1.0),
        invested_fraction=invested,
        drawdown=(value / value.cummax() - 1) * 100,
        states=_states(result, index, decisions),
        thresholds=strategy_thresholds(result),
        decisions=decisions,
        orders=_by_open_time(pd.DataFrame(result.orders), "time", bar),
        sentiment=candles["sentiment"].reindex(index) if "sentiment" in candles else None,
    )


def _by_open_time(frame: pd.DataFrame, column: str, bar: pd.Timedelta) -> pd.DataFrame:
    """Rows keyed by backtrader's bar close time in ``column`` -> also ``"time"``, the bar's
    open time (the charts', like the candles', time)."""
    if not len(frame) or column not in frame:
        return pd.DataFrame({"time": pd.DatetimeIndex([])})
    frame = frame.copy()
    frame["time"] = pd.DatetimeIndex(pd.to_datetime(frame[column])) - bar
    return frame


def _states(
    result: BacktestResult, index: pd.DatetimeIndex, decisions: pd.DataFrame
) -> dict[str, np.ndarray]:
    """Label -> mask of the bars in that state; states that never occur are left out."""
    states = {
        "long position": result.equity["long"].to_numpy(bool),
        "short position": result.equity["short"].to_numpy(bool),
        "in-sample": _in_sample_mask(result.summary, index),
        "no prediction (gap)": _reason_mask(result, index, "gap"),
        "no prediction (warm-up)": _reason_mask(result, index, "warm_up"),
        # a model output that is no prediction (inference.decode): NaN/inf or implausible
        "no prediction (model output rejected)": _reason_mask(result, index, "non_finite_output")
        | _reason_mask(result, index, "implausible_output"),
    }
    for name, times in _guard_times(decisions).items():
        states[f"{name} fired"] = index.isin(times)
    return {label: mask for label, mask in states.items() if mask.any()}


def _guard_times(decisions: pd.DataFrame) -> dict[str, pd.DatetimeIndex]:
    """Guard name -> open times of the bars whose decision it fired on."""
    if "reason" not in decisions:
        return {}
    out: dict[str, list[pd.Timestamp]] = {}
    for time, reason in zip(decisions["time"], decisions["reason"], strict=True):
        for name in fired_guards(reason):
            out.setdefault(name, []).append(time)
    return {name: pd.DatetimeIndex(times) for name, times in sorted(out.items())}


def _in_sample_mask(summary: dict[str, Any], index: pd.DatetimeIndex) -> np.ndarray:
    """Bars inside the model's training period (the in-sample guard)."""
    period = (summary.get("in_sample") or {}).get("training_period")
    if not isinstance(period, dict):
        return np.zeros(len(index), dtype=bool)
    first, available = pd.Timestamp(period["first"]), pd.Timestamp(period["available_from"])
    return np.asarray((index >= first) & (index < available))


def _reason_mask(result: BacktestResult, index: pd.DatetimeIndex, code: str) -> np.ndarray:
    """Per bar of ``index``: no prediction for the reason ``code`` (``"gap"``, ``"warm_up"``)."""
    reasons = result.no_prediction
    if reasons is None or not len(reasons):
        return np.zeros(len(index), dtype=bool)
    return np.asarray(index.isin(reasons.index[reasons.to_numpy() == code]))
