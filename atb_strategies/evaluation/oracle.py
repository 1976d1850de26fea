"""The oracle: a known conditional mean scored like a model, on the walk-forward's test bars.

On a market with a planted signal (``atb_strategies.data.planted``) the true conditional mean of
the next return is known; fed to the same statistics as a model's predictions, on the same
decision bars and against the same per-fold baselines, its rate of "edge" is the ceiling any
model can reach (a family far below it is the bottleneck, not the market or the statistics).

``oracle_samples`` lays out those bars exactly as ``run_walk_forward`` pools a model's test
predictions: every fold's test bars ``[test_start, test_end)`` (the newer fold's where periods
overlap), the realised ``horizon``-bar log return, and the fold's training drift, the mean
target over the training samples a model would have had (window and warm-up inside the
training part, target before the validation part).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.evaluation.folds import make_folds
from atb_strategies.evaluation.walkforward import WalkForwardConfig
from atb_strategies.exceptions import ConfigurationError
from atb_strategies.stats import out_of_sample_block
from atb_strategies.training.evaluate import bootstrap_block


def oracle_samples(
    candles: pd.DataFrame, true_mean: pd.Series, config: WalkForwardConfig
) -> pd.DataFrame:
    """``predicted`` (``true_mean``), ``actual``, ``drift`` and ``fold`` per test bar, indexed
    like a walk-forward's ``predictions``.

    Raises
    ------
    ConfigurationError
        ``true_mean`` is not indexed like ``candles``, or no fold fits.
    """
    if not true_mean.index.equals(candles.index):
        raise ConfigurationError(
            "The 'true_mean' parameter must have the candles' index (one value per bar)."
        )
    h = config.horizon
    folds = make_folds(
        len(candles),
        train_bars=config.train_bars,
        test_bars=config.test_bars,
        step=config.step,
        embargo=config.resolved_embargo(),
        expanding=config.expanding,
        val_fraction=config.val_fraction,
        horizon=h,
        max_folds=config.max_folds,
    )
    log_close = np.log(candles["close"].to_numpy(dtype=np.float64))
    target = np.full(len(log_close), np.nan)
    target[:-h] = log_close[h:] - log_close[:-h]
    warmup = config.sample_bars() - 1
    owner = np.full(len(candles), -1)
    drift = np.full(len(candles), np.nan)
    for fold in folds:
        owner[fold.test_start : fold.test_end] = fold.number
        drift[fold.test_start : fold.test_end] = np.mean(
            target[fold.train_start + warmup : fold.val_start - h]
        )
    bars = np.flatnonzero(owner >= 0)
    return pd.DataFrame(
        {
            "predicted": true_mean.to_numpy(dtype=np.float64)[bars],
            "actual": target[bars],
            "drift": drift[bars],
            "fold": owner[bars],
        },
        index=pd.DatetimeIndex(candles.index[bars], name="timestamp"),
    )


def oracle_oos(
    candles: pd.DataFrame, true_mean: pd.Series, config: WalkForwardConfig
) -> dict[str, Any]:
    """The oracle's pooled ``oos`` block (``out_of_sample_block``; ``beats_baselines``...) on
    ``oracle_samples``, with the walk-forward's bootstrap block and repetitions."""
    rows = oracle_samples(candles, true_mean, config)
    return out_of_sample_block(
        rows["predicted"].to_numpy(),
        rows["actual"].to_numpy(),
        rows["drift"].to_numpy(),
        horizon=config.horizon,
        block=bootstrap_block(config.timeframe, config.horizon),
        reps=config.bootstrap_reps,
    )
