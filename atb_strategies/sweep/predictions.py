"""Predictions computed once per (model version, candles) in the sweep's parent process.

A model's predictions do not depend on the strategy's params, so the sweep computes each set
once here, before the cells run, and hands it to every worker (``shared["predictions"]``),
whose prediction cache then serves every cell. ``compute_predictions`` runs only the
``MlPrediction`` indicator, with the params an ``MlStrategy`` would give it, on exactly the
candles ``run_backtest`` would feed (the same ``end`` cut and ``start`` look-back), and stops
at the first bar after its batch is computed; its entries are what ``MlPrediction`` stores
(``indicators.cache``). Should the two ever disagree, a cell simply computes its predictions
itself (a cache miss): results never depend on this pass.

``resolve_model`` pins a sweep's version (``None``/``latest``) to the concrete version and the
fingerprints of its model files, for the cells' hashes; ``model_calendar`` is the trading
calendar of a cell's model, which the screen (annualisation, whole units) and the walk-forward
selection (annualisation) use as the cells' backtests do.

Models travel as data, not paths: ``ship_models`` packs the files of every version the cells
use (``registry.transfer``), once per run, into ``shared["models"]``; ``run_shipped_cell``
(what every executor runs) writes them once per worker process into a private temporary
registry and points the cell's ``registry`` there, so a worker on a machine without the
driver's registry (a Ray node) serves the same model files. One code path for serial, local
and Ray. A cell whose model could not be resolved here keeps its path (and fails with the
reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import backtrader as bt
import pandas as pd

from atb_strategies.backtest.runner import model_history_bars
from atb_strategies.data.feeds import make_feed
from atb_strategies.data.periods import check_period
from atb_strategies.features.calendar import TradingCalendar, bundle_calendar
from atb_strategies.features.periods import bars_per_year
from atb_strategies.indicators.cache import (
    CachedPredictions,
    PredictionKey,
    model_fingerprint,
    prediction_cache,
)
from atb_strategies.indicators.prediction import ASOF, MlPrediction
from atb_strategies.registry.asof import asof_schedule
from atb_strategies.registry.shared import shared_registry
from atb_strategies.registry.transfer import materialised, pack_versions
from atb_strategies.strategies.base import MlStrategy

#: The ``MlStrategy`` params that reach ``MlPrediction`` (the rest cannot change predictions).
PREDICTION_PARAMS = ("symbol", "model_type", "timeframe", "version", "registry", "gap_policy")


def is_ml_strategy(strategy: type) -> bool:
    """True for ``MlStrategy`` subclasses (the strategies whose predictions can be shared)."""
    return isinstance(strategy, type) and issubclass(strategy, MlStrategy)


def prediction_params(strategy: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``MlPrediction`` params an ``MlStrategy`` with ``params`` creates its indicator with."""
    return {
        name: params[name] if name in params else getattr(strategy.params, name, None)
        for name in PREDICTION_PARAMS
    }


def pin_registry(strategy: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with ``registry`` set to the absolute path of the registry an ``MlStrategy``
    would use here (the configured one when not given): the registry ``ship_models`` packs the
    cells' models from (workers never read it; they get the files)."""
    out = dict(params)
    if is_ml_strategy(strategy):
        out["registry"] = str(shared_registry(out.get("registry")).root.resolve())
    return out


def _selected_bundles(
    strategy: type, *, symbol: str, timeframe: str, params: Mapping[str, Any]
) -> tuple[list[Any], tuple[str, ...]] | None:
    """The bundles a cell's model selects now (every version of an ``asof`` schedule, oldest
    first, and when each became available; else the one version), or None for a strategy that
    is no ``MlStrategy`` or a model that cannot be selected."""
    from atb_strategies.exceptions import AtbError

    if not is_ml_strategy(strategy):
        return None
    p = prediction_params(strategy, params)
    sym, tf, mtype = p["symbol"] or symbol, p["timeframe"] or timeframe, p["model_type"]
    given = params.get("version")
    try:
        registry = shared_registry(p["registry"])
        if given == ASOF:
            schedule = asof_schedule(registry.layout, sym, mtype, tf)
            bundles = [registry.select_bundle(sym, mtype, tf, v) for v in schedule.versions]
            return bundles, tuple(str(t) for t in schedule.available_from)
        return [registry.select_bundle(sym, mtype, tf, given)], ()
    except AtbError:
        return None


def resolve_model(
    strategy: type, *, symbol: str, timeframe: str, params: Mapping[str, Any]
) -> tuple[str | None, tuple[str, ...]]:
    """``(version, fingerprints)`` a cell's model resolves to now.

    ``version`` is the concrete version (``latest``/None followed) or ``"asof"``;
    ``fingerprints`` those of its model files (every version of an ``asof`` schedule, then when
    each became available). For a strategy that is no ``MlStrategy``, or a model that cannot
    be selected (the cell will then fail with the reason), the version as given and ``()``.
    """
    given = params.get("version")
    selected = _selected_bundles(strategy, symbol=symbol, timeframe=timeframe, params=params)
    if selected is None:
        return given, ()
    bundles, stamps = selected
    fingerprints = tuple(model_fingerprint(b) for b in bundles) + stamps
    return (ASOF if given == ASOF else bundles[0].version), fingerprints


def model_calendar(
    strategy: type, *, symbol: str, timeframe: str, params: Mapping[str, Any]
) -> TradingCalendar | None:
    """The trading calendar a cell's model was trained on (its bundle's ``calendar``; an
    ``asof`` schedule: its newest version's), which its backtest annualises with and sizes
    by (``units="auto"``). None (24/7) for a strategy that is no ``MlStrategy`` or a model
    that cannot be selected (the cell then fails with the reason)."""
    selected = _selected_bundles(strategy, symbol=symbol, timeframe=timeframe, params=params)
    if not selected or not selected[0]:
        return None
    return bundle_calendar(selected[0][-1].metadata)


def model_bars_per_year(
    strategy: type, *, symbol: str, timeframe: str, params: Mapping[str, Any]
) -> float:
    """Trading bars in a year of ``model_calendar`` (24/7: the bars in 365 days): the
    annualisation of Sharpe and Sortino in a cell's own backtest."""
    calendar = model_calendar(strategy, symbol=symbol, timeframe=timeframe, params=params)
    return bars_per_year(calendar, timeframe)


def fed_candles(
    candles: pd.DataFrame,
    strategy: type,
    *,
    symbol: str,
    timeframe: str,
    start: Any,
    end: Any,
    params: Mapping[str, Any],
) -> pd.DataFrame:
    """The candles ``run_backtest`` feeds for these settings (its ``end`` and ``start`` cuts,
    read by the same ``check_period``: a bare end date is its whole day, a zoned start is UTC),
    so the predictions computed once are the ones every cell's backtest looks up."""
    begin, last = check_period(start, end)
    if last is not None:
        candles = candles.loc[:last]
    if begin is not None:
        history = model_history_bars(strategy, symbol=symbol, timeframe=timeframe, params=params)
        if history is not None:
            first = int(candles.index.searchsorted(begin))
            candles = candles.iloc[max(0, first - (history - 1)) :]
    return candles


class _PredictOnly(bt.Strategy):
    """Creates the ``MlPrediction`` an ``MlStrategy`` would, and stops once it has values."""

    params = tuple((name, None) for name in PREDICTION_PARAMS)

    def __init__(self) -> None:
        self.prediction = MlPrediction(
            self.data, **{name: getattr(self.p, name) for name in PREDICTION_PARAMS}
        )

    def next(self) -> None:
        self.env.runstop()


def compute_predictions(
    candles: pd.DataFrame,
    strategy: type,
    *,
    symbol: str,
    timeframe: str,
    start: Any = None,
    end: Any = None,
    params: Mapping[str, Any],
) -> dict[PredictionKey, CachedPredictions]:
    """The prediction-cache entries a backtest of ``strategy`` with ``params`` would use.

    Returns
    -------
    dict
        ``indicators.cache`` entries (for ``PredictionCache.load``); empty for a strategy that
        is no ``MlStrategy`` or candles too short for the model's warm-up.
    """
    if not is_ml_strategy(strategy):
        return {}
    frame = fed_candles(
        candles, strategy, symbol=symbol, timeframe=timeframe, start=start, end=end, params=params
    )
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(make_feed(frame, timeframe=timeframe, name=symbol), name=symbol)
    cerebro.addstrategy(_PredictOnly, **prediction_params(strategy, params))
    with prediction_cache.active(), prediction_cache.recording() as keys:
        cerebro.run()
    return prediction_cache.export(keys)


def _model_keys(cell: Any) -> tuple[str, list[tuple[str, str, str]]] | None:
    """``(registry root, [(symbol, model_type, version), ...])`` of the model files ``cell``
    reads (the root as resolved here), or None when it reads none or its model cannot be
    selected here."""
    from atb_strategies.exceptions import AtbError
    from atb_strategies.strategies.registry import get_strategy

    strategy = get_strategy(cell.strategy) if isinstance(cell.strategy, str) else cell.strategy
    if not is_ml_strategy(strategy) or not cell.model:
        return None
    p = prediction_params(strategy, {**cell.params, "version": cell.version})
    sym = p["symbol"] or cell.symbol
    tf = p["timeframe"] or cell.settings["timeframe"]
    try:
        registry = shared_registry(p["registry"])
        if cell.version == ASOF:
            versions = list(asof_schedule(registry.layout, sym, p["model_type"], tf).versions)
        else:
            versions = [registry.select_bundle(sym, p["model_type"], tf, cell.version).version]
    except AtbError:
        return None
    root = str(registry.layout.root.resolve())
    return root, [(sym, p["model_type"], v) for v in versions]


def ship_models(cells: Iterable[Any]) -> dict[str, dict[str, bytes]]:
    """The files of every model version ``cells`` read (``pack_versions``), by the cells'
    ``registry`` param as given (``str``): what ``run_shipped_cell`` serves them from on any
    machine."""
    wanted: dict[str, tuple[str, list[tuple[str, str, str]]]] = {}
    for cell in cells:
        found = _model_keys(cell)
        if found is not None:
            given = str(cell.params.get("registry"))
            wanted.setdefault(given, (found[0], []))[1].extend(found[1])
    return {given: pack_versions(root, keys) for given, (root, keys) in wanted.items()}


def shipped_cell(shared: Mapping[str, Any], cell: Any) -> Any:
    """``cell`` with its ``registry`` pointing at a private copy of the shipped models (written
    once per process), when they were shipped; else ``cell`` unchanged."""
    files = (shared.get("models") or {}).get(str(cell.params.get("registry")))
    if files is None:
        return cell
    return replace(cell, params={**cell.params, "registry": str(materialised(files))})


def run_shipped_cell(shared: dict[str, Any], cell: Any) -> dict[str, Any]:
    """``cells.run_cell`` on ``shipped_cell(shared, cell)`` (what every executor runs)."""
    from atb_strategies.sweep.cells import run_cell

    return run_cell(shared, shipped_cell(shared, cell))
