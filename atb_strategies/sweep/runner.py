"""``run_sweep``: backtest a strategy over a grid of params, symbols and model versions.

1. Plan: every (symbol, version, grid combination) is a ``Cell``; "latest" is pinned to the
   concrete version it points to now, and each cell is named by the hash of everything its
   result depends on (``cells.Cell.digest``).
2. Resume: with ``out`` and ``resume``, cells already finished without error in
   ``<out>/cells`` are read back instead of run (failed ones run again).
3. Predictions once: each (symbol, version) prediction set is computed once here
   (``predictions.compute_predictions``) and handed to the workers with the candles through
   ``run_tasks``'s ``shared`` (pickled once per local worker; ``ray.put`` once on Ray;
   ``serial`` reads them in this process). An entry threshold outside the range of the
   predicted returns (``thresholds``: never enters, or enters on every bar) is warned about
   now, before any cell runs.
4. Run: ``executors.run_tasks(predictions.run_shipped_cell, ...)`` (the model files the cells
   read travel as data too: ``predictions.ship_models``); each cell is written atomically as it
   finishes, a failing cell is recorded with its one-line error and the sweep goes on; Ctrl-C
   keeps every finished cell (run again with ``resume=True`` for the rest).
5. Audit (``audit``): the overfitting statistics of the ranked cells (deflated Sharpe, PBO,
   SPA / StepM against buy-and-hold scaled to exposure) and, with ``walk_forward``, walk-
   forward selection, all from the per-bar returns each cell keeps.
6. Report: ``results.csv`` (one row per cell), ``heatmap.png``, ``sweep.json`` (definition,
   counts, warnings, best cells, overfitting, walk-forward), and the frame returned, whose
   ``attrs["warnings"]`` holds the threshold warnings and the ranking's
   (``report.sweep_warnings``), ``attrs["failed"]`` the number of failed cells,
   ``attrs["overfitting"]`` and ``attrs["walk_forward"]`` the audit.

Every grid value and fixed param is checked before anything runs (``grid.check_grid_values``:
the strategy's own ``check_params`` and the type of each param's default), so a value the
strategy refuses is one ``ConfigurationError``, not a sweep of failed cells.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.exceptions import ConfigurationError
from atb_strategies.executors import (
    Deferred,
    TaskFailure,
    check_main_guard,
    default_workers,
    leave_if_bootstrapping,
    run_tasks,
)
from atb_strategies.sweep.audit import audit_sweep
from atb_strategies.sweep.cells import Cell, candles_digest, plain
from atb_strategies.sweep.grid import check_grid, check_grid_values, expand_grid
from atb_strategies.sweep.metrics import METRICS, RANK_METRICS
from atb_strategies.sweep.predictions import (
    compute_predictions,
    is_ml_strategy,
    model_bars_per_year,
    pin_registry,
    prediction_params,
    resolve_model,
    run_shipped_cell,
    ship_models,
)
from atb_strategies.sweep.report import (
    check_rank_by,
    param_column,
    plot_heatmap,
    rank_cells,
    sweep_warnings,
)
from atb_strategies.sweep.screen import (
    DEFAULT_VERIFY,
    ENGINE,
    ScreenResult,
    agreement,
    check_screenable,
    deflate_over_screen,
    screen_cells,
    select_verified,
    write_screen,
)
from atb_strategies.sweep.store import CellStore, write_json_atomic, write_results
from atb_strategies.sweep.thresholds import entry_signals, threshold_warnings
from atb_strategies.sweep.walkforward import check_walk_forward_metric

log = logging.getLogger(__name__)


def _strategy_class(strategy: str | type) -> type:
    from atb_strategies.strategies.registry import get_strategy

    return get_strategy(strategy) if isinstance(strategy, str) else strategy


def _frames(
    candles: pd.DataFrame | Mapping[str, pd.DataFrame], symbol: str
) -> dict[str, pd.DataFrame]:
    frames = {symbol: candles} if isinstance(candles, pd.DataFrame) else dict(candles)
    if not frames:
        raise ConfigurationError("run_sweep needs candles for at least one symbol.")
    for name, frame in frames.items():
        if not isinstance(frame, pd.DataFrame) or frame.empty:
            raise ConfigurationError(
                f"The candles of {name!r} must be a non-empty DataFrame indexed by time. "
                f"Got {type(frame).__name__} instead."
            )
    return frames


def _timeframe(frames: Mapping[str, pd.DataFrame], timeframe: str | None) -> str:
    if timeframe is not None:
        return timeframe
    from atb_strategies.data.loaders import infer_timeframe

    first = next(iter(frames.values()))
    return first.attrs.get("timeframe") or infer_timeframe(pd.DatetimeIndex(first.index))


def _stamp(value: Any) -> str | None:
    return None if value is None else str(pd.Timestamp(value))


def plan_cells(
    strategy: str | type,
    frames: Mapping[str, pd.DataFrame],
    grid: Mapping[str, Sequence[Any]],
    *,
    versions: Sequence[str | None],
    params: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> list[Cell]:
    """Every cell, symbol by symbol, version by version, then the grid (last name fastest)."""
    cls = _strategy_class(strategy)
    digests = {symbol: candles_digest(frame) for symbol, frame in frames.items()}
    resolved: dict[tuple, tuple[str | None, tuple[str, ...]]] = {}
    cells = []
    ml = is_ml_strategy(cls)
    for symbol in frames:
        for version in versions:
            for combo in expand_grid(grid):
                cell_params = {**params, **combo}
                model_params = {**cell_params, "version": version}
                memo = (symbol, tuple(sorted(prediction_params(cls, model_params).items())))
                if ml and memo not in resolved:
                    resolved[memo] = resolve_model(
                        cls, symbol=symbol, timeframe=settings["timeframe"], params=model_params
                    )
                pinned, model = resolved[memo] if ml else (version, ())
                cells.append(
                    Cell(
                        strategy=strategy,
                        symbol=symbol,
                        version=pinned,
                        params=cell_params,
                        settings=dict(settings),
                        model=model,
                        data=digests[symbol],
                    )
                )
    return cells


def _bars_per_year(cells: Sequence[Cell], settings: Mapping[str, Any]) -> float | None:
    """The annualisation the cells' backtests share (their models' calendar), once per model;
    None (24/7) when the cells' models keep different calendars."""
    seen: dict[tuple, float] = {}
    for cell in cells:
        cls = _strategy_class(cell.strategy)
        key = (cell.strategy_name, _group(cls, cell) if is_ml_strategy(cls) else None)
        if key not in seen:
            seen[key] = model_bars_per_year(
                cls,
                symbol=cell.symbol,
                timeframe=settings["timeframe"],
                params={**cell.params, "version": cell.version},
            )
    values = set(seen.values())
    if len(values) > 1:
        log.warning(
            "sweep: the cells' models keep different trading calendars; the walk-forward "
            "selection annualises its Sharpe ratios over 24/7 bars"
        )
        return None
    return values.pop() if values else None


def _group(cls: type, cell: Cell) -> tuple:
    """The cells of one group share their predictions (same symbol and model params)."""
    params = {**cell.params, "version": cell.version}
    return (cell.symbol, tuple(sorted(prediction_params(cls, params).items())))


def _share_predictions(
    cells: Sequence[Cell], frames: Mapping[str, pd.DataFrame], settings: Mapping[str, Any]
) -> tuple[dict, dict[tuple, np.ndarray]]:
    """Each distinct prediction set of ``cells``, computed once (see ``predictions``), and
    the predicted returns of each group (``_group``) for ``_threshold_warnings``."""
    entries: dict = {}
    returns: dict[tuple, np.ndarray] = {}
    done: set[tuple] = set()
    t0 = time.perf_counter()
    for cell in cells:
        cls = _strategy_class(cell.strategy)
        if not is_ml_strategy(cls):
            continue
        group = _group(cls, cell)
        if group in done:
            continue
        done.add(group)
        try:
            found = compute_predictions(
                frames[cell.symbol],
                cls,
                symbol=cell.symbol,
                timeframe=settings["timeframe"],
                start=settings["start"],
                end=settings["end"],
                params={**cell.params, "version": cell.version},
            )
        except Exception as e:  # the cells of this group fail with the same error, recorded
            log.debug("predictions for %s %s not shared: %s", cell.symbol, cell.version, e)
            continue
        entries.update(found)
        lines = [e.lines.get("predicted_return") for e in found.values()]
        returns[group] = np.concatenate([v for v in lines if v is not None] or [np.empty(0)])
    if done:
        log.info(
            "sweep: %d prediction set(s) computed once in %.1f s and handed to every worker",
            len(entries),
            time.perf_counter() - t0,
        )
    return entries, returns


def _threshold_warnings(cells: Sequence[Cell], returns: Mapping[tuple, np.ndarray]) -> list[str]:
    """``thresholds.threshold_warnings`` for every cell, once per message; the model is named
    when the cells have several."""
    out: dict[str, None] = {}
    for cell in cells:
        cls = _strategy_class(cell.strategy)
        group = _group(cls, cell) if is_ml_strategy(cls) else None
        if group not in returns:
            continue
        model = f"{cell.symbol} {cell.version}" if len(returns) > 1 else None
        out.update(dict.fromkeys(threshold_warnings(returns[group], cls, cell.params, model=model)))
    return list(out)


def longest_first(
    cells: Sequence[Cell], returns: Mapping[tuple, np.ndarray]
) -> Callable[[Any], list[int]]:
    """``run_tasks``' ``order`` for ``cells``: the cells expected to trade most first (a cell's
    time grows with its trades; 8 cells on 2 workers handed out with the longest last leave one
    worker idle at the end), each estimated by how many bars' predicted return (``returns`` of its
    group, filled once the predictions are computed) pass its entry thresholds. Cells without
    an estimate go first, and ties keep the grid's order."""

    def signals(cell: Cell) -> float:
        cls = _strategy_class(cell.strategy)
        found = returns.get(_group(cls, cell)) if is_ml_strategy(cls) else None
        return math.inf if found is None else float(entry_signals(found, cls, cell.params))

    def order(_shared: Any) -> list[int]:
        expected = [signals(cell) for cell in cells]
        return sorted(range(len(cells)), key=lambda k: -expected[k])

    return order


def _record(cell: Cell, cell_hash: str, outcome: Any) -> dict[str, Any]:
    head = {
        "cell": cell_hash,
        "strategy": cell.strategy_name,
        "symbol": cell.symbol,
        "version": cell.version,
        "params": plain(cell.params),
        "settings": plain(cell.settings),
        "identity": plain(cell.identity()),
    }
    if isinstance(outcome, TaskFailure):
        return {
            **head,
            "metrics": dict.fromkeys(METRICS),
            "bars": None,
            "in_sample_bars": None,
            "oos_from": None,
            "model_key": None,
            "error": outcome.error,
        }
    return {**head, **outcome}


def _row(cell: Cell, record: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]) -> dict:
    metrics = record.get("metrics") or {}
    return {
        "cell": record["cell"],
        **{param_column(name): cell.params[name] for name in grid},
        "symbol": cell.symbol,
        "version": cell.version,
        **{name: metrics.get(name) for name in METRICS},
        "bars": record.get("bars"),
        "in_sample_bars": record.get("in_sample_bars"),
        "oos_from": record.get("oos_from"),
        "model_key": record.get("model_key"),
        "error": record.get("error"),
    }


class _Progress:
    """A tqdm bar with ETA, created when the first cell finishes (not while workers start)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar: Any = None
        self.failed = 0

    def update(self, failed: bool) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc="sweep", unit="cell", dynamic_ncols=True)
        self.failed += failed
        if failed:
            self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_sweep(
    strategy: str | type,
    candles: pd.DataFrame | Mapping[str, pd.DataFrame],
    grid: Mapping[str, Sequence[Any]],
    *,
    symbol: str = "BTCUSDT",
    timeframe: str | None = None,
    versions: Sequence[str | None] = (None,),
    params: Mapping[str, Any] | None = None,
    cash: float = 10_000.0,
    commission: float = 0.001,
    slippage_bps: float = 0.0,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    executor: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    out: Path | str | None = None,
    resume: bool = False,
    rank_by: str = "sharpe",
    share_predictions: bool = True,
    progress: bool = False,
    on_cell: Callable[[dict[str, Any]], None] | None = None,
    walk_forward: Callable[[int], Sequence[Any]] | None = None,
    screen: bool = False,
    verify: int = DEFAULT_VERIFY,
) -> pd.DataFrame:
    """Backtest ``strategy`` for every combination of ``grid``, symbol and version.

    Parameters
    ----------
    strategy : str or type
        A registered name (``"ml_basic"``) or a ``bt.Strategy`` subclass defined in a module
        (workers import it).
    candles : DataFrame or mapping of str to DataFrame
        Candles indexed by open time; a mapping sweeps several symbols (its keys).
    grid : mapping of str to sequence
        Strategy param -> the values to try (``{"long_threshold": [0.001, 0.002]}``).
    symbol : str
        The symbol of ``candles`` when it is one frame.
    timeframe : str, optional
        Bar size; default: ``candles.attrs["timeframe"]`` or inferred from the index.
    versions : sequence of str or None
        Model versions to sweep (``None``/``"latest"``: what latest points to now, pinned for
        the whole sweep; ``"asof"``: the point-in-time schedule).
    params : mapping, optional
        Strategy params fixed for every cell (``registry``, ``model_type``, ...).
    cash, commission, slippage_bps, start, end
        As in ``run_backtest`` (``start``: first traded bar; earlier bars warm the model up).
    executor : {"local", "ray", "serial"}
        Where cells run (``executors.run_tasks``); ``workers`` and ``ray_address`` as there.
    out : path, optional
        Folder for ``cells/``, ``results.csv``, ``heatmap.png`` and ``sweep.json``; None
        writes nothing.
    resume : bool
        Read cells already finished without error in ``out`` instead of running them.
    rank_by : str
        Metric of the ranking, the warnings and the heatmap (``report.RANK_METRICS``).
    share_predictions : bool
        Compute each prediction set once here and hand it to the workers (default True).
    progress : bool
        Show a progress bar with ETA (created when the first cell finishes).
    on_cell : callable, optional
        Called with each cell's record as it finishes (not for resumed cells).
    walk_forward : callable, optional
        Number of bars -> folds (objects with ``train_start``, ``train_end``,
        ``test_start``, ``test_end``; e.g. ``functools.partial(make_folds, train_bars=...,
        test_bars=..., embargo=0, horizon=0)`` from ``evaluation.folds``): on each fold the
        best cell by ``rank_by`` on the train bars is traded on the test bars
        (``walkforward.walk_forward_selection``; ``rank_by`` must be computable from
        returns).
    screen : bool
        Pre-screen every cell with the vectorised simulation of ``screen`` (an
        ``MlStrategy``'s rules over the cached predictions) and backtest only the best
        ``verify`` of them by ``rank_by``; ``screen.csv`` holds every screened cell,
        ``attrs["screen"]`` (and ``sweep.json``'s ``screen``) the agreement of the screen with
        the backtests. The rows returned are the verified cells; the deflated Sharpe counts
        every screened cell as a trial (``screen.deflate_over_screen``).
    verify : int
        Cells backtested after the screen (default 20).

    Returns
    -------
    DataFrame
        One row per cell in cell order: ``cell`` (its hash), the grid params, ``symbol``,
        ``version``, the metrics of ``metrics.METRICS``, ``bars``, ``in_sample_bars`` (bars
        inside the model's training period; None when unknown), ``oos_from`` (the model's
        first unseen bar), ``model_key``, ``error`` (None when it ran), ``dsr`` (the cell's
        probabilistic Sharpe against the expected best of the sweep's trials) and
        ``beats_benchmark`` (StepM: better than buy-and-hold scaled to its net exposure).
        ``attrs``: ``overfitting`` (``overfitting.overfitting_report`` of the ranked cells,
        with its one-line ``verdict``), ``walk_forward`` (None unless asked),
        ``warnings`` (entry thresholds outside the range of the predicted returns, then the
        ranking's), ``rank_by``, ``ran``, ``resumed`` and ``failed`` (cell counts),
        ``seconds``, ``out`` and ``heatmap`` (paths, when ``out``). Cells that failed at run
        time are returned with their ``error`` (and logged as a count); ``atb sweep`` then
        exits 1.

    Raises
    ------
    ConfigurationError
        Bad grid names or values (any value the strategy would refuse: checked before any
        cell runs), params, metric, executor or settings; ``resume`` without ``out``; with
        ``executor="local"``, a script calling ``run_sweep`` at import time, without the
        ``if __name__ == "__main__":`` guard its worker processes need.
    KeyboardInterrupt
        After logging how many cells finished (they stay in ``out``).
    """
    leave_if_bootstrapping(executor)  # a worker re-importing an unguarded script ends here
    check_rank_by(rank_by)
    if walk_forward is not None:
        check_walk_forward_metric(rank_by)
    params = dict(params or {})
    if "version" in params:
        raise ConfigurationError(
            "run_sweep takes model versions as versions=[...], not params['version']."
        )
    if resume and out is None:
        raise ConfigurationError("resume=True needs out=DIR, where the finished cells are.")
    versions = list(versions) or [None]
    if len(set(map(str, versions))) != len(versions):
        raise ConfigurationError(f"The 'versions' parameter repeats a version: {versions!r}.")
    cls = _strategy_class(strategy)
    known = list(cls.params._getkeys())
    check_grid(grid, known, cls.__name__)
    check_grid({k: [v] for k, v in params.items()}, known, cls.__name__)
    both = sorted(set(params) & set(grid))
    if both:
        raise ConfigurationError(
            f"{', '.join(both)} both fixed (params) and swept (grid); give each param once."
        )
    check_grid_values(cls, grid, params)  # every value, before any cell runs
    if "registry" not in grid:
        params = pin_registry(cls, params)
    frames = _frames(candles, symbol)
    settings = {
        "timeframe": _timeframe(frames, timeframe),
        "cash": float(cash),
        "commission": float(commission),
        "slippage_bps": float(slippage_bps),
        "start": _stamp(start),
        "end": _stamp(end),
    }
    cells = plan_cells(strategy, frames, grid, versions=versions, params=params, settings=settings)
    hashes = [cell.digest() for cell in cells]
    screened = None
    if screen:
        screened, cells, hashes = _screen(
            cls, cells, hashes, frames, settings, grid, rank_by, verify
        )
    store = CellStore(out) if out is not None else None
    records: dict[int, dict[str, Any]] = {}
    if resume and store is not None:
        for i, cell_hash in enumerate(hashes):
            found = store.finished(cell_hash)
            if found is not None:
                records[i] = found
    todo = [i for i in range(len(cells)) if i not in records]
    n_workers = 1 if executor == "serial" else (workers or default_workers())
    log.info(
        "sweep: %d cell(s), %d already finished, %d to run (%s executor, %d worker(s))",
        len(cells),
        len(records),
        len(todo),
        executor,
        n_workers,
    )
    if executor == "local" and n_workers > 1 and len(todo) > 1:
        check_main_guard()  # before the predictions: a script without the guard fails fast
    shared: dict[str, Any] = {"candles": frames, "predictions": {}, "models": {}}
    if todo:  # the model files travel as data: no worker reads a path of this machine
        shared["models"] = ship_models(cells[i] for i in todo)
    warnings: list[str] = []
    payload: Any = shared
    returns: dict[tuple, np.ndarray] = {}  # predicted returns per group: warnings, hand-out order
    if screened is not None and todo:  # the screen computed them
        shared["predictions"] = screened.entries
        returns.update(screened.returns)
        warnings = _threshold_warnings([cells[i] for i in todo], screened.returns)
        for warning in warnings:
            log.warning("sweep: %s", warning)
    elif share_predictions and todo:

        def with_predictions() -> dict[str, Any]:  # computed while the local workers start
            shared["predictions"], found = _share_predictions(
                [cells[i] for i in todo], frames, settings
            )
            returns.update(found)
            warnings.extend(_threshold_warnings([cells[i] for i in todo], returns))
            for warning in warnings:
                log.warning("sweep: %s", warning)
            return shared

        payload = Deferred(with_predictions)
    bar = _Progress(len(todo), progress)
    t0 = time.perf_counter()
    try:
        for k, outcome in run_tasks(
            run_shipped_cell,
            [cells[i] for i in todo],
            shared=payload,
            executor=executor,
            workers=workers,
            ray_address=ray_address,
            order=longest_first([cells[i] for i in todo], returns),
        ):
            i = todo[k]
            record = _record(cells[i], hashes[i], outcome)
            if store is not None:
                store.write(record)
            records[i] = record
            bar.update(record["error"] is not None)
            if record["error"] is not None:
                log.debug("sweep cell %s failed: %s", hashes[i], record["error"])
            if on_cell is not None:
                on_cell(record)
    except KeyboardInterrupt:
        bar.close()
        where = f" and kept in {store.cells}" if store is not None else ""
        log.warning(
            "sweep interrupted: %d of %d cells finished%s; run again with resume (--resume) "
            "for the other %d",
            len(records),
            len(cells),
            where,
            len(cells) - len(records),
        )
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    results = pd.DataFrame(
        [_row(cells[i], records[i], grid) for i in range(len(cells))],
    )
    audit = audit_sweep(
        results,
        {hashes[i]: records[i] for i in range(len(cells))},
        {name: frame["close"] for name, frame in frames.items()},
        rank_by,
        settings["timeframe"],
        walk_forward,
        bars_per_year=_bars_per_year(cells, settings) if walk_forward is not None else None,
    )
    if screened is not None:
        audit = _screen_audit(screened, results, records, hashes, audit, rank_by)
    warnings += sweep_warnings(results, grid, rank_by)
    failed = int(results["error"].notna().sum())
    if failed:
        log.warning("sweep: %d of %d cells failed (see their error)", failed, len(results))
    results.attrs.update(
        {
            "warnings": warnings,
            "rank_by": rank_by,
            "ran": len(todo),
            "resumed": len(cells) - len(todo),
            "failed": failed,
            "seconds": seconds,
            "out": str(out) if out is not None else None,
            **audit,
        }
    )
    if out is not None:
        definition = _definition(
            cls, strategy, grid, params, versions, cells, settings, executor, n_workers
        )
        _write_outputs(
            results,
            grid,
            Path(out),
            definition,
            screened.frame if screened is not None else None,
        )
        if screened is not None:
            write_screen(screened.frame, Path(out))
    return results


def _screen(
    cls: type,
    cells: list[Cell],
    hashes: list[str],
    frames: Mapping[str, pd.DataFrame],
    settings: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    rank_by: str,
    verify: int,
) -> tuple[ScreenResult, list[Cell], list[str]]:
    """Screen every cell; the cells (and names) to backtest: the best ``verify``."""
    if not isinstance(verify, int) or isinstance(verify, bool) or verify < 1:
        raise ConfigurationError(
            f"The 'verify' parameter of run_sweep must be an int >= 1. Got {verify!r} instead."
        )
    check_screenable(cls, cells)
    screened = screen_cells(cls, cells, hashes, frames, settings, grid, _group)
    keep = select_verified(screened.frame, rank_by, verify)
    log.info("sweep: backtesting the best %d of %d screened cell(s)", len(keep), len(cells))
    return screened, [cells[i] for i in keep], [hashes[i] for i in keep]


def _screen_audit(
    screened: ScreenResult,
    results: pd.DataFrame,
    records: Mapping[int, dict[str, Any]],
    hashes: Sequence[str],
    audit: dict[str, Any],
    rank_by: str,
) -> dict[str, Any]:
    """The audit with the deflated Sharpe over every screened cell, and the ``screen`` block
    (the screen's agreement with the verifying backtests)."""
    by_name = {hashes[i]: records[i] for i in records}
    ok = results[results["error"].isna()]
    block = {
        "screened": len(screened.frame),
        "engine": ENGINE,
        "seconds": screened.seconds,
        "prediction_seconds": screened.prediction_seconds,
        "rank_by": rank_by,
        **agreement(screened.frame, ok, rank_by),
    }
    overfitting = deflate_over_screen(results, by_name, audit.get("overfitting"), screened.frame)
    return {**audit, "overfitting": overfitting, "screen": block}


def _definition(
    cls: type,
    strategy: str | type,
    grid: Mapping[str, Sequence[Any]],
    params: Mapping[str, Any],
    versions: Sequence[str | None],
    cells: Sequence[Cell],
    settings: Mapping[str, Any],
    executor: str,
    workers: int,
) -> dict[str, Any]:
    """The definition part of ``sweep.json``."""
    return {
        "strategy": strategy if isinstance(strategy, str) else cls.__name__,
        "grid": plain(dict(grid)),
        "params": plain(dict(params)),
        "symbols": list(dict.fromkeys(c.symbol for c in cells)),
        "versions": {
            "given": list(versions),
            "resolved": list(dict.fromkeys(c.version for c in cells)),
        },
        "settings": plain(dict(settings)),
        "executor": executor,
        "workers": workers,
    }


def _write_outputs(
    results: pd.DataFrame,
    grid: Mapping[str, Sequence[Any]],
    out: Path,
    definition: dict,
    screened: pd.DataFrame | None = None,
) -> None:
    rank_by = results.attrs["rank_by"]
    csv = write_results(results, out)
    heatmap = None
    try:
        if screened is None:
            heatmap = plot_heatmap(results, grid, rank_by, out / "heatmap.png")
        else:  # the verified cells cannot fill the grid: every cell as the screen saw it
            heatmap = plot_heatmap(
                screened,
                grid,
                rank_by,
                out / "heatmap.png",
                source=f"vectorised screen of every cell; {len(results)} verified by backtests",
                in_sample_from=results,
            )
    except Exception as e:  # a chart must never lose the results
        log.warning("sweep: the heatmap could not be drawn: %s", e)
    ranked = rank_cells(results, rank_by)
    summary = {
        **definition,
        "rank_by": rank_by,
        "cells": len(results),
        "ran": results.attrs["ran"],
        "resumed": results.attrs["resumed"],
        "failed": int(results["error"].notna().sum()),
        "seconds": results.attrs["seconds"],
        "higher_is_better": RANK_METRICS[rank_by],
        "best": plain(ranked.head(10).to_dict("records")),
        "warnings": results.attrs["warnings"],
        "overfitting": results.attrs["overfitting"],
        "walk_forward": results.attrs["walk_forward"],
        "screen": results.attrs.get("screen"),
        "results": str(csv),
        "heatmap": str(heatmap) if heatmap is not None else None,
    }
    write_json_atomic(out / "sweep.json", summary, indent=1)
    results.attrs["heatmap"] = str(heatmap) if heatmap is not None else None
