"""One sweep cell: its identity (and the hash that names its file), and ``run_cell``, which
backtests it in a worker with the predictions handed in.

A cell is one strategy with one set of params on one symbol's candles with one model version,
under the sweep's backtest settings (cash, fees, slippage, period). Its hash covers all of that
plus the sha256 of the candles and the fingerprint of the model files it resolved to (not the
registry's path: the same model moved elsewhere is the same cell), so a finished cell found on
disk (``--resume``) is exactly the one that would be computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.sweep.metrics import METRICS

#: Strategy params a cell sets (when the strategy has them and the cell does not set them
#: itself): they change what is recorded or plotted, never a decision, order or fill.
LEAN: dict[str, Any] = {"record_decisions": False, "plot_confidence": False}

#: Bump when a cell's record changes meaning (old cells then run again on --resume).
CELL_FORMAT = 2  # 2: per-bar returns kept (sweep.returns)


@dataclass(frozen=True)
class Cell:
    """What one cell runs.

    Parameters
    ----------
    strategy : str or type
        A registered strategy name (``strategies.registry``) or a ``bt.Strategy`` subclass
        importable by its module path (workers unpickle it).
    symbol : str
        The feed's name; its candles are ``shared["candles"][symbol]``.
    version : str or None
        The model version the strategy is given (``None``: not an ML strategy).
    params : dict
        Every strategy param set by the sweep (grid values and fixed ones), not ``version``.
    settings : dict
        ``run_backtest`` settings: ``timeframe``, ``cash``, ``commission``, ``slippage_bps``,
        ``start``, ``end``.
    model : tuple of str
        Fingerprints of the model files ``version`` resolved to (empty when unknown).
    data : str
        sha256 of the symbol's candles (``candles_digest``).
    """

    strategy: str | type
    symbol: str
    version: str | None
    params: dict[str, Any]
    settings: dict[str, Any]
    model: tuple[str, ...] = ()
    data: str = ""

    @property
    def strategy_name(self) -> str:
        """The registry name, or ``module.Class`` for a class."""
        s = self.strategy
        return s if isinstance(s, str) else f"{s.__module__}.{s.__qualname__}"

    def identity(self) -> dict[str, Any]:
        """Everything the cell's result depends on, as plain JSON values."""
        return {
            "format": CELL_FORMAT,
            "strategy": self.strategy_name,
            "symbol": self.symbol,
            "version": self.version,
            "model": list(self.model),
            "data": self.data,
            # the registry's path is not part of it: ``model`` identifies the model files
            "params": {k: self.params[k] for k in sorted(self.params) if k != "registry"},
            "settings": {k: self.settings[k] for k in sorted(self.settings)},
        }

    def digest(self) -> str:
        """The cell's name: the first 20 hex digits of the sha256 of ``identity()``."""
        text = json.dumps(self.identity(), sort_keys=True, default=json_default)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def candles_digest(candles: pd.DataFrame) -> str:
    """sha256 of the candles' times, column names and values (every column)."""
    index = pd.DatetimeIndex(candles.index)
    digest = hashlib.sha256(index.as_unit("ns").asi8.tobytes())
    for name in candles.columns:
        digest.update(str(name).encode() + b"\0")
        column = candles[name]
        if pd.api.types.is_numeric_dtype(column):
            digest.update(np.ascontiguousarray(column, dtype=np.float64).tobytes())
        else:
            digest.update("\0".join(map(str, column)).encode())
    return digest.hexdigest()


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)``: numpy scalars as Python numbers, anything else as text."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return str(value)


def plain(value: Any) -> Any:
    """``value`` as JSON would give it back (timestamps as text, numpy as Python numbers)."""
    return json.loads(json.dumps(value, default=json_default))


def trades_table(trades: list[dict[str, Any]]) -> dict[str, list]:
    """Trades as ``{"columns": [...], "rows": [[...], ...]}`` (a third of the size of a list of
    dicts in JSON); ``trades_records`` turns it back."""
    columns = list(dict.fromkeys(k for t in trades for k in t))
    return {"columns": columns, "rows": [[t.get(k) for k in columns] for t in trades]}


def trades_records(table: dict[str, list]) -> list[dict[str, Any]]:
    """The list of trade dicts of a ``trades_table``."""
    return [dict(zip(table["columns"], row, strict=True)) for row in table["rows"]]


def _strategy_class(strategy: str | type) -> type:
    from atb_strategies.strategies.registry import get_strategy

    return get_strategy(strategy) if isinstance(strategy, str) else strategy


def run_cell(shared: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """Backtest ``cell`` (the function every executor runs; see ``executors.run_tasks``).

    ``shared["predictions"]`` (entries of ``indicators.cache``) is loaded into this process's
    prediction cache first, so the backtest reads the predictions the parent computed instead
    of running the model; ``shared["candles"]`` maps symbols to candles. The backtest records
    only what the record reads: no decisions, no confidence indicator (``LEAN``), the fills
    counted, not kept (``record_orders=False``); every number is that of a full backtest.

    Returns
    -------
    dict
        The cell's record (JSON values): ``metrics``, ``bars``, ``in_sample_bars`` and
        ``oos_from`` (the model's first unseen bar, None when unknown), ``model_key``,
        ``summary``, ``trades`` (a ``trades_table``), ``returns`` (the per-bar returns,
        ``returns.encode_returns``), ``error`` None, and ``worker`` (pid,
        host, seconds, and the prediction-cache ``hits`` and ``misses`` of this backtest).
    """
    from atb_strategies.backtest.runner import run_backtest
    from atb_strategies.indicators.cache import prediction_cache
    from atb_strategies.sweep.returns import encode_returns

    t0 = time.perf_counter()
    prediction_cache.load(shared.get("predictions") or {})
    settings = cell.settings
    params = dict(cell.params)
    if cell.version is not None:
        params["version"] = cell.version
    strategy = _strategy_class(cell.strategy)
    keys = strategy.params._getkeys()
    for name, value in LEAN.items():  # no decisions, no plot: unless the cell sets them itself
        if name in keys:
            params.setdefault(name, value)
    with prediction_cache.active():
        before = prediction_cache.counters()
        result = run_backtest(
            shared["candles"][cell.symbol],
            strategy,
            symbol=cell.symbol,
            timeframe=settings["timeframe"],
            cash=settings["cash"],
            commission=settings["commission"],
            slippage_bps=settings["slippage_bps"],
            start=settings["start"],
            end=settings["end"],
            record_orders=False,
            **params,
        )
        after = prediction_cache.counters()
    summary = plain(result.summary)
    guard = summary.get("in_sample") or {}
    period = guard.get("training_period")
    return {
        "metrics": {name: summary.get(name) for name in METRICS},
        "bars": summary.get("bars"),
        "in_sample_bars": guard.get("in_sample_bars"),
        "oos_from": period.get("available_from") if isinstance(period, dict) else None,
        "model_key": summary.get("model_key"),
        "summary": summary,
        "trades": trades_table(plain(result.trades)),
        "returns": encode_returns(result.equity),
        "error": None,
        "worker": {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "seconds": time.perf_counter() - t0,
            "hits": after["hits"] - before["hits"],
            "misses": after["misses"] - before["misses"],
        },
    }
