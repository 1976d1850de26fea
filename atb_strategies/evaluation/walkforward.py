"""Walk-forward evaluation: retrain on a schedule, test each model on the bars after it, pool.

``run_walk_forward(candles, config)`` cuts the candles into folds (``evaluation.folds``),
trains every (fold, seed) with exactly the recipe, gates and registration of ``atb train
model`` (``training.trainer.train_model`` with an explicit split), and pools the test
predictions into one out-of-sample record with the statistics of ``atb_strategies.stats``.

Every fold is registered as an immutable version whose ``metadata.json`` ``training`` lineage
records ``fold``, ``walk_forward_id``, ``train_start``, ``train_end``, ``test_start``,
``test_end``, ``embargo``, ``data_sha256`` and ``seed``; the backtest's ``version="asof"``
replays them bar by bar. Folds never move ``latest``; ``promote_last`` moves it to the last
fold's (first seed's) version if that version passed the baseline gate.

Folds run through ``atb_strategies.executors`` (serial, every local core, or Ray), on machines
that need not share a file system with this one: a fold task gets the candles and its config as
data, trains into a private temporary registry of its own and sends back the validated bundle's
files as bytes with its metrics and predictions; this process then allocates the version id
from its registry's ledger and registers the files atomically (``registry.writer.
register_bundle_files``). One path for every executor. Ctrl-C, a failed registration or a lost
node leave the finished folds registered and nothing half-written, and ids never collide.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.evaluation.folds import Fold, make_folds
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.executors import TaskFailure, run_tasks
from atb_strategies.features.schema import FeatureSchema, FeatureSpec
from atb_strategies.registry.layout import RegistryLayout
from atb_strategies.registry.manage import allocate_version, promote
from atb_strategies.registry.shared import forget_registry
from atb_strategies.registry.transfer import read_bundle_files
from atb_strategies.registry.writer import register_bundle_files
from atb_strategies.stats import out_of_sample_block, seed_spread
from atb_strategies.training.config import TrainingConfig
from atb_strategies.training.evaluate import bootstrap_block
from atb_strategies.training.recipes import default_recipe, recipe_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalkForwardConfig:
    """What to evaluate; fields match the ``atb train walk-forward`` options.

    ``embargo`` None: ``horizon + warm-up + sequence_length`` of the model type's recipe.
    """

    symbol: str
    train_bars: int
    test_bars: int
    step: int | None = None
    embargo: int | None = None
    expanding: bool = False
    seeds: tuple[int, ...] = (0,)
    max_folds: int | None = None
    timeframe: str = "1h"
    model_type: str = "basic"
    architecture: str = "mlp"
    #: ``TrainingConfig.recipe``, ``target`` and ``calibrate`` (None: the family's default).
    recipe: str | None = None
    target: str = "log_return"
    calibrate: bool | None = None
    sequence_length: int = 120
    horizon: int = 1
    epochs: int = 30
    val_fraction: float = 0.15
    registry: Path = Path("models")
    promote_last: bool = False
    bootstrap_reps: int = 1000
    data_source: str = "dataframe"
    #: The market's trading calendar (``--calendar``; ``features.calendar``).
    calendar: str = "24/7"

    def resolved_embargo(self) -> int:
        """The embargo in bars (the default covers a sample's window, warm-up and target)."""
        if self.embargo is not None:
            return self.embargo
        return self.horizon + self.sample_bars()

    def sample_bars(self) -> int:
        """Bars one sample's window and feature warm-up span (the recipe's ``min_bars``)."""
        recipe = recipe_for(  # what each fold trains on: the family's recipe, for these bars
            self.model_type,
            self.recipe or default_recipe(self.architecture),
            timeframe=self.timeframe,
            calendar=self.calendar,
        )
        specs = tuple(FeatureSpec(f.name, f.source, f.transforms) for f in recipe)
        return FeatureSchema(self.sequence_length, specs).min_bars


@dataclass
class FoldResult:
    """One trained (fold, seed): its version and test predictions, or why it failed.

    ``bundle`` is the trained bundle's files as a fold task returns them (``{name: bytes}``),
    until this process registers them (then None and ``version`` set).
    """

    fold: Fold
    seed: int
    version: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    predictions: pd.DataFrame | None = None
    error: str | None = None
    bundle: dict[str, bytes] | None = field(default=None, repr=False)


@dataclass
class WalkForwardResult:
    """Every fold's result, the pooled out-of-sample record and its statistics."""

    walk_forward_id: str
    config: WalkForwardConfig
    embargo: int
    folds: list[Fold]
    results: list[FoldResult]
    predictions: pd.DataFrame
    oos: dict[str, Any]
    data_sha256: str
    index: pd.DatetimeIndex
    promoted: str | None = None

    def at(self, bar: int) -> pd.Timestamp:
        """The candle (open) time of bar position ``bar``."""
        return self.index[bar]


def data_digest(candles: pd.DataFrame) -> str:
    """sha256 of the candles' times and OHLCV values (what the folds were trained on)."""
    digest = hashlib.sha256(candles.index.as_unit("ns").asi8.tobytes())
    for column in ("open", "high", "low", "close", "volume"):
        digest.update(np.ascontiguousarray(candles[column], dtype=np.float64).tobytes())
    return digest.hexdigest()


def _train_fold(shared: dict[str, Any], task: tuple[Fold, int]) -> FoldResult:
    """Train one (fold, seed) in a worker: ``shared`` holds the candles and the base config.

    The model is trained and registered into a private temporary registry (never a path of
    the driver's) and comes back as the bundle's files; ``version`` stays None until the
    driver registers them (``_register_fold``).
    """
    from atb_strategies.training.trainer import train_model

    fold, seed = task
    candles: pd.DataFrame = shared["candles"]
    base: TrainingConfig = shared["base"]
    at = candles.index
    frame = candles.iloc[fold.train_start : fold.test_end + base.horizon]
    lineage = {
        "walk_forward_id": shared["walk_forward_id"],
        "fold": fold.number,
        "seed": seed,
        "train_start": str(at[fold.train_start]),
        "train_end": str(at[fold.train_end - 1]),
        "validation_start": str(at[fold.val_start]),
        "test_start": str(at[fold.test_start]),
        "test_end": str(at[fold.test_end - 1]),
        "embargo_bars": shared["embargo"],
        "data_sha256": shared["data_sha256"],
    }
    rel = fold.train_start
    config = replace(
        base,
        seed=seed,
        split=(fold.val_start - rel, fold.train_end - rel, fold.test_start - rel),
        lineage=lineage,
    )
    with tempfile.TemporaryDirectory(prefix="atb-fold-") as private:
        try:
            result = train_model(replace(config, registry=Path(private)), frame)
            bundle = read_bundle_files(result.path)
        finally:
            forget_registry(private)
    predictions = result.test_predictions.assign(fold=fold.number, seed=seed, version=None)
    keep = ("test", "oos", "validation", "gate", "test_period")
    return FoldResult(
        fold, seed, None, {k: result.metrics.get(k) for k in keep}, predictions, bundle=bundle
    )


def _register_fold(result: FoldResult, config: WalkForwardConfig) -> FoldResult:
    """Register the bundle a fold task sent back into ``config.registry``: the version id is
    allocated here from the registry's ledger, and the lineage names this registry, as when
    the fold trains in place."""
    files, result.bundle = result.bundle, None
    if files is None:
        return result
    registry = Path(config.registry)

    def lineage(meta: dict[str, Any]) -> None:
        cfg = (meta.get("training") or {}).get("config")
        if isinstance(cfg, dict):
            cfg["registry"] = str(registry)

    try:
        version = allocate_version(
            RegistryLayout(registry), config.symbol, config.model_type, config.timeframe
        )
        register_bundle_files(registry, files, version=version, update=lineage)
    except Exception as e:
        result.error = TaskFailure.of(e).error
        result.predictions = None
        return result
    log.info("registered fold %d seed %d as %s", result.fold.number, result.seed, version)
    result.version = version
    if result.predictions is not None:
        result.predictions = result.predictions.assign(version=version)
    return result


def _base_config(config: WalkForwardConfig) -> TrainingConfig:
    return TrainingConfig(
        symbol=config.symbol,
        timeframe=config.timeframe,
        model_type=config.model_type,
        architecture=config.architecture,
        recipe=config.recipe,
        target=config.target,
        calibrate=config.calibrate,
        sequence_length=config.sequence_length,
        horizon=config.horizon,
        epochs=config.epochs,
        registry=Path(config.registry),
        promote=False,
        backtest=False,
        data_source=config.data_source,
        bootstrap_reps=max(200, config.bootstrap_reps // 4),  # per fold; pooled uses all
        calendar=config.calendar,
    )


def pooled_oos(
    predictions: pd.DataFrame, seeds: tuple[int, ...], config: WalkForwardConfig
) -> dict[str, Any]:
    """The pooled out-of-sample block of the first seed, with the spread over every seed."""
    block = bootstrap_block(config.timeframe, config.horizon)
    per_seed = {}
    for seed in seeds:
        rows = predictions[predictions["seed"] == seed]
        if len(rows) >= 3:
            per_seed[seed] = out_of_sample_block(
                rows["predicted"].to_numpy(),
                rows["actual"].to_numpy(),
                rows["drift"].to_numpy(),
                horizon=config.horizon,
                block=block,
                reps=config.bootstrap_reps,
            )
    if not per_seed:
        raise ConfigurationError("No fold produced test predictions; see the fold errors.")
    first = per_seed[min(per_seed)]
    return {
        **first,
        "seed": min(per_seed),
        "seed_spread": {
            "direction_accuracy": seed_spread([b["direction_accuracy"] for b in per_seed.values()]),
            "edge": seed_spread([b["edge"] for b in per_seed.values()]),
            "edge_vs_fixed": seed_spread([b["edge_vs_fixed"] for b in per_seed.values()]),
        },
    }


def _stitch(results: list[FoldResult]) -> pd.DataFrame:
    """Every seed's test predictions in time order; where test periods overlap (a step shorter
    than the test period), the newer fold's prediction is kept, as a redeployment would."""
    frames = [r.predictions for r in results if r.predictions is not None]
    if not frames:
        return pd.DataFrame(columns=["predicted", "actual", "close", "drift", "fold", "seed"])
    out = pd.concat(frames).sort_values(["seed", "fold"])
    out = out.reset_index()
    out = out.drop_duplicates(["seed", "timestamp"], keep="last")
    return out.set_index("timestamp").sort_values(["seed", "timestamp"])


def run_walk_forward(
    candles: pd.DataFrame,
    config: WalkForwardConfig,
    *,
    executor: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    on_result: Callable[[FoldResult, int], None] | None = None,
) -> WalkForwardResult:
    """Train and test every (fold, seed); see the module docstring.

    ``on_result(result, total)`` is called as each (fold, seed) finishes (progress bars).

    Raises
    ------
    ConfigurationError
        Bad settings, no fold fits, or every fold failed.
    """
    if not config.seeds:
        raise ConfigurationError("The 'seeds' parameter needs at least one seed.")
    embargo = config.resolved_embargo()
    folds = make_folds(
        len(candles),
        train_bars=config.train_bars,
        test_bars=config.test_bars,
        step=config.step,
        embargo=embargo,
        expanding=config.expanding,
        val_fraction=config.val_fraction,
        horizon=config.horizon,
        max_folds=config.max_folds,
    )
    wf_id = f"wf-{pd.Timestamp.now(tz='UTC'):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    digest = data_digest(candles)
    shared = {
        "candles": candles,
        "base": _base_config(config),
        "walk_forward_id": wf_id,
        "embargo": embargo,
        "data_sha256": digest,
    }
    tasks = [(fold, seed) for fold in folds for seed in config.seeds]
    log.debug("walk-forward %s: %d fold(s) x %d seed(s)", wf_id, len(folds), len(config.seeds))
    results: list[FoldResult] = []
    for i, outcome in run_tasks(
        _train_fold,
        tasks,
        shared=shared,
        executor=executor,
        workers=workers,
        ray_address=ray_address,
    ):
        if isinstance(outcome, TaskFailure):
            fold, seed = tasks[i]
            outcome = FoldResult(fold, seed, error=outcome.error)
        else:
            outcome = _register_fold(outcome, config)
        if outcome.error is not None:
            log.error(
                "fold %d seed %d failed: %s", outcome.fold.number, outcome.seed, outcome.error
            )
        results.append(outcome)
        if on_result is not None:
            on_result(outcome, len(tasks))
    results.sort(key=lambda r: (r.fold.number, r.seed))
    predictions = _stitch(results)
    oos = pooled_oos(predictions, config.seeds, config)
    promoted = _promote_last(results, config)
    return WalkForwardResult(
        wf_id, config, embargo, folds, results, predictions, oos, digest, candles.index, promoted
    )


def _promote_last(results: list[FoldResult], config: WalkForwardConfig) -> str | None:
    if not config.promote_last:
        return None
    last = [r for r in results if r.fold.number == results[-1].fold.number and r.version]
    if not last:
        log.warning("promote_last: the last fold has no registered version; latest unchanged")
        return None
    chosen = min(last, key=lambda r: r.seed)
    gate = chosen.metrics.get("gate") or {}
    if not gate.get("passed"):
        log.warning(
            "promote_last: %s failed the baseline gate (%s); latest unchanged",
            chosen.version,
            "; ".join(gate.get("reasons", [])),
        )
        return None
    promote(RegistryLayout(config.registry), config.symbol, config.model_type, chosen.version)
    return chosen.version


def asof_backtest(
    candles: pd.DataFrame,
    result: WalkForwardResult,
    *,
    cash: float = 10_000.0,
    commission: float = 0.001,
    slippage_bps: float = 0.0,
    **strategy_params: Any,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """One ``MlBasic`` backtest over the out-of-sample period with ``version="asof"``: each bar
    served by the newest fold trained before it, which replays the retraining schedule. Returns
    the summary (with the baselines, same fees and slippage) and the equity in value terms of
    the strategy and of buy-and-hold scaled to its invested fraction."""
    from atb_strategies.backtest.runner import run_backtest
    from atb_strategies.strategies.ml_basic import MlBasic

    config = result.config
    first = result.index[result.folds[0].test_start]
    run = run_backtest(
        candles,
        MlBasic,
        symbol=config.symbol,
        timeframe=config.timeframe,
        cash=cash,
        commission=commission,
        slippage_bps=slippage_bps,
        baselines=True,
        start=first,
        registry=str(config.registry),
        model_type=config.model_type,
        version="asof",
        asof_run=result.walk_forward_id,
        **strategy_params,
    )
    equity = run.equity[["value"]].rename(columns={"value": "strategy (asof)"})
    close = candles["close"].loc[equity.index]
    fraction = run.summary["invested_fraction"]
    equity["buy & hold scaled to exposure"] = cash * (1 + fraction * (close / close.iloc[0] - 1))
    equity["buy & hold"] = cash * close / close.iloc[0]
    return run.summary, equity
