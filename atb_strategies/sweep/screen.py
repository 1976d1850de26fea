"""The vectorised pre-screen of a sweep (``run_sweep(screen=True)``, ``atb sweep --screen``).

Every cell of the grid is simulated over its model's cached predictions by the compiled loop
of ``screen_kernel`` (the ``VirtualBook`` fills: next-bar-open entries and exits, bracket
stop-loss and take-profit by the bar's range with backtrader's order of checks, sizing by
confidence, commission and slippage) instead of a backtrader run; the best ``verify`` cells by
the ranking metric are then backtested by backtrader as usual, and the screen is compared with
those backtests (Spearman rank correlation of the metric, and each cell's return difference).

The screen keeps per-cell summary statistics only (no per-bar returns: 10,000 cells x 18,000
bars would need 720 MB as float32). The overfitting statistics therefore take their number of
trials and the variance of the Sharpe ratios from all screened cells (the deflated Sharpe of
each verified cell against the expected best of every screened trial), while PBO and SPA/StepM,
which need per-bar returns, are computed over the verified cells (``deflate_over_screen``).

A cell the screen cannot model is refused before anything runs: a strategy other than
``MlStrategy``'s rules (its own ``next``, ``signal_for``, ``action_for`` or ``_enter``), or a
guard (``max_model_age``, ``drift_action``, ``max_sentiment_age``) that changes decisions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.sweep.cells import Cell
from atb_strategies.sweep.metrics import METRICS
from atb_strategies.sweep.screen_kernel import HAVE_NUMBA, PARAMS, STATS, simulate_cells

log = logging.getLogger(__name__)

#: Default number of screened cells verified by backtrader.
DEFAULT_VERIFY = 20

#: Params whose non-default value the screen cannot model (they change decisions).
_GUARDS = ("max_model_age", "drift_action", "max_sentiment_age")

#: ``MlStrategy`` methods a subclass must not override for the screen to model it.
_RULES = ("next", "signal_for", "action_for", "_enter", "_exit")

ENGINE = "numba" if HAVE_NUMBA else "python"


@dataclass
class ScreenResult:
    """What ``screen_cells`` produced: ``frame`` (one row per cell, in cell order: ``cell``,
    the grid params, ``symbol``, ``version``, the ``METRICS``, ``bars``, ``sharpe_per_bar``,
    ``error``), the prediction-cache ``entries`` and per-group predicted ``returns`` (handed to
    the verifying backtests and the threshold warnings), and ``seconds`` (simulation only)."""

    frame: pd.DataFrame
    entries: dict = field(default_factory=dict)
    returns: dict = field(default_factory=dict)
    seconds: float = 0.0
    prediction_seconds: float = 0.0


def check_screenable(cls: type, cells: Sequence[Cell]) -> None:
    """Refuse a strategy or params the screen cannot model (see the module docstring).

    Raises
    ------
    ConfigurationError
        Naming the method or param and what to do.
    """
    from atb_strategies.strategies.base import MlStrategy

    if not (isinstance(cls, type) and issubclass(cls, MlStrategy)):
        raise ConfigurationError(
            f"screen=True models MlStrategy's rules; {getattr(cls, '__name__', cls)} is no "
            "MlStrategy. Run the sweep without screen (--screen)."
        )
    own = [m for m in _RULES if getattr(cls, m) is not getattr(MlStrategy, m)]
    if own:
        raise ConfigurationError(
            f"screen=True models MlStrategy's rules, and {cls.__name__} overrides "
            f"{', '.join(own)}. Run the sweep without screen (--screen)."
        )
    for cell in cells:
        for name in _GUARDS:
            if cell.params.get(name) is not None:
                raise ConfigurationError(
                    f"screen=True does not model the {name!r} guard (set to "
                    f"{cell.params[name]!r}); run the sweep without screen (--screen), or "
                    f"without {name}."
                )


def params_matrix(cls: type, cells: Sequence[Cell], *, closes: bool = False) -> np.ndarray:
    """(cells, 9): each cell's ``screen_kernel.PARAMS`` (its params, else the class default);
    ``units`` is 1 where the strategy buys whole units: ``"whole"``, or ``"auto"`` when the
    model's calendar ``closes`` (``MlStrategy.entry_size``)."""
    rows = []
    for cell in cells:
        row = []
        for name in PARAMS:
            value = cell.params.get(name, getattr(cls.params, name))
            if name == "units":
                row.append(float(value == "whole" or (value == "auto" and closes)))
            else:
                row.append(float(bool(value)) if name == "allow_shorts" else float(value))
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(len(cells), len(PARAMS))


def _metrics(
    stats: np.ndarray, cash: float, bars: int, years: float, per_year: float
) -> dict[str, np.ndarray]:
    """``METRICS`` (as ``backtest.runner.value_metrics`` and ``summarize`` compute them) from
    the kernel's accumulators, every cell at once; NaN where the backtest says None."""
    s = {name: stats[:, i] for i, name in enumerate(STATS)}
    end = s["end_value"]
    n = s["n_r"]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, s["sum_r"] / n, np.nan)
        var = np.where(n > 1, (s["sum_r2"] - n * mean**2) / (n - 1), 0.0)
        sd = np.sqrt(np.maximum(var, 0.0))
        sd = np.where(sd > 1e-15 * np.maximum(np.abs(mean), 1.0), sd, 0.0)
        dsd = np.where(s["n_down"] > 0, np.sqrt(s["down_r2"] / s["n_down"]), 0.0)
        sharpe_bar = np.where(sd > 0, mean / sd, np.nan)
        total = end / cash - 1
        cagr = (
            np.where(end > 0, np.abs(end / cash) ** (1 / years) - 1, np.nan)
            if years > 0
            else np.full(len(end), np.nan)
        )
        trades = s["trades"]
        return {
            "total_return": total,
            "cagr": cagr,
            "sharpe": sharpe_bar * math.sqrt(per_year),
            "sortino": np.where(dsd > 0, mean / dsd * math.sqrt(per_year), np.nan),
            "max_drawdown": s["max_drawdown"],
            "trades": trades,
            "win_rate": np.where(trades > 0, s["wins"] / trades, np.nan),
            "exposure": s["exposed_bars"] / bars if bars else np.zeros(len(end)),
            "fees_paid": s["fees"],
            "sharpe_per_bar": np.where(sd > 0, sharpe_bar, 0.0),
        }


@dataclass
class _Group:
    bars: np.ndarray  # (n, 4) open, high, low, close
    times: pd.DatetimeIndex
    ret: np.ndarray
    conf: np.ndarray
    first: int


def _group_inputs(
    cls: type,
    cell: Cell,
    frames: Mapping[str, pd.DataFrame],
    settings: Mapping[str, Any],
) -> tuple[_Group, dict]:
    """The fed bars and cached predictions of ``cell``'s group (computed once here, as
    ``runner._share_predictions`` does), and the cache entries."""
    from atb_strategies.sweep.predictions import compute_predictions, fed_candles

    params = {**cell.params, "version": cell.version}
    kwargs = {
        "symbol": cell.symbol,
        "timeframe": settings["timeframe"],
        "start": settings["start"],
        "end": settings["end"],
        "params": params,
    }
    frame = fed_candles(frames[cell.symbol], cls, **kwargs)
    entries = compute_predictions(frames[cell.symbol], cls, **kwargs)
    if len(entries) != 1:
        raise ConfigurationError(
            f"screen=True needs one prediction set per model; {cell.symbol} {cell.version} "
            f"gave {len(entries)}. Run the sweep without screen (--screen)."
        )
    lines = next(iter(entries.values())).lines
    ret = np.asarray(lines["predicted_return"], dtype=np.float64)
    conf = np.asarray(lines["confidence"], dtype=np.float64)
    if len(ret) != len(frame):
        raise ConfigurationError(
            f"screen=True: {len(ret)} predictions for {len(frame)} fed bars of {cell.symbol}; "
            "run the sweep without screen (--screen)."
        )
    bars = frame[["open", "high", "low", "close"]].to_numpy(dtype=np.float64)
    # the backtest's equity starts at the first fed bar, or at ``start`` (bars before it only
    # warm the model up); bars without a prediction make no decision
    first = 0
    if settings["start"] is not None:
        first = int(frame.index.searchsorted(pd.Timestamp(settings["start"])))
    return _Group(bars, pd.DatetimeIndex(frame.index), ret, conf, first), entries


def screen_cells(
    cls: type,
    cells: Sequence[Cell],
    hashes: Sequence[str],
    frames: Mapping[str, pd.DataFrame],
    settings: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    group_of: Any,
) -> ScreenResult:
    """Simulate every cell (see the module docstring).

    Parameters
    ----------
    cls : type
        The ``MlStrategy`` subclass (``check_screenable`` first).
    cells, hashes
        The sweep's cells and their names.
    frames, settings
        Candles per symbol and the sweep's backtest settings.
    grid
        The swept params (columns of the frame).
    group_of : callable
        ``(cls, cell) -> key`` of the cells that share predictions (``runner._group``).
    """
    from atb_strategies.features.periods import bars_per_year
    from atb_strategies.sweep.predictions import model_calendar
    from atb_strategies.sweep.report import param_column

    if not HAVE_NUMBA:
        log.warning(
            "sweep: numba is not installed: the screen runs its loop in Python (about 1000x "
            "slower); pip install 'atb-strategies[sweep]'"
        )
    groups: dict[Any, list[int]] = {}
    for i, cell in enumerate(cells):
        groups.setdefault(group_of(cls, cell), []).append(i)
    columns: dict[str, np.ndarray] = {
        name: np.full(len(cells), np.nan) for name in (*METRICS, "sharpe_per_bar")
    }
    n_bars = np.zeros(len(cells), dtype=np.int64)
    errors: list[str | None] = [None] * len(cells)
    entries: dict = {}
    returns: dict = {}
    sim = pred = 0.0
    for group, members in groups.items():
        t0 = time.perf_counter()
        try:
            inputs, found = _group_inputs(cls, cells[members[0]], frames, settings)
        except ConfigurationError:
            raise
        except Exception as e:  # the model cannot be loaded: these cells fail with the reason
            for i in members:
                errors[i] = f"{type(e).__name__}: {e}"
            continue
        pred += time.perf_counter() - t0
        entries.update(found)
        returns[group] = inputs.ret
        first_cell = cells[members[0]]
        calendar = model_calendar(  # the model's, as in the cells' backtests
            cls,
            symbol=first_cell.symbol,
            timeframe=settings["timeframe"],
            params={**first_cell.params, "version": first_cell.version},
        )
        per_year = bars_per_year(calendar, settings["timeframe"])
        closes = calendar is not None and not calendar.always_open
        t0 = time.perf_counter()
        stats = simulate_cells(
            inputs.bars,
            inputs.ret,
            inputs.conf,
            inputs.first,
            params_matrix(cls, [cells[i] for i in members], closes=closes),
            settings["cash"],
            settings["commission"],
            settings["slippage_bps"] / 10_000,
        )
        sim += time.perf_counter() - t0
        bars = len(inputs.bars) - inputs.first
        years = 0.0
        if bars > 1:
            span = inputs.times[-1] - inputs.times[inputs.first]
            years = span / pd.Timedelta(days=365.25)
        for name, values in _metrics(stats, settings["cash"], bars, years, per_year).items():
            columns[name][members] = values
        n_bars[members] = bars
    frame = pd.DataFrame(
        {
            "cell": list(hashes),
            **{param_column(name): [c.params[name] for c in cells] for name in grid},
            "symbol": [c.symbol for c in cells],
            "version": [c.version for c in cells],
            **{name: columns[name] for name in METRICS},
            "bars": n_bars,
            "sharpe_per_bar": columns["sharpe_per_bar"],
            "error": errors,
        }
    )
    log.info("sweep: screened %d cell(s) in %.2f s (%s)", len(cells), sim, ENGINE)
    return ScreenResult(frame, entries, returns, sim, pred)


def select_verified(frame: pd.DataFrame, rank_by: str, verify: int) -> list[int]:
    """Positions (in cell order) of the best ``verify`` screened cells by ``rank_by``, and the
    first cell of each distinct screen error (its backtest then records the error)."""
    from atb_strategies.sweep.report import rank_cells

    ranked = rank_cells(frame, rank_by)
    chosen = set(ranked.index[:verify])
    failed = frame[frame["error"].notna()]
    chosen |= set(failed.drop_duplicates("error").index)
    return [i for i, label in enumerate(frame.index) if label in chosen]


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy import stats

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return None
    return float(stats.spearmanr(a[ok], b[ok]).statistic)


def agreement(screen: pd.DataFrame, results: pd.DataFrame, rank_by: str) -> dict[str, Any]:
    """The screen against backtrader on the verified cells: Spearman of ``rank_by`` and of the
    total return (None under 3 cells or for a constant column), and per cell both values, the
    return difference (backtest - screen) and the trades of each."""
    s = screen.set_index("cell")
    rows = []
    for _, row in results.iterrows():
        mine = s.loc[row["cell"]]
        bt_ret = _float(row["total_return"])
        sc_ret = _float(mine["total_return"])
        rows.append(
            {
                "cell": row["cell"],
                f"screen_{rank_by}": _float(mine[rank_by]),
                f"backtest_{rank_by}": _float(row[rank_by]),
                "screen_return": sc_ret,
                "backtest_return": bt_ret,
                "return_difference": bt_ret - sc_ret,
                "screen_trades": _float(mine["trades"]),
                "backtest_trades": _float(row["trades"]),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return {"verified": 0, "spearman": None, "spearman_return": None, "per_cell": []}
    diff = table["return_difference"].abs()
    return {
        "verified": len(table),
        "spearman": _spearman(
            table[f"screen_{rank_by}"].to_numpy(float), table[f"backtest_{rank_by}"].to_numpy(float)
        ),
        "spearman_return": _spearman(
            table["screen_return"].to_numpy(float), table["backtest_return"].to_numpy(float)
        ),
        "max_abs_return_difference": float(diff.max()) if diff.notna().any() else None,
        "mean_abs_return_difference": float(diff.mean()) if diff.notna().any() else None,
        "per_cell": [{k: _json(v) for k, v in r.items()} for r in rows],
    }


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _json(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def deflate_over_screen(
    results: pd.DataFrame,
    records: Mapping[str, Mapping[str, Any]],
    overfitting: dict[str, Any] | None,
    screen: pd.DataFrame,
) -> dict[str, Any] | None:
    """The overfitting report of the verified cells with the deflated Sharpe taken over every
    screened cell: trials = screened cells, Sharpe variance from their per-bar Sharpe ratios
    (the screen's), each verified cell's PSR against that expected maximum (from its own
    backtested returns, skew and kurtosis). PBO and SPA/StepM stay those of the verified cells
    (``verified_only``). Updates ``results["dsr"]``; returns the report (unchanged when it is
    an error)."""
    from atb_strategies.sweep.overfitting import (
        DSR_LEVEL,
        SPA_ALPHA,
        expected_max_sharpe,
        probabilistic_sharpe,
        verdict,
    )
    from atb_strategies.sweep.returns import returns_matrix

    if not overfitting or "error" in overfitting:
        return overfitting
    ok = screen[screen["error"].isna()]
    sharpes = ok["sharpe_per_bar"].to_numpy(dtype=np.float64)
    sharpes = sharpes[np.isfinite(sharpes)]
    n = len(sharpes)
    variance = float(sharpes.var(ddof=1)) if n > 1 else 0.0
    sr0 = expected_max_sharpe(n, variance)
    names = [c for c in results["cell"] if c in records and records[c].get("returns")]
    matrix = returns_matrix({c: records[c] for c in names})
    psr = dict(zip(matrix.columns, probabilistic_sharpe(matrix, sr0), strict=True))
    results["dsr"] = [float(psr.get(c, math.nan)) for c in results["cell"]]
    report = dict(overfitting)
    dsr = float(psr.get(report["best"], math.nan))
    spa = report.get("spa_pvalue")
    report.update(
        {
            "trials": n,
            "verified_trials": len(names),
            "trials_from": "screen",
            "deflated_sharpe": dsr,
            "sharpe_variance": variance,
            "expected_max_sharpe": sr0,
            "survives": bool(dsr >= DSR_LEVEL and spa is not None and spa < SPA_ALPHA),
            "note": (
                f"deflated Sharpe over the {n} screened cells (trials and Sharpe variance from "
                f"the screen); PBO and SPA/StepM over the {len(names)} backtested cells"
            ),
        }
    )
    report["verdict"] = verdict(report).replace(f"over {n} trials", f"over {n} screened trials")
    return report


def write_screen(frame: pd.DataFrame, out: Path) -> Path:
    """``<out>/screen.csv``: every screened cell (through a temporary file and a rename)."""
    path = Path(out) / "screen.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def format_screen(block: Mapping[str, Any]) -> str:
    """The screen's lines for ``atb sweep``: cells screened, then its agreement with the
    verifying backtests (Spearman, return difference per cell)."""

    def num(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rank_by = block["rank_by"]
    lines = [
        f"Screen: {block['screened']} cells in {block['seconds']:.2f} s ({block['engine']}); "
        f"backtrader verified the best {block['verified']} by {rank_by}: Spearman "
        f"{num(block.get('spearman'), '.3f')} ({rank_by}), "
        f"{num(block.get('spearman_return'), '.3f')} (return); return difference "
        f"(backtest - screen) at most {num(block.get('max_abs_return_difference'), '.2e')}"
    ]
    for row in block.get("per_cell", []):
        lines.append(
            f"  {row['cell']}: {rank_by} {num(row[f'screen_{rank_by}'], '.3f')} screen / "
            f"{num(row[f'backtest_{rank_by}'], '.3f')} backtest; return "
            f"{num(row['screen_return'], '+.4f')} / {num(row['backtest_return'], '+.4f')} "
            f"(diff {num(row['return_difference'], '+.2e')})"
        )
    return "\n".join(lines)
