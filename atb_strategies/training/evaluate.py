"""Stage 6, evaluate: honest metrics on the test part, in price units, against naive baselines.

Every number compares predictions made at bar ``t`` (from bars ``<= t``) with the close at
``t + horizon``, on test bars the model never saw. Baselines on the same samples:

* ``last_close``: the price does not move (``price = close[t]``); it predicts no direction, so
  its directional accuracy is not defined;
* ``drift``: the mean training log return per bar, ``price = close[t] * exp(mu)``; its direction
  is the sign of ``mu`` on every bar.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from atb_strategies.features.candles import timeframe_to_timedelta
from atb_strategies.stats import out_of_sample_block
from atb_strategies.training.dataset import Part
from atb_strategies.training.gates import GateResult


def _errors(pred_price: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    err = pred_price - actual
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def _direction(pred_return: np.ndarray, actual_return: np.ndarray) -> float | None:
    moved = actual_return != 0
    if not moved.any():
        return None
    return float(np.mean(np.sign(pred_return[moved]) == np.sign(actual_return[moved])))


def evaluate_predictions(
    predicted_log_return: np.ndarray,
    close: np.ndarray,
    future_close: np.ndarray,
    train_drift: float,
    horizon: int = 1,
) -> dict[str, Any]:
    """Metrics of the model and the two baselines over the same test samples.

    ``train_drift`` is the mean training target, a log return over ``horizon`` bars;
    ``drift_per_bar`` reports it per bar, ``drift_per_horizon`` as used.
    """
    actual = np.log(future_close / close)
    model_price = close * np.exp(predicted_log_return)
    drift_price = close * np.exp(train_drift)
    return {
        "samples": len(close),
        "model": {
            **_errors(model_price, future_close),
            "directional_accuracy": _direction(predicted_log_return, actual),
            "mean_abs_predicted_return": float(np.mean(np.abs(predicted_log_return))),
        },
        "baseline_last_close": {**_errors(close, future_close), "directional_accuracy": None},
        "baseline_drift": {
            **_errors(drift_price, future_close),
            "directional_accuracy": _direction(np.full(len(close), train_drift), actual),
            "drift_per_bar": train_drift / horizon,
            "drift_per_horizon": train_drift,
        },
        "share_of_up_moves": float(np.mean(actual > 0)),
    }


def bootstrap_block(timeframe: str, horizon: int) -> int:
    """Block length of the bootstrap: a day of bars (24 for 1h), at least ``horizon``."""
    per_day = pd.Timedelta(days=1) / timeframe_to_timedelta(timeframe)
    return int(min(max(horizon, round(per_day), 1), 500))


def baseline_gate(
    val_predictions: np.ndarray, parts: dict[str, Part], oos: dict[str, Any]
) -> dict[str, Any]:
    """Whether ``latest`` may move to this model: its validation MSE is below the constant
    (train-mean) predictor's AND it beats the baselines on the test part (``beats_baselines``:
    the edge over the sign of the training drift has a CI above 0 and a one-sided 5 %
    Diebold-Mariano test says its errors are smaller than last close's).

    Returns ``{"passed", "reasons", "validation"}``; ``reasons`` says, in words, what failed.

    The validation part is not unseen: it early-stops every family, chooses ridge's and
    LightGBM's regularisation and ``auto``'s family, and fits the calibration slope (clipped to
    [0, 1], so a calibrated model's validation MSE is below the constant's whenever its slope is
    above 0). The validation criterion is therefore a sanity check, recorded as
    ``validation.tuned_on``; the evidence is the test-part half (``beats_baselines``).
    """
    val, train_mean = parts["val"], float(parts["train"].y.mean())
    mse = float(np.mean((val_predictions - val.y) ** 2))
    mse_constant = float(np.mean((train_mean - val.y) ** 2))
    reasons = []
    if not mse < mse_constant:
        reasons.append(
            f"validation MSE {mse:.4g} is not below the constant (train-mean) predictor's "
            f"{mse_constant:.4g}"
        )
    if not oos["beats_baselines"]:
        lo, hi = oos["edge_vs_fixed_ci95"]
        dm = oos["dm_vs_last_close"]
        direction = "always up" if oos["fixed_baseline_up_share"] >= 0.5 else "always down"
        reasons.append(
            f"no edge on the test part: direction edge {100 * oos['edge_vs_fixed']:+.1f} points "
            f"over the training drift's sign ({direction}), 95 % CI [{100 * lo:+.1f}, "
            f"{100 * hi:+.1f}]; Diebold-Mariano vs last close {dm['stat']:+.2f} (one-sided "
            f"p={dm.get('pvalue_one_sided', float('nan')):.2g})"
        )
    return {
        "passed": not reasons,
        "reasons": reasons,
        "validation": {
            "samples": len(val),
            "mse": mse,
            "mse_constant": mse_constant,
            "beats_constant": mse < mse_constant,
            # early stopping, regularisation, family choice and calibration all read it
            "tuned_on": True,
        },
    }


def training_metrics(
    parts: dict[str, Part],
    gates: GateResult,
    horizon: int,
    val_predictions: np.ndarray,
    *,
    block: int = 24,
    reps: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``metrics.json`` of a model that passed ``gates`` (before the quick backtest).

    The model is judged by its ONNX predictions on the test part, the drift baseline by the
    mean train target. ``oos`` holds the significance block (``atb_strategies.stats``) on the
    test part, ``validation`` the validation MSE against the constant predictor, ``gate``
    whether ``latest`` may move (``baseline_gate``).
    """
    test = parts["test"]
    train_drift = float(parts["train"].y.mean())
    oos = out_of_sample_block(
        gates.test_predictions,
        test.y,
        train_drift,
        horizon=horizon,
        block=block,
        reps=reps,
        seed=seed,
    )
    gate = baseline_gate(val_predictions, parts, oos)
    return {
        "target": "log_return",
        "horizon": horizon,
        "test_period": [str(test.stamps[0]), str(test.stamps[-1])],
        "test": evaluate_predictions(
            gates.test_predictions, test.close, test.future_close, train_drift, horizon
        ),
        "oos": oos,
        "validation": gate.pop("validation"),
        "gate": gate,
        "export_parity_max_abs_diff": gates.parity,
        "causality_checks": gates.causality_checks,
        "samples_dropped_for_gaps": {name: p.dropped_for_gaps for name, p in parts.items()},
    }
